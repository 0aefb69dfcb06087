"""The Merkle tree over row pages: how a replica proves what state it holds.

Owns the canonical row encoding, the assignment of rows to pages, page hashes, the tree of
chunks and tables above them, the state root, the token, and the top-down comparison of two
trees (the basis of incremental state transfer).

How it works:
- A row's hash is the sum, modulo 2**128, of its cells' hashes; a cell's hash is xxh3-128
  over msgpack([table, [primary-key values], column index, value]), the index counting
  declared columns from 0.  msgpack tags every value with its type, so 1, 1.0, '1' and b'1'
  hash differently; values are SQLite's five storage classes only, -0.0 hashed as 0.0 (SQLite
  finds them equal).  Never `repr`, never a set's iteration order.  The key inside every cell ties it to its row, so the cells of a
  table determine its rows; hashing cells, not whole rows, lets an UPDATE be hashed from its
  changeset alone (which carries the key and the changed columns' old and new values, never
  the columns it left alone): its delta is new cells minus old cells of the changed columns.
- A row belongs to page `(table, page_no)` decided by its primary key alone (see `page_of`):
  a single integer key k lands on range page k // rows_per_page (for a rowid table that is
  the rowid page of DESIGN.md), any other key on one of HASH_BUCKETS hash pages.  The hidden
  rowid of a table whose key is not the rowid is not logical state (replicas may allocate it
  differently), so it never decides a page.
- A page hash is the sum, modulo 2**128, of its rows' hashes.  The sum does not depend on row
  order, so a page can be updated from a changeset alone: subtract the old row's (or old
  cells') hash, add the new one's.  A batch costs about a microsecond per changed row, and
  never re-reads a page or a row.
  (A sum of hashes is a multiset hash: fine against crashes and concurrency bugs, not a
  collision-resistant commitment against a Byzantine replica; see evedb/DESIGN.md.)
- Pages group into chunks of CHUNK_PAGES consecutive page numbers.  A chunk's hash and a
  table's root are sums too (of their pages, of their chunks), so a batch updates a few sums
  per changed row and never re-hashes a page or a chunk (chunk sums are summed again from
  their pages only when a comparison reads them).  The state root is xxh3-128 over the
  schema hash and the (table, root) pairs in name order; the reply cache is one of the tables.
  Comparing two trees descends table -> chunk -> page where the sums differ.

The same hashes are computed in C by evedb/_tokenhash.c when it was built (`native`): the
page deltas of a whole changeset in one call, `row_hash`, and the replies' bytes (codec.py).
This module stays the definition and the fallback; tests hold the two to the same bytes and the same deltas.  Set
EVEDB_TOKEN_HASH=python to use the Python code only.

Rules kept: pure (no I/O, clocks, randomness, threads); every ordering is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import os

import msgpack
import xxhash
import xxhash._xxhash

HASH_MODULUS = 1 << 128
ROWS_PER_PAGE = 64
HASH_BUCKETS = 4096
CHUNK_PAGES = 256

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def digest(value) -> int:
    """xxh3-128 of a value's msgpack encoding, as an int."""
    return xxhash.xxh3_128_intdigest(_pack(value))


def _bytes(value: int) -> bytes:
    # 128-bit hashes travel inside msgpack as 16 bytes (msgpack integers stop at 64 bits).
    return value.to_bytes(16, "little")


def _canonical(value):
    # -0.0 hashes as 0.0: SQLite finds them equal, so a changeset has no change from one to
    # the other, and the tree must not have one either.
    return 0.0 if type(value) is float and value == 0.0 else value


def _canonical_key(key: tuple) -> tuple:
    return tuple([_canonical(value) for value in key]) if float in map(type, key) else key


def cell_hash(table: str, key: tuple, index: int, value) -> int:
    """The hash of column `index` of the row with primary-key values `key`."""
    return xxhash.xxh3_128_intdigest(_pack((table, _canonical_key(key), index, _canonical(value))))


def row_hash(table: str, key: tuple, row: tuple) -> int:
    """The sum of a row's cell hashes; `key` is its primary-key values in column order."""
    return sum(cell_hash(table, key, index, value) for index, value in enumerate(row)) % HASH_MODULUS


