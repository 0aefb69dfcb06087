"""The fault campaign (`evedb torture`): a real pair under load, seeded faults, checks.

Modules: `proxy` (TCP proxy with faults), `workloads` (bank + Cycle clients and procedure),
`scheduler` (the seeded plan), `checker` (the checks), `campaign` (runs it all, reports).
"""
