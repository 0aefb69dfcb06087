"""Server-side procedures: the registry, and the handle a procedure uses to run SQL.

A procedure is a plain Python function `fn(db, *args)`.  It runs inside one transaction on a
worker; it may read and write freely through `db.execute`; whatever it returns becomes its
result set (a `ProcedureCursor` from `db.execute`, a list of rows, a single value, or None).

Procedures are registered with the `@procedure` decorator, or listed in a module's
`PROCEDURES` dict; worker processes import the same modules by name, so a procedure must live
in an importable module (or in the `__main__` script, which multiprocessing re-imports).

Determinism rules for procedure authors (checked by verification, not here): use `db.random`
(seeded from the batch) instead of the `random` module, `db.timestamp_ms` instead of the
clock, `db.new_id()` instead of MAX(id)+1, and ORDER BY with a unique tie-breaker wherever
order matters.
"""

from __future__ import annotations

import importlib
import random
from typing import Any, Callable, Iterable

_registry: dict[str, Callable] = {}
_modules: set[str] = set()


def procedure(function: Callable | None = None, *, name: str | None = None):
    """Register a server-side procedure, under its function name unless `name` is given."""

    def register(target: Callable) -> Callable:
        _registry[name or target.__name__] = target
        if target.__module__ not in ("__main__", "__mp_main__"):
            _modules.add(target.__module__)
        return target

    return register(function) if function is not None else register


def registered_modules() -> list[str]:
    return sorted(_modules)


def load_modules(module_names: Iterable[str]) -> None:
    """Import modules so their procedures register; a `PROCEDURES` dict is honoured too."""
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for proc_name, function in getattr(module, "PROCEDURES", {}).items():
            _registry[proc_name] = function
        _modules.add(module_name)


def lookup(name: str) -> Callable | None:
    return _registry.get(name)


class ProcedureCursor:
    """What `db.execute` returns inside a procedure."""

    __slots__ = ("columns", "rows", "rowcount", "lastrowid")

    def __init__(self, columns, rows, rowcount, lastrowid):
        self.columns = columns
        self.rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchall(self) -> list[tuple]:
        return list(self.rows)

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def __iter__(self):
        return iter(self.rows)


class ProcedureContext:
    """The `db` argument of a procedure: SQL on the worker's connection, batch time, seeded random."""

    __slots__ = ("_run", "timestamp_ms", "_random", "_seed", "seq", "position", "_ids_issued")

    def __init__(self, run_statement: Callable, timestamp_ms: int, seed: int, position: int, seq: int = 0):
        self._run = run_statement
        self.timestamp_ms = timestamp_ms
        self._random: random.Random | None = None
        self._seed = (seed << 32) ^ position ^ 0x5EED
        self.seq = seq
        self.position = position
        self._ids_issued = 0

    @property
    def random(self) -> random.Random:
        """A generator seeded from (batch seed, position): built on first use (~4 µs)."""
        if self._random is None:
            self._random = random.Random(self._seed)
        return self._random

    def new_id(self) -> int:
        """A fresh id, the same on every replica and every re-execution, growing with batch
        order: (seq, position in the batch, count within the request).  Use it instead of
        MAX(id)+1, which depends on what else ran in parallel."""
        self._ids_issued += 1
        if self._ids_issued >= 1 << 8 or self.position >= 1 << 16:
            raise ValueError("new_id(): at most 255 ids per request and 65536 requests per batch")
        return (self.seq << 24) | (self.position << 8) | self._ids_issued

    def execute(self, sql: str, params=None) -> ProcedureCursor:
        result = self._run(sql, params)
        return ProcedureCursor(result.columns, result.rows, result.rowcount, result.lastrowid)
