"""The simulator's stand-in for SQLite: a key-value state machine with undo and a reply cache.

The command language is private to the simulator and tiny: a request is
`Request.statement(client, id, "add", (key, amount))` (a write: adds `amount` to `key`, replies
the new value and the batch's timestamp) or `Request.statement(client, id, "get", (key,))` (read-only: replies the value).

What it owns: the state (key -> int), the replicated reply cache (client -> its last write's
request id and reply, exactly like `_evedb_replies`), the undo log of uncommitted batches,
`committed_seq`, and the state root and token of the real engine's shape
(`token = H(seq, view, root, replies)`).

Rules it keeps:
- canonical hashing: xxh3-128 over msgpack of sorted items; never `repr`, never set order;
- the reply cache is part of the state root, like the real one;
- a write whose (client, request id) is that client's last one returns the stored reply
  without running again; an older request id gets an error and changes nothing;
- undo works like the engine's changesets: each execution records the old value of every
  entry it changed; `rollback(seq)` restores them for every uncommitted execution with a seq
  >= `seq`, newest first; `commit(seq)` drops undo up to `seq`; `recover()` (a restart after a
  crash) undoes everything uncommitted, so the durable state is the committed one;
- sequential execution is always correct; a *parallel* execution may be told to go wrong
  (`corrupt`), standing in for a mixer mistake: that is forced divergence;
- passive replication: `changeset(seq)` is what an execution changed (the new value of every
  entry it wrote, in write order, msgpack), standing in for SQLite session changesets, and
  `apply(seq, changesets)` writes those values undoably, as a backup applying them does.
"""

from __future__ import annotations

import xxhash

from ..codec import encode_reply, pack, reply_from_plain, reply_to_plain, unpack
from ..messages import Batch, Column, ErrorInfo, Reply, Request, StatementResult

ADD = "add"
GET = "get"
KV_TABLE = "kv"  # the pseudo-tables of a state transfer (StateData.pages)
REPLIES_TABLE = "replies"
_ABSENT = object()  # undo marker: the entry did not exist


def add_request(client_id: str, request_id: int, key: str, amount: int) -> Request:
    return Request.statement(client_id, request_id, ADD, (key, amount))


def get_request(client_id: str, request_id: int, key: str) -> Request:
    return Request.statement(client_id, request_id, GET, (key,))


def is_read_only(request: Request) -> bool:
    return all(statement.sql == GET for statement in request.statements)


def value_reply(request: Request, value: int, stamp: int | None = None) -> Reply:
    """A reply carrying `value`; a write's also carries its batch's timestamp (`stamp`), as a
    statement reading the clock would, so two batches holding the same requests but cut at
    different times give different tokens, as they would in the real engine."""
    if stamp is None:
        return Reply(request.client_id, request.request_id, (StatementResult((Column("value"),), ((value,),), 1),))
    return Reply(request.client_id, request.request_id,
                 (StatementResult((Column("value"), Column("at")), ((value, stamp),), 1),))


def reply_value(reply: Reply) -> int | None:
    """The value a reply carries, None for an error."""
    if reply.error is not None or not reply.results or not reply.results[0].rows:
        return None
    return reply.results[0].rows[0][0]


def read_from(data: dict, requests) -> tuple[Reply, ...]:
    """Read-only requests on `data` (a store's state, or a copy of it pinned earlier)."""
    replies = []
    for request in requests:
        statement = request.statements[0]
        if statement.sql == GET:
            replies.append(value_reply(request, data.get(statement.params[0], 0)))
        else:
            replies.append(Reply(request.client_id, request.request_id, (),
                                 ErrorInfo("ProgrammingError", "not a read")))
    return tuple(replies)


def _digest(value) -> bytes:
    return xxhash.xxh3_128_digest(pack(value))


