"""The benchmark modes as loopback deployments, shared by `evedb bench tpcw` and `evedb bench kv`.

Modes (each a fresh `Pair` in its own directory, so no two modes share data):
- `unreplicated`: one node alone (no peer), parallel workers: what a single server does;
- `sequential`:   the pair, one worker per node: traditional agree-then-execute replication;
- `eve`:          the pair, parallel workers, execute-verify;
- `passive`:      the pair, the primary executes in parallel and ships its changesets, the
                  backup applies them (Remus-like primary-backup);
- `single`:       one node alone with one worker: with `unreplicated`, the executor's scaling.

Rules kept: a benchmark reports whether both nodes ended at the same state root, and it asks
only once they have caught up with each other (`settled_statuses`), whichever node is primary
by then (a failover swaps the roles of the two addresses).
"""

from __future__ import annotations

import os
import time

from ..client import node_status
from .launch import Pair, free_port_pair

MODES = ("unreplicated", "sequential", "eve", "passive", "single")


def deployment(mode: str, directory: str, workers: int | None, *, server_args: tuple[str, ...] = (),
               fixed_clock_ms: int | None = None) -> Pair:
    """A (not yet started) deployment of `mode` under `directory`/`mode`, every node given
    `server_args` (procedure modules, mixer rules, test options)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    extra = tuple(server_args)
    if mode == "passive":
        extra = extra + ("--replication", "passive")
    if fixed_clock_ms is not None:
        extra = extra + ("--fixed-clock-ms", str(fixed_clock_ms))
    return Pair(
        os.path.join(directory, mode),
        free_port_pair(),
        workers=1 if mode in ("sequential", "single") else workers,
        standalone=mode in ("unreplicated", "single"),
        extra_args=extra,
    )


def settled_statuses(pair: Pair, timeout: float = 15.0):
    """(primary status, backup status or None, roots equal) once both nodes report the same
    committed seq and root, or whatever they report when `timeout` runs out.  The statuses are
    sorted by the role each node reports now, not by the address it started on."""
    deadline = time.monotonic() + timeout
    while True:
        first = _status_or_none(pair.address("primary"))
        if pair.standalone:
            if first is not None or time.monotonic() > deadline:
                return first or {}, None, first is not None
            time.sleep(0.1)
            continue
        second = _status_or_none(pair.address("backup"))
        if first is not None and second is not None:
            primary, backup = (second, first) if second["role"] == "primary" and first["role"] != "primary" \
                else (first, second)
            equal = primary["state_root"] == backup["state_root"] and \
                primary["committed_seq"] == backup["committed_seq"] and backup["peer_state"] == "synced"
            if equal or time.monotonic() > deadline:
                return primary, backup, equal
        elif time.monotonic() > deadline:
            return first or second or {}, None, False
        time.sleep(0.1)


def _status_or_none(address: str) -> dict | None:
    try:
        return node_status(address, timeout=2.0)
    except Exception:  # a node that is down or restarting: ask again
        return None


def percentile(values: list[float], percent: float) -> float:
    """The nearest-rank percentile of `values` (0.0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(percent / 100 * (len(ordered) - 1))))]
