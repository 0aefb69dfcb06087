"""The mixer: object conflicts, exclusive requests, the size cap, and the property that no
parallel batch holds a conflict and conflicting requests keep their batch order."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evedb.access import Access
from evedb.mixer import conflicts, is_partition_key, mix, objects_conflict, read_objects, write_objects


def acc(reads=(), writes=(), keys=(), exclusive=False) -> Access:
    writes = frozenset(writes)
    return Access(reads=frozenset(reads), writes=writes, keys=frozenset(keys),
                  exclusive=exclusive, read_only=not writes and not exclusive)


EXCL = acc(exclusive=True)


def part(mod: int, value: int) -> tuple:
    return (f"%{mod}", value % mod)


def reference_mix(accesses, max_parallel=64):
    """The rule of DESIGN.md, literally: greedy multi-pass rounds over pairwise conflicts."""
    pending = list(range(len(accesses)))
    out = []
    while pending:
        batch, deferred = [], []
        for i in pending:
            a = accesses[i]
            if (len(batch) >= max_parallel
                    or any(conflicts(a, accesses[j]) for j in batch)
                    or any(conflicts(a, accesses[j]) for j in deferred)):
                deferred.append(i)
            else:
                batch.append(i)
        out.append(batch)
        pending = deferred
    return out


# -- objects ---------------------------------------------------------------------------------

def test_objects_table_level_without_keys():
    a = acc(reads={"a", "b"}, writes={"b"})
    assert read_objects(a) == {("a", None), ("b", None)}
    assert write_objects(a) == {("b", None)}


def test_objects_row_level_where_keys_name_the_table():
    a = acc(reads={"a", "b"}, writes={"a"}, keys={("a", (1,)), ("a", (2,)), ("zz", (9,))})
    assert read_objects(a) == {("a", (1,)), ("a", (2,)), ("b", None)}
    assert write_objects(a) == {("a", (1,)), ("a", (2,))}


def test_is_partition_key():
    assert is_partition_key(("%10", 3))
    assert not is_partition_key((3,))
    assert not is_partition_key(("%", 3))
    assert not is_partition_key(("%x", 3))
    assert not is_partition_key(("%10", 3, 4))
    assert not is_partition_key(None)


# -- object conflicts ------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,expected", [
    (("t", None), ("t", None), True),          # table vs table
    (("t", None), ("t", (1,)), True),          # table vs row
    (("t", (1,)), ("t", None), True),
    (("t", None), ("t", part(10, 3)), True),   # table vs partition
    (("t", (1,)), ("t", (1,)), True),          # row vs row, same
    (("t", (1,)), ("t", (2,)), False),         # row vs row, different
    (("t", (1, "x")), ("t", (1, "y")), False),  # compound keys
    (("t", (3,)), ("t", part(10, 3)), True),   # row vs partition: always
    (("t", (4,)), ("t", part(10, 3)), True),
    (("t", part(10, 3)), ("t", part(10, 3)), True),   # partition vs partition, same
    (("t", part(10, 3)), ("t", part(10, 4)), False),  # same modulo, other partition
    (("t", part(10, 3)), ("t", part(5, 4)), True),    # different moduli: be safe
    (("t", None), ("u", None), False),         # different tables never conflict
    (("t", (1,)), ("u", (1,)), False),
])
def test_objects_conflict(a, b, expected):
    assert objects_conflict(a, b) is expected
    assert objects_conflict(b, a) is expected


# -- access conflicts ------------------------------------------------------------------------

def test_readers_never_conflict():
    assert not conflicts(acc(reads={"t"}), acc(reads={"t"}))


def test_write_conflicts_with_read_and_write_of_same_object():
    w = acc(writes={"t"})
    assert conflicts(w, acc(reads={"t"}))
    assert conflicts(acc(reads={"t"}), w)
    assert conflicts(w, acc(writes={"t"}))
    assert not conflicts(w, acc(reads={"u"}, writes={"u"}))


def test_row_level_accesses():
    w1 = acc(reads={"t"}, writes={"t"}, keys={("t", (1,))})
    w2 = acc(reads={"t"}, writes={"t"}, keys={("t", (2,))})
    r1 = acc(reads={"t"}, keys={("t", (1,))})
    whole = acc(reads={"t"})
    assert not conflicts(w1, w2)
    assert conflicts(w1, r1)
    assert not conflicts(w2, r1)
    assert conflicts(w1, whole)


def test_partition_against_row_and_partition():
    p3 = acc(reads={"c"}, writes={"c"}, keys={("c", part(10, 3))})
    p4 = acc(reads={"c"}, writes={"c"}, keys={("c", part(10, 4))})
    p3b = acc(writes={"c"}, keys={("c", part(10, 13))})
    row = acc(reads={"c"}, keys={("c", (4,))})
    other_mod = acc(writes={"c"}, keys={("c", part(7, 4))})
    assert not conflicts(p3, p4)
    assert conflicts(p3, p3b)
    assert conflicts(p4, row)
    assert conflicts(p3, other_mod)


def test_exclusive_conflicts_with_everything():
    assert conflicts(EXCL, acc())
    assert conflicts(acc(reads={"t"}), EXCL)
    assert conflicts(EXCL, EXCL)


# -- mix -------------------------------------------------------------------------------------

def test_mix_empty():
    assert mix([]) == []


def test_mix_independent_requests_share_a_batch():
    accs = [acc(reads={"t"}, writes={"t"}, keys={("t", (i,))}) for i in range(5)]
    assert mix(accs) == [[0, 1, 2, 3, 4]]


def test_mix_conflicts_keep_batch_order():
    a = acc(writes={"t"}, keys={("t", (1,))})
    b = acc(reads={"t"}, keys={("t", (1,))})
    c = acc(writes={"t"}, keys={("t", (2,))})
    assert mix([a, b, c]) == [[0, 2], [1]]


def test_mix_request_conflicting_with_a_deferred_one_is_deferred_too():
    # 1 waits for 0 (row 1); 2 conflicts only with 1 (row 2), so it must not overtake 1.
    r0 = acc(writes={"t"}, keys={("t", (1,))})
    r1 = acc(writes={"t"}, keys={("t", (1,)), ("t", (2,))})
    r2 = acc(reads={"t"}, keys={("t", (2,))})
    r3 = acc(reads={"t"}, keys={("t", (3,))})
    assert mix([r0, r1, r2, r3]) == [[0, 3], [1], [2]]


def test_mix_later_request_may_fill_an_earlier_batch():
    a = acc(writes={"a"})
    b = acc(writes={"a"})
    c = acc(writes={"a"})
    d = acc(writes={"b"})
    assert mix([a, b, c, d]) == [[0, 3], [1], [2]]


def test_mix_exclusive_runs_alone_and_is_never_overtaken():
    x = acc(reads={"t"}, keys={("t", (1,))})
    y = acc(reads={"u"})
    assert mix([x, EXCL, y]) == [[0], [1], [2]]
    assert mix([EXCL, x, y]) == [[0], [1, 2]]
    assert mix([x, y, EXCL, EXCL, x]) == [[0, 1], [2], [3], [4]]


def test_mix_exclusive_after_a_deferred_request():
    w = acc(writes={"t"})
    assert mix([w, w, EXCL, acc(reads={"u"})]) == [[0], [1], [2], [3]]


def test_mix_cap():
    accs = [acc(reads={"t"}) for _ in range(10)]
    assert mix(accs, max_parallel=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert mix(accs, max_parallel=1) == [[i] for i in range(10)]


def test_mix_cap_defers_and_keeps_order_of_dependents():
    r = acc(reads={"t"})
    w = acc(writes={"u"})
    wu = acc(reads={"u"})
    # 0,1 fill the first batch; 2 (writes u) waits; 3 reads u so it must follow 2.
    assert mix([r, r, w, wu], max_parallel=2) == [[0, 1], [2], [3]]
    assert mix([r, r, w, wu], max_parallel=2) == reference_mix([r, r, w, wu], 2)


def test_mix_rejects_bad_cap():
    with pytest.raises(ValueError):
        mix([acc()], max_parallel=0)


def test_mix_is_fast_for_point_operations():
    accs = [acc(reads={"item"}, writes={"item"}, keys={("item", (i % 700,))})
            for i in range(1000)]
    mix(accs)
    t0 = time.perf_counter()
    out = mix(accs)
    elapsed = time.perf_counter() - t0
    assert sum(map(len, out)) == 1000
    # Generous bound (shared CI machines); the point is "not quadratic": this takes ~2 ms.
    assert elapsed < 0.5


# -- the property ----------------------------------------------------------------------------

TABLES = ("a", "b", "c")


@st.composite
def accesses(draw):
    if draw(st.integers(0, 19)) == 0:
        return EXCL
    reads = draw(st.frozensets(st.sampled_from(TABLES), max_size=3))
    writes = draw(st.frozensets(st.sampled_from(TABLES), max_size=2)) \
        if draw(st.booleans()) else frozenset()
    keys = set()
    for table in sorted(reads | writes):
        kind = draw(st.sampled_from(["table", "row", "row", "part", "mixed"]))
        if kind in ("row", "mixed"):
            for k in draw(st.lists(st.integers(0, 4), min_size=1, max_size=2)):
                keys.add((table, (k,)))
        if kind in ("part", "mixed"):
            mod = draw(st.sampled_from([2, 3, 3]))
            for k in draw(st.lists(st.integers(0, 5), min_size=1, max_size=2)):
                keys.add((table, part(mod, k)))
    return acc(reads, writes, keys)


@settings(max_examples=400, deadline=None)
@given(st.lists(accesses(), max_size=30), st.integers(1, 6))
def test_mix_property(accs, cap):
    out = mix(accs, max_parallel=cap)
    where = {}
    for b, batch in enumerate(out):
        assert batch, "no empty parallel batch"
        assert batch == sorted(batch)                      # (4) ascending
        assert len(batch) <= cap                           # (5) cap
        for i in batch:
            assert i not in where
            where[i] = b
        for x in range(len(batch)):                        # (2) no conflict inside
            for y in range(x + 1, len(batch)):
                assert not conflicts(accs[batch[x]], accs[batch[y]])
        if any(accs[i].exclusive for i in batch):          # (6) exclusive alone
            assert len(batch) == 1
    assert sorted(where) == list(range(len(accs)))         # (1) each exactly once
    for i in range(len(accs)):                             # (3) conflict order kept
        for j in range(i + 1, len(accs)):
            if conflicts(accs[i], accs[j]):
                assert where[i] < where[j]
    # And the one-pass algorithm equals the literal multi-pass rule.
    assert out == reference_mix(accs, cap)


@settings(max_examples=200, deadline=None)
@given(st.lists(accesses(), max_size=20))
def test_conflicts_agrees_with_objects(accs):
    for a in accs:
        for b in accs:
            if a.exclusive or b.exclusive:
                expected = True
            else:
                expected = any(objects_conflict(x, y)
                               for x in write_objects(a)
                               for y in read_objects(b) | write_objects(b)) or \
                    any(objects_conflict(x, y)
                        for x in write_objects(b) for y in read_objects(a))
            assert conflicts(a, b) is expected
            assert conflicts(b, a) is expected
