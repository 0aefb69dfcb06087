"""The Merkle tree: canonical hashing, pages, incremental updates against a full rebuild, diffs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from evedb import merkle


def build(rows_by_table: dict[str, dict[tuple, tuple]]) -> merkle.MerkleTree:
    tree = merkle.MerkleTree()
    tree.set_schema([("table", name) for name in sorted(rows_by_table)], rows_by_table)
    deltas: dict = {}
    for table, rows in rows_by_table.items():
        for key, row in rows.items():
            merkle.add_row(deltas, table, key, row, 1)
    tree.apply_deltas(deltas)
    return tree


def test_value_types_hash_apart():
    hashes = {merkle.row_hash("t", (1,), (1, value)) for value in (1, 1.0, "1", b"1", None, 0, "")}
    assert len(hashes) == 7


def test_a_cell_is_tied_to_its_column_its_row_and_its_table():
    row = merkle.row_hash("t", (1,), (1, "a", "b"))
    assert row != merkle.row_hash("t", (1,), (1, "b", "a"))  # values swapped between columns
    assert row != merkle.row_hash("u", (1,), (1, "a", "b"))
    # Two rows that swap a value: the same multiset of values, not the same cells.
    pair = merkle.row_hash("t", (1,), (1, "a")) + merkle.row_hash("t", (2,), (2, "b"))
    swapped = merkle.row_hash("t", (1,), (1, "b")) + merkle.row_hash("t", (2,), (2, "a"))
    assert pair % merkle.HASH_MODULUS != swapped % merkle.HASH_MODULUS


UNCHANGED = object()
values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8),
                   st.binary(max_size=8))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, values, st.booleans()), min_size=1, max_size=8))
def test_an_update_delta_is_the_difference_of_the_whole_rows(columns):
    """An UPDATE is hashed from its changed columns alone, as SQLite's changesets carry it."""
    key = (7,)
    old_row = (7, *(old for old, _, _ in columns))
    new_row = (7, *(new if changed else old for old, new, changed in columns))
    old_record = (7, *(old if changed else UNCHANGED for old, _, changed in columns))
    new_record = (UNCHANGED, *(new if changed else UNCHANGED for _, new, changed in columns))
    expected = (merkle.row_hash("t", key, new_row) - merkle.row_hash("t", key, old_row)) % merkle.HASH_MODULUS
    assert merkle.update_delta("t", key, old_record, new_record, UNCHANGED) == expected


def test_row_order_within_a_page_does_not_matter():
    a = build({"t": {(1,): (1, "a"), (2,): (2, "b")}})
    b = build({"t": dict(reversed(list({(1,): (1, "a"), (2,): (2, "b")}.items())))})
    assert a.root() == b.root()


def test_pages():
    assert merkle.page_of((0,)) == merkle.page_of((63,)) == 0
    assert merkle.page_of((64,)) == 2
    assert merkle.page_of((-1,)) == -2
    assert merkle.page_of(("x",)) % 2 == 1
    assert merkle.page_of((1, 2)) % 2 == 1
    assert merkle.page_range(2) == (64, 128)
    assert merkle.page_range(3) is None


def test_different_state_different_root():
    base = {"t": {(i,): (i, f"v{i}") for i in range(200)}}
    changed = {"t": dict(base["t"])}
    changed["t"][(150,)] = (150, "other")
    assert build(base).root() != build(changed).root()
    # Same rows in another table name: different root too.
    assert build(base).root() != build({"u": base["t"]}).root()


def test_differing_pages_top_down():
    base = {"t": {(i,): (i, "x") for i in range(1000)}, "s": {("k",): ("k", 1)}}
    other = {"t": dict(base["t"]), "s": dict(base["s"])}
    other["t"][(5,)] = (5, "y")
    del other["t"][(700,)]
    other["t"][(20_000,)] = (20_000, "new")
    assert merkle.differing_pages(build(base), build(other)) == [
        ("t", merkle.page_of((5,))),
        ("t", merkle.page_of((700,))),
        ("t", merkle.page_of((20_000,))),
    ]
    assert merkle.differing_pages(build(base), build(base)) == []


values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=5), st.binary(max_size=4),
                   st.floats(allow_nan=False))
operations = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.one_of(st.integers(-200, 5000), st.text(max_size=2)),
              st.booleans(), values),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_incremental_updates_match_a_full_rebuild(ops):
    """Upserts and deletes applied as deltas give the root of hashing the final rows afresh."""
    state: dict[str, dict[tuple, tuple]] = {"a": {}, "b": {}}
    tree = merkle.MerkleTree()
    tree.set_schema([("table", "a"), ("table", "b")], ["a", "b"])
    for step, (table, key_value, delete, value) in enumerate(ops):
        key = (key_value,)
        deltas: dict = {}
        old = state[table].get(key)
        if old is not None:
            merkle.add_row(deltas, table, key, old, -1)
        if delete:
            state[table].pop(key, None)
        else:
            new = (key_value, value)
            state[table][key] = new
            merkle.add_row(deltas, table, key, new, 1)
        tree.apply_deltas(deltas)
        tree.root()
        if step % 7 == 0:  # chunk sums read now and then, so stale ones are summed again
            assert tree.chunk_hashes(table) == build(state).chunk_hashes(table)
    assert tree.root() == build(state).root()
    for table in ("a", "b"):
        expected: dict = {}
        for page, value in tree.pages(table).items():
            chunk = page // merkle.CHUNK_PAGES
            expected[chunk] = (expected.get(chunk, 0) + value) % merkle.HASH_MODULUS
        assert tree.chunk_hashes(table) == {chunk: value for chunk, value in expected.items() if value}
    assert merkle.differing_pages(tree, build(state)) == []


def test_token_binds_every_part():
    base = merkle.token(1, 0, 5, 7)
    assert base != merkle.token(2, 0, 5, 7)
    assert base != merkle.token(1, 1, 5, 7)
    assert base != merkle.token(1, 0, 6, 7)
    assert base != merkle.token(1, 0, 5, 8)
    assert base == merkle.token(1, 0, 5, 7)
