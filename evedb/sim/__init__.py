"""Seeded simulator driving the protocol core (`evedb.replica.Replica`) with faults.

Two cores ("a", primary of view 0, and "b", its backup) run against fake execution engines
and are checked at the end of every run.  One job per module:

- `store`: the fake engine, a key-value state machine with undo and a reply cache;
- `node`: one node: its core, its store, what survives a crash, actions performed in order;
- `network`: the fate of each message: lost, delayed (so reordered), duplicated;
- `clients`: closed-loop clients that retry the same request until answered;
- `cluster`: the clock, the event queue, crashes, restarts, link breaks, forced divergence;
- `history`: what the run observed; `checks`: equal committed roots on both nodes, replies
  equal to a sequential replay of the committed log, no acknowledged write lost, the pair
  live and in sync after a quiet tail; `report`: summaries and the `evedb sim` command.

A run is a function of (seed, SimConfig) alone, so a failing seed replays exactly:

    from evedb.sim import run_seed
    result = run_seed(17)
    assert result.ok, result.violations

`run_seed(17, passive=True)` runs a passive (Remus-like) pair instead: the primary's fake
engine ships what each execution changed and the backup's applies it (`store.changeset`,
`store.apply`); the same checks hold, with the drawn divergence off (passive replication copies
a wrong parallel execution: nothing would repair it).
"""

from __future__ import annotations

from .cluster import Cluster, SimConfig, SimResult, run_seed
from .network import LinkFaults
from .report import format_result, run_cli, run_seeds

__all__ = ["Cluster", "LinkFaults", "SimConfig", "SimResult", "format_result", "run_cli", "run_seed", "run_seeds"]