row_hash_python = row_hash


def update_delta(table: str, key: tuple, old: tuple, new: tuple, unchanged) -> int:
    """The hash delta of an UPDATE of one row: its changed columns' new cells minus their old
    cells.  `new` holds `unchanged` for every column the UPDATE left alone (so does `old`,
    except for the key), as SQLite's changesets do."""
    delta = 0
    for index, value in enumerate(new):
        if value is not unchanged:
            delta += cell_hash(table, key, index, value) - cell_hash(table, key, index, old[index])
    return delta % HASH_MODULUS
TOKEN_HASH_ENV = "EVEDB_TOKEN_HASH"


def _bind_native():
    """evedb._tokenhash bound to the xxh3 functions of the xxhash module's own library, or None
    (not built, asked not to, or that library does not export them)."""
    if os.environ.get(TOKEN_HASH_ENV) == "python":
        return None
    try:
        from . import _tokenhash
        _tokenhash.configure(xxhash._xxhash.__file__, ROWS_PER_PAGE, HASH_BUCKETS)
    except (ImportError, OSError):
        return None
    return _tokenhash


native = _bind_native()
if native is not None:
    row_hash = native.row_hash  # noqa: F811 (same function, in C; takes tuples)


def row_hash_kind() -> str:
    """"c" when rows are hashed by evedb/_tokenhash.c, "python" otherwise."""
    return "python" if native is None else "c"


