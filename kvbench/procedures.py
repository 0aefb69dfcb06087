"""Server-side procedures for `evedb bench kv --cpu-us N`: the base read and write, plus about
N µs of deterministic computation inside the same transaction (Eve's CPU-demand knob).

Rules kept:
- the computation is a fixed number of iterations chosen by the bench client (from N and a
  calibration it runs on its own machine) and passed as an argument; nothing here reads a
  clock, so every replica and every re-execution does the same work and returns the same
  checksum (which enters the reply hash);
- arguments from the wire are checked: a bad iteration count is refused with a clear error;
- the mixer learns each procedure's row from `kvbench/rules.toml` (argument 0 is the key).

Servers load them with `--procedures kvbench.procedures --rules <path of kvbench/rules.toml>`.
"""

from __future__ import annotations

import os

import evedb

RULES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.toml")
MAX_ITERATIONS = 100_000_000
_MULTIPLIER = 6364136223846793005
_INCREMENT = 1442695040888963407
_MASK = (1 << 64) - 1


def spin(iterations: int) -> int:
    """`iterations` steps of a 64-bit linear congruential generator: pure CPU, deterministic."""
    state = 0x9E3779B97F4A7C15
    for _ in range(iterations):
        state = (state * _MULTIPLIER + _INCREMENT) & _MASK
    return state >> 1  # fits a signed 64-bit SQLite integer


def _checked_iterations(iterations) -> int:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 0 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be an integer from 0 to {MAX_ITERATIONS}, not {iterations!r}")
    return iterations


@evedb.procedure
def kv_update_cpu(db, k, v, iterations):
    """`UPDATE kv SET v = ? WHERE k = ?` after `iterations` of computation; returns the checksum."""
    checksum = spin(_checked_iterations(iterations))
    db.execute("UPDATE kv SET v = ? WHERE k = ?", (v, k))
    return checksum


@evedb.procedure
def kv_select_cpu(db, k, iterations):
    """`SELECT v FROM kv WHERE k = ?` after `iterations` of computation."""
    spin(_checked_iterations(iterations))
    return db.execute("SELECT v FROM kv WHERE k = ?", (k,))
