"""Key-value microbenchmarks (`evedb bench kv`): Eve's evaluation instrument on real SQL.

workload (table, mixes, knobs), procedures + rules.toml (the --cpu-us procedures the servers
load), driver (closed-loop DB-API clients in several processes), cpu (where the cores went,
from /proc), bench (modes, sweeps, medians, report, JSON), timeline (throughput through kills
and restarts), plots (PNG charts), command (the CLI's body), markdown (tables for
bench/RESULTS.md), profile (py-spy sampling of the nodes and clients under load).
"""
