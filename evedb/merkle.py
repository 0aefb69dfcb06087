"""The Merkle tree over row pages: how a replica proves what state it holds.

Owns the canonical row encoding, the assignment of rows to pages, page hashes, the tree of
chunks and tables above them, the state root, the token, and the top-down comparison of two
trees (the basis of incremental state transfer).

How it works:
- A row's hash is xxh3-128 over msgpack([table, row values in declared column order]).
  msgpack tags every value with its type, so 1, 1.0, '1' and b'1' hash differently; values
  are SQLite's five storage classes only.  Never `repr`, never a set's iteration order.
- A row belongs to page `(table, page_no)` decided by its primary key alone (see `page_of`):
  a single integer key k lands on range page k // rows_per_page (for a rowid table that is
  the rowid page of DESIGN.md), any other key on one of HASH_BUCKETS hash pages.  The hidden
  rowid of a table whose key is not the rowid is not logical state (replicas may allocate it
  differently), so it never decides a page.
- A page hash is the sum, modulo 2**128, of its rows' hashes.  The sum does not depend on row
  order, so a page can be updated from a changeset alone: subtract the old row's hash, add the
  new one's.  A batch costs a few microseconds per changed row instead of re-reading pages.
  (A sum of hashes is a multiset hash: fine against crashes and concurrency bugs, not a
  collision-resistant commitment against a Byzantine replica; see evedb/DESIGN.md.)
- Pages group into chunks of CHUNK_PAGES consecutive page numbers; a chunk hash is xxh3-128
  over its (page_no, page hash) pairs in page order; a table root over its (chunk, hash)
  pairs; the state root over the schema hash, the (table, root) pairs in name order and the
  reply-cache hash.  Only chunks holding a dirty page are re-hashed after a batch.

Rules kept: pure (no I/O, clocks, randomness, threads); every ordering is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import msgpack
import xxhash

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


def row_hash(table: str, row: tuple) -> int:
    return xxhash.xxh3_128_intdigest(_pack((table, row)))


def page_of(key: tuple) -> int:
    """The page number of a row with primary-key values `key`.

    Range pages get even numbers and hash pages odd ones, so the two kinds never collide in
    one table (a column may hold both integers and text).
    """
    if len(key) == 1 and type(key[0]) is int:
        return (key[0] // ROWS_PER_PAGE) * 2
    return (xxhash.xxh3_64_intdigest(_pack(key)) % HASH_BUCKETS) * 2 + 1


def page_range(page_no: int) -> tuple[int, int] | None:
    """[low, high) of the integer keys on a range page; None for a hash page."""
    if page_no % 2:
        return None
    low = (page_no // 2) * ROWS_PER_PAGE
    return low, low + ROWS_PER_PAGE


def add_row(deltas: dict, table: str, key: tuple, row: tuple, sign: int) -> None:
    """Record that `row` (with key `key`) entered (sign 1) or left (sign -1) `table`."""
    page = (table, page_of(key))
    deltas[page] = (deltas.get(page, 0) + sign * row_hash(table, row)) % HASH_MODULUS


def merge_deltas(target: dict, source: Mapping) -> dict:
    for page, delta in source.items():
        target[page] = (target.get(page, 0) + delta) % HASH_MODULUS
    return target


@dataclass(slots=True)
class _TableTree:
    # chunk number -> {page number -> page hash}; empty pages and chunks are dropped.
    chunk_pages: dict[int, dict[int, int]] = field(default_factory=dict)
    chunks: dict[int, int] = field(default_factory=dict)
    dirty_chunks: set[int] = field(default_factory=set)
    root: int | None = None


class MerkleTree:
    """Page hashes of every user table, and the roots above them, kept up to date by deltas."""

    def __init__(self):
        self._tables: dict[str, _TableTree] = {}
        self.schema_hash = 0
        self.reply_cache_hash = 0

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
        for (table, page_no), delta in deltas.items():
            if not delta:
                continue
            tree = self._tables.get(table)
            if tree is None:
                tree = self._tables[table] = _TableTree()
            chunk = page_no // CHUNK_PAGES
            pages = tree.chunk_pages.setdefault(chunk, {})
            value = (pages.get(page_no, 0) + delta) % HASH_MODULUS
            if value:
                pages[page_no] = value
            else:
                pages.pop(page_no, None)
                if not pages:
                    del tree.chunk_pages[chunk]
            tree.dirty_chunks.add(chunk)
            tree.root = None

    def reset_table(self, table: str) -> None:
        self._tables[table] = _TableTree()

    # --- reading ---

    def table_root(self, table: str) -> int:
        tree = self._tables[table]
        if tree.root is None:
            for chunk in sorted(tree.dirty_chunks):
                pages = tree.chunk_pages.get(chunk)
                if pages:
                    tree.chunks[chunk] = digest([(page, _bytes(value)) for page, value in sorted(pages.items())])
                else:
                    tree.chunks.pop(chunk, None)
            tree.dirty_chunks.clear()
            tree.root = digest((table, [(chunk, _bytes(value)) for chunk, value in sorted(tree.chunks.items())]))
        return tree.root

    def root(self) -> int:
        tables = [(name, _bytes(self.table_root(name))) for name in sorted(self._tables)]
        return digest((_bytes(self.schema_hash), tables, _bytes(self.reply_cache_hash)))

    def root_hex(self) -> str:
        return f"{self.root():032x}"

    def tables(self) -> list[str]:
        return sorted(self._tables)

    def pages(self, table: str) -> dict[int, int]:
        result: dict[int, int] = {}
        for pages in self._tables[table].chunk_pages.values():
            result.update(pages)
        return result

    def summary(self) -> dict:
        """Everything a peer needs to compare trees top-down: roots, then chunks, then pages."""
        return {
            "schema": self.schema_hash,
            "tables": {name: self.table_root(name) for name in sorted(self._tables)},
        }

    def chunk_hashes(self, table: str) -> dict[int, int]:
        self.table_root(table)
        return dict(self._tables[table].chunks)

    def chunk_pages(self, table: str, chunk: int) -> dict[int, int]:
        return dict(self._tables[table].chunk_pages.get(chunk, {}))


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


def replies_hash(encoded_replies: Iterable[bytes]) -> int:
    hasher = xxhash.xxh3_128()
    for encoded in encoded_replies:
        hasher.update(len(encoded).to_bytes(8, "little"))
        hasher.update(encoded)
    return hasher.intdigest()


def token(seq: int, view: int, state_root: int, replies_digest: int) -> int:
    """Token = H(seq, view, state root after the batch, hash of every reply)."""
    return digest((seq, view, _bytes(state_root), _bytes(replies_digest)))
