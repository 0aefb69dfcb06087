"""Seeded simulator driving the protocol core (`evedb.replica.Replica`) with faults.

Two cores ("a", primary of view 0, and "b", its backup) run against fake execution engines
(a key-value state machine with undo and a reply cache, `store.py`) over a simulated network
(`network.py`) that loses, delays, reorders and duplicates messages, with closed-loop clients
(`clients.py`), crashes and restarts, and forced divergence of parallel executions
(`cluster.py`).  After each run, checks (`checks.py`) compare both nodes' committed roots,
replay the committed log sequentially against every acknowledged reply, look for lost
acknowledged writes, and require the pair to be live and in sync after a quiet tail.

A run is a function of (seed, SimConfig) alone, so a failing seed replays exactly:

    from evedb.sim import run_seed
    result = run_seed(17)
    assert result.ok, result.violations
"""

from __future__ import annotations

from .cluster import Cluster, SimConfig, SimResult, run_seed
from .network import LinkFaults
from .report import format_result, run_seeds

__all__ = ["Cluster", "LinkFaults", "SimConfig", "SimResult", "format_result", "run_seed", "run_seeds"]