def page_of(key: tuple) -> int:
    """The page number of a row with primary-key values `key`.

    Range pages get even numbers and hash pages odd ones, so the two kinds never collide in
    one table (a column may hold both integers and text).
    """
    if len(key) == 1 and type(key[0]) is int:
        return (key[0] // ROWS_PER_PAGE) * 2
    return (xxhash.xxh3_64_intdigest(_pack(_canonical_key(key))) % HASH_BUCKETS) * 2 + 1


def page_range(page_no: int) -> tuple[int, int] | None:
    """[low, high) of the integer keys on a range page; None for a hash page."""
    if page_no % 2:
        return None
    low = (page_no // 2) * ROWS_PER_PAGE
    return low, low + ROWS_PER_PAGE


def add_row(deltas: dict, table: str, key: tuple, row: tuple, sign: int) -> None:
    """Record that `row` (with key `key`) entered (sign 1) or left (sign -1) `table`."""
    page = (table, page_of(key))
    deltas[page] = (deltas.get(page, 0) + sign * row_hash(table, key, row)) % HASH_MODULUS


def table_deltas_python(table: str, key_indexes: tuple[int, ...], rows: Iterable[tuple]) -> dict:
    """The page sums of every row of `rows` (tuples in declared column order): a full build."""
    deltas: dict = {}
    for row in rows:
        add_row(deltas, table, tuple([row[i] for i in key_indexes]), row, 1)
    return deltas


table_deltas = table_deltas_python if native is None else native.table_deltas


def merge_deltas(target: dict, source: Mapping) -> dict:
    for page, delta in source.items():
        target[page] = (target.get(page, 0) + delta) % HASH_MODULUS
    return target


@dataclass(slots=True)
class _TableTree:
    # Every level is a sum (mod 2**128) of the row hashes below it, so a delta updates a page
    # and the table in O(1); empty pages and chunks are dropped.  Chunk sums are only read
    # when two trees are compared (state transfer), so a batch just marks them stale and they
    # are summed again from the pages on the next comparison: a third of the per-page work of
    # every batch saved for a rare O(pages) sum.
    pages: dict[int, int] = field(default_factory=dict)
    stale_chunks: set[int] = field(default_factory=set)
    chunk_sums: dict[int, int] = field(default_factory=dict)
    total: int = 0

    def chunks(self) -> dict[int, int]:
        if self.stale_chunks:
            sums = self.chunk_sums
            for chunk in self.stale_chunks:
                sums.pop(chunk, None)
            for page, value in self.pages.items():
                chunk = page // CHUNK_PAGES
                if chunk in self.stale_chunks:
                    sums[chunk] = (sums.get(chunk, 0) + value) % HASH_MODULUS
            for chunk in self.stale_chunks:
                if not sums.get(chunk, 1):
                    del sums[chunk]
            self.stale_chunks.clear()
        return self.chunk_sums


class MerkleTree:
    """Page hashes of every replicated table, and the sums above them, kept up to date by deltas."""

    def __init__(self):
        self._tables: dict[str, _TableTree] = {}
        self.schema_hash = 0

    # --- building and updating ---

    def set_schema(self, schema_rows: Iterable[tuple], tables: Iterable[str]) -> None:
        """Record the schema (canonically ordered rows) and which tables exist."""
        self.schema_hash = digest(list(schema_rows))
        names = set(tables)
        for gone in [name for name in self._tables if name not in names]:
            del self._tables[gone]
        for name in sorted(names):
            self._tables.setdefault(name, _TableTree())

    def apply_deltas(self, deltas: Mapping[tuple[str, int], int]) -> None:
        # The hot path of every batch's token: locals, and one modulo per page.
        tables, modulus, chunk_pages = self._tables, HASH_MODULUS, CHUNK_PAGES
        changed: set[str] = set()
        for (table, page_no), delta in deltas.items():
            if not delta:
                continue
            tree = tables.get(table)
            if tree is None:
                tree = tables[table] = _TableTree()
            pages = tree.pages
            value = (pages.get(page_no, 0) + delta) % modulus
            if value:
                pages[page_no] = value
            else:
                pages.pop(page_no, None)
            tree.stale_chunks.add(page_no // chunk_pages)
            tree.total += delta
            changed.add(table)
        for table in changed:
            tree = tables[table]
            tree.total %= modulus

    # --- reading ---

    def table_root(self, table: str) -> int:
        return self._tables[table].total

    def root(self) -> int:
        tables = [(name, _bytes(tree.total)) for name, tree in sorted(self._tables.items())]
        return digest((_bytes(self.schema_hash), tables))

    def root_hex(self) -> str:
        return f"{self.root():032x}"

    def tables(self) -> list[str]:
        return sorted(self._tables)

    def pages(self, table: str) -> dict[int, int]:
        return dict(self._tables[table].pages)

    def chunk_hashes(self, table: str) -> dict[int, int]:
        return dict(self._tables[table].chunks())

    def chunk_pages(self, table: str, chunk: int) -> dict[int, int]:
        pages = self._tables[table].pages
        low = chunk * CHUNK_PAGES
        return {page: pages[page] for page in range(low, low + CHUNK_PAGES) if page in pages}


def differing_pages(source: MerkleTree, target: MerkleTree) -> list[tuple[str, int]]:
    """The (table, page) pairs whose hashes differ, found top-down: tables, chunks, pages.

    A table present on one side only differs in every page it has there.
    """
    result: list[tuple[str, int]] = []
    source_tables, target_tables = set(source.tables()), set(target.tables())
    for table in sorted(source_tables | target_tables):
        if table in source_tables and table in target_tables:
            if source.table_root(table) == target.table_root(table):
                continue
            source_chunks, target_chunks = source.chunk_hashes(table), target.chunk_hashes(table)
            for chunk in sorted(set(source_chunks) | set(target_chunks)):
                if source_chunks.get(chunk) == target_chunks.get(chunk):
                    continue
                source_pages = source.chunk_pages(table, chunk)
                target_pages = target.chunk_pages(table, chunk)
                for page in sorted(set(source_pages) | set(target_pages)):
                    if source_pages.get(page) != target_pages.get(page):
                        result.append((table, page))
        else:
            side = source if table in source_tables else target
            result.extend((table, page) for page in sorted(side.pages(table)))
    return result


def replies_hash(encoded_replies: bytes) -> int:
    """xxh3-128 of a batch's replies, encoded together (codec.encode_replies)."""
    return xxhash.xxh3_128_intdigest(encoded_replies)


def token(seq: int, view: int, state_root: int, replies_digest: int) -> int:
    """Token = H(seq, view, state root after the batch, hash of every reply)."""
    return digest((seq, view, _bytes(state_root), _bytes(replies_digest)))
