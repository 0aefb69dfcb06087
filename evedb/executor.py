"""Running a batch's parallel batches on workers, each owning one SQLite connection.

One interface, two implementations:
- `InlineExecutor`: one worker in this process, the parallel batches one after another.  It
  is sequential re-execution after a divergence, the "traditional state machine
  replication" baseline, and the executor of deterministic tests.
- `ProcessExecutor`: a pool of worker processes (threads lose to the GIL on small
  transactions; processes scale).  Work is handed over one message per worker per parallel
  batch; parallel batches of a batch run one after another with a barrier between them.
  The reads of a parallel batch are split by estimated cost (longest first, each to the least
  loaded worker), the estimates being moving averages of what workers measured per request
  shape (`RequestCosts`), so one message per worker still gives every worker about as much
  work.  With a local worker (the default), this process is one of the workers: it runs the
  writes, and the pool has one process fewer; a parallel batch then has one runner per core.
  The reads of the first parallel batch (nearly every read: the engine's execution order
  puts reads first) are then self-scheduled (`_run_claiming`): one list, longest estimated
  first, that the pool and this process take from one at a time through a shared counter,
  so all finish within about one read of each other whatever the estimates.  They read the
  state before the batch, so no barrier holds them: the pool reads on while this process
  runs the later parallel batches, whose commits wait only until every pool worker holds
  its read snapshot (a WAL reader keeps its snapshot until its transaction ends).

How a worker runs its share of a parallel batch (a "share" is the requests one worker gets):
1. the batch timestamp is fixed for SQLite's clock and random() is reseeded per request;
2. one outer SQLite transaction (`BEGIN IMMEDIATE` when the share may write: SQLite has one
   writer per file, so taking the lock up front avoids a stale read snapshot trying to write);
3. a savepoint per request, so a failing request aborts alone and its error is its reply;
4. a session records the share's changes; before COMMIT the worker turns them into Merkle page
   deltas (from the changeset alone: see merkle.py) and stores the inverted changeset in `_evedb_undo` in the
   same transaction, so the undo record is durable exactly when the changes are.

Rules kept: requests of one share run in ascending position order; all writes of a parallel
batch go to one worker (they would serialize on the file lock anyway), by default the
coordinator's own in-process worker (`local_writer`) while the read shares run in the pool; a
worker never has more than one message unanswered (two could deadlock on full pipes); a dead
worker is replaced and reported as `WorkerDied` so the caller can roll the batch back and
re-run it.

Parallel writers (opt-in, `serve --parallel-writers`): the writes of a parallel batch are
dealt round-robin to several writer shares, one per worker.  Each takes `BEGIN IMMEDIATE`
and they serialize on SQLite's write lock (waiting through the busy timeout) in an order
that depends on timing: a real source of nondeterminism, which is what execute-verify must
mask when the mixer is wrong.  It stays correct because each writer share is its own SQLite
transaction with its own undo record, committed under the write lock, so undo ids follow
commit order and undoing them newest-first restores the state; page deltas are sums (order
free); and no writer share may be `final` (the batch is several transactions).
`reverse_writer_dispatch` hands writer shares out last-first, and `writer_stagger_ms` makes
the k-th writer share handed out wait k times that long before it asks for the lock, so the
lock order mostly follows the dispatch order: a replica given the opposite dispatch order of
its peer then rarely takes the same wrong order (schedule diversity; bench/race_masking).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Sequence

import apsw

from . import codec, merkle, procedures, storage
from .errors import Error, InternalError, OperationalError, ProgrammingError, error_info
from .messages import Batch, Column, ErrorInfo, Reply, Request, RequestKind, StatementResult

_DML_KEYWORDS = frozenset({"insert", "update", "delete", "replace"})
_INSERT_KEYWORDS = frozenset({"insert", "replace"})
_DDL_KEYWORDS = frozenset({"create", "drop", "alter"})


class WorkerDied(Exception):
    """A worker process exited while it held part of a batch; the batch must be re-run."""


@dataclass(slots=True)
class ShareResult:
    """What one worker returns for its share of a parallel batch."""

    replies: list[tuple[int, Reply]]
    page_deltas: dict = field(default_factory=dict)
    changeset: bytes = b""
    undo_id: int = 0
    schema_changed: bool = False
    committed: bool = False
    hash_seconds: float = 0.0
    request_seconds: list[float] = field(default_factory=list)  # per reply, in the same order


class _MultipleStatements(Exception):
    pass


_SNAPSHOT_READ = "SELECT 1 FROM sqlite_schema LIMIT 1"


class ReadsTooLong(Exception):
    """A group of reads given a deadline (`Worker.run_reads`) was interrupted: run it elsewhere."""


# SQLite virtual-machine steps between two looks at a read group's deadline: a point read
# takes a few dozen, a millisecond several thousand.
_PROGRESS_STEPS = 1000


class _ShareReplies:
    """The reply cache as one writer share sees it: read once up front, stored once at the end.

    Each client's last request id (and reply) lives in REPLIES_TABLE, so that a retried write
    is answered from it and never runs twice.  Per request that was a SELECT before and an
    INSERT after; here one SELECT covers the share's clients and one executemany stores its
    replies, before the share's changeset is taken (so they are part of the batch's changes,
    as before).  A client's second request in the same share sees the first's reply.
    """

    _LAST = (f"SELECT client_id, request_id FROM {storage.REPLIES_TABLE} "
             "WHERE client_id IN (SELECT value FROM json_each(?))")
    _REPLY = f"SELECT reply FROM {storage.REPLIES_TABLE} WHERE client_id = ?"
    _STORE = f"INSERT OR REPLACE INTO {storage.REPLIES_TABLE}(client_id, request_id, reply) VALUES (?, ?, ?)"

    def __init__(self, worker: "Worker", requests: Sequence[Request]):
        self._worker = worker
        clients = sorted({request.client_id for request in requests})
        self._last: dict[str, int] = dict(worker._internal(self._LAST, (json.dumps(clients),)))
        self._pending: dict[str, tuple[int, bytes]] = {}

    def answer(self, request: Request) -> Reply | None:
        """The stored reply if this request already ran (a retry), an error if it is older."""
        last_request_id = self._last.get(request.client_id)
        if last_request_id is None or last_request_id < request.request_id:
            return None
        if last_request_id > request.request_id:
            return Reply(request.client_id, request.request_id, (), ErrorInfo(
                "ProgrammingError",
                f"request {request.request_id} is older than request {last_request_id} already "
                "answered for this client: request ids must grow",
            ))
        pending = self._pending.get(request.client_id)
        if pending is not None:
            encoded = pending[1]
        else:
            encoded = self._worker._internal(self._REPLY, (request.client_id,))[0][0]
        return codec.reply_from_bytes(encoded)

    def record(self, request: Request, reply: Reply) -> None:
        self._last[request.client_id] = request.request_id
        self._pending[request.client_id] = (request.request_id, codec.encode_reply(reply))

    def store(self) -> None:
        if self._pending:
            self._worker._internal_many(
                self._STORE,
                [(client_id, request_id, reply) for client_id, (request_id, reply) in self._pending.items()])


class Worker:
    """One SQLite connection that runs shares.  Used in-process or inside a worker process."""

    def __init__(self, path: str, options: storage.StorageOptions, procedure_modules: Sequence[str] = ()):
        procedures.load_modules(procedure_modules)
        self.connection, self.authorizer, self.entropy = storage.open_client_connection(path, options)
        self.reply_cache = options.reply_cache
        self._rowid_alias: dict[str, bool] = {}
        self._shapes_checked = False
        self._current_seq = 0
        self._shape_version = -1

    def close(self) -> None:
        self.connection.close()

    # --- internal SQL: cached under a secret tag, so never reused for a client (storage.py) ---

    def _internal(self, sql: str, bindings=None):
        # authorizer.internal() spelt out: this runs several times per request.
        authorizer = self.authorizer
        authorizer.internal_depth += 1
        try:
            return self.connection.execute(storage.INTERNAL_TAG + sql, bindings).fetchall()
        finally:
            authorizer.internal_depth -= 1

    def _internal_many(self, sql: str, rows) -> None:
        authorizer = self.authorizer
        authorizer.internal_depth += 1
        try:
            self.connection.executemany(storage.INTERNAL_TAG + sql, rows)
        finally:
            authorizer.internal_depth -= 1

    def record_commit(self, seq: int, committed_seq: int) -> None:
        """Batches up to `seq` are verified: drop their undo records and record `committed_seq`,
        in one transaction on this connection.  The engine commits here, on the connection that
        writes the shares, because a commit by another connection empties a connection's whole
        page cache; this way one connection (the one the read path uses in process) stays warm."""
        self._internal("BEGIN IMMEDIATE")
        try:
            self._internal(f"DELETE FROM {storage.INTERNAL_PREFIX}undo WHERE seq <= ?", (seq,))
            self._internal(storage.META_UPSERT, ("committed_seq", committed_seq))
            self._internal("COMMIT")
        except BaseException:
            if not self.connection.get_autocommit():
                self._internal("ROLLBACK")
            raise

    # --- a share ---

    def run_share(self, seq: int, timestamp_ms: int, seed: int, items, writes: bool, final: bool = False,
                  reads: frozenset = frozenset(), snapshot_taken=None) -> ShareResult:
        """Run a share in one SQLite transaction.

        final: this share is the whole batch and the batch commits as soon as it has run (no
        verification pending), so instead of an undo record the transaction itself records
        the batch as committed: one write transaction per batch instead of two.
        reads: positions of read-only requests in a share that writes (sequential execution
        runs reads and writes in one share): their replies stay out of the reply cache, as
        they do when a parallel execution runs them in a read share.
        snapshot_taken: a shared counter (multiprocessing.Value) this read share increments
        once its read transaction holds its snapshot, before running anything: the
        coordinator commits no later parallel batch before that (ProcessExecutor._claim).
        """
        storage.set_batch_timestamp(timestamp_ms)
        try:
            return self._run_share(seq, timestamp_ms, seed, items, writes, final, reads, snapshot_taken)
        finally:
            storage.set_batch_timestamp(None)

    def _run_share(self, seq, timestamp_ms, seed, items, writes, final, reads=frozenset(),
                   snapshot_taken=None) -> ShareResult:
        self._shapes_checked = False
        self._current_seq = seq
        self._internal("BEGIN IMMEDIATE" if writes else "BEGIN")
        if snapshot_taken is not None:
            try:
                # A deferred transaction takes its snapshot at its first read: take it now.
                self._internal(_SNAPSHOT_READ)
            except BaseException:
                self._internal("ROLLBACK")
                raise
            with snapshot_taken.get_lock():
                snapshot_taken.value += 1
        session = None
        try:
            if writes:
                session = apsw.Session(self.connection, "main")
                session.table_filter(storage.is_replicated_table)
                session.attach()
            replies = []
            request_seconds = []
            schema_changed = False
            clock = time.perf_counter
            # Only a share that writes is part of a replicated batch; a read share (the
            # primary's read path, or reads inside a batch) leaves the reply cache alone.
            cache = _ShareReplies(self, [request for _, request in items]) if self.reply_cache and writes else None
            for position, request in items:
                started = clock()
                reply, changed_schema = self._run_request(request, timestamp_ms, seed, position, writes,
                                                          None if position in reads else cache)
                request_seconds.append(clock() - started)
                replies.append((position, reply))
                if changed_schema:
                    schema_changed = True
                    self._shapes_checked = False
            if cache is not None:
                cache.store()
            result = ShareResult(replies, schema_changed=schema_changed, request_seconds=request_seconds)
            if session is not None:
                # The session reads the schema with its own SQL: not a client statement.
                with self.authorizer.internal():
                    changeset = session.changeset()
                session.close()
                session = None
                if changeset:
                    result.changeset = changeset
                    with self.authorizer.internal():
                        hashing_started = time.perf_counter()
                        result.page_deltas = self.page_deltas(changeset)
                        result.hash_seconds = time.perf_counter() - hashing_started
                        if final:
                            storage.write_meta(self.connection, "committed_seq", seq)
                            result.committed = True
                        else:
                            self.connection.execute(
                                f"{storage.INTERNAL_TAG}INSERT INTO {storage.INTERNAL_PREFIX}undo(seq, changeset) "
                                "VALUES (?, ?)",
                                (seq, apsw.Changeset.invert(changeset)),
                            )
                            result.undo_id = self.connection.last_insert_rowid()
            # A read share changes nothing that may last: rolling it back also undoes whatever a
            # procedure wrongly classified as read-only tried to write.
            self._internal("COMMIT" if writes else "ROLLBACK")
            return result
        except BaseException:
            if session is not None:
                session.close()
            if not self.connection.get_autocommit():
                self._internal("ROLLBACK")
            raise

    def run_reads(self, requests: Sequence[Request], timestamp_ms: int, seed: int = 0,
                  deadline: float | None = None, in_open_transaction: bool = False) -> list[Reply]:
        """Read-only requests outside any batch, in one read transaction rolled back at the end:
        what `run_share` does for a read share, without its bookkeeping (share results, merge,
        per-request timing), which cost about as much as a point read.

        `deadline` (a `time.perf_counter()` value): SQLite is interrupted once it passes, and
        ReadsTooLong raised, so that a caller that must not be held long (the event loop) can
        hand the group to a thread that may be; nothing has changed, the group can run again.

        `in_open_transaction`: run inside the read transaction the caller holds open (a pinned
        snapshot, runtime/committed_reads.py), and leave it open."""
        interrupted = False
        if deadline is not None:
            def past_deadline() -> bool:
                nonlocal interrupted
                interrupted = interrupted or time.perf_counter() > deadline
                return interrupted

            self.connection.set_progress_handler(past_deadline, _PROGRESS_STEPS)
        storage.set_batch_timestamp(timestamp_ms)
        self._shapes_checked = False
        self._current_seq = 0
        try:
            if not in_open_transaction:
                self._internal("BEGIN")
            # A request's failure is its reply, an interrupted one too: look at the flag after.
            replies = [self._run_request(request, timestamp_ms, seed, position, writes=False)[0]
                       for position, request in enumerate(requests)]
            if interrupted:
                raise ReadsTooLong(f"{len(requests)} read(s) ran past their deadline: interrupted")
            return replies
        finally:
            try:
                if not in_open_transaction and not self.connection.get_autocommit():
                    self._internal("ROLLBACK")
            finally:
                storage.set_batch_timestamp(None)
                if deadline is not None:
                    self.connection.set_progress_handler(None)

    def _run_request(self, request: Request, timestamp_ms: int, seed: int, position: int, writes: bool = True,
                     cache: "_ShareReplies | None" = None):
        """The request's reply, with its canonical bytes (encoded now, while the batch's other
        requests may still be running elsewhere: the token's reply hash and the client's frame
        need them after), and whether it changed the schema."""
        self.entropy.reseed(seed, position)
        if not writes and request.kind is not RequestKind.PROCEDURE:
            return codec.with_encoding(self._run_read_only(request)), False
        if cache is not None:
            cached = cache.answer(request)
            if cached is not None:
                return codec.with_encoding(cached), False
        reply, schema_changed = self._run_in_savepoint(request, timestamp_ms, seed, position)
        reply = codec.with_encoding(reply)
        if cache is not None:
            cache.record(request, reply)
        return reply, schema_changed

    def _run_in_savepoint(self, request: Request, timestamp_ms: int, seed: int, position: int):
        self._internal("SAVEPOINT evedb_request")
        schema_changed = False
        try:
            results = []
            if request.kind is RequestKind.PROCEDURE:
                results.append(self._run_procedure(request, timestamp_ms, seed, position))
            else:
                for statement in request.statements:
                    results.append(self.run_statement(statement.sql, statement.params))
                    if storage.first_keyword(statement.sql) in _DDL_KEYWORDS:
                        schema_changed = True
            if schema_changed:
                with self.authorizer.internal():
                    missing = storage.tables_without_primary_key(self.connection)
                    ambiguous = [] if missing else storage.ambiguous_keys(self.connection)
                if missing:
                    raise ProgrammingError(
                        f"table {missing[0]} has no PRIMARY KEY: evedb needs one on every table "
                        "to record, undo and hash its rows"
                    )
                if ambiguous:
                    raise ProgrammingError(ambiguous[0])
            self._internal("RELEASE evedb_request")
            return Reply(request.client_id, request.request_id, tuple(results)), schema_changed
        except Exception as error:  # the request's own failure is its reply
            if storage.is_storage_failure(error):
                raise  # a full or failing disk is the node's failure, never a reply (fail-stop)
            self._internal("ROLLBACK TO evedb_request")
            self._internal("RELEASE evedb_request")
            return Reply(request.client_id, request.request_id, (), error_info(error)), False

    def _run_read_only(self, request: Request) -> Reply:
        # In a share without writes the access analysis found nothing that can write, so there
        # is nothing to undo: no savepoint (it costs more than a point read).
        changes_before = self.connection.total_changes()
        try:
            results = tuple(self.run_statement(s.sql, s.params) for s in request.statements)
            reply = Reply(request.client_id, request.request_id, results)
        except Exception as error:
            reply = Reply(request.client_id, request.request_id, (), error_info(error))
        if self.connection.total_changes() != changes_before:
            # Raising out of the share rolls its transaction back: no unrecorded write survives.
            raise InternalError(f"request {request.request_id} was analyzed as read-only but wrote")
        return reply

    def _run_procedure(self, request: Request, timestamp_ms: int, seed: int, position: int):
        function = procedures.lookup(request.procedure or "")
        if function is None:
            raise ProgrammingError(f"no procedure named {request.procedure!r} is registered on the server")
        context = procedures.ProcedureContext(self.run_statement, timestamp_ms, seed, position, self._current_seq)
        try:
            value = function(context, *request.args)
        except (apsw.Error, Error):
            raise
        except Exception as error:
            raise ProgrammingError(
                f"procedure {request.procedure} raised {type(error).__name__}: {error}"
            ) from error
        return _procedure_result(value)

    def run_statement(self, sql: str, params) -> StatementResult:
        """Run one client statement under the authorizer and collect its full result."""
        refusal = storage.refusal_for_keyword(sql)
        if refusal is not None:
            raise refusal[0](refusal[1])
        self.authorizer.begin_statement()
        cursor = self.connection.cursor()
        seen = []

        def trace(_cursor, _sql, _bindings):
            if seen:
                raise _MultipleStatements()
            seen.append(_cursor.get_description())
            return True

        cursor.exec_trace = trace
        keyword = storage.first_keyword(sql)
        total_before = self.connection.total_changes()
        try:
            rows = tuple(cursor.execute(sql, params).fetchall())
        except _MultipleStatements:
            raise ProgrammingError(
                "only one statement may be executed at a time; send several as a script "
                "(conn.transaction() or executemany())"
            ) from None
        except apsw.Error as error:
            if self.authorizer.refusal is not None:
                kind, message = self.authorizer.refusal
                raise kind(message) from None
            raise error
        description = seen[0] if seen else ()
        columns = tuple(Column(name, decltype) for name, decltype in description)
        changed = self.connection.total_changes() != total_before
        is_dml = keyword in _DML_KEYWORDS or (keyword == "with" and changed)
        if is_dml:
            rowcount = self.connection.changes() if changed else 0
        else:
            rowcount = len(rows) if columns else -1
        lastrowid = None
        if changed and (keyword in _INSERT_KEYWORDS or keyword == "with"):
            target = storage.insert_target(sql)
            if target is not None and self._rowid_is_key(target):
                lastrowid = self.connection.last_insert_rowid()
        return StatementResult(columns, rows, rowcount, lastrowid)

    def _rowid_is_key(self, table: str) -> bool:
        self._refresh_shapes()
        known = self._rowid_alias.get(table)
        if known is None:
            with self.authorizer.internal():
                known = self._rowid_alias[table] = storage.is_rowid_alias_table(self.connection, table)
        return known

    def _refresh_shapes(self) -> None:
        # The schema can only change between shares or through a DDL request, so its version
        # is read once per share and after DDL, not once per changed row.
        if self._shapes_checked:
            return
        with self.authorizer.internal():
            version = storage.schema_version(self.connection)
        if version != self._shape_version:
            self._rowid_alias.clear()
            self._shape_version = version
        self._shapes_checked = True

    # --- changes to Merkle deltas ---

    def page_deltas(self, changeset: bytes) -> dict:
        """Merkle page deltas of a changeset: {(table, page): sum of cell hashes in minus out}.

        The changeset alone is enough (merkle.py hashes cells, and an UPDATE's change holds
        its key and its changed columns' old and new values), so nothing is read.  Per changed
        row this is the hot part of a write batch's token: evedb/_tokenhash.c does it when built.
        """
        native = merkle.native
        if native is None:
            return self.page_deltas_python(changeset)
        return native.changeset_deltas(changeset)

    @staticmethod
    def page_deltas_python(changeset: bytes) -> dict:
        """`page_deltas` in Python only: the fallback, and the reference the C path is tested
        against.  One page lookup and one dict update per changed row, whatever the operation
        (an UPDATE's old and new row share a key, hence a page: SQLite records a change of key
        as a DELETE and an INSERT)."""
        deltas: dict = {}
        get = deltas.get
        row_hash, page_of, modulus = merkle.row_hash_python, merkle.page_of, merkle.HASH_MODULUS
        no_change = apsw.no_change
        key_indexes: dict[str, tuple[int, ...]] = {}
        for change in apsw.Changeset.iter(changeset):
            table = change.name
            indexes = key_indexes.get(table)
            if indexes is None:
                indexes = key_indexes[table] = tuple(sorted(change.pk_columns))
            operation = change.op
            if operation == "INSERT":
                row = change.new
                key = tuple([row[i] for i in indexes])
                delta = row_hash(table, key, row)
            elif operation == "DELETE":
                row = change.old
                key = tuple([row[i] for i in indexes])
                delta = -row_hash(table, key, row)
            else:
                old = change.old
                key = tuple([old[i] for i in indexes])
                delta = merkle.update_delta(table, key, old, change.new, no_change)
            page = (table, page_of(key))
            deltas[page] = (get(page, 0) + delta) % modulus
        return deltas


def _procedure_result(value) -> StatementResult:
    if value is None:
        return StatementResult()
    if isinstance(value, procedures.ProcedureCursor):
        return StatementResult(tuple(value.columns), tuple(value.rows), len(value.rows), None)
    if isinstance(value, (list, tuple)) and all(isinstance(row, (list, tuple)) for row in value):
        rows = tuple(tuple(row) for row in value)
        width = len(rows[0]) if rows else 0
        columns = tuple(Column(f"column{i + 1}") for i in range(width))
        return StatementResult(columns, rows, len(rows), None)
    return StatementResult((Column("column1"),), ((value,),), 1, None)


# --- Executors -----------------------------------------------------------------------------


@dataclass(slots=True)
class PlanResult:
    """A batch's execution on one replica, before verification."""

    replies: list[Reply]
    page_deltas: dict
    changesets: list[bytes]
    schema_changed: bool
    committed: bool = False
    hash_seconds: float = 0.0
    # Each request's execution time where it ran (by position): for benchmarks and estimates.
    request_seconds: dict[int, float] = field(default_factory=dict)
    # The first parallel batch's reads ran in the pool beside the later parallel batches, on a
    # snapshot taken before those committed (ProcessExecutor._run_claiming).
    overlapped: bool = False


def _merge_shares(batch_size: int, shares: list[ShareResult], into: PlanResult) -> None:
    for share in sorted(shares, key=lambda s: s.undo_id):
        for position, reply in share.replies:
            into.replies[position] = reply
        for (position, _), seconds in zip(share.replies, share.request_seconds):
            into.request_seconds[position] = seconds
        merkle.merge_deltas(into.page_deltas, share.page_deltas)
        if share.changeset:
            into.changesets.append(share.changeset)
        into.schema_changed |= share.schema_changed
        into.committed |= share.committed
        into.hash_seconds += share.hash_seconds


# A read estimated under this is cheap: it may stay in this process (the node's read path
# uses the same bound: engine.LOCAL_READ_MAX_US).
LOCAL_READ_MAX_SECONDS = 150e-6
# Reads worth one more worker taking from a self-scheduled list: a worker's share costs it a
# message each way, a transaction and a wake-up, some tens of microseconds.
CLAIM_SECONDS_PER_WORKER = 300e-6
# How long this process waits between looks at whether every engaged worker has its
# snapshot (almost always it has: this process claimed reads meanwhile).
SNAPSHOT_POLL_SECONDS = 50e-6


def moving_average(average: float | None, value: float, weight: float = 0.2) -> float:
    """An exponentially weighted moving average; the first value starts it."""
    return value if average is None else average + weight * (value - average)


class RequestCosts:
    """Estimated execution time of a request, by shape: a moving average of worker measurements.

    The shape is the procedure's name or the request's SQL text (parameters left out: the
    same statement costs about the same).  A shape never seen is estimated at the average of
    everything seen so far.  The table is bounded: past `max_shapes` it starts again, which
    costs one batch or so of rougher splits.
    """

    def __init__(self, max_shapes: int = 4096, weight: float = 0.2):
        self.max_shapes = max_shapes
        self.weight = weight
        self._by_shape: dict = {}
        self._overall: float | None = None

    @staticmethod
    def shape(request: Request):
        if request.kind is RequestKind.PROCEDURE:
            return ("procedure", request.procedure)
        if len(request.statements) == 1:
            return request.statements[0].sql
        return tuple(statement.sql for statement in request.statements)

    def estimate(self, request: Request) -> float:
        known = self._by_shape.get(self.shape(request))
        if known is not None:
            return known
        return self._overall if self._overall is not None else 1e-4

    def observe(self, request: Request, seconds: float) -> None:
        key = self.shape(request)
        known = self._by_shape.get(key)
        if known is None and len(self._by_shape) >= self.max_shapes:
            self._by_shape.clear()
        self._by_shape[key] = moving_average(known, seconds, self.weight)
        self._overall = moving_average(self._overall, seconds, 0.05)


def split_reads(read_positions: Sequence[int], estimates: Sequence[float], loads: list[float]) -> list[list[int]]:
    """Deal reads to workers, longest estimated first, each to the least loaded worker (LPT).

    `estimates[i]` is read_positions[i]'s estimated cost; `loads` holds each worker's work
    already given (its estimated write share) and is updated.  Returns one list of positions
    per worker, in ascending position order; ties go to the lower worker, so the split is a
    pure function of its inputs.
    """
    shares: list[list[int]] = [[] for _ in loads]
    order = sorted(range(len(read_positions)), key=lambda i: (-estimates[i], read_positions[i]))
    for i in order:
        slot = min(range(len(loads)), key=loads.__getitem__)
        loads[slot] += estimates[i]
        shares[slot].append(read_positions[i])
    for share in shares:
        share.sort()
    return shares


def split_writers(write_positions: Sequence[int], workers: int) -> list[list[int]]:
    """Parallel writers: deal the writes round-robin into at most `workers` writer shares.

    Round-robin rather than contiguous runs, so neighbouring requests (the likeliest to
    conflict when the mixer errs) land in different shares.
    """
    count = max(1, min(workers, len(write_positions)))
    return [list(write_positions[i::count]) for i in range(count)] if write_positions else []


class InlineExecutor:
    """One worker in this process: the parallel batches one after another, in order."""

    workers = 1

    def __init__(self, path: str, options: storage.StorageOptions, procedure_modules: Sequence[str] = ()):
        self._worker = Worker(path, options, procedure_modules)

    def run(self, batch: Batch, plan: Sequence[Sequence[int]], writes: Sequence[bool], final: bool = False,
            overlap: bool = True) -> PlanResult:
        result = PlanResult([None] * len(batch.requests), {}, [], False)
        for positions in plan:
            items = [(p, batch.requests[p]) for p in positions]
            share = self._worker.run_share(
                batch.seq, batch.timestamp_ms, batch.seed, items, any(writes[p] for p in positions),
                final and len(plan) == 1, frozenset(p for p in positions if not writes[p]),
            )
            _merge_shares(len(batch.requests), [share], result)
        return result

    def run_reads(self, requests: Sequence[Request], timestamp_ms: int, deadline: float | None = None) -> list[Reply]:
        return self._worker.run_reads(requests, timestamp_ms, deadline=deadline)

    def close(self) -> None:
        self._worker.close()


def claim_next(claims, count: int, left=None, reserve: float = 0.0) -> int | None:
    """The next index of a list `count` long that no other process has taken, or None.

    `claims` is a shared counter (multiprocessing.Value): whoever is free takes the next
    request, so the processes finish together whatever the estimates said (self-scheduling).
    With `left` (left[i]: the estimated work of items i and after) and a `reserve` of work
    the caller still has to do alone after its claims, it takes nothing once what is left is
    within the reserve: the others finish that while the caller does its own."""
    with claims.get_lock():
        index = claims.value
        if index >= count or (reserve > 0 and left[index] <= reserve):
            return None
        claims.value = index + 1
    return index


def _worker_main(connection, path: str, options: storage.StorageOptions, procedure_modules, claims=None,
                 snapshots=None) -> None:
    """Entry point of a worker process: run shares until told to stop."""
    worker = Worker(path, options, procedure_modules)
    connection.send_bytes(codec.pack(["ready", os.getpid()]))

    def claimed(items):
        while (index := claim_next(claims, len(items))) is not None:
            position, plain = items[index]
            yield position, codec.request_from_plain(plain)

    while True:
        try:
            message = codec.unpack(connection.recv_bytes())
        except EOFError:
            break
        if message[0] == "stop":
            break
        if message[0] == "claim":  # reads taken one at a time from a list shared with others
            _, seq, timestamp_ms, seed, items = message
            writes, final, start_delay_ms = False, False, 0
        else:
            _, seq, timestamp_ms, seed, items, writes, final, start_delay_ms = message
        try:
            if start_delay_ms:
                time.sleep(start_delay_ms / 1000)
            if message[0] == "claim":
                items = claimed(items)
            else:
                items = [(position, codec.request_from_plain(plain)) for position, plain in items]
            share = worker.run_share(seq, timestamp_ms, seed, items, writes, final,
                                     snapshot_taken=snapshots if message[0] == "claim" else None)
            answer = [
                "done",
                # Each reply as its ids and canonical bytes: the coordinator keeps the bytes for
                # the token's reply hash and the client's frame, and decodes them only if asked
                # (codec.EncodedReply).
                [[position, reply.client_id, reply.request_id, codec.encode_reply(reply)]
                 for position, reply in share.replies],
                [[table, page, delta.to_bytes(16, "little")] for (table, page), delta in share.page_deltas.items()],
                share.changeset,
                share.undo_id,
                share.schema_changed,
                share.committed,
                share.hash_seconds,
                share.request_seconds,
            ]
        except Exception:
            answer = ["failed", traceback.format_exc()]
        connection.send_bytes(codec.pack(answer))
    worker.close()


class _WorkerProcess:
    def __init__(self, context, path, options, procedure_modules, claims=None, snapshots=None):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child_end, path, options, list(procedure_modules), claims, snapshots),
            daemon=True,
        )
        self.process.start()
        child_end.close()
        ready = self._receive()
        if ready[0] != "ready":
            raise InternalError(f"worker failed to start: {ready}")
        self.pid = ready[1]

    def _receive(self):
        ready = multiprocessing.connection.wait([self.connection, self.process.sentinel])
        if self.connection in ready:
            try:
                return codec.unpack(self.connection.recv_bytes())
            except (EOFError, OSError):
                pass
        raise WorkerDied(f"worker process {self.process.pid} exited (code {self.process.exitcode})")

    def send(self, message) -> None:
        try:
            self.connection.send_bytes(codec.pack(message))
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"worker process {self.process.pid} is gone") from None

    def receive(self):
        return self._receive()

    def stop(self) -> None:
        try:
            self.connection.send_bytes(codec.pack(["stop"]))
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class _PlainRequests:
    """A batch's requests in their message form, each encoded on first use: most of a
    batch (its writes, the reads this process keeps) never leaves this process."""

    __slots__ = ("_requests", "_plain")

    def __init__(self, requests: Sequence[Request]):
        self._requests = requests
        self._plain: dict[int, list] = {}

    def __getitem__(self, position: int) -> list:
        plain = self._plain.get(position)
        if plain is None:
            plain = self._plain[position] = codec.request_to_plain(self._requests[position])
        return plain


