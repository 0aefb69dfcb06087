"""The asyncio node: one listening port for clients and the peer, the protocol core, and the
execution engine on its own thread.

How it is wired:
- The core (`evedb.replica.Replica`) is touched only from the event loop.  Every input (a
  client request, a peer message, a tick, an engine result) is fed to it and its actions are
  performed at once, in order.
- Engine work (execute, rollback, commit, reads, state transfer) runs on a single dedicated
  thread, in the order the core asked for it; results come back to the loop with
  `call_soon_threadsafe`.  The loop never waits on SQLite, so heartbeats keep flowing while a
  batch executes.
- Peer links: each node dials its peer and sends on that link, and receives on the link the
  peer dialled.  Every peer frame is HMAC-signed with the shared secret.
- A client's reply is written when the core releases it (after its batch committed); a
  request that arrives while the same (client, request id) waits joins the wait.
- The port (`listener`) may require TLS; a client authenticates in its hello when the node
  has an `--auth-file`; every client is held to `limits` (connections, requests in flight,
  frame, statement and result sizes, unread output).  Nothing a client does or fails to do
  (not reading its replies included) makes the loop, the core or the engine wait.
- Replication mode (`--replication eve|passive`): the peer hello names the dialler's mode, and
  a node refuses (logs an error, closes the link) a peer running the other one, so a
  mismatched pair never pairs.  In passive mode the primary's execution results carry their
  changesets and root to the core, and the backup applies changesets (`ApplyBatch`) on the
  engine thread instead of executing.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import ssl
import time
from dataclasses import dataclass, field

from .. import codec, replica as core, storage
from ..access import analyze
from ..engine import INLINE_READS_DEADLINE_S, ExecutionEngine
from ..errors import error_info
from ..executor import ReadsTooLong
from ..messages import ErrorInfo, Execute, Reply, Request, RequestKind
from . import tls as tls_contexts
from .auth import Authenticator
from .committed_reads import CommittedSnapshot, SnapshotUnusable
from .limits import BoundedWriter, LimitCounters, Limits
from .engine_thread import EngineThread
from .listener import Listener
from .transport import (
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    FrameError,
    FrameTooLarge,
    Hello,
    decode_frame,
    discard_bytes,
    encode_frame,
    encode_packed_frame,
    parse_address,
    parse_hello,
    read_frame,
    read_raw_frame,
)

log = logging.getLogger("evedb.node")


@dataclass
class NodeConfig:
    data_dir: str
    listen: str
    peer: str | None  # None: a standalone, unreplicated node
    role: str = "primary"
    secret: bytes | None = None
    workers: int | None = None
    synchronous: str = "NORMAL"
    procedure_modules: tuple[str, ...] = ()
    rules: object = None
    max_batch: int = 256
    # 0: a request is cut into a batch at once when a pipeline slot is free; under load the
    # pipeline is full and requests gather into larger batches by themselves.
    batch_delay_ms: int = 0
    # One batch in flight by default: with more, a batch is cut whenever a slot frees and
    # stays small (2.4 requests at 16 kv clients with 4 slots, 6.8 with 1), and per-batch
    # costs dominate; the primary and backup still run each batch at the same time.
    pipeline_depth: int = 1
    heartbeat_ms: int = 100
    peer_timeout_ms: int = 1500
    tick_ms: int = 10
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # peer frames; client limits are in `limits`
    # Hardening (`serve --tls-*`, `--auth-file`, `--max-*`): see runtime/tls, auth, limits.
    limits: Limits = field(default_factory=Limits)
    tls: tls_contexts.TLSFiles | None = None
    auth_file: str | None = None
    # Test hook: the next N parallel executions on this node give one wrong reply (forced
    # divergence, to show it is caught and repaired).
    perturb_executions: int = 0
    # Reproducible runs: batch n executes at this time + n ms instead of the primary's clock
    # (every node of a deployment must be given the same value).
    fixed_clock_ms: int | None = None
    # "eve" (execute-verify) or "passive" (the primary ships changesets, the backup applies
    # them); both nodes must run the same.
    replication: str = "eve"
    # Concurrency-bug masking (bench/race_masking): split a parallel batch's writes across
    # workers (timing decides their order), make the mixer wrong with this probability, hand
    # writer shares out last-first (schedule diversity), and log a batch-order probe per batch.
    parallel_writers: bool = False
    mixer_false_negative_rate: float = 0.0
    reverse_writer_dispatch: bool = False
    writer_stagger_ms: float = 0.0
    race_probe: bool = False
    extra: dict = field(default_factory=dict)


REPLICATION_MODES = ("eve", "passive")
# An oversized client frame up to this many times the limit is read and dropped (the client
# then reads a clear error and keeps its connection); a larger one closes the connection.
_MAX_DISCARD_FACTOR = 4
# Statements longer than this are not analysed on the event loop (see `_read_only`).
_LOOP_ANALYSIS_MAX_CHARS = 4096
# The exit status of a node that stopped because its disk is full or failing (EX_IOERR).
STORAGE_FAILURE_EXIT_CODE = 74
# A refused peer dials again every half second: say so in the log once in this many ms.
_REFUSAL_LOG_INTERVAL_MS = 30_000


def _now_ms() -> int:
    # Wall-clock milliseconds: the core stamps batches with this time (SQLite's 'now'), and
    # times its timeouts with it too (a clock step only makes one timeout early or late).
    return int(time.time() * 1000)


def _root_bytes(root: int) -> bytes:
    return root.to_bytes(16, "little")


class _AllCallsThrough:
    """A gate: done once every engine call numbered up to `number` has finished."""

    __slots__ = ("_thread", "_number")

    def __init__(self, thread: EngineThread, number: int):
        self._thread, self._number = thread, number

    def done(self) -> bool:
        return self._thread.done_through(self._number)


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        # TLS and auth files are loaded first: a bad one stops the node before it opens anything.
        self._tls_server = tls_contexts.server_context(config.tls) if config.tls else None
        self._tls_peer = tls_contexts.peer_dial_context(config.tls) if config.tls else None
        self._authenticator = Authenticator.from_file(config.auth_file) if config.auth_file else None
        if self._authenticator and config.peer and config.secret is None and not (config.tls and config.tls.ca):
            raise ValueError("--auth-file with --peer needs the peer authenticated too: --secret-file or --tls-ca")
        # scrypt checks run off the loop, two at a time: a flood of logins cannot take every core.
        self._auth_slots = asyncio.Semaphore(2)
        self.limit_counters = LimitCounters()
        os.makedirs(config.data_dir, exist_ok=True)
        self.path = os.path.join(config.data_dir, "evedb.db")
        options = storage.StorageOptions(synchronous=config.synchronous, reply_cache=True)
        self.engine = ExecutionEngine(
            self.path,
            workers=config.workers,
            options=options,
            procedure_modules=config.procedure_modules,
            rules=config.rules,
            parallel_writers=config.parallel_writers,
            reverse_writer_dispatch=config.reverse_writer_dispatch,
            writer_stagger_ms=config.writer_stagger_ms,
            mixer_false_negative_rate=config.mixer_false_negative_rate,
            race_probe_path=os.path.join(config.data_dir, "race_probe.jsonl") if config.race_probe else None,
        )
        self.engine.perturb_executions = config.perturb_executions
        self.engine.fixed_clock_ms = config.fixed_clock_ms
        if config.replication not in REPLICATION_MODES:
            raise ValueError(f"replication must be one of {REPLICATION_MODES}, not {config.replication!r}")
        connection = self.engine._connection
        stored_role = storage.read_meta(connection, "role")
        view = int(storage.read_meta(connection, "view", 0))
        role = core.Role(stored_role or config.role)
        self.core = core.Replica(
            core.ReplicaConfig(
                node_id=config.listen,
                max_batch=config.max_batch,
                batch_delay_ms=config.batch_delay_ms,
                pipeline_depth=config.pipeline_depth,
                heartbeat_ms=config.heartbeat_ms,
                peer_timeout_ms=config.peer_timeout_ms,
                # A loop late by half a peer timeout was itself stalled (SIGSTOP, starvation).
                local_stall_ms=config.peer_timeout_ms // 2,
                standalone=config.peer is None,
                passive=config.replication == "passive",
            ),
            role=role,
            view=view,
            committed_seq=self.engine.committed_seq,
            now_ms=_now_ms(),
        )
        self._engine_thread = EngineThread()
        # Reads on the committed state while the next batch runs (runtime/committed_reads.py).
        self._snapshot = CommittedSnapshot(self.path, options, config.procedure_modules)
        # The batch whose state the database holds once the engine thread is idle: the last
        # execution submitted, None after anything else that changes the state.
        self._state_seq: int | None = None
        self._waiting: dict[tuple[str, int], list[BoundedWriter]] = {}
        # Sends waiting for engine work: (gate, send, item).  Peer messages wait for all the
        # work asked for before them; client replies for the last commit asked for (commits
        # run ahead of queued executions, see engine_thread), each queue in its own order.
        self._outbox: collections.deque = collections.deque()
        self._reply_outbox: collections.deque = collections.deque()
        self._last_commit_call: concurrent.futures.Future | None = None
        self._peer_writer: asyncio.StreamWriter | None = None
        self._listener = Listener(config.listen, self._serve_connection, limits=config.limits,
                                  counters=self.limit_counters, tls_context=self._tls_server, name=config.listen)
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client_connections = 0
        self.inline_reads = 0  # reads run on the event loop (engine idle, reads cheap)
        self.inline_reads_interrupted = 0  # ... begun there, past the deadline: on the engine thread
        self.snapshot_reads = 0  # ... of them, on the pinned committed state (engine busy or not)
        self._refusal_logged_ms: dict[str, int] = {}
        log.info("node %s starting as %s of view %d at committed seq %d (data %s, %s replication)",
                 config.listen, role.value, view, self.engine.committed_seq, self.path, config.replication)

    # --- lifetime ---

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._listener.start()
        self._tasks.append(asyncio.create_task(self._tick_forever()))
        if self.config.peer is not None:
            self._tasks.append(asyncio.create_task(self._dial_peer_forever()))

    async def run_until_stopped(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.close()

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._listener.close()
        if self._peer_writer is not None:
            self._peer_writer.close()
        self._engine_thread.shutdown(wait=True)
        self._snapshot.close()
        self.engine.close()

    # --- feeding the core and performing its actions ---

    def _perform(self) -> None:
        actions = self.core.take_actions()
        while actions:
            for action in actions:
                self._perform_one(action)
            actions = self.core.take_actions()  # what reads run inline led to

    def _perform_one(self, action) -> None:
        kind = type(action)
        if kind is core.Send:
            if type(action.message) is Execute:
                # A batch to execute depends on no local engine work, so it leaves at once:
                # gated, it waited for the primary's previous executions and the backup sat
                # idle meanwhile.  It may thus overtake a gated Commit; the core takes peer
                # messages in any order (the simulator reorders, drops and duplicates them).
                self._send_peer(action.message)
            else:
                self._after_engine_work(self._send_peer, action.message)
        elif kind is core.SendReply:
            self._after_commit(self._deliver, action.reply)
        elif kind is core.ExecuteBatch:
            self._state_seq = action.batch.seq
            self._on_engine(self._execute, action, callback=self._executed)
        elif kind is core.ApplyBatch:
            self._state_seq = None
            self._on_engine(self._apply, action, callback=self._applied)
        elif kind is core.RollbackTo:
            self._state_seq = None
            self._on_engine(self.engine.rollback, action.seq)
        elif kind is core.CommitUpTo:
            self._pin_committed_state(action.seq)
            self._last_commit_call = self._on_engine(self.engine.commit, action.seq, urgent=True)
        elif kind is core.RunReads:
            self._run_reads_action(action)
        elif kind is core.PersistView:
            self._snapshot.release()
            self._on_engine(self._persist_view, action.view, action.role)
            if action.role is core.Role.BACKUP:
                self._redirect_waiting_clients()
        elif kind is core.RequestState:
            self._on_engine(self.engine.state_request, self.core.view, callback=self._send_peer)
        elif kind is core.ServeState:
            self._on_engine(self.engine.state_data, action.request, self.core.view, callback=self._state_served)
        elif kind is core.InstallState:
            self._snapshot.release()
            self._state_seq = None
            self._on_engine(self.engine.install_state, action.data,
                            callback=lambda ok, data=action.data: self._state_installed(ok, data))
        elif kind is core.Log:
            log.info("%s: %s", self.config.listen, action.text)

    def _pin_committed_state(self, seq: int) -> None:
        """At the core's commit of `seq`: pin the snapshot if the file holds exactly that
        batch's state (the engine idle, its last execution `seq`), else leave none pinned."""
        if not (self.core.role is core.Role.PRIMARY and self._state_seq == seq and self._engine_thread.idle()):
            self._snapshot.release()
            return
        try:
            self._snapshot.pin(seq)
        except Exception as error:  # reads then take the usual path: nothing is lost
            log.warning("%s: pinning the committed state failed: %r", self.config.listen, error)
            self._snapshot.release()

    def _run_reads_action(self, action: core.RunReads) -> None:
        if self.engine.reads_inline_ok(len(action.requests)) and self._run_reads_inline(action):
            return
        self._on_engine(self._run_reads, action.requests, int(time.time() * 1000),
                        callback=lambda replies, read_id=action.read_id: self.core.on_reads_executed(read_id, tuple(replies)))

    def _run_reads_inline(self, action: core.RunReads) -> bool:
        """Cheap reads run on the event loop, sparing two thread hand-offs (see DESIGN.md, "The
        pair"), when they can: True if answered.  A group that runs past its deadline is
        interrupted and goes to the engine thread after all."""
        count = len(action.requests)
        try:
            if self._read_committed_snapshot(action):
                return True
            if not self._engine_thread.idle():
                return False
            # Nothing queued on the engine: no batch is part executed, so the group sees whole
            # batches, as on the engine thread.
            replies = self._run_reads(action.requests, int(time.time() * 1000), here=True,
                                      deadline=time.perf_counter() + INLINE_READS_DEADLINE_S)
        except ReadsTooLong:
            self.inline_reads_interrupted += count
            return False
        self.inline_reads += count
        self.core.on_reads_executed(action.read_id, tuple(replies))
        return True

    def _read_committed_snapshot(self, action: core.RunReads) -> bool:
        """The group on the committed state, whatever the engine is doing, if it is pinned:
        True if answered (the replies need not wait for the batch in flight,
        runtime/committed_reads.py).  ReadsTooLong passes through."""
        observed = self._snapshot.seq
        if observed is None or observed != self.core.committed_seq:
            return False
        try:
            replies = self._snapshot.run_reads(action.requests, int(time.time() * 1000),
                                               time.perf_counter() + INLINE_READS_DEADLINE_S)
        except ReadsTooLong:
            raise
        except SnapshotUnusable:  # e.g. a read-only procedure that writes: the usual way undoes it
            return False
        except Exception as error:  # never lose the group: the usual way answers it
            log.warning("%s: reads on the committed state failed: %r", self.config.listen, error)
            self._snapshot.release()
            return False
        count = len(action.requests)
        self.snapshot_reads += count
        self.inline_reads += count
        self.core.on_reads_executed(action.read_id, tuple(replies), observed_seq=observed)
        return True

    def _run_reads(self, requests, timestamp_ms: int, here: bool | None = None,
                   deadline: float | None = None) -> list[Reply]:
        """A group of reads; it always answers, since the core waits for one group at a time
        (except ReadsTooLong, past a `deadline`: the caller runs the group elsewhere)."""
        for attempt in (1, 2):  # a worker that died is replaced by the executor: try once more
            try:
                return self.engine.execute_reads(requests, timestamp_ms, here=here, deadline=deadline)
            except ReadsTooLong:
                raise
            except Exception as error:
                log.error("%s: reads failed (attempt %d): %r", self.config.listen, attempt, error)
                failure = error
        return [Reply(request.client_id, request.request_id, (), error_info(failure)) for request in requests]

    def _after_engine_work(self, send, item) -> None:
        """Send once every engine call asked for before it is done (the core's contract: a
        Commit to the backup never overtakes the local commit)."""
        self._outbox.append((_AllCallsThrough(self._engine_thread, self._engine_thread.last_number), send, item))
        self._flush_outbox()

    def _after_commit(self, send, item) -> None:
        """Send a client reply once the last commit asked for is done: what it answers is then
        durable here (and verified by the peer), though later executions may still be queued."""
        gate = self._last_commit_call
        if gate is None:  # nothing committed in this life yet: wait for everything before it
            gate = _AllCallsThrough(self._engine_thread, self._engine_thread.last_number)
        self._reply_outbox.append((gate, send, item))
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        for outbox in (self._outbox, self._reply_outbox):
            while outbox:
                gate, send, item = outbox[0]
                if not gate.done():
                    break
                outbox.popleft()
                send(item)

    def _on_engine(self, function, *args, callback=None, urgent: bool = False) -> concurrent.futures.Future:
        future = self._engine_thread.submit(function, *args, urgent=urgent)
        loop = self._loop

        def done(completed: concurrent.futures.Future) -> None:
            # One wake-up of the loop per call at most (each costs a self-pipe write: it was a
            # fifth of a backup's busy time under kv load).  A call with no callback wakes the
            # loop only if a send is waiting; one queued after this check saw the call finished.
            error = completed.exception()
            if error is not None and storage.is_storage_failure(error):
                self._fail_stop(function, error)
            if error is not None:
                loop.call_soon_threadsafe(self._flush_outbox)
                log.error("%s: engine call %s failed: %r", self.config.listen, getattr(function, "__name__", function), error)
                return
            if callback is not None:
                loop.call_soon_threadsafe(self._after_engine, callback, completed.result())
            elif self._outbox or self._reply_outbox:
                loop.call_soon_threadsafe(self._flush_outbox)

        future.add_done_callback(done)
        return future

    def _fail_stop(self, function, error: BaseException) -> None:
        """The disk is full or failing: stop at once, before anything queued behind this engine
        call is sent (a node that cannot write must not acknowledge).  The peer takes over; the
        node, restarted once there is space, reopens at its last committed state and catches up."""
        log.critical("%s: storage failure in %s, stopping (fail-stop): %r", self.config.listen,
                     getattr(function, "__name__", function), error)
        logging.shutdown()
        os._exit(STORAGE_FAILURE_EXIT_CODE)

    def _after_engine(self, callback, result) -> None:
        self._flush_outbox()
        callback(result)
        self._perform()

    def _execute(self, action: core.ExecuteBatch):
        # What a passive backup needs besides the changesets: the root the batch started from
        # (they apply to that state only) and whether it changed the schema.
        if self.config.replication != "passive":
            return action, self.engine.execute(action.batch, sequential=action.sequential), 0, False
        schema_before, root_before = self.engine.tree.schema_hash, self.engine.state_root()
        outcome = self.engine.execute(action.batch, sequential=action.sequential)
        return action, outcome, root_before, self.engine.tree.schema_hash != schema_before

    def _executed(self, result) -> None:
        action, outcome, root_before, schema_changed = result
        self.core.on_executed(action.batch.seq, action.attempt, ExecutionEngine.token_bytes(outcome),
                              tuple(outcome.replies), changesets=tuple(outcome.changesets),
                              state_root=_root_bytes(outcome.state_root), parent_root=_root_bytes(root_before),
                              schema_changed=schema_changed)
        # A commit may have freed a pipeline slot: let the core cut the next batch now.
        self.core.tick(_now_ms())

    def _apply(self, action: core.ApplyBatch):
        """Passive backup: apply the primary's changesets (a schema change: execute the batch)."""
        if action.parent_root and _root_bytes(self.engine.state_root()) != action.parent_root:
            log.info("%s: batch %d was made on another state than this node's: not applied",
                     self.config.listen, action.batch.seq)
            return action, b""
        try:
            if action.schema_changed:
                outcome = self.engine.execute(action.batch, sequential=True)
            else:
                outcome = self.engine.apply_changesets(action.batch, action.changesets)
        except Exception as error:
            # This replica's state is not the primary's (a conflict) or the engine failed: the
            # core drops what is uncommitted and re-syncs.
            log.error("%s: applying batch %d failed: %r", self.config.listen, action.batch.seq, error)
            return action, b""
        return action, _root_bytes(outcome.state_root)

    def _applied(self, result) -> None:
        action, root = result
        self.core.on_applied(action.batch.seq, action.attempt, root)
        self.core.tick(_now_ms())

    def _persist_view(self, view: int, role: core.Role) -> None:
        with self.engine._connection:
            storage.write_meta(self.engine._connection, "view", view)
            storage.write_meta(self.engine._connection, "role", role.value)

    def _state_served(self, parts) -> None:
        for part in parts:
            self._send_peer(part)
        self.core.on_state_served(_now_ms())

    def _state_installed(self, ok: bool, data) -> None:
        if not data.final:
            return
        if not ok:
            log.error("%s: state transfer ended with a root different from the primary's", self.config.listen)
        self.core.on_state_installed(data.committed_seq, _now_ms())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_ms / 1000)
            self.core.tick(_now_ms())
            self._perform()

    # --- the peer ---

    def _send_peer(self, message) -> None:
        writer = self._peer_writer
        if writer is None or writer.is_closing():
            return  # the core retransmits what matters
        writer.write(encode_frame(["peer", codec.peer_to_plain(message)], self.config.secret))

    async def _dial_peer_forever(self) -> None:
        host, port = parse_address(self.config.peer)
        while True:
            try:
                if self._tls_peer is None:
                    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
                else:
                    reader, writer = await asyncio.open_connection(
                        host, port, limit=1 << 20, ssl=self._tls_peer, server_hostname=host,
                        ssl_handshake_timeout=5)
            except ssl.SSLError as error:
                self._log_refusal(f"TLS handshake with peer {self.config.peer} failed: "
                                  f"{getattr(error, 'reason', None) or error}")
                await asyncio.sleep(0.5)
                continue
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            writer.write(encode_frame(["hello", PROTOCOL_VERSION, "peer", self.config.listen, self.config.replication],
                                      self.config.secret))
            try:
                answer = await asyncio.wait_for(read_frame(reader, self.config.max_frame_bytes, self.config.secret), 5)
            except (asyncio.TimeoutError, FrameError, OSError) as error:
                log.warning("%s: peer handshake with %s failed: %s", self.config.listen, self.config.peer, error)
                writer.close()
                await asyncio.sleep(0.5)
                continue
            if answer and answer[0] == "error" and len(answer) == 3 and answer[1] == "ReplicationMismatch":
                self._log_refusal(f"peer {self.config.peer} refused to pair: {answer[2]}")
                writer.close()
                await asyncio.sleep(0.5)
                continue
            if not answer or answer[0] != "welcome":
                log.warning("%s: peer %s refused the link: %s", self.config.listen, self.config.peer, answer)
                writer.close()
                await asyncio.sleep(0.5)
                continue
            self._peer_writer = writer
            log.info("%s: linked to peer %s", self.config.listen, self.config.peer)
            self.core.on_peer_connected(_now_ms())
            self._perform()
            try:
                # The dialled link only sends; reading it just notices when it closes.
                while await reader.read(1 << 16):
                    pass
            except OSError:
                pass
            self._peer_writer = None
            writer.close()
            log.info("%s: link to peer %s closed", self.config.listen, self.config.peer)
            await asyncio.sleep(0.1)

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            frame = await read_frame(reader, self.config.max_frame_bytes, self.config.secret)
            if frame is None:
                return
            if not isinstance(frame, list) or len(frame) != 2 or frame[0] != "peer":
                raise FrameError("peer frames must be ['peer', message]")
            try:
                message = codec.peer_from_plain(frame[1])
            except codec.CodecError as error:
                raise FrameError(f"bad peer message: {error}") from None
            self.core.on_peer_message(message, _now_ms())
            self._perform()

    def _log_refusal(self, text: str) -> None:
        """An error line for a refused pairing, repeated only every _REFUSAL_LOG_INTERVAL_MS."""
        now = _now_ms()
        last = self._refusal_logged_ms.get(text)
        if last is None or now - last >= _REFUSAL_LOG_INTERVAL_MS:
            self._refusal_logged_ms[text] = now
            log.error("%s: %s", self.config.listen, text)

    # --- clients (and every connection's hello) ---

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One accepted connection (the listener did TLS): the hello, then a peer or a client."""
        kind = None
        try:
            hello = await asyncio.wait_for(self._read_hello(reader), self.config.limits.hello_timeout_s)
            if hello is None:
                return
            kind = hello.kind
            if kind == "peer":
                refusal = self._peer_refusal(hello, writer)
                if refusal is not None:
                    self._log_refusal(f"refusing to pair: {refusal[1]}")
                    writer.write(encode_frame(["error", *refusal], self.config.secret))
                    return
                writer.write(encode_frame(["welcome", PROTOCOL_VERSION, self.config.listen], self.config.secret))
                await self._serve_peer(reader, writer)
            else:
                await self._serve_client_connection(hello, reader, writer)
        except FrameError as error:
            self.limit_counters.malformed_frames += 1
            log.warning("%s: closing a %s connection: %s", self.config.listen, kind or "new", error)
            if kind != "peer":
                try:
                    writer.write(encode_frame(["error", "InterfaceError", str(error)]))
                except Exception:
                    pass
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the node is shutting down
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _read_hello(self, reader: asyncio.StreamReader) -> Hello | None:
        """The first frame: a client's plain hello, or the peer's signed one."""
        data = await read_raw_frame(reader, self.config.limits.max_hello_bytes)
        if data is None:
            return None
        if self.config.secret is not None:
            try:
                hello = parse_hello(decode_frame(data, self.config.secret), REPLICATION_MODES)
            except FrameError:
                hello = None
            if hello is not None and hello.kind == "peer":
                return hello
        hello = parse_hello(decode_frame(data, None), REPLICATION_MODES)
        if hello.kind == "peer" and self.config.secret is not None:
            raise FrameError("peer hello without a valid MAC: wrong or missing --secret-file")
        return hello

    def _peer_refusal(self, hello: Hello, writer) -> tuple[str, str] | None:
        """(error kind, reason) if this peer may not link, else None."""
        if self.config.peer is None:
            return "AuthenticationFailed", f"{self.config.listen} runs without a peer (no --peer): it links to no one"
        if self.config.tls is not None and self.config.tls.ca:
            certificate = writer.get_extra_info("peercert")
            if not certificate:
                return "AuthenticationFailed", (f"{hello.name} sent no certificate signed by --tls-ca; with "
                                                "--tls-ca the peer link is mutual TLS")
            # The CA may have signed clients' certificates too: only the --peer host's may pair.
            peer_host = parse_address(self.config.peer)[0]
            if not tls_contexts.certificate_names_host(certificate, peer_host):
                return "AuthenticationFailed", (f"{hello.name}'s certificate does not name {peer_host}, the host "
                                                "of --peer: only the peer node may pair")
        if self._authenticator is not None and self.config.secret is None and not (self.config.tls and self.config.tls.ca):
            return "AuthenticationFailed", ("this node authenticates its clients, so a peer must authenticate "
                                            "too: give both nodes --secret-file (or --tls-ca)")
        if hello.replication != self.config.replication:
            return "ReplicationMismatch", (f"replication mode mismatch: {hello.name} runs {hello.replication!r} "
                                           f"replication, {self.config.listen} runs {self.config.replication!r}; "
                                           "both nodes of a pair must run the same --replication")
        return None

    async def _serve_client_connection(self, hello: Hello, reader, writer) -> None:
        limits = self.config.limits
        if self.client_connections >= limits.max_connections:
            self.limit_counters.connections_refused += 1
            self._log_refusal(f"refusing clients: {self.client_connections} connected (--max-connections "
                              f"{limits.max_connections})")
            writer.write(encode_frame(["error", "TooManyConnections",
                                       f"this node already serves {self.client_connections} clients, its limit "
                                       f"(--max-connections {limits.max_connections}); try again later"]))
            return
        self.client_connections += 1  # the slot is held during authentication too
        try:
            if self._authenticator is not None:
                refusal = await self._authenticate(hello)
                if refusal is not None:
                    self.limit_counters.authentication_failures += 1
                    log.warning("%s: authentication failed for user %r from %s: %s", self.config.listen,
                                (hello.user or "")[:64], writer.get_extra_info("peername"), refusal)
                    writer.write(encode_frame(["error", "AuthenticationFailed", refusal]))
                    return
            writer.write(encode_frame(["welcome", PROTOCOL_VERSION, self.config.listen, self.core.role.value]))
            await self._serve_client(reader, BoundedWriter(writer, limits, self.limit_counters, self.config.listen))
        finally:
            self.client_connections -= 1

    async def _authenticate(self, hello: Hello) -> str | None:
        """None if the hello's credentials are good, else the reason told to the client."""
        if hello.user is None:
            return ("this node requires authentication: connect with evedb://USER:PASSWORD@HOST:PORT "
                    "or evedb.connect(..., user=..., password=...)")
        async with self._auth_slots:  # scrypt costs tens of ms: off the loop, two at a time
            good = await asyncio.get_running_loop().run_in_executor(
                None, self._authenticator.verify, hello.user, hello.password)
        return None if good else "wrong user name or password"

    async def _serve_client(self, reader, connection: BoundedWriter) -> None:
        limits = self.config.limits
        while True:
            # Back-pressure: with max_inflight_per_client replies owed, stop reading this socket.
            if await connection.gate.wait_for_room():
                self.limit_counters.inflight_pauses += 1
            try:
                frame = await read_frame(reader, limits.max_frame_bytes)
            except FrameTooLarge as error:
                self.limit_counters.malformed_frames += 1
                connection.write(encode_frame(["error", "DataError", f"{error} (--max-frame-bytes)"]))
                # Skip the payload so the stream stays in step and the client reads the error
                # (closing with it unread would reset the connection); a huge one ends it.
                if error.length > _MAX_DISCARD_FACTOR * limits.max_frame_bytes:
                    return
                await discard_bytes(reader, error.length)
                continue
            if frame is None:
                return
            if not isinstance(frame, list) or not frame:
                raise FrameError("client frames must be non-empty lists")
            if frame[0] == "request" and len(frame) == 2:
                try:
                    request = codec.request_from_plain(frame[1])
                except codec.CodecError as error:
                    self.limit_counters.malformed_frames += 1
                    connection.write(encode_frame(["error", "InterfaceError", str(error)]))
                    continue
                self._on_client_request(request, connection)
            elif frame[0] == "status" and len(frame) == 1:
                # The root is read on the engine thread, after whatever it is doing now.
                root = await asyncio.wrap_future(self._engine_thread.submit(self.engine.state_root_hex))
                connection.write(encode_frame(["status", self.status(root)]))
            else:
                self.limit_counters.malformed_frames += 1
                connection.write(encode_frame(["error", "InterfaceError", f"unknown message type {str(frame[0])[:64]!r}"]))

    def _on_client_request(self, request: Request, connection: BoundedWriter) -> None:
        limit = self.config.limits.max_statement_bytes
        for statement in request.statements:
            size = len(statement.sql.encode("utf-8", "surrogatepass"))
            if size > limit:
                self.limit_counters.statements_refused += 1
                self._reply_now(connection, request, ErrorInfo(
                    "DataError", f"a statement of {size} bytes is over the node's limit of {limit} "
                                 "(--max-statement-bytes); nothing was executed"))
                return
        if self.core.role is not core.Role.PRIMARY:
            connection.write(encode_packed_frame(codec.reply_message(core.not_primary_reply(request, self.config.peer))))
            return
        try:
            read_only = self._read_only(request)
        except Exception as error:  # analysis never crashes the node
            self._reply_now(connection, request, error_info(error))
            return
        connection.gate.take()
        self._waiting.setdefault((request.client_id, request.request_id), []).append(connection)
        self.core.on_client_request(request, read_only, _now_ms())
        self._perform()

    @staticmethod
    def _reply_now(connection: BoundedWriter, request: Request, error: ErrorInfo) -> None:
        reply = Reply(request.client_id, request.request_id, (), error)
        connection.write(encode_packed_frame(codec.reply_message(reply)))

    def _read_only(self, request: Request) -> bool:
        if request.kind is RequestKind.PROCEDURE:
            # Only the rule's read-only flag matters here; the keys (which depend on the
            # arguments) are worked out once, by the engine's planning, for batched requests.
            rule = self.config.rules.procedures.get(request.procedure or "") if self.config.rules else None
            return rule is not None and rule.read_only
        # sqlglot parses at tens of microseconds per token: a long statement analysed here would
        # hold the loop (and every client and heartbeat) for seconds.  It is taken as a write
        # instead, which is always safe (it is batched and verified); the engine analyses it.
        if any(len(statement.sql) > _LOOP_ANALYSIS_MAX_CHARS for statement in request.statements):
            return False
        return all(analyze(statement.sql).read_only for statement in request.statements)

    def _redirect_waiting_clients(self) -> None:
        """Stepped down: this node will not answer the requests waiting here (their batches were
        dropped), so tell their clients now where the primary is instead of leaving them to
        their timeout (found by the fault campaign: 30 s stalls after a paused primary woke).
        Not an acknowledgement: the retry keeps its request id, and the reply cache runs it once."""
        for client_id, request_id in list(self._waiting):
            self._deliver(core.not_primary_reply(Request.statement(client_id, request_id, ""), self.config.peer))

    def _deliver(self, reply: Reply) -> None:
        """Write a released reply to every connection waiting for it.  Never waits: a client
        that does not read is disconnected by its BoundedWriter, not waited for."""
        connections = self._waiting.pop((reply.client_id, reply.request_id), [])
        if not connections:
            return
        frame = self._reply_frame(reply)
        for connection in connections:
            connection.gate.give()
            connection.write(frame)

    def _reply_frame(self, reply: Reply) -> bytes:
        frame = encode_packed_frame(codec.reply_message(reply))
        limit = self.config.limits.max_result_bytes
        if len(frame) <= limit:
            return frame
        self.limit_counters.results_refused += 1
        error = ErrorInfo("DataError", f"the result is {len(frame)} bytes, over the node's limit of {limit} "
                                       "(--max-result-bytes): select fewer rows or columns; the request did run, "
                                       "and any changes it made are committed")
        return encode_packed_frame(codec.reply_message(Reply(reply.client_id, reply.request_id, (), error)))

    # --- status ---

    def status(self, state_root: str) -> dict:
        state = self.core.status()
        stats = self.engine.stats.as_dict()
        return {
            "node": self.config.listen,
            "role": state["role"],
            "view": state["view"],
            "committed_seq": state["committed_seq"],
            "state_root": state_root,
            "peer": self.config.peer,
            "peer_state": state["peer"],
            "batches": stats["batches"],
            "requests": stats["requests"],
            "parallel_batches": stats["parallel_batches"],
            "rollbacks": stats["rollbacks"],
            "reexecutions": stats["reexecutions"],
            "divergences": state["divergences"],
            "state_transfers": state["state_transfers"] + stats["state_transfers_served"],
            "replication": self.config.replication,
            "applied_batches": stats["applied_batches"],
            "view_changes": state["view_changes"],
            "workers": self.engine.workers,
            "clients": self.client_connections,
            "connections": self._listener.open_connections,  # every open socket, the peer's too
            "tls": self.config.tls is not None,
            "authentication": self._authenticator is not None,
            "limits": self.limit_counters.as_dict(),
            "parallel_writers": self.config.parallel_writers,
            "race_probes": stats["race_probes"],
            "race_manifestations": stats["race_manifestations"],
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "read_requests": stats["read_requests"] + self.snapshot_reads,
            "inline_reads": self.inline_reads,
            "inline_reads_interrupted": self.inline_reads_interrupted,
            "snapshot_reads": self.snapshot_reads,
        }
