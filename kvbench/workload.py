"""The key-value workload: the table, the mixes, the knobs, and what one client sends next.

The base workload (issue 7): `kv(k INTEGER PRIMARY KEY, v TEXT)` with `keys` rows; a write is
the autocommitted statement `UPDATE kv SET v = ? WHERE k = ?`, a read `SELECT v FROM kv WHERE
k = ?`, each on a uniformly random key; the mix is the write share.  Knobs (Eve's
microbenchmarks): `cpu_us` (each request also computes for about that long inside its
transaction, through kvbench/procedures.py), `value_bytes` (length of every value written),
`conflict` (that share of requests goes to a hot set of `hot_keys` keys, so they conflict with
each other inside a batch).

Rules kept: every draw comes from the client's own seeded `random.Random`; the iteration
count for `cpu_us` is computed here, on the client, from a calibration of the very loop the
procedure runs (`calibrate_iterations_per_us`), never from a clock on the server.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from .procedures import spin

MIXES = {"w100": 1.0, "w50": 0.5, "w10": 0.1, "r100": 0.0}
SCHEMA = "CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v TEXT)"
UPDATE_SQL = "UPDATE kv SET v = ? WHERE k = ?"
SELECT_SQL = "SELECT v FROM kv WHERE k = ?"


@dataclass(frozen=True)
class Workload:
    mix: str = "w50"
    keys: int = 10_000
    value_bytes: int = 100
    cpu_us: int = 0
    conflict: float = 0.0
    hot_keys: int = 1
    # Iterations of `procedures.spin` that take about `cpu_us` µs (0 when cpu_us is 0).
    iterations: int = 0

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"unknown mix {self.mix!r}: choose from {', '.join(MIXES)}")
        if self.keys < 1:
            raise ValueError("keys must be at least 1")
        if self.value_bytes < 0 or self.cpu_us < 0:
            raise ValueError("value bytes and cpu µs must not be negative")
        if not 0.0 <= self.conflict <= 1.0:
            raise ValueError(f"conflict is a share from 0 to 1, not {self.conflict}")
        if not 1 <= self.hot_keys <= self.keys:
            raise ValueError("hot keys must be from 1 to the number of keys")

    @property
    def write_share(self) -> float:
        return MIXES[self.mix]

    @property
    def uses_procedures(self) -> bool:
        return self.cpu_us > 0


@dataclass(frozen=True, slots=True)
class Operation:
    is_write: bool
    key: int
    # "execute" (SQL text) or "callproc" (procedure name), with its parameters.
    method: str
    target: str
    params: tuple


class Generator:
    """What one closed-loop client sends next."""

    def __init__(self, workload: Workload, rng: random.Random, tag: str):
        self.workload = workload
        self.random = rng
        self.tag = tag
        self.writes = 0

    def key(self) -> int:
        workload = self.workload
        if workload.conflict and self.random.random() < workload.conflict:
            return self.random.randrange(workload.hot_keys) + 1  # the hot set: keys 1..hot_keys
        return self.random.randrange(workload.keys) + 1

    def next(self) -> Operation:
        workload = self.workload
        is_write = self.random.random() < workload.write_share
        key = self.key()
        if is_write:
            self.writes += 1
            value = value_for(f"{self.tag}.{self.writes}", workload.value_bytes)
            if workload.uses_procedures:
                return Operation(True, key, "callproc", "kv_update_cpu", (key, value, workload.iterations))
            return Operation(True, key, "execute", UPDATE_SQL, (value, key))
        if workload.uses_procedures:
            return Operation(False, key, "callproc", "kv_select_cpu", (key, workload.iterations))
        return Operation(False, key, "execute", SELECT_SQL, (key,))


def value_for(tag: str, value_bytes: int) -> str:
    """A value of exactly `value_bytes` characters (ASCII, so as many bytes) naming its writer."""
    if value_bytes <= len(tag):
        return tag[:value_bytes]
    return tag + "." * (value_bytes - len(tag))


def populate(connection, keys: int, value_bytes: int, chunk_rows: int = 2000) -> float:
    """Create kv and load `keys` rows through a DB-API connection (autocommit; each chunk one
    atomic script); an existing kv of the right size is reused.  Returns the seconds it took."""
    started = time.perf_counter()
    cursor = connection.cursor()
    cursor.execute(SCHEMA)
    cursor.execute("SELECT count(*), coalesce(max(length(v)), -1), coalesce(min(length(v)), -1) FROM kv")
    count, longest, shortest = cursor.fetchone()
    if count == keys and longest == shortest == value_bytes:
        return time.perf_counter() - started
    if count:
        cursor.execute("DELETE FROM kv")
    for first in range(1, keys + 1, chunk_rows):
        rows = [(k, value_for(f"init.{k}", value_bytes)) for k in range(first, min(keys, first + chunk_rows - 1) + 1)]
        cursor.executemany("INSERT INTO kv(k, v) VALUES (?, ?)", rows)
    return time.perf_counter() - started


def calibrate_iterations_per_us(target_s: float = 0.05) -> float:
    """How many `spin` iterations this machine runs per µs (best of a few tries, so a busy
    moment does not inflate the count)."""
    iterations = 20_000
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        spin(iterations)
        elapsed = time.perf_counter() - started
        best = max(best, iterations / (elapsed * 1e6))
        if elapsed < target_s / 5:
            iterations *= 2
    return best


def iterations_for(cpu_us: int, iterations_per_us: float) -> int:
    return int(round(cpu_us * iterations_per_us)) if cpu_us > 0 else 0
