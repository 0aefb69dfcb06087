"""Key-value microbenchmarks (`evedb bench kv`): Eve's evaluation instrument on real SQL.

workload (table, mixes, knobs), procedures (the --cpu-us procedures the servers load),
driver (closed-loop clients in several processes), cpu (where the cores went), bench (modes,
sweeps, medians, report, JSON), timeline (throughput through kills and restarts), plots.
"""