class FakeStore:
    """One node's durable state machine.  Plain data; the node decides when to call what."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.replies: dict[str, tuple[int, Reply]] = {}
        self.committed_seq = 0
        # (seq, {entry: old value}) per uncommitted execution, in execution order.  An entry is
        # ("kv", key) or ("reply", client_id).
        self._undo: list[tuple[int, dict]] = []

    # --- inspection ---

    def root(self) -> bytes:
        return _digest([
            [[key, self.data[key]] for key in sorted(self.data)],
            [[client, self.replies[client][0], encode_reply(self.replies[client][1])]
             for client in sorted(self.replies)],
        ])

    @property
    def uncommitted_seqs(self) -> list[int]:
        return [seq for seq, _ in self._undo]

    @property
    def last_seq(self) -> int:
        """The highest seq this store holds the effects of (committed or not)."""
        return max([self.committed_seq] + self.uncommitted_seqs)

    # --- execution ---

    def execute(self, batch: Batch, *, corrupt: tuple[int, int] | None = None,
                applied: list | None = None) -> tuple[bytes, tuple[Reply, ...], bool]:
        """Run every request of the batch in order; returns (token, replies, corrupted).

        corrupt = (position, offset): the first write at or after `position` that really runs
        adds `offset` too much, as a wrongly mixed parallel execution might.  `applied`, if
        given, receives the (client_id, request_id) of each request that really ran (not
        answered from the reply cache).
        """
        undo: dict = {}
        replies = []
        corrupted = False
        for position, request in enumerate(batch.requests):
            extra = 0
            if corrupt is not None and not corrupted and position >= corrupt[0]:
                extra = corrupt[1]
            reply, ran = self._run_write(request, batch.timestamp_ms, undo, extra)
            corrupted |= ran and extra != 0
            if ran and applied is not None:
                applied.append((request.client_id, request.request_id))
            replies.append(reply)
        self._undo.append((batch.seq, undo))
        replies = tuple(replies)
        return token(batch, self.root(), replies), replies, corrupted

    def _run_write(self, request: Request, timestamp_ms: int, undo: dict, extra: int) -> tuple[Reply, bool]:
        cached = self.replies.get(request.client_id)
        if cached is not None and cached[0] == request.request_id:
            return cached[1], False
        if cached is not None and cached[0] > request.request_id:
            return Reply(request.client_id, request.request_id, (), ErrorInfo(
                "ProgrammingError", f"request {request.request_id} is older than request {cached[0]}")), False
        statement = request.statements[0]
        if statement.sql == ADD and len(request.statements) == 1:
            key, amount = statement.params
            self._set(undo, ("kv", key), self.data.get(key, 0) + amount + extra)
            reply = value_reply(request, self.data[key], timestamp_ms)
            ran = True
        else:
            reply = Reply(request.client_id, request.request_id, (),
                          ErrorInfo("ProgrammingError", f"unknown command {statement.sql!r}"))
            ran = False
        self._set(undo, ("reply", request.client_id), (request.request_id, reply))
        return reply, ran

    def _set(self, undo: dict, entry: tuple[str, str], value) -> None:
        table = self.data if entry[0] == "kv" else self.replies
        if entry not in undo:
            undo[entry] = table.get(entry[1], _ABSENT)
        table[entry[1]] = value

    def changeset(self, seq: int) -> bytes:
        """What the uncommitted execution of `seq` changed: every entry's value after it."""
        undo = next(undo for entry_seq, undo in reversed(self._undo) if entry_seq == seq)
        changes = []
        for kind, name in undo:
            if kind == "kv":
                changes.append(["kv", name, self.data[name]])
            else:
                request_id, reply = self.replies[name]
                changes.append(["reply", name, request_id, reply_to_plain(reply)])
        return pack(changes)

    def apply(self, seq: int, changesets) -> bytes:
        """Write what another store's execution of `seq` changed, undoably; returns the root."""
        undo: dict = {}
        for changeset in changesets:
            for change in unpack(changeset):
                if change[0] == "kv":
                    self._set(undo, ("kv", change[1]), change[2])
                else:
                    self._set(undo, ("reply", change[1]), (change[2], reply_from_plain(change[3])))
        self._undo.append((seq, undo))
        return self.root()

    def read(self, requests) -> tuple[Reply, ...]:
        """Read-only requests on the current state (outside any batch; not replicated)."""
        return read_from(self.data, requests)

    # --- verification outcomes ---

    def rollback(self, seq: int) -> None:
        """Undo every uncommitted execution with a seq >= `seq`, newest first."""
        keep = []
        for entry_seq, undo in reversed(self._undo):
            if entry_seq < seq:
                keep.append((entry_seq, undo))
                continue
            for entry, old in undo.items():
                table = self.data if entry[0] == "kv" else self.replies
                if old is _ABSENT:
                    table.pop(entry[1], None)
                else:
                    table[entry[1]] = old
        self._undo = list(reversed(keep))

    def commit(self, seq: int) -> None:
        self._undo = [(s, undo) for s, undo in self._undo if s > seq]
        self.committed_seq = max(self.committed_seq, seq)

    def recover(self) -> None:
        """A restart after a crash: everything uncommitted is undone."""
        self.rollback(-1)

    # --- state transfer ---

    def snapshot_pages(self) -> tuple[tuple[str, int, tuple[tuple, ...]], ...]:
        """The whole state as StateData pages: one pseudo-page per pseudo-table."""
        return (
            (KV_TABLE, 0, tuple((key, self.data[key]) for key in sorted(self.data))),
            (REPLIES_TABLE, 0, tuple((client, self.replies[client][0], self.replies[client][1])
                                     for client in sorted(self.replies))),
        )

    def install(self, pages, committed_seq: int) -> None:
        self.data, self.replies = {}, {}
        for table, _page, rows in pages:
            for row in rows:
                if table == KV_TABLE:
                    self.data[row[0]] = row[1]
                else:
                    self.replies[row[0]] = (row[1], row[2])
        self._undo = []
        self.committed_seq = committed_seq


def token(batch: Batch, root: bytes, replies: tuple[Reply, ...]) -> bytes:
    return _digest([batch.seq, batch.view, root, [encode_reply(reply) for reply in replies]])
