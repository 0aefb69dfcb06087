"""The mixer: split an ordered batch into parallel batches of requests that do not conflict.

What it owns (DESIGN.md section 3, "Mixer"): given the `Access` of every request of a batch,
in batch order, it decides which requests may run at the same time.  It is a hint: a wrong
grouping costs a rollback and a sequential re-execution, never correctness, while a grouping
that is too cautious costs parallelism.  The output is a pure function of the input, so every
replica forms the same parallel batches and a seed replays a run exactly.

Objects.  An access touches *objects* `(table, key)`.  For each table it reads (writes): if
some key of `access.keys` names that table, the objects are `(table, k)` for each such key,
else the single table-level object `(table, None)`.  Keys made by mixer rules with a modulo
are *partition keys*: a 2-tuple `("%<modulo>", value % modulo)` (see `mixer_rules`).

Rules kept here:
- two objects conflict only within one table: when either is table-level; when exactly one
  is a partition key, or both are partition keys of different moduli (their granularities
  cannot be compared, so be safe); otherwise when the keys are equal;
- two accesses conflict when one writes an object the other reads or writes; an exclusive
  access conflicts with everything, and so runs alone;
- conflicting requests run in batch order: if i < j conflict, i's parallel batch comes
  strictly before j's;
- a parallel batch holds at most `max_parallel` requests, listed in ascending batch order;
- pure: no I/O, threads, clocks or randomness, and no set iteration order reaches the output.

How it works.  The rule of DESIGN.md is a greedy multi-pass walk: in each round, walk the
requests not yet placed in batch order; one joins the round's parallel batch unless it
conflicts with a member, or with an earlier request deferred in this round, or the batch is
full.  Done literally that is O(n * rounds) conflict checks, quadratic for a hot row.  `mix`
computes the same result in one pass: request j joins round r exactly when every earlier
request it conflicts with sits in a round before r and fewer than `max_parallel` earlier
requests sit in r.  So j's round is the first non-full round at or after
`1 + max(round of the earlier requests it conflicts with)`.  That maximum comes from per-table
indexes of the highest round that read (wrote) each object, each key, each partition
modulus and the whole table, so each request costs a few dict lookups per object it touches.

False negatives on purpose (`false_negative_rate`, `serve --mixer-false-negative-rate`): to
measure how execute-verify masks concurrency bugs, the mixer can be made wrong.  With
probability P a request ignores its conflicts with earlier requests (it still respects
exclusive requests) and so may join a parallel batch holding a request it conflicts with.
The draw for request i is a hash of (seed, i) with no RNG state, so the wrong plan is still a
pure function of the batch and every replica forms the same one, as in Eve.  With P = 0 (the
default) every rule above holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the mixer reads Access values; it never builds one
    from .access import Access

__all__ = ["Object", "read_objects", "write_objects", "is_partition_key",
           "objects_conflict", "conflicts", "mix"]

Object = tuple[str, Any]
"""`(table, key)`: key is a tuple of values, or None for the whole table."""

_NONE = -1  # "no round": lower than every round number


def is_partition_key(key: Any) -> bool:
    """True for a partition key `("%<modulo>", value)` as mixer rules make them."""
    # Row keys from access analysis are tuples of primary-key values; a 2-column key whose
    # first value is a string such as "%10" would read as a partition key.  The worst that
    # does is a misjudged conflict, which the mixer tolerates (a rollback, never a wrong
    # result); requiring the exact "%digits" shape keeps such collisions unlikely.
    if type(key) is not tuple or len(key) != 2:
        return False
    marker = key[0]
    return (type(marker) is str and len(marker) > 1 and marker[0] == "%"
            and marker[1:].isascii() and marker[1:].isdigit())


def _keys_by_table(access: Access) -> dict[str, list[Any]]:
    by_table: dict[str, list[Any]] = {}
    for table, key in access.keys:
        by_table.setdefault(table, []).append(key)
    return by_table


def _objects(tables: Iterable[str], by_table: dict[str, list[Any]]) -> frozenset[Object]:
    out: list[Object] = []
    for table in tables:
        keys = by_table.get(table)
        if keys:
            out.extend([(table, k) for k in keys])
        else:
            out.append((table, None))
    return frozenset(out)


# Key shapes, classified once per object so the index never re-parses a partition marker.
_TABLE, _ROW, _PART = 0, 1, 2


def _classified(tables: Iterable[str], by_table: dict[str, list[Any]]) -> list[tuple]:
    """`(table, key, shape)` per object; a list, since the objects are distinct already."""
    out: list[tuple] = []
    for table in tables:
        keys = by_table.get(table)
        if keys:
            out.extend([(table, k, _PART if is_partition_key(k) else _ROW) for k in keys])
        else:
            out.append((table, None, _TABLE))
    return out


def read_objects(access: Access) -> frozenset[Object]:
    """The objects `access` reads: row (or partition) keys where it has keys for a table."""
    return _objects(access.reads, _keys_by_table(access))


def write_objects(access: Access) -> frozenset[Object]:
    """The objects `access` writes: row (or partition) keys where it has keys for a table."""
    return _objects(access.writes, _keys_by_table(access))


def _keys_conflict(a: Any, b: Any) -> bool:
    """Whether two keys of the *same* table may touch a common row."""
    if a is None or b is None:
        return True
    pa, pb = is_partition_key(a), is_partition_key(b)
    if pa != pb:
        return True  # a row key against a partition: granularities differ, be safe
    if pa and a[0] != b[0]:
        return True  # partitions of different moduli overlap in general
    return a == b


def objects_conflict(a: Object, b: Object) -> bool:
    """Whether two objects may touch a common row (objects of different tables never do)."""
    return a[0] == b[0] and _keys_conflict(a[1], b[1])


def _any_conflict(xs: frozenset[Object], ys: frozenset[Object]) -> bool:
    if not xs or not ys:
        return False
    # Group one side by table so only same-table pairs are compared.
    by_table: dict[str, list[Any]] = {}
    for table, key in ys:
        by_table.setdefault(table, []).append(key)
    for table, key in xs:
        others = by_table.get(table)
        if others and any(_keys_conflict(key, other) for other in others):
            return True
    return False


def conflicts(a: Access, b: Access) -> bool:
    """Whether `a` and `b` must not run in parallel: one writes an object the other touches."""
    if a.exclusive or b.exclusive:
        return True
    aw, bw = write_objects(a), write_objects(b)
    if not aw and not bw:
        return False  # two readers never conflict
    ar, br = read_objects(a), read_objects(b)
    return _any_conflict(aw, bw | br) or _any_conflict(bw, ar)


class _TableIndex:
    """For one table and one kind (read or write): the highest round holding each object.

    The maxima are split by key shape so that "highest round of an object conflicting with
    this one" is a handful of lookups instead of a scan (see `_keys_conflict`).
    """

    __slots__ = ("all", "table", "rows", "rows_all", "parts", "parts_all", "parts_by_marker")

    def __init__(self) -> None:
        self.all = _NONE          # any object of the table
        self.table = _NONE        # table-level objects
        self.rows: dict[Any, int] = {}        # row key -> round
        self.rows_all = _NONE     # any row key
        self.parts: dict[Any, int] = {}       # partition key (marker included) -> round
        self.parts_all = _NONE    # any partition key
        self.parts_by_marker: dict[str, int] = {}  # marker -> highest round of any such key

    def last_conflicting(self, key: Any, shape: int) -> int:
        """The highest round holding an object of this table that conflicts with `key`."""
        if shape == _TABLE or self.all == _NONE:
            return self.all
        if shape == _PART:
            best = max(self.table, self.rows_all, self.parts.get(key, _NONE))
            if self.parts_all > best:
                marker = key[0]
                # Few moduli exist per table (one, usually), so this loop is short; max over
                # ints is order-independent, so dict order cannot reach the output.
                for other, r in self.parts_by_marker.items():
                    if r > best and other != marker:
                        best = r
            return best
        return max(self.table, self.parts_all, self.rows.get(key, _NONE))

    def add(self, key: Any, shape: int, rnd: int) -> None:
        # Rounds are assigned in batch order but are not monotone (a later request may land
        # in an earlier round), hence the comparisons everywhere.
        if rnd > self.all:
            self.all = rnd
        if shape == _TABLE:
            if rnd > self.table:
                self.table = rnd
        elif shape == _PART:
            if rnd > self.parts.get(key, _NONE):
                self.parts[key] = rnd
            if rnd > self.parts_by_marker.get(key[0], _NONE):
                self.parts_by_marker[key[0]] = rnd
            if rnd > self.parts_all:
                self.parts_all = rnd
        else:
            if rnd > self.rows.get(key, _NONE):
                self.rows[key] = rnd
            if rnd > self.rows_all:
                self.rows_all = rnd


_MASK64 = (1 << 64) - 1


def _unit_draw(seed: int, index: int) -> float:
    """A number in [0, 1) that depends only on (seed, index): splitmix64 of their mix."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def mix(accesses: Sequence[Access], max_parallel: int = 64, *,
        false_negative_rate: float = 0.0, seed: int = 0) -> list[list[int]]:
    """Parallel batches, in execution order, each a list of ascending indices into `accesses`.

    Equal to the greedy multi-pass rule of the module docstring, computed in one pass.
    `false_negative_rate` > 0 makes it deliberately wrong (see the module docstring); `seed`
    (the batch's) picks which requests ignore their conflicts.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, not {max_parallel!r}")
    if not 0.0 <= false_negative_rate <= 1.0:
        raise ValueError(f"false_negative_rate must be in [0, 1], not {false_negative_rate!r}")
    reads: dict[str, _TableIndex] = {}
    writes: dict[str, _TableIndex] = {}
    rounds: list[list[int]] = []
    # Skip pointers over full rounds: skip[r] is a round at or after r that may have room.
    skip: list[int] = []
    barrier = _NONE  # round of the last exclusive request: nothing after it may overtake it

    def first_free(r: int) -> int:
        # Union-find style path compression keeps long runs of full rounds cheap to cross.
        root = r
        while root < len(rounds) and skip[root] != root:
            root = skip[root]
        while r < len(rounds) and skip[r] != r:
            skip[r], r = root, skip[r]
        return root

    for i, access in enumerate(accesses):
        if access.exclusive:
            # After every round so far, and (by the barrier) before every later request.
            rnd = len(rounds)
            barrier = rnd
        else:
            by_table = _keys_by_table(access) if access.keys else {}
            r_objs = _classified(access.reads, by_table)
            w_objs = _classified(access.writes, by_table)
            last = barrier  # the latest round this request must follow
            for table, key, shape in r_objs:  # a read waits for every conflicting write
                idx = writes.get(table)
                if idx is not None:
                    r = idx.last_conflicting(key, shape)
                    if r > last:
                        last = r
            for table, key, shape in w_objs:  # a write waits for conflicting reads and writes
                idx = writes.get(table)
                if idx is not None:
                    r = idx.last_conflicting(key, shape)
                    if r > last:
                        last = r
                idx = reads.get(table)
                if idx is not None:
                    r = idx.last_conflicting(key, shape)
                    if r > last:
                        last = r
            if false_negative_rate and _unit_draw(seed, i) < false_negative_rate:
                last = barrier  # the deliberate mistake: forget every earlier conflict
            rnd = last + 1
            if rnd < len(rounds) and skip[rnd] != rnd:
                rnd = first_free(rnd)
            for table, key, shape in r_objs:
                idx = reads.get(table)
                if idx is None:
                    idx = reads[table] = _TableIndex()
                idx.add(key, shape, rnd)
            for table, key, shape in w_objs:
                idx = writes.get(table)
                if idx is None:
                    idx = writes[table] = _TableIndex()
                idx.add(key, shape, rnd)
        if rnd == len(rounds):
            rounds.append([])
            skip.append(rnd)
        rounds[rnd].append(i)
        if access.exclusive or len(rounds[rnd]) >= max_parallel:
            # An exclusive request's round is closed to everything; so is a full one.
            skip[rnd] = rnd + 1
    return rounds