def _share_from_answer(answer) -> ShareResult:
    _, replies, deltas, changeset, undo_id, schema_changed, committed, hash_seconds, request_seconds = answer
    return ShareResult(
        [(position, codec.EncodedReply(client_id, request_id, encoded))
         for position, client_id, request_id, encoded in replies],
        {(table, page): int.from_bytes(delta, "little") for table, page, delta in deltas},
        changeset,
        undo_id,
        schema_changed,
        committed,
        hash_seconds,
        request_seconds,
    )


class ProcessExecutor:
    """A pool of worker processes, one message per worker per parallel batch."""

    def __init__(
        self,
        path: str,
        options: storage.StorageOptions,
        workers: int,
        procedure_modules: Sequence[str] = (),
        *,
        parallel_writers: bool = False,
        reverse_writer_dispatch: bool = False,
        writer_stagger_ms: float = 0.0,
        local_writer: "Worker | None" = None,
    ):
        if workers < 1:
            raise ValueError("a process executor needs at least one worker")
        # The write share runs here, on the caller's thread, when given a worker of its own
        # (not owned: the caller closes it): no pickling of requests, replies and deltas, and
        # two process hops fewer per batch, which is most of a small batch's latency.
        self.local_writer = local_writer
        # That worker is then one of the `workers`: it also takes a share of the costly reads,
        # and the pool has one process fewer, so a parallel batch has one runner per core
        # instead of one more (evedb/DESIGN.md, "Execution").  Parallel writers spread writer
        # shares over the pool, so they keep a full one.
        self.coordinator_slot = local_writer is not None and not parallel_writers
        self.workers = workers - 1 if self.coordinator_slot else workers
        self.parallel_writers = parallel_writers
        self.reverse_writer_dispatch = reverse_writer_dispatch
        self.writer_stagger_ms = writer_stagger_ms
        # spawn, not fork: the coordinator has threads, and a forked SQLite handle is unsafe.
        self._context = multiprocessing.get_context("spawn")
        # With this process as one of the workers, reads are self-scheduled: this process and
        # the pool take them one at a time from one list, through this shared counter.
        self._claims = self._context.Value("q", 0) if self.coordinator_slot else None
        # How many of the workers given this batch's reads hold their read snapshot.
        self._snapshots = self._context.Value("q", 0) if self.coordinator_slot else None
        self._arguments = (path, options, list(procedure_modules), self._claims, self._snapshots)
        self._pool = [_WorkerProcess(self._context, *self._arguments) for _ in range(self.workers)]
        self.restarts = 0
        self.costs = RequestCosts()

    def pids(self) -> list[int]:
        return [worker.pid for worker in self._pool]

    def run(self, batch: Batch, plan: Sequence[Sequence[int]], writes: Sequence[bool], final: bool = False,
            overlap: bool = True) -> PlanResult:
        """Run `plan`'s parallel batches, in order, as if one after another.  `overlap`: the
        first parallel batch's reads may still run in the pool while later parallel batches
        commit; the engine says False for a batch holding DDL, which no undo can revert."""
        result = PlanResult([None] * len(batch.requests), {}, [], False)
        encoded = _PlainRequests(batch.requests)  # encoded when first shipped to the pool
        estimates = [self.costs.estimate(request) for request in batch.requests]

        def message(share_positions, share_writes: bool, share_final: bool, start_delay_ms: float = 0.0):
            items = [[p, encoded[p]] for p in share_positions]
            return ["share", batch.seq, batch.timestamp_ms, batch.seed, items, share_writes, share_final,
                    start_delay_ms]

        if self.coordinator_slot:
            self._run_claiming(batch, plan, writes, final, encoded, estimates, result, overlap)
            return result

        for positions in plan:
            write_positions = [p for p in positions if writes[p]]
            read_positions = [p for p in positions if not writes[p]]
            # Each worker's messages for this parallel batch, sent one at a time: a worker's
            # next message goes out when it has answered the previous one.
            queues: list[list] = [[] for _ in range(self.workers)]
            loads = [0.0] * self.workers
            first_order = list(range(self.workers))
            if self.parallel_writers and len(write_positions) > 1:
                writer_shares = split_writers(write_positions, self.workers)
                slots = list(range(len(writer_shares)))
                if self.reverse_writer_dispatch:
                    slots.reverse()
                for rank, slot in enumerate(slots):  # never final: the batch is several transactions
                    queues[slot].append(message(writer_shares[slot], True, False, rank * self.writer_stagger_ms))
                    loads[slot] += sum(estimates[p] for p in writer_shares[slot])
                first_order = slots + [slot for slot in first_order if slot not in slots]
            elif write_positions:
                queues[0].append(message(write_positions, True, final and len(plan) == 1 and not read_positions))
                loads[0] += sum(estimates[p] for p in write_positions)
            read_shares = split_reads(read_positions, [estimates[p] for p in read_positions], loads)
            for slot, share in enumerate(read_shares):
                if share:
                    queues[slot].append(message(share, False, False))
            busy: list[int] = []
            for slot in first_order:
                if queues[slot]:
                    self._call(slot, queues[slot].pop(0), busy)
            shares = self._collect(busy, queues)
            self._observe(batch, shares)
            _merge_shares(len(batch.requests), shares, result)
        return result

    def _run_here(self, batch: Batch, steps, busy: list[int], final: bool) -> list[ShareResult]:
        """Run (reads, writes) steps in this process's worker, in order, each a share.  Reads go
        first in a step: once a final write share has run, the batch is committed."""
        shares = []
        try:
            for reads, write_positions in steps:
                # `reads` may be positions claimed one at a time (a generator: always run).
                for share_positions, share_writes in ((reads, False), (write_positions, True)):
                    if share_positions:
                        items = ((p, batch.requests[p]) for p in share_positions)
                        shares.append(self.local_writer.run_share(
                            batch.seq, batch.timestamp_ms, batch.seed,
                            list(items) if isinstance(share_positions, list) else items,
                            share_writes, final and share_writes))
        except BaseException:
            # Read every answer out of the pipes before the caller undoes the batch.
            try:
                self._collect(busy, None)
            except (WorkerDied, OperationalError):
                pass
            raise
        return shares

    def _observe(self, batch: Batch, shares: list[ShareResult]) -> None:
        for share in shares:
            for (position, _), seconds in zip(share.replies, share.request_seconds):
                self.costs.observe(batch.requests[position], seconds)

    def _run_claiming(self, batch: Batch, plan, writes, final: bool, encoded, estimates,
                      result: PlanResult, overlap: bool) -> None:
        """Run `plan` with this process as one of the workers, reads self-scheduled.

        The first parallel batch's reads, longest estimated first, are one list that the pool
        and this process take from one at a time, so all finish within about one read of each
        other whatever the estimates.  Those reads see the state before the batch (nothing
        before them in the plan writes what they read), so they need not wait for anything,
        and nothing needs to wait for them either: a later parallel batch that writes what
        they read commits only once every pool worker holds its read snapshot, and this
        process runs its own share of them before writing anything they read.  So the pool
        reads on while this process runs the later parallel batches (`_claim`); no barrier.
        """
        first = plan[0]
        reads = sorted((p for p in first if not writes[p]), key=lambda p: (-estimates[p], p))
        later = [([p for p in positions if not writes[p]], [p for p in positions if writes[p]])
                 for positions in plan[1:]]
        shares, engaged = self._claim(batch, encoded, estimates, reads, [p for p in first if writes[p]], later,
                                      final=final and not later, overlap=overlap)
        result.overlapped = bool(later) and engaged > 0 and overlap
        self._observe(batch, shares)
        _merge_shares(len(batch.requests), shares, result)

    def _claim(self, batch: Batch, encoded, estimates, claimable: list[int], first_writes: list[int], later,
               final: bool, overlap: bool) -> tuple[list[ShareResult], int]:
        """Hand `claimable` (the first parallel batch's reads) to as many workers as it keeps
        busy; here, run `first_writes`, take from `claimable` too, then run `later` ((reads,
        writes) per later parallel batch, in order); every share's result, and how many
        workers took part.  `overlap`: the later parallel batches may run while the pool still
        reads (not when one holds DDL: see `run`)."""
        total = sum(estimates[p] for p in claimable)
        engaged = min(self.workers, int(total / CLAIM_SECONDS_PER_WORKER)) if len(claimable) > 1 else 0
        if not engaged:
            # Nothing worth shipping: all here, reads first, so a final write share (which
            # commits the batch) is the last thing that runs.
            return self._run_here(batch, [(claimable, first_writes)] + later, [], final), 0
        busy: list[int] = []
        self._claims.value = 0  # no worker is taking from a list now: every share was collected
        self._snapshots.value = 0
        message = ["claim", batch.seq, batch.timestamp_ms, batch.seed, [[p, encoded[p]] for p in claimable]]
        for slot in range(engaged):
            self._call(slot, message, busy)
        # The first parallel batch's writes first: the reads do not conflict with them, and
        # the pool is reading meanwhile.  Then this process takes reads until what is left is
        # about what it will run alone after them (the later parallel batches).
        reserve = sum(estimates[p] for step in later for part in step for p in part)
        left = list(itertools.accumulate((estimates[p] for p in reversed(claimable))))[::-1]
        shares = self._run_here(batch, [([], first_writes), (self._claimed_here(claimable, left, reserve), [])],
                                busy, final=False)
        if later:
            try:
                if overlap:
                    shares += self._await_snapshots(engaged, busy)
                else:
                    # DDL later in the batch: what it commits cannot be undone, so it must not
                    # commit while a pool worker that may still fail holds part of the batch.
                    shares += self._collect(busy, None)
            except BaseException:
                if busy:
                    self._collect(busy, None)
                raise
            shares += self._run_here(batch, later, busy, final=False)
        return shares + self._collect(busy, None), engaged

    def _claimed_here(self, claimable: list[int], left: list[float], reserve: float):
        while (index := claim_next(self._claims, len(claimable), left, reserve)) is not None:
            yield claimable[index]

    def _await_snapshots(self, engaged: int, busy: list[int]) -> list[ShareResult]:
        """Wait until every engaged worker holds its read snapshot (each signals it before its
        first read).  If one answers or dies first, wait for every answer instead (raising if
        one failed or died): a worker that has answered reads nothing more."""
        while self._snapshots.value < engaged:
            if any(not self._pool[slot].process.is_alive() or self._pool[slot].connection.poll() for slot in busy):
                return self._collect(busy, None)
            time.sleep(SNAPSHOT_POLL_SECONDS)
        return []

    def _call(self, slot: int, message, busy: list) -> None:
        try:
            self._pool[slot].send(message)
        except WorkerDied:
            self._replace(slot)
            # Shares already handed out (several writer shares, or the write share before a
            # read share) must be finished and read before the caller undoes the batch: one
            # still running could commit after the undo, and its answer, left in the pipe,
            # would be taken for the next batch's.
            try:
                self._collect(busy, None)
            except (WorkerDied, OperationalError):
                pass
            raise
        busy.append(slot)

    def _collect(self, busy: list[int], queues: list[list] | None) -> list[ShareResult]:
        """Answers from every busy worker; a worker that answers gets its next queued message.

        After a death or a failure nothing new is handed out, but every other busy worker is
        still waited for, so no answer is left in a pipe to be mistaken for the next one.
        """
        shares, died, failures = [], [], []
        while busy:
            by_connection = {self._pool[slot].connection: slot for slot in busy}
            by_sentinel = {self._pool[slot].process.sentinel: slot for slot in busy}
            ready = multiprocessing.connection.wait(list(by_connection) + list(by_sentinel))
            slots = sorted({by_connection.get(item, by_sentinel.get(item)) for item in ready})
            for slot in slots:
                busy.remove(slot)
                try:
                    answer = self._pool[slot].receive()
                except WorkerDied:
                    died.append(slot)
                    continue
                if answer[0] == "failed":
                    failures.append(answer[1])
                else:
                    shares.append(_share_from_answer(answer))
                if queues and queues[slot] and not died and not failures:
                    self._call(slot, queues[slot].pop(0), busy)
        for slot in died:
            self._replace(slot)
        if died:
            raise WorkerDied(f"{len(died)} worker(s) died during the batch")
        if failures:
            raise OperationalError("a worker failed outside any request:\n" + failures[0])
        return shares

    def _replace(self, slot: int) -> None:
        old = self._pool[slot]
        try:
            old.process.kill()
            old.process.join(timeout=5)
            old.connection.close()
        except Exception:
            pass
        self._pool[slot] = _WorkerProcess(self._context, *self._arguments)
        self.restarts += 1

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()

