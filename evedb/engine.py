"""One replica's execution of batches: access analysis, mixing, execution, Merkle tree, token,
commit, rollback and crash recovery.

The embedded database and (later) the server node drive it the same way:

    outcome = engine.execute(batch)          # parallel, as the mixer planned
    ... verification compares outcome.token ...
    engine.commit(batch.seq)                 # or engine.rollback(batch.seq) and
    outcome = engine.execute(batch, sequential=True)

"Commit" means only that verification agreed and the batch is final: its undo records are
dropped and `committed_seq` advances.  Until then every SQLite transaction a worker
committed for the batch is undoable, durably (`_evedb_undo`), so a process killed at any
instant reopens at its last committed batch: `recover()` applies the undo records
newest-first before anything else runs.

Rules kept:
- the Merkle tree always describes the database as it is (uncommitted batches included); the
  page deltas of each uncommitted batch are kept so a rollback can subtract them;
- a batch that changed the schema cannot be undone by changesets; rolling it back raises,
  and such batches are executed alone (DDL is exclusive) so the pair can repair by transfer.

A batch executes as if its requests ran one at a time in its *execution order*
(`execution_order`): reads first, then writes, each in batch order, a client's read after
its own earlier write.  Parallel execution, sequential re-execution and every replica follow
that one order.

The race probe (opt-in, `serve --race-probe`, for bench/race_masking): before executing a
batch in parallel, the engine executes it sequentially in execution order, takes that token,
undoes it, and only then runs the parallel execution, which is the one kept.  A batch whose
two tokens differ is a *manifestation*: its parallel execution is not the serial one.
Each probe is appended to a JSON-lines file (seq, view, both tokens), so the measurement can
join the two replicas' records by seq.  It changes what the node computes only in timing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import apsw

from . import codec, merkle, storage
from .access import EXCLUSIVE, Access, Catalog, analyze
from .errors import InternalError, NotSupportedError
from .executor import (LOCAL_READ_MAX_SECONDS, InlineExecutor, PlanResult, ProcessExecutor, WorkerDied,
                       moving_average)
from .messages import Batch, Reply, Request, RequestKind, StateData, StateRequest, StatementResult
from .mixer import mix


@dataclass(slots=True)
class Outcome:
    """A batch executed on this replica, awaiting verification."""

    seq: int
    replies: list[Reply]
    state_root: int
    token: int
    parallel_batches: int
    changesets: list[bytes] = field(default_factory=list)


# Reads that cost less than this each (µs, measured in this process) are not worth a round trip
# to a worker process: a point read costs ~30 µs, the round trip ~100-200 µs (kv bench, r100:
# one worker in process served 1.4-2.5x the reads/s of two in the pool).
LOCAL_READ_MAX_US = LOCAL_READ_MAX_SECONDS * 1e6

# A group of reads may run on the caller's thread (a node's event loop, when its engine thread
# is idle) only if reads measured in this process are cheap and the whole group is expected to
# take at most this long: the loop serves every other client meanwhile.
INLINE_READS_MAX_US = 1000.0
# ... and whatever the estimate, a group on the loop is interrupted past this and handed to
# the engine thread (a read's cost depends on its values: one range scan can take seconds).
INLINE_READS_DEADLINE_S = 0.002


@dataclass(slots=True)
class EngineStats:
    batches: int = 0
    requests: int = 0
    parallel_batches: int = 0
    # Batches whose first parallel batch's reads ran in the pool beside the later parallel
    # batches (PlanResult.overlapped).
    overlapped_batches: int = 0
    rollbacks: int = 0
    reexecutions: int = 0
    worker_restarts: int = 0
    full_builds: int = 0
    state_transfers_served: int = 0
    state_transfers_installed: int = 0
    applied_batches: int = 0
    read_requests: int = 0
    local_read_requests: int = 0  # of those, run in this process rather than in the pool
    # Where the time goes, for benchmarks: executing (everything the workers did, hashing of
    # changed rows included) and the token (row hashing in workers + tree, root, reply hash).
    execute_seconds: float = 0.0
    token_seconds: float = 0.0
    # The race probe (see the module docstring): batches probed, and those whose parallel
    # token differed from the batch-order one.
    race_probes: int = 0
    race_manifestations: int = 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def _undo_conflict(code, change):
    # Undo restores this replica's own earlier state; a conflict means the row moved on in a
    # way the inverse did not expect (only possible if something bypassed evedb).  Force the
    # recorded values; a foreign-key complaint is accepted because the whole batch is undone.
    if code in (apsw.SQLITE_CHANGESET_DATA, apsw.SQLITE_CHANGESET_CONFLICT):
        return apsw.SQLITE_CHANGESET_REPLACE
    return apsw.SQLITE_CHANGESET_OMIT


def _abort_on_conflict(code, change):
    return apsw.SQLITE_CHANGESET_ABORT


def _perturb(result: PlanResult) -> None:
    """Make one reply wrong, as a concurrency bug would (the test hook for divergence)."""
    for position, reply in enumerate(result.replies):
        if reply.ok and reply.results:
            first = reply.results[0]
            rows = tuple(tuple(v + 1 if type(v) is int else v for v in row) for row in first.rows)
            wrong = StatementResult(first.columns, rows, first.rowcount + 1, first.lastrowid)
            result.replies[position] = Reply(reply.client_id, reply.request_id, (wrong,) + reply.results[1:])
            return


def _bytes16(value: int) -> bytes:
    return value.to_bytes(16, "little")


def execution_order(batch: Batch, accesses: Sequence[Access], writes: Sequence[bool]) -> list[int]:
    """The order in which `batch` executes, as if its requests ran one at a time.

    The read-only requests come first, then the others, each in batch order; except a read
    whose client has a write earlier in the batch, which stays after that write (a client
    reads its own writes), and a batch holding an exclusive request (DDL), which keeps batch
    order.  Every request of a batch was pending when the batch was cut, none answered yet,
    so any order is one a client could have seen; this one lets the first parallel batch hold
    nearly every read, all of them against the state before the batch, which the executor
    runs beside the writes without a barrier (ProcessExecutor._run_claiming).  A pure
    function of the batch and its accesses: every replica derives the same order.
    """
    if any(access.exclusive for access in accesses):
        return list(range(len(accesses)))
    reads, rest, writers = [], [], set()
    for position, request in enumerate(batch.requests):
        if writes[position] or request.client_id in writers:
            rest.append(position)
            if writes[position]:
                writers.add(request.client_id)
        else:
            reads.append(position)
    return reads + rest


def _with_reply_key(access: Access, client_id: str) -> Access:
    if access.exclusive:
        return access
    return Access(
        access.reads,
        access.writes | {storage.REPLIES_TABLE},
        access.keys | {(storage.REPLIES_TABLE, (client_id,))},
        access.exclusive,
        access.read_only,
    )


class ExecutionEngine:
    """Everything one replica does with a batch short of talking to its peer."""

    def __init__(
        self,
        path: str,
        *,
        workers: int | None = None,
        options: storage.StorageOptions = storage.StorageOptions(),
        procedure_modules: Sequence[str] = (),
        rules=None,
        max_parallel: int = 64,
        parallel_writers: bool = False,
        reverse_writer_dispatch: bool = False,
        writer_stagger_ms: float = 0.0,
        mixer_false_negative_rate: float = 0.0,
        race_probe_path: str | None = None,
        local_writes: bool = True,
    ):
        self.path = path
        # With a worker pool: run each parallel batch's write share on this process's own
        # connection (the default) rather than in worker 0; reads still go to the pool.
        self.local_writes = local_writes
        self.options = options
        self.rules = rules
        self.max_parallel = max_parallel
        self.parallel_writers = parallel_writers
        self.reverse_writer_dispatch = reverse_writer_dispatch
        self.writer_stagger_ms = writer_stagger_ms
        if not 0.0 <= mixer_false_negative_rate <= 1.0:
            raise ValueError(f"mixer_false_negative_rate must be in [0, 1], not {mixer_false_negative_rate!r}")
        self.mixer_false_negative_rate = mixer_false_negative_rate
        self.race_probe_path = race_probe_path
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.stats = EngineStats()
        self._lock = threading.RLock()
        self._connection = storage.open_connection(path, options)
        storage.ensure_internal_tables(self._connection)
        self.recover()
        self.committed_seq = int(storage.read_meta(self._connection, "committed_seq", 0))
        self.view = int(storage.read_meta(self._connection, "view", 0))
        self._catalog_connection = storage.open_connection(path, options)
        self.catalog = Catalog.from_connection(self._catalog_connection)
        self.tree = merkle.MerkleTree()
        self.full_build()
        self._uncommitted: dict[int, tuple[dict, bool]] = {}
        self._procedure_modules = list(procedure_modules)
        self._sequential = None
        self._executor = self._make_executor(self.workers)
        self._local_read_us: float | None = None  # moving average, wall µs per read run here
        self._pool_read_us: float | None = None  # the same for reads run in the pool
        self._read_groups = 0
        # Test hook (forced divergence): the next N parallel executions give a wrong reply.
        self.perturb_executions = 0
        # Reproducible runs (set by the node): batch n executes at this time + n ms.
        self.fixed_clock_ms: int | None = None
        if self.workers == 1:
            self._sequential = self._executor

    def _make_executor(self, workers: int):
        if workers <= 1:
            return InlineExecutor(self.path, self.options, self._procedure_modules)
        # The write share runs on the sequential executor's connection, in this process.
        return ProcessExecutor(self.path, self.options, workers, self._procedure_modules,
                               local_writer=self.sequential_executor._worker if self.local_writes else None,
                               parallel_writers=self.parallel_writers,
                               reverse_writer_dispatch=self.reverse_writer_dispatch,
                               writer_stagger_ms=self.writer_stagger_ms)

    @property
    def sequential_executor(self):
        if self._sequential is None:
            self._sequential = InlineExecutor(self.path, self.options, self._procedure_modules)
        return self._sequential

    def worker_pids(self) -> list[int]:
        pids = getattr(self._executor, "pids", None)
        return pids() if pids else [os.getpid()]

    # --- state ---

    def full_build(self) -> None:
        """Hash every row of every user table (at open, and after a schema change)."""
        tree = merkle.MerkleTree()
        tables = storage.replicated_tables(self._connection)
        tree.set_schema(storage.schema_rows(self._connection), tables)
        for table in tables:
            columns, key_columns = storage.table_columns(self._connection, table)
            key_indexes = tuple(sorted(columns.index(name) for name in key_columns))
            select = f"SELECT {', '.join(map(storage.quote_identifier, columns))} FROM {storage.quote_identifier(table)}"
            tree.apply_deltas(merkle.table_deltas(table, key_indexes, self._connection.execute(select, can_cache=False)))
        self.tree = tree
        self.stats.full_builds += 1

    def state_root(self) -> int:
        return self.tree.root()

    def state_root_hex(self) -> str:
        return f"{self.state_root():032x}"

    @staticmethod
    def token_bytes(outcome: "Outcome") -> bytes:
        return _bytes16(outcome.token)

    # --- planning ---

    def access_of(self, request: Request) -> Access:
        if request.kind is RequestKind.PROCEDURE:
            if self.rules is None:
                return EXCLUSIVE
            return self.rules.access(request.procedure or "", request.args)
        try:
            accesses = [analyze(s.sql, s.params, self.catalog) for s in request.statements]
        except Exception:
            return EXCLUSIVE
        if len(accesses) == 1:
            return accesses[0]
        return Access.union(accesses) if accesses else EXCLUSIVE

    def plan(self, batch: Batch) -> tuple[list[list[int]], list[bool]]:
        parallel_plan, writes, _, _ = self._plan(batch)
        return parallel_plan, writes

    def _plan(self, batch: Batch):
        """(parallel batches, which requests write, the execution order, whether a request is
        exclusive).  The mixer sees the requests in execution order; each parallel batch lists
        batch positions, ascending."""
        with self.catalog.version_checked():
            accesses = [self.access_of(request) for request in batch.requests]
        if self.options.reply_cache:
            # A write stores its client's reply: two requests of one client (a request and its
            # retry) must not run side by side.
            accesses = [
                access if access.read_only else _with_reply_key(access, request.client_id)
                for access, request in zip(accesses, batch.requests)
            ]
        writes = [not access.read_only for access in accesses]
        order = execution_order(batch, accesses, writes)
        plan = mix([accesses[i] for i in order], self.max_parallel,
                   false_negative_rate=self.mixer_false_negative_rate, seed=batch.seed)
        exclusive = any(access.exclusive for access in accesses)
        return [sorted(order[i] for i in group) for group in plan], writes, order, exclusive

    # --- execution ---

    def execute(self, batch: Batch, *, sequential: bool = False, plan=None, commit: bool = False) -> Outcome:
        """Execute a batch (parallel unless `sequential`) and compute its token.

        `plan` overrides the mixer (tests use it to force a wrong grouping).  `commit` says the
        batch is final once executed (no verification: the embedded database); a batch that
        runs as one SQLite transaction then records its commit inside that transaction.
        """
        if self.fixed_clock_ms is not None:
            # The primary's seed mixes in its clock: derive both from seq alone instead.
            batch = dataclasses.replace(batch, timestamp_ms=self.fixed_clock_ms + batch.seq, seed=batch.seq * 7919)
        with self._lock:
            parallel_plan, writes, order, exclusive = self._plan(batch)
            if plan is not None:
                parallel_plan = [list(group) for group in plan]
            executor = self._executor
            if sequential:
                parallel_plan = [order]
                executor = self.sequential_executor
            probe_token = None
            if self.race_probe_path and not sequential and not commit and self._probe_worthwhile(batch, parallel_plan):
                root_before = self.tree.root()
                probe_token = self._serial_order_token(batch, writes, order)
            started = time.perf_counter()
            try:
                result = executor.run(batch, parallel_plan, writes, final=commit, overlap=not exclusive)
            except WorkerDied:
                # A worker died holding part of the batch: whatever of it committed is undone,
                # and the batch runs again, sequentially, on this process.
                self.stats.worker_restarts += 1
                self._undo_from(batch.seq)
                parallel_plan = [order]
                result = self.sequential_executor.run(batch, parallel_plan, writes)
                self.stats.reexecutions += 1
            except Exception as error:
                # A share failed outside any request.  With parallel writers another writer
                # share may have committed already: undo it, so the file matches the tree again.
                self._undo_from(batch.seq)
                if sequential or not self.parallel_writers or storage.is_storage_failure(error):
                    raise
                # Typically a writer share that waited past the busy timeout for another
                # share's write lock: run the batch again, sequentially, as after a dead worker.
                parallel_plan = [order]
                result = self.sequential_executor.run(batch, parallel_plan, writes)
                self.stats.reexecutions += 1
            if sequential:
                self.stats.reexecutions += 1
            self.stats.overlapped_batches += result.overlapped
            executed = time.perf_counter()
            if self.perturb_executions and not sequential:
                self.perturb_executions -= 1
                _perturb(result)
            outcome = self._finish(batch, result, len(parallel_plan))
            if probe_token is not None:
                self._record_probe(batch, root_before, probe_token, outcome.token)
            self.stats.execute_seconds += executed - started
            self.stats.token_seconds += result.hash_seconds + (time.perf_counter() - executed)
            if commit:
                self.commit(batch.seq)
            return outcome

    # --- the race probe ---

    def _probe_worthwhile(self, batch: Batch, parallel_plan) -> bool:
        # Only a parallel batch holding a write beside another request can run in another
        # order than the batch's; a batch with an exclusive request (DDL) cannot be undone.
        if not any(len(group) > 1 for group in parallel_plan):
            return False
        return not any(self.access_of(request).exclusive for request in batch.requests)

    def _serial_order_token(self, batch: Batch, writes, order) -> int:
        """The token of `batch` executed sequentially in its execution order, leaving no trace."""
        result = self.sequential_executor.run(batch, [order], writes)
        try:
            self.tree.apply_deltas(result.page_deltas)
            replies_digest = merkle.replies_hash(codec.encode_replies(result.replies))
            token = merkle.token(batch.seq, batch.view, self.tree.root(), replies_digest)
        finally:
            self.tree.apply_deltas({page: -delta % merkle.HASH_MODULUS for page, delta in result.page_deltas.items()})
            # Nothing later than this batch has run (batches execute in seq order), so this
            # undoes exactly the probe's own transaction.
            self._undo_from(batch.seq)
        return token

    def _record_probe(self, batch: Batch, root_before: int, serial_token: int, parallel_token: int) -> None:
        manifested = serial_token != parallel_token
        self.stats.race_probes += 1
        self.stats.race_manifestations += manifested
        with open(self.race_probe_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({
                "seq": batch.seq, "view": batch.view, "requests": len(batch.requests),
                "root_before": f"{root_before:032x}",
                "manifested": manifested, "parallel_token": f"{parallel_token:032x}",
                "serial_token": f"{serial_token:032x}",
            }) + "\n")

    def _finish(self, batch: Batch, result: PlanResult, parallel_batches: int) -> Outcome:
        if any(reply is None for reply in result.replies):
            raise InternalError(f"batch {batch.seq}: some requests got no reply")
        if result.schema_changed:
            self.catalog.refresh()
            self.full_build()
        else:
            self.tree.apply_deltas(result.page_deltas)
        if result.committed:
            self.committed_seq = max(self.committed_seq, batch.seq)
        else:
            self._uncommitted[batch.seq] = (result.page_deltas, result.schema_changed)
        root = self.tree.root()
        replies_digest = merkle.replies_hash(codec.encode_replies(result.replies))
        self.stats.batches += 1
        self.stats.requests += len(batch.requests)
        self.stats.parallel_batches += parallel_batches
        return Outcome(
            batch.seq,
            result.replies,
            root,
            merkle.token(batch.seq, batch.view, root, replies_digest),
            parallel_batches,
            result.changesets,
        )

    # --- verification outcomes ---

    def commit(self, seq: int) -> None:
        """The batch is verified: drop undo data up to `seq` and record it as committed."""
        with self._lock:
            wrote = any(
                deltas or schema_changed
                for s, (deltas, schema_changed) in self._uncommitted.items()
                if s <= seq
            )
            for s in [s for s in self._uncommitted if s <= seq]:
                del self._uncommitted[s]
            self.committed_seq = max(self.committed_seq, seq)
            if wrote or self.options.reply_cache:
                # The server records every commit (seq numbers must never be reused after a
                # restart); the embedded database only when something changed.  On the
                # connection that writes the shares: see Worker.record_commit.
                self.sequential_executor._worker.record_commit(seq, self.committed_seq)

    def rollback(self, seq: int) -> None:
        """Return the database to its state before batch `seq` (and every later one)."""
        with self._lock:
            later = sorted((s for s in self._uncommitted if s >= seq), reverse=True)
            if any(self._uncommitted[s][1] for s in later):
                raise NotSupportedError(
                    "a batch that changed the schema cannot be rolled back by changesets; "
                    "repair this replica by state transfer"
                )
            self._undo_from(seq)
            for s in later:
                deltas, _ = self._uncommitted.pop(s)
                self.tree.apply_deltas({page: -delta % merkle.HASH_MODULUS for page, delta in deltas.items()})
            self.stats.rollbacks += 1

    def _undo_from(self, seq: int) -> None:
        rows = self._connection.execute(
            f"SELECT id, changeset FROM {storage.INTERNAL_PREFIX}undo WHERE seq >= ? ORDER BY id DESC",
            (seq,),
            can_cache=False,
        ).fetchall()
        if not rows:
            return
        with storage.replaying(self._connection), self._connection:
            for _, changeset in rows:
                apsw.Changeset.apply(changeset, self._connection, conflict=_undo_conflict,
                                     flags=apsw.SQLITE_CHANGESETAPPLY_FKNOACTION)
            self._connection.execute(
                f"DELETE FROM {storage.INTERNAL_PREFIX}undo WHERE seq >= ?", (seq,), can_cache=False
            )

    def recover(self) -> None:
        """Undo every batch that was executed but never committed (after a crash)."""
        # commit() deletes a batch's undo records in the transaction that records it as
        # committed, so every record still present belongs to an uncommitted batch.
        self._undo_from(0)

    # --- passive replication: apply the primary's changesets ---

    def apply_changesets(self, batch: Batch, changesets: Sequence[bytes]) -> Outcome:
        """Apply a batch the primary executed (passive backup), durably and undoably, like an
        execution: one SQLite transaction, undo records, Merkle deltas.  Any conflict means
        this replica's state is not the one the primary executed on: it raises."""
        with self._lock:
            worker = self.sequential_executor._worker
            connection = worker.connection
            worker._shapes_checked = False
            deltas: dict = {}
            with worker.authorizer.internal(), storage.replaying(connection):
                connection.execute("BEGIN IMMEDIATE", can_cache=False)
                try:
                    for changeset in changesets:
                        apsw.Changeset.apply(changeset, connection, conflict=_abort_on_conflict,
                                             flags=apsw.SQLITE_CHANGESETAPPLY_FKNOACTION)
                        merkle.merge_deltas(deltas, worker.page_deltas(changeset))
                        connection.execute(
                            f"INSERT INTO {storage.INTERNAL_PREFIX}undo(seq, changeset) VALUES (?, ?)",
                            (batch.seq, apsw.Changeset.invert(changeset)),
                            can_cache=False,
                        )
                    connection.execute("COMMIT", can_cache=False)
                except BaseException:
                    connection.execute("ROLLBACK", can_cache=False)
                    raise
            self.tree.apply_deltas(deltas)
            self._uncommitted[batch.seq] = (deltas, False)
            self.stats.applied_batches += 1
            root = self.tree.root()
            return Outcome(batch.seq, [], root, merkle.token(batch.seq, batch.view, root, 0), 0, list(changesets))

    # --- reads outside batches (the pair's read path) ---

    def execute_reads(self, requests: Sequence[Request], timestamp_ms: int, *, here: bool | None = None,
                      deadline: float | None = None) -> list[Reply]:
        """Run read-only requests on the current state, outside any batch (not replicated).

        `here=True` runs them in this process whatever the measures say (`reads_inline_ok`);
        with a `deadline` (perf_counter) they are interrupted past it and ReadsTooLong raised."""
        # They form one parallel batch of reads on the worker pool, so the read path uses every
        # core as batches do; but a lone read, or reads cheaper than a round trip to a worker,
        # run here (see _reads_run_here).  Read shares roll back: nothing here changes state.
        with self._lock:
            if here is None:
                here = self._reads_run_here(len(requests))
            started = time.perf_counter()
            if here:
                replies = self.sequential_executor.run_reads(requests, timestamp_ms, deadline=deadline)
            else:
                reads = Batch(0, self.view, timestamp_ms, 0, tuple(requests))
                result = self._executor.run(reads, [list(range(len(requests)))], [False] * len(requests))
                replies = list(result.replies)
            self.stats.read_requests += len(requests)
            wall_us = (time.perf_counter() - started) * 1e6 / len(requests)
            if here:
                self._local_read_us = moving_average(self._local_read_us, wall_us)
                self.stats.local_read_requests += len(requests)
            else:
                self._pool_read_us = moving_average(self._pool_read_us, wall_us)
            return replies

    def reads_inline_ok(self, count: int) -> bool:
        """Whether `count` reads may run on the caller's thread: reads measured in this process
        are cheap (under LOCAL_READ_MAX_US each, so they would run here anyway) and the group
        should take at most INLINE_READS_MAX_US.  Unmeasured reads are not: the first group
        goes the usual way and measures."""
        estimate = self._local_read_us
        return (estimate is not None and estimate < LOCAL_READ_MAX_US
                and estimate * count <= INLINE_READS_MAX_US)

    def _reads_run_here(self, count: int) -> bool:
        """In this process: with no pool, for one read (no parallelism to gain), while reads
        measured here cost less than LOCAL_READ_MAX_US each (a worker round trip costs more than
        a point read), and while they take less wall time per read here than in the pool.

        The pool wins where it has cores of its own; it loses where it has none, or where its
        workers start cold (every commit by another connection empties a worker's page cache).
        On the 2-core test machine this choice gave TPC-W browsing 8-10% more WIPS than always
        using the pool (evedb/DESIGN.md, "Execution").  Both measures are moving averages of wall
        time per read; every 64th group runs here and every 64th (offset by 32) in the pool,
        so neither goes stale.
        """
        self._read_groups += 1
        if self.workers == 1 or count == 1 or self._local_read_us is None:
            return True
        if self._local_read_us < LOCAL_READ_MAX_US or self._read_groups % 64 == 0:
            return True
        if self._pool_read_us is None or self._read_groups % 64 == 32:
            return False
        return self._local_read_us <= self._pool_read_us

    # --- state transfer ---

    def state_request(self, view: int) -> StateRequest:
        """This replica's page hashes, for the primary to send back the pages that differ."""
        with self._lock:
            pages = tuple(
                (table, tuple((page, _bytes16(value)) for page, value in sorted(self.tree.pages(table).items())))
                for table in self.tree.tables()
            )
            return StateRequest(view, self.committed_seq, _bytes16(self.tree.schema_hash), pages)

    def state_data(self, request: StateRequest, view: int, max_rows_per_part: int = 20_000) -> list[StateData]:
        """The parts of a state transfer answering `request` (call with nothing in flight)."""
        with self._lock:
            schema = None
            theirs: dict[str, dict[int, bytes]] = {table: dict(pages) for table, pages in request.pages}
            if request.schema_hash != _bytes16(self.tree.schema_hash):
                schema = tuple(tuple(row) for row in storage.schema_rows(self._connection))
                theirs = {}  # the backup rebuilds its schema: every page travels
            wanted: dict[str, list[int]] = {}
            for table in self.tree.tables():
                ours = self.tree.pages(table)
                other = theirs.get(table, {})
                differing = sorted(
                    page for page in set(ours) | set(other)
                    if page not in ours or _bytes16(ours[page]) != other.get(page)
                )
                if differing:
                    wanted[table] = differing
            for table in theirs:
                if table not in wanted and table not in self.tree.tables():
                    wanted[table] = sorted(theirs[table])
            parts: list[StateData] = []
            pending: list[tuple[str, int, tuple]] = []
            pending_rows = 0
            for table in sorted(wanted):
                for page, rows in self._page_rows(table, wanted[table]):
                    pending.append((table, page, rows))
                    pending_rows += len(rows)
                    if pending_rows >= max_rows_per_part:
                        parts.append(StateData(view, self.committed_seq, schema if not parts else None,
                                               tuple(pending), False, b""))
                        pending, pending_rows = [], 0
            parts.append(StateData(view, self.committed_seq, schema if not parts else None, tuple(pending), True,
                                   _bytes16(self.tree.root())))
            self.stats.state_transfers_served += 1
            return parts

    def _page_rows(self, table: str, pages: list[int]):
        """(page, rows) for each page; rows of a page this replica lacks are empty."""
        if table not in storage.replicated_tables(self._connection):
            return [(page, ()) for page in pages]
        columns, key_columns = storage.table_columns(self._connection, table)
        key_indexes = sorted(columns.index(name) for name in key_columns)
        select = f"SELECT {', '.join(map(storage.quote_identifier, columns))} FROM {storage.quote_identifier(table)}"
        wanted = set(pages)
        found: dict[int, list[tuple]] = {page: [] for page in pages}
        # One scan of the table serves every page asked for (range and hash pages alike).
        for row in self._connection.execute(select, can_cache=False):
            page = merkle.page_of(tuple(row[i] for i in key_indexes))
            if page in wanted:
                found[page].append(tuple(row))
        return [(page, tuple(found[page])) for page in pages]

    def install_state(self, data: StateData) -> bool:
        """Install one part of a state transfer; on the final part, returns whether the root
        now equals the primary's."""
        with self._lock:
            with storage.replaying(self._connection), self._connection:
                if data.schema is not None:
                    self._replace_schema(data.schema)
                by_table: dict[str, dict[int, tuple]] = {}
                for table, page, rows in data.pages:
                    by_table.setdefault(table, {})[page] = rows
                for table in sorted(by_table):
                    self._replace_pages(table, by_table[table])
                if data.final:
                    self._connection.execute(f"DELETE FROM {storage.INTERNAL_PREFIX}undo", can_cache=False)
                    storage.write_meta(self._connection, "committed_seq", data.committed_seq)
            if not data.final:
                return False
            self._uncommitted.clear()
            self.committed_seq = data.committed_seq
            self.catalog.refresh()
            self.full_build()
            self.stats.state_transfers_installed += 1
            return _bytes16(self.tree.root()) == data.state_root

    def _replace_schema(self, schema) -> None:
        for kind, name, _, _ in sorted(storage.schema_rows(self._connection), key=lambda r: r[0] != "trigger"):
            if kind in ("table", "view", "trigger", "index") and not name.startswith("sqlite_autoindex"):
                try:
                    self._connection.execute(f"DROP {kind.upper()} IF EXISTS {storage.quote_identifier(name)}", can_cache=False)
                except apsw.SQLError:
                    pass  # an index or trigger went with its table
        order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
        for kind, name, _, sql in sorted(schema, key=lambda row: (order.get(row[0], 9), row[1])):
            if sql:
                self._connection.execute(sql, can_cache=False)
        self._connection.execute(f"DELETE FROM {storage.REPLIES_TABLE}", can_cache=False)

    def _replace_pages(self, table: str, pages: dict[int, tuple]) -> None:
        """Make these pages of `table` hold exactly the given rows (one scan of the table)."""
        columns, key_columns = storage.table_columns(self._connection, table)
        if not columns:
            return
        key_indexes = sorted(columns.index(name) for name in key_columns)
        quoted = storage.quote_identifier(table)
        key_names = [columns[i] for i in key_indexes]
        where = " AND ".join(f"{storage.quote_identifier(name)} = ?" for name in key_names)
        select = f"SELECT {', '.join(map(storage.quote_identifier, key_names))} FROM {quoted}"
        doomed = [tuple(key) for key in self._connection.execute(select, can_cache=False)
                  if merkle.page_of(tuple(key)) in pages]
        self._connection.executemany(f"DELETE FROM {quoted} WHERE {where}", doomed, can_cache=False)
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(map(storage.quote_identifier, columns))
        rows = [row for page in sorted(pages) for row in pages[page]]
        self._connection.executemany(f"INSERT INTO {quoted}({names}) VALUES ({marks})", rows, can_cache=False)

    def close(self) -> None:
        with self._lock:
            self._executor.close()
            if self._sequential is not None and self._sequential is not self._executor:
                self._sequential.close()
            self._catalog_connection.close()
            self._connection.close()
