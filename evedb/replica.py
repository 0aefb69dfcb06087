"""The protocol core of one node of the synchronous primary-backup pair (DESIGN.md section 4).

Pure: messages, client requests, execution results and ticks go in; `take_actions()` returns
what the runtime must do, in order.  No sockets, threads, clocks or randomness: time arrives as
`now_ms`, and batch seeds are derived by the batcher.  The asyncio runtime and the seeded
simulator (evedb/sim) drive this same class.

Roles and the rules each keeps:
- PRIMARY cuts batches (bounded in size, time and in-flight count), sends each to the backup
  and executes it; when both tokens for the oldest in-flight batch are known it commits and
  releases that batch's replies if they agree.  If they differ, both roll back to before that
  batch and re-execute every in-flight batch sequentially (a higher `attempt`); if the
  sequential tokens still differ, the primary's state is taken: the backup is told to repair
  itself by state transfer, and the batch commits once the backup is out of sync.  No reply of
  a write ever leaves before its batch commits.  Without a backup in sync (silent past
  `peer_timeout_ms`, or catching up) the primary commits alone, and then only sequential
  executions: nothing would catch a wrong parallel one.  It keeps a log of committed batches
  for the backup's catch-up.
- BACKUP executes batches in seq order and reports tokens; it commits what the primary commits.
  A higher attempt undoes from the first batch it holds with a lower one (an earlier seq's
  Execute may still be on its way) and runs every undone batch again.  If the primary is silent
  past the timeout and this backup is in sync, it takes view + 1, re-executes its uncommitted
  batches sequentially (so any batch whose replies the primary had released survives, and
  retries find their replies in the reply cache) and serves.
- A node that sees a higher view in any message steps down and re-syncs; a node that sees a
  lower view tells the sender with a heartbeat.

Passive replication (`ReplicaConfig.passive`, the Remus-like baseline; both nodes must run it):
- the PRIMARY executes each batch in parallel, as the mixer planned, sends no Execute, and once
  its execution is done (`on_executed` with the changesets and the roots before and after)
  sends `Apply` (the batch, its changesets, both roots and its token) to a backup in sync.  A
  batch commits when the backup's reported root equals the primary's root after it
  (PassiveVerification); a different root makes the backup take the primary's state by
  transfer (NeedState, as when tokens still differ sequentially above), never a re-execution.
  Nothing is verified: a wrong parallel execution is copied.  Alone, it commits its parallel
  executions as they are;
- the BACKUP applies batches in seq order (ApplyBatch: the changesets, undoably; a batch that
  changed the schema, which changesets do not carry, is executed sequentially instead) and
  reports its root after each (`on_applied` -> TokenReport).  Changesets apply only to the
  state they were made on: if this node's root is not the Apply's parent root (it holds
  batches of an earlier life of the primary) or they conflict, nothing changes, the result is
  an empty root, and the backup drops what is uncommitted and re-syncs.  A higher attempt of a
  batch it holds also means another life of the primary: drop and re-sync.  It ignores Execute
  (and an eve backup ignores Apply) with one log line: a mode mismatch, which the runtime's
  handshake refuses in the first place;
- on take-over, the new primary keeps the batches it applied and reported, and commits them as
  they are (the old primary's results, whose replies are in the replicated reply cache)
  instead of re-executing them; a batch still being applied was never reported, so never
  committed by the old primary: it is rolled back with everything after it;
- commit, Commit messages, sync points, heartbeats and state transfer are the same as above; a
  lagging backup catches up by executing the primary's log (CatchUp: execution is
  deterministic given the log, and the logged token is the primary's) or by state transfer.

Being "in sync" is what makes a take-over safe: while the backup believes it is in sync, the
primary must commit nothing the backup has not executed.  Messages may be lost, duplicated and
reordered, so:
- the backup becomes in sync only at a *sync point*: an empty CatchUp that the primary sends
  when it starts counting on the backup (PeerState.SYNCED), at the backup's committed seq; a
  backup that dropped batches while in sync ignores sync points for `peer_timeout_ms` (one
  sent before the drop may count on them);
- a backup in sync leaves it only on evidence that the primary went on without it (a heartbeat
  not in sync with a higher committed seq, catch-up entries beyond its own) or restarted (an
  Execute replacing a batch it holds); a Hello may only mean a new link;
- a SYNCED primary goes on without its backup only after the peer timeout (the backup is
  down), or when the backup says it is out of sync (SyncRequest, StateRequest) at least
  `peer_timeout_ms` after the last sync point or this node's start: an older message may
  predate a sync point the backup has since reached (the synchronous model: message delays
  stay below the peer timeout).  A backup's Hello is not such a message;
- a node that (re)started goes on alone, and releases reads, only after it has heard its peer
  in this life: while it was down, the peer may have taken over in a higher view.

The runtime's side of the contract: actions are performed in order, and a Send or SendReply
leaves only after the engine work asked for before it is done (a reply after its CommitUpTo
is durable), except a Send of an Execute, which depends on no local work and may leave at
once (overtaking earlier Sends: peer messages are taken in any order anyway); results (`on_executed`, `on_applied`, ...) come back in the order the work was
asked for.  A result may arrive after the core has moved on (rolled back, stepped down): the
core tracks every execution (and application) it asked for and ignores the results of those it
has since undone.  One exception: `on_reads_executed` may come before the result of an
execution asked for earlier (a node runs cheap reads on its event loop once the engine work
is done, while that work's result is still on its way to the loop).  The core needs no order
there: a read group is matched by its id, its replies wait until every batch cut before it
has committed, and a rollback of one of those re-runs it.

Reads (read-only requests) skip the batch: the primary runs them on its current state and
holds their replies until every batch they could have observed has committed; a rollback of
such a batch re-runs them.  So a read never shows state that a rollback could erase.

The link between the pair is assumed not to partition (as in Eve's synchronous setting).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from .batcher import Batcher
from .messages import (
    Apply,
    Batch,
    CatchUp,
    CaughtUp,
    Commit,
    ErrorInfo,
    Execute,
    Heartbeat,
    Hello,
    NeedState,
    Reply,
    Request,
    StateData,
    StateRequest,
    SyncRequest,
    TokenReport,
)
from .verification import PassiveVerification, PrimaryBackupVerification, UnreplicatedVerification, Verdict


class Role(str, enum.Enum):
    PRIMARY = "primary"
    BACKUP = "backup"


class PeerState(str, enum.Enum):
    """What the primary knows of its backup."""

    SYNCED = "synced"  # executes every batch; its token is needed to commit
    DOWN = "down"  # silent: the primary commits alone
    CATCHING_UP = "catching_up"  # alive, replaying the log or taking state: commit alone


# --- Actions, performed by the runtime in the order given ---------------------------------


@dataclass(frozen=True, slots=True)
class ExecuteBatch:
    batch: Batch
    attempt: int
    sequential: bool


@dataclass(frozen=True, slots=True)
class ApplyBatch:
    """Passive backup: apply the primary's changesets of this batch, undoably (like an
    execution: RollbackTo undoes it, CommitUpTo makes it final), then report the state root
    with `on_applied`.  `schema_changed`: changesets carry no DDL, so execute the batch instead
    (sequentially) and report the root all the same.  If this node's root is not
    `parent_root` (when given), or the changesets do not apply, change nothing and report an
    empty root."""

    batch: Batch
    attempt: int
    changesets: tuple[bytes, ...]
    parent_root: bytes = b""
    schema_changed: bool = False


@dataclass(frozen=True, slots=True)
class RollbackTo:
    """Undo every uncommitted batch with seq >= this one."""

    seq: int


@dataclass(frozen=True, slots=True)
class CommitUpTo:
    seq: int


@dataclass(frozen=True, slots=True)
class Send:
    message: object


@dataclass(frozen=True, slots=True)
class SendReply:
    reply: Reply


@dataclass(frozen=True, slots=True)
class RunReads:
    read_id: int
    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class PersistView:
    view: int
    role: Role


@dataclass(frozen=True, slots=True)
class RequestState:
    """Backup: send the primary a StateRequest built from this node's Merkle tree."""


@dataclass(frozen=True, slots=True)
class ServeState:
    """Primary: answer this StateRequest (nothing is in flight: the state is committed)."""

    request: StateRequest


@dataclass(frozen=True, slots=True)
class InstallState:
    """Backup: install one part of a state transfer."""

    data: StateData


@dataclass(frozen=True, slots=True)
class Log:
    """A decision worth a line in the node's log."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    node_id: str
    max_batch: int = 256
    batch_delay_ms: int = 1
    pipeline_depth: int = 4
    # Groups of read-only requests handed to the engine and not yet answered.  Reads that
    # arrive meanwhile wait and go out together: one engine hop and one worker round trip for
    # the group instead of one per read (the engine runs its work one item at a time anyway).
    reads_in_flight: int = 1
    heartbeat_ms: int = 100
    peer_timeout_ms: int = 1500
    # A gap between two ticks longer than this means this node itself was stalled (paused,
    # starved); silence measured across it is not the peer's (see `tick`).  0: never assume it
    # (unit tests that model a silent peer with one long tick).
    local_stall_ms: int = 0
    retransmit_ms: int = 300
    log_limit: int = 100_000
    # No peer at all: a single unreplicated node (commits its own executions, parallel ones
    # included, with nothing to check them; the baseline the pair is measured against).
    standalone: bool = False
    # Passive (Remus-like) replication instead of execute-verify: the primary ships the
    # changesets of its executions and the backup applies them (see the module docstring).
    passive: bool = False


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    attempt: int = 0
    sequential: bool = False
    local_token: bytes | None = None
    local_replies: tuple[Reply, ...] | None = None
    remote_token: bytes | None = None
    sent_ms: int = -1
    repair_requested: bool = False  # tokens still differ sequentially: the backup must take the state
    # Passive replication.  Primary: its root after the batch and what the backup needs to
    # apply it.  Backup: the primary's token, logged if this node takes over.
    local_root: bytes | None = None
    parent_root: bytes = b""
    changesets: tuple[bytes, ...] = ()
    schema_changed: bool = False
    primary_token: bytes = b""


@dataclass(slots=True)
class _Read:
    requests: tuple[Request, ...]
    after_seq: int
    replies: tuple[Reply, ...] | None = None


@dataclass(slots=True)
class ReplicaStats:
    batches_committed: int = 0
    divergences: int = 0
    sequential_reexecutions: int = 0
    state_transfers: int = 0
    view_changes: int = 0
    catch_up_batches: int = 0


class Replica:
    """One node's protocol state machine."""

    def __init__(self, config: ReplicaConfig, *, role: Role, view: int, committed_seq: int, now_ms: int):
        self.config = config
        self.role = role
        self.view = view
        self.committed_seq = committed_seq
        self.stats = ReplicaStats()
        self.verification = PassiveVerification() if config.passive else PrimaryBackupVerification()
        self._actions: list = []
        self._now_ms = now_ms
        self.last_heard_ms = now_ms
        self._last_tick_ms = now_ms
        # Nothing heard from the peer in this life yet: never go on alone before it has spoken
        # (while this node was down, the peer may have taken over in a higher view).
        self._heard_peer = False
        self._last_heartbeat_ms = -(10**12)
        # Every ExecuteBatch asked for and not yet answered, in order: [seq, attempt, live].
        # A rollback marks the executions it undoes dead, so their late results are ignored.
        self._executions: deque[list] = deque()
        # Primary state.
        self._batcher = Batcher(config.max_batch, config.batch_delay_ms, committed_seq + 1, view)
        self._in_flight: dict[int, _InFlight] = {}
        self._known_requests: set[tuple[str, int]] = set()
        self._log: dict[int, tuple[Batch, bytes]] = {}  # committed batches, contiguous up to committed_seq
        # A (re)started primary counts on its backup until the backup says otherwise or, once
        # heard from, falls silent.
        self.peer = PeerState.SYNCED
        # The last sync point (or the start): backup messages older than it may be on the way.
        self._sync_point_ms = now_ms
        if config.standalone:
            self.verification = UnreplicatedVerification()
            self.peer = PeerState.DOWN
            self._heard_peer = True
        self._paused_for_sync = False
        self._backup_committed = -1
        self._pending_state_request: StateRequest | None = None
        self._pending_reads: list[Request] = []
        self._reads: dict[int, _Read] = {}
        self._next_read_id = 1
        self._read_groups_running = 0  # RunReads emitted whose on_reads_executed has not come
        # Backup state.
        self.synced = False
        self._executed: dict[int, _InFlight] = {}  # uncommitted batches this backup ran
        self._buffer: dict[int, Execute] = {}
        self._catch_up: dict[int, bytes] = {}  # seq -> the primary's token, while catching up
        self._awaiting_state = False
        self._installing_state = False
        self._state_requested_ms = -(10**12)
        self._last_sync_request_ms = -(10**12)
        self._dropped_ms = -(10**12)  # when this backup, in sync, last dropped its uncommitted batches
        self._wrong_mode_logged = False

    # --- inspection ---

    @property
    def last_seq(self) -> int:
        """The highest seq this node has executed or issued."""
        seqs = list(self._in_flight) + list(self._executed)
        return max(seqs) if seqs else self.committed_seq

    def status(self) -> dict:
        return {
            "node_id": self.config.node_id,
            "role": self.role.value,
            "view": self.view,
            "committed_seq": self.committed_seq,
            "in_flight": len(self._in_flight) if self.role is Role.PRIMARY else len(self._executed),
            "peer": "none" if self.config.standalone else (
                self.peer.value if self.role is Role.PRIMARY else ("synced" if self.synced else "not synced")
            ),
            "divergences": self.stats.divergences,
            "state_transfers": self.stats.state_transfers,
            "view_changes": self.stats.view_changes,
            "batches_committed": self.stats.batches_committed,
            "replication": "passive" if self.config.passive else "eve",
        }

    def on_peer_connected(self, now_ms: int) -> None:
        """A (new) link to the peer: introduce this node; the backup re-syncs from it."""
        self._send(Hello(self.view, self.config.node_id, self.role.value, self.committed_seq))

    def take_actions(self) -> list:
        actions, self._actions = self._actions, []
        return actions

    # --- helpers ---

    def _send(self, message) -> None:
        self._actions.append(Send(message))

    def _log_line(self, text: str) -> None:
        self._actions.append(Log(text))

    def _execute(self, batch: Batch, attempt: int, sequential: bool) -> None:
        self._executions.append([batch.seq, attempt, True])
        self._actions.append(ExecuteBatch(batch, attempt, sequential))

    def _apply(self, message: Apply) -> None:
        self._executions.append([message.batch.seq, message.attempt, True])
        self._actions.append(ApplyBatch(message.batch, message.attempt, message.changesets, message.parent_root,
                                        message.schema_changed))

    def _rollback_to(self, seq: int) -> None:
        # Results of the executions undone here may still come back: mark them dead.
        for execution in self._executions:
            if execution[0] >= seq:
                execution[2] = False
        self._actions.append(RollbackTo(seq))

    def _is_current_result(self, seq: int, attempt: int) -> bool:
        """Match a result with the oldest execution asked for; False if it was undone since.

        A (seq, attempt) alone is not enough: after a rollback the same pair may be asked for
        again (a backup re-syncing, a primary restarting its pipeline) for another batch or
        another starting state.  Results come back in order, so the first matching entry is
        this one; entries before it never got a result (the runtime lost them) and go too.
        """
        while self._executions:
            s, a, live = self._executions.popleft()
            if s == seq and a == attempt:
                return live
        return False

    # --- inputs: clients ---

    def on_client_request(self, request: Request, read_only: bool, now_ms: int) -> None:
        """A request from a client.  The runtime answers non-primaries itself (NotPrimary)."""
        self._now_ms = now_ms
        if self.role is not Role.PRIMARY:
            return
        if read_only:
            self._pending_reads.append(request)
        else:
            identity = (request.client_id, request.request_id)
            if identity in self._known_requests:
                return  # a retry of a request already in a batch: its reply will come
            self._known_requests.add(identity)
            self._batcher.add(request, now_ms)
        self._pump(now_ms)

    # --- inputs: the runtime's results ---

    def on_executed(self, seq: int, attempt: int, token: bytes, replies: tuple[Reply, ...],
                    changesets: tuple[bytes, ...] = (), state_root: bytes = b"", parent_root: bytes = b"",
                    schema_changed: bool = False) -> None:
        """An execution's result.  The keywords matter only to a passive primary, which ships
        them: the changesets, the roots after and right before the batch, and whether the batch
        changed the schema."""
        if not self._is_current_result(seq, attempt):
            return
        if self.role is Role.PRIMARY:
            entry = self._in_flight.get(seq)
            if entry is None or entry.attempt != attempt:
                return
            entry.local_token, entry.local_replies = token, tuple(replies)
            if self.config.passive:
                entry.local_root, entry.parent_root = state_root, parent_root
                entry.changesets, entry.schema_changed = tuple(changesets), schema_changed
                if self.peer is PeerState.SYNCED:
                    entry.sent_ms = self._now_ms
                    self._send(self._apply_message(entry))
            self._try_commit()
            self._pump(self._now_ms)  # a pipeline slot may have freed
        else:
            if seq in self._catch_up:
                expected = self._catch_up.pop(seq)
                if expected != token:
                    self._log_line(f"catch-up batch {seq} gave a different token: taking the primary's state")
                    self._start_state_transfer(seq)
                    return
                self._actions.append(CommitUpTo(seq))
                self.committed_seq = seq
                self.stats.catch_up_batches += 1
                if not self._catch_up:
                    self._send(CaughtUp(self.view, self.committed_seq))
                return
            entry = self._executed.get(seq)
            if entry is None or entry.attempt != attempt:
                return
            entry.local_token = token
            self._send(TokenReport(self.view, seq, attempt, token))

    def on_applied(self, seq: int, attempt: int, state_root: bytes) -> None:
        """The result of an ApplyBatch: this node's state root after the batch, empty if the
        batch could not be applied (this node's state is not the one the primary executed
        it on)."""
        if not self._is_current_result(seq, attempt) or self.role is not Role.BACKUP:
            return
        entry = self._executed.get(seq)
        if entry is None or entry.attempt != attempt:
            return
        if not state_root:
            # Batches of another life of the primary (or another state) are held here: what
            # is uncommitted goes, and the primary brings this backup up to date.
            self._log_line(f"batch {seq} does not apply to this node's state: re-syncing")
            self._drop_uncommitted()
            self._request_sync(self._now_ms, force=True)
            return
        entry.local_token = state_root
        self._send(TokenReport(self.view, seq, attempt, state_root))

    def on_reads_executed(self, read_id: int, replies: tuple[Reply, ...], observed_seq: int | None = None) -> None:
        """A read group's replies.  `observed_seq`: they were read on the state right after
        that batch, not on the state the group was dispatched after (the runtime read a pinned
        snapshot of the committed state, runtime/committed_reads.py); they are released once
        that batch is committed, and a rollback of later batches does not touch them."""
        # Counted whether or not the group is still wanted (a rollback may have re-queued it).
        self._read_groups_running = max(0, self._read_groups_running - 1)
        read = self._reads.get(read_id)
        if read is not None and observed_seq is not None and observed_seq < self.committed_seq:
            # They could miss acknowledged writes: never send them; read again.
            self._log_line(f"reads on batch {observed_seq}'s state, older than the committed "
                           f"batch {self.committed_seq}: refused, run again")
            del self._reads[read_id]
            self._pending_reads.extend(read.requests)
        elif read is not None:
            read.replies = tuple(replies)
            if observed_seq is not None:
                read.after_seq = min(read.after_seq, observed_seq)
            self._release_reads()
        self._pump(self._now_ms)

    def on_state_served(self, now_ms: int) -> None:
        self._now_ms = now_ms
        self._pending_state_request = None
        self._pump(now_ms)

    def on_state_installed(self, committed_seq: int, now_ms: int) -> None:
        self._now_ms = now_ms
        self._awaiting_state = self._installing_state = False
        self.committed_seq = committed_seq
        self._executed.clear()
        self._buffer.clear()
        self._catch_up.clear()
        for execution in self._executions:
            execution[2] = False  # the installed state replaced whatever they did
        self.stats.state_transfers += 1
        self._log_line(f"state transfer installed at seq {committed_seq}")
        self._request_sync(now_ms, force=True)

    # --- inputs: the peer ---

    def on_peer_message(self, message, now_ms: int) -> None:
        self._now_ms = now_ms
        view = getattr(message, "view", None)
        if view is None or self.config.standalone:
            return
        self._heard_peer = True
        if view < self.view:
            # A stale sender: tell it the current view so it steps down.
            self._send(Heartbeat(self.view, self.role.value, self.committed_seq, self.synced))
            return
        self.last_heard_ms = now_ms
        if view > self.view:
            self._adopt_higher_view(view, now_ms)
        handler = getattr(self, f"_on_{type(message).__name__}", None)
        if handler is not None:
            handler(message, now_ms)
        if self.role is Role.PRIMARY:
            self._release_reads()  # held until the peer was heard (see _release_reads)
        self._pump(now_ms)

    def _adopt_higher_view(self, view: int, now_ms: int) -> None:
        was = self.role
        self._log_line(f"saw view {view} > {self.view}: {'stepping down, ' if was is Role.PRIMARY else ''}re-syncing as backup")
        self.view = view
        self.role = Role.BACKUP
        self._actions.append(PersistView(view, Role.BACKUP))
        self._drop_uncommitted()
        # The log must hold every batch up to committed_seq; as a backup this node will commit
        # batches it does not log, so a later take-over starts a new log.
        self._log.clear()
        self._pending_state_request = None
        self._paused_for_sync = False
        self._request_sync(now_ms, force=True)

    def _drop_uncommitted(self) -> None:
        """Forget and undo everything not committed (clients retry unreplied requests)."""
        uncommitted = sorted(set(self._in_flight) | set(self._executed) | set(self._catch_up))
        if uncommitted:
            self._rollback_to(uncommitted[0])
        self._in_flight.clear()
        self._executed.clear()
        self._buffer.clear()
        self._catch_up.clear()
        self._known_requests.clear()
        self._pending_reads.clear()
        self._reads.clear()
        self._batcher = Batcher(self.config.max_batch, self.config.batch_delay_ms, self.committed_seq + 1, self.view)
        if self.synced:
            # The primary may have counted on tokens of batches just dropped (see _on_CatchUp).
            self._dropped_ms = self._now_ms
        self.synced = False

    # Primary-side handlers.

    def _on_Hello(self, message: Hello, now_ms: int) -> None:
        if self.role is Role.PRIMARY:
            if message.role == Role.PRIMARY.value:
                # Two primaries in one view: a misconfiguration.  The smaller node id keeps it.
                if message.node_id < self.config.node_id:
                    self._adopt_higher_view(self.view + 1, now_ms)
                return
            # A backup's new link.  A backup in sync goes on executing: only one that is not
            # says so (SyncRequest), so a SYNCED primary waits for that.
            if self.peer is not PeerState.SYNCED:
                self._begin_catch_up(message.committed_seq, now_ms)
        elif message.role == Role.PRIMARY.value and not self.synced:
            self._request_sync(now_ms, force=True)
        # A backup in sync goes on: a Hello may only mean the link was dialled again, and the
        # primary may already have committed batches on tokens this backup reported.  If the
        # primary restarted, its next batch replaces one this backup holds (see _on_Execute).

    def _on_SyncRequest(self, message: SyncRequest, now_ms: int) -> None:
        if self.role is Role.PRIMARY:
            self._backup_out_of_sync(message.committed_seq, now_ms)

    def _backup_out_of_sync(self, backup_committed: int, now_ms: int) -> None:
        """The backup says it is not in sync: catch it up, going on alone meanwhile."""
        if self.peer is PeerState.SYNCED:
            if backup_committed == self.committed_seq and not self._in_flight:
                # It holds every committed batch and nothing is in flight: a sync point now.
                self._send_sync_point(now_ms)
                return
            if now_ms - self._sync_point_ms < self.config.peer_timeout_ms:
                # Possibly sent before the last sync point, which the backup may have reached
                # since: committing alone now could commit batches a backup in sync lacks.  A
                # backup really out of sync asks again.
                return
        self._begin_catch_up(backup_committed, now_ms)

    def _begin_catch_up(self, backup_committed: int, now_ms: int) -> None:
        if self.peer is not PeerState.CATCHING_UP:
            self._log_line(f"backup at seq {backup_committed}, primary at {self.committed_seq}: catching it up")
        self.peer = PeerState.CATCHING_UP
        self._send_catch_up(backup_committed)
        # Batches waiting for the backup's token will not get it: decide them alone.
        self._try_commit()

    def _send_catch_up(self, backup_committed: int) -> None:
        first_logged = min(self._log) if self._log else self.committed_seq + 1
        if backup_committed + 1 < first_logged or backup_committed > self.committed_seq:
            self._log_line(f"log does not reach back to seq {backup_committed + 1}: state transfer")
            self._send(NeedState(self.view, backup_committed))
            return
        self._backup_committed = backup_committed
        if backup_committed == self.committed_seq:
            # Nothing to send: hold new batches back; the sync point follows once nothing is in
            # flight.  (An empty CatchUp is only ever a sync point.)
            self._paused_for_sync = True
            self._finish_sync_if_ready()
            return
        last = min(self.committed_seq, backup_committed + 512)  # large gaps travel in slices
        entries = tuple(self._log[seq] for seq in range(backup_committed + 1, last + 1))
        self._send(CatchUp(self.view, entries, self.committed_seq))

    def _on_CaughtUp(self, message: CaughtUp, now_ms: int) -> None:
        if self.role is not Role.PRIMARY or self.peer is not PeerState.CATCHING_UP:
            return
        self._backup_committed = message.committed_seq
        gap = self.committed_seq - message.committed_seq
        if gap <= 512:
            # The last stretch: hold new batches back so the catch-up converges.
            self._paused_for_sync = True
            self._finish_sync_if_ready()
        else:
            self._send_catch_up(message.committed_seq)

    def _finish_sync_if_ready(self) -> None:
        """Declare the backup in sync once it holds every committed batch and none is in flight."""
        if self.peer is not PeerState.CATCHING_UP or not self._paused_for_sync or self._in_flight:
            return
        if self._pending_state_request is not None:
            return  # the backup is taking the state; it asks again afterwards
        if self._backup_committed != self.committed_seq:
            self._send_catch_up(self._backup_committed)
            return
        self._send_sync_point(self._now_ms)

    def _send_sync_point(self, now_ms: int) -> None:
        # Sent before any Execute of the next batches: the backup starts executing after it.
        self._send(CatchUp(self.view, (), self.committed_seq))
        if self.peer is not PeerState.SYNCED:
            self._log_line(f"backup in sync at seq {self.committed_seq}")
        self.peer = PeerState.SYNCED
        self._paused_for_sync = False
        self._sync_point_ms = now_ms

    def _on_TokenReport(self, message: TokenReport, now_ms: int) -> None:
        if self.role is not Role.PRIMARY or self.peer is not PeerState.SYNCED:
            return
        entry = self._in_flight.get(message.seq)
        if entry is None or entry.attempt != message.attempt:
            return
        entry.remote_token = message.token
        self._try_commit()

    def _on_StateRequest(self, message: StateRequest, now_ms: int) -> None:
        if self.role is not Role.PRIMARY:
            return
        if self.peer is PeerState.SYNCED and now_ms - self._sync_point_ms < self.config.peer_timeout_ms:
            return  # possibly older than the last sync point (see _backup_out_of_sync)
        if self.peer is not PeerState.CATCHING_UP:
            self._log_line(f"backup asks for the state at seq {message.committed_seq}")
        self.peer = PeerState.CATCHING_UP
        self._paused_for_sync = False
        self._pending_state_request = message  # served once nothing is in flight
        self._try_commit()  # nothing waits for this backup's token any more

    # Backup-side handlers.

    def _on_Execute(self, message: Execute, now_ms: int) -> None:
        if self.role is not Role.BACKUP:
            return
        if self.config.passive:
            self._wrong_mode("Execute", "eve")
            return
        self._receive_batch(message, now_ms)

    def _on_Apply(self, message: Apply, now_ms: int) -> None:
        if self.role is not Role.BACKUP:
            return
        if not self.config.passive:
            self._wrong_mode("Apply", "passive")
            return
        self._receive_batch(message, now_ms)

    def _wrong_mode(self, what: str, theirs: str) -> None:
        # The runtime's handshake refuses such a peer; this is the core's own guard.
        if not self._wrong_mode_logged:
            self._wrong_mode_logged = True
            mine = "passive" if self.config.passive else "eve"
            self._log_line(f"the primary sent {what}: it runs {theirs} replication, this node {mine}; "
                           "ignoring it (both nodes must run the same --replication)")

    def _receive_batch(self, message: Execute | Apply, now_ms: int) -> None:
        """A batch to execute (Execute) or apply (Apply, passive), in seq order."""
        if not self.synced or self._awaiting_state:
            return
        seq = message.batch.seq
        if seq <= self.committed_seq:
            return
        entry = self._executed.get(seq)
        known = entry.batch if entry is not None else (self._buffer[seq].batch if seq in self._buffer else None)
        if known is not None and known != message.batch:
            # Within one life of a primary a seq names one batch: this primary restarted since
            # and numbers its batches afresh, attempts too.  What this backup has not committed
            # died with the primary's previous life: forget it and re-sync.
            self._log_line(f"batch {seq} replaced: the primary restarted; re-syncing")
            self._drop_uncommitted()
            self._request_sync(now_ms, force=True)
            return
        if entry is not None:
            if message.attempt == entry.attempt:
                if entry.local_token is not None:
                    self._send(TokenReport(self.view, seq, entry.attempt, entry.local_token))
                return
            if message.attempt < entry.attempt:
                return
            if self.config.passive:
                # A passive primary never re-executes: a higher attempt comes from another
                # life of it.  Like a replaced batch: forget what is uncommitted and re-sync.
                self._log_line(f"batch {seq} sent again with attempt {message.attempt}: re-syncing")
                self._drop_uncommitted()
                self._request_sync(now_ms, force=True)
                return
            # A higher attempt: the primary saw a divergence at this seq or an earlier one and
            # re-executes from there, and the Execute of an earlier seq may still be on its way.
            # Undo from the first batch held with a lower attempt, so this attempt runs on the
            # state the primary's did (the batches before its divergence committed there on
            # matching tokens: running them again sequentially changes nothing).
            first = min(s for s, held in self._executed.items() if s <= seq and held.attempt < message.attempt)
            self._rollback_to(first)
            for later in sorted(s for s in self._executed if s >= first):
                old = self._executed.pop(later)
                if later == seq:
                    continue
                # Every other batch undone keeps its attempt (the primary may already have
                # committed it on the token reported): it runs again, sequentially, so this
                # run ends in the state that token stood for, unless a newer attempt waits.
                waiting = self._buffer.get(later)
                if waiting is None or waiting.attempt < old.attempt:
                    self._buffer[later] = Execute(self.view, old.batch, old.attempt, True)
            self.stats.sequential_reexecutions += 1
        self._buffer[seq] = message
        self._drain_buffer()

    def _drain_buffer(self) -> None:
        next_seq = (max(self._executed) if self._executed else self.committed_seq) + 1
        while next_seq in self._buffer:
            message = self._buffer.pop(next_seq)
            if isinstance(message, Apply):
                self._executed[next_seq] = _InFlight(message.batch, message.attempt, primary_token=message.token)
                self._apply(message)
            else:
                self._executed[next_seq] = _InFlight(message.batch, message.attempt, message.sequential)
                self._execute(message.batch, message.attempt, message.sequential)
            next_seq += 1
        # Anything older than what runs next is stale.
        for seq in [s for s in self._buffer if s < next_seq]:
            del self._buffer[seq]

    def _on_Commit(self, message: Commit, now_ms: int) -> None:
        if self.role is Role.BACKUP and self.synced:
            self._commit_backup(message.seq)

    def _commit_backup(self, seq: int) -> None:
        ready = [s for s in sorted(self._executed) if s <= seq and self._executed[s].local_token is not None]
        # Commit a prefix only: a batch this backup has not finished stays uncommitted.
        target = self.committed_seq
        for s in ready:
            if s != target + 1:
                break
            target = s
        if target > self.committed_seq:
            self._actions.append(CommitUpTo(target))
            for s in range(self.committed_seq + 1, target + 1):
                self._executed.pop(s, None)
            self.stats.batches_committed += target - self.committed_seq
            self.committed_seq = target

    def _on_Heartbeat(self, message: Heartbeat, now_ms: int) -> None:
        if self.role is Role.BACKUP and message.role == Role.PRIMARY.value:
            if self.synced and not message.peer_synced:
                if message.committed_seq > self.committed_seq:
                    # The primary went on without this backup: re-sync.
                    self._drop_uncommitted()
                    self._request_sync(now_ms, force=True)
                # Else it committed nothing without this backup (and the heartbeat may be older
                # than this backup's sync point): staying in sync is safe.  Its batches were not
                # checked against this backup's tokens, so none is committed here on its word.
            elif self.synced:
                self._commit_backup(message.committed_seq)
            elif not self._catch_up and not self._awaiting_state:
                self._request_sync(now_ms)
        elif self.role is Role.PRIMARY and message.role == Role.BACKUP.value:
            if message.peer_synced and self.peer is not PeerState.SYNCED:
                # The backup believes it is in sync while this primary does not count on it:
                # make it a sync point, or show it the batches it lacks.
                self._begin_catch_up(message.committed_seq, now_ms)
        # Two primaries of one view cannot tell from a heartbeat which one keeps the view (it
        # names no node): the Hello on every new link settles it.

    def _on_CatchUp(self, message: CatchUp, now_ms: int) -> None:
        if self.role is not Role.BACKUP or self._awaiting_state:
            return
        if not message.entries:
            # A sync point: from here the primary sends this backup every batch it commits.
            # Only a backup holding exactly the primary's committed batches can take it; any
            # other is stale or early, and the backup keeps asking (SyncRequest).
            if self.synced or self._catch_up or self.committed_seq != message.primary_committed_seq:
                return
            if now_ms - self._dropped_ms < self.config.peer_timeout_ms:
                # Possibly sent before this backup, in sync, dropped batches whose tokens the
                # primary may have committed on: taking it would make a backup "in sync" that
                # lacks committed batches.  It keeps asking.
                return
            if self._executed:
                self._drop_uncommitted()
            self.synced = True
            return
        if self.synced:
            if message.entries[-1][0].seq <= self.committed_seq:
                return  # older than the sync point this backup reached
            # The primary commits batches without this backup: it is not in sync any more.
            self._drop_uncommitted()
        elif self._executed:
            self._drop_uncommitted()
        next_seq = self.committed_seq + 1 + len(self._catch_up)
        for batch, token in message.entries:
            if batch.seq != next_seq:
                continue
            self._catch_up[batch.seq] = token
            self._execute(batch, 0, True)
            next_seq += 1
        if not self._catch_up:
            self._send(CaughtUp(self.view, self.committed_seq))

    def _on_NeedState(self, message: NeedState, now_ms: int) -> None:
        if self.role is Role.BACKUP and not self._awaiting_state:
            self._start_state_transfer(message.seq)

    def _on_StateData(self, message: StateData, now_ms: int) -> None:
        if self.role is not Role.BACKUP or not self._awaiting_state or self._installing_state:
            return
        if message.committed_seq < self.committed_seq:
            return  # an answer to an older request: installing it would undo commits
        if message.final:
            self._installing_state = True  # duplicates and later answers are not needed
        self._actions.append(InstallState(message))

    def _start_state_transfer(self, seq: int) -> None:
        self._drop_uncommitted()
        self._awaiting_state = True
        self._installing_state = False
        self._state_requested_ms = self._now_ms
        self._actions.append(RequestState())

    def _request_sync(self, now_ms: int, force: bool = False) -> None:
        if force or now_ms - self._last_sync_request_ms >= self.config.retransmit_ms:
            self._last_sync_request_ms = now_ms
            self._send(SyncRequest(self.view, self.committed_seq))

    # --- the primary's pipeline ---

    def _try_commit(self) -> None:
        while self._in_flight:
            seq = min(self._in_flight)
            entry = self._in_flight[seq]
            # Passive replication compares state roots (the backup did not execute: it has no
            # replies to hash); execute-verify compares tokens.
            local = entry.local_root if self.config.passive else entry.local_token
            if local is None:
                return
            synced = self.peer is PeerState.SYNCED
            verdict = self.verification.verdict(local, entry.remote_token, synced, entry.sequential)
            if verdict is Verdict.WAIT:
                return
            if verdict is Verdict.DIVERGE or verdict is Verdict.REEXECUTE:
                self._reexecute_from(seq, diverged=verdict is Verdict.DIVERGE)
                return
            if verdict is Verdict.TAKE_PRIMARY:
                # The primary's state wins, but committing it alone while the backup still
                # believes it is in sync would make a take-over lose it: tell the backup to
                # take the state, and commit once it is out of sync (it asks for the state).
                if not entry.repair_requested:
                    self._log_line(f"batch {seq}: tokens differ after sequential re-execution: backup takes the primary's state")
                    entry.repair_requested = True
                    entry.sent_ms = self._now_ms
                    self._send(NeedState(self.view, seq))
                return
            self._commit_primary(seq, entry)

    def _commit_primary(self, seq: int, entry: _InFlight) -> None:
        del self._in_flight[seq]
        self.committed_seq = seq
        self.stats.batches_committed += 1
        self._actions.append(CommitUpTo(seq))
        if self.peer is PeerState.SYNCED:
            self._send(Commit(self.view, seq))
        self._log[seq] = (entry.batch, entry.local_token)
        while len(self._log) > self.config.log_limit:
            del self._log[min(self._log)]
        for reply in entry.local_replies:
            self._actions.append(SendReply(reply))
            self._known_requests.discard((reply.client_id, reply.request_id))
        self._release_reads()
        self._finish_sync_if_ready()

    def _reexecute_from(self, seq: int, diverged: bool) -> None:
        if diverged:
            self.stats.divergences += 1
            self._log_line(f"batch {seq}: tokens differ: rolling back and re-executing sequentially")
        else:
            self._log_line(f"batch {seq}: ran in parallel and no backup can verify it: re-executing sequentially")
        self._rollback_to(seq)
        attempt = max(entry.attempt for entry in self._in_flight.values()) + 1
        for later in sorted(s for s in self._in_flight if s >= seq):
            entry = self._in_flight[later]
            entry.attempt, entry.sequential = attempt, True
            entry.local_token = entry.local_replies = entry.remote_token = None
            entry.repair_requested = False
            self._dispatch(entry, self._now_ms)
        self.stats.sequential_reexecutions += 1
        self._rerun_reads_after(seq)

    def _dispatch(self, entry: _InFlight, now_ms: int) -> None:
        # Passive: the backup gets the batch with its changesets once it has run (on_executed).
        if self.peer is PeerState.SYNCED and not self.config.passive:
            self._send(Execute(self.view, entry.batch, entry.attempt, entry.sequential))
        entry.sent_ms = now_ms
        self._execute(entry.batch, entry.attempt, entry.sequential)

    def _apply_message(self, entry: _InFlight) -> Apply:
        return Apply(self.view, entry.batch, entry.attempt, entry.changesets, entry.local_root,
                     entry.local_token, entry.parent_root, entry.schema_changed)

    def _pump(self, now_ms: int) -> None:
        if self.role is not Role.PRIMARY:
            return
        if self._pending_state_request is not None:
            if not self._in_flight:
                self._actions.append(ServeState(self._pending_state_request))
                self._pending_state_request = None
            return
        while not self._paused_for_sync and len(self._in_flight) < self.config.pipeline_depth:
            batch = self._batcher.poll(now_ms)
            if batch is None:
                break
            # Alone, a batch runs sequentially: nobody could check a parallel run.  (Passive
            # replication never checks one: its executions are final as they are.)
            alone = self.peer is not PeerState.SYNCED and not self.config.standalone and not self.config.passive
            entry = self._in_flight[batch.seq] = _InFlight(batch, sequential=alone)
            self._dispatch(entry, now_ms)
        if self._pending_reads and self._read_groups_running < self.config.reads_in_flight:
            read_id = self._next_read_id
            self._next_read_id += 1
            self._read_groups_running += 1
            self._reads[read_id] = _Read(tuple(self._pending_reads), self.last_seq)
            self._actions.append(RunReads(read_id, tuple(self._pending_reads)))
            self._pending_reads = []

    def _release_reads(self) -> None:
        if not self._heard_peer:
            # Restarted and not yet heard from the peer: it may have taken over meanwhile, and
            # this node's committed state may be stale.
            return
        for read_id in sorted(self._reads):
            read = self._reads[read_id]
            if read.replies is not None and read.after_seq <= self.committed_seq:
                for reply in read.replies:
                    self._actions.append(SendReply(reply))
                del self._reads[read_id]

    def _rerun_reads_after(self, seq: int) -> None:
        for read_id in sorted(self._reads):
            read = self._reads[read_id]
            if read.after_seq >= seq:
                del self._reads[read_id]
                self._pending_reads.extend(read.requests)

    # --- time ---

    def tick(self, now_ms: int) -> None:
        self._now_ms = now_ms
        if self.config.local_stall_ms and now_ms - self._last_tick_ms > self.config.local_stall_ms:
            # This node itself did not run for a while (SIGSTOP, a VM pause, starvation): what
            # the peer sent meanwhile is still unread, so the silence it measures is its own.
            # Deciding on it would let a paused backup take over from a primary that went on
            # without it, or a paused primary go on alone after its backup took over (found by
            # the fault campaign: acknowledged writes lost).  Count from now instead.
            self.last_heard_ms = max(self.last_heard_ms, now_ms)
        self._last_tick_ms = now_ms
        silent_ms = now_ms - self.last_heard_ms
        if self.role is Role.PRIMARY:
            if self.peer is not PeerState.DOWN and silent_ms > self.config.peer_timeout_ms and self._heard_peer:
                self._log_line(f"backup silent for {silent_ms} ms: continuing alone")
                self.peer = PeerState.DOWN
                self._paused_for_sync = False
                self._pending_state_request = None
                self._try_commit()
            if self.peer is PeerState.SYNCED:
                for seq in sorted(self._in_flight):
                    entry = self._in_flight[seq]
                    if now_ms - entry.sent_ms < self.config.retransmit_ms:
                        continue
                    if entry.repair_requested:
                        entry.sent_ms = now_ms
                        self._send(NeedState(self.view, seq))
                    elif entry.remote_token is None:
                        if self.config.passive:
                            if entry.local_root is None:
                                continue  # not executed yet: nothing to ship
                            entry.sent_ms = now_ms
                            self._send(self._apply_message(entry))
                        else:
                            entry.sent_ms = now_ms
                            self._send(Execute(self.view, entry.batch, entry.attempt, entry.sequential))
            self._pump(now_ms)
        else:
            if self.synced and silent_ms > self.config.peer_timeout_ms:
                self._take_over(now_ms)
            elif self._awaiting_state:
                if not self._installing_state and now_ms - self._state_requested_ms >= self.config.retransmit_ms:
                    # The request or its answer may be lost: ask again.
                    self._state_requested_ms = now_ms
                    self._actions.append(RequestState())
            elif not self.synced and not self._catch_up:
                self._request_sync(now_ms)
        if now_ms - self._last_heartbeat_ms >= self.config.heartbeat_ms and not self.config.standalone:
            self._last_heartbeat_ms = now_ms
            synced = self.peer is PeerState.SYNCED if self.role is Role.PRIMARY else self.synced
            self._send(Heartbeat(self.view, self.role.value, self.committed_seq, synced))

    def _take_over(self, now_ms: int) -> None:
        self.view += 1
        self.role = Role.PRIMARY
        self.stats.view_changes += 1
        self._log_line(f"primary silent past {self.config.peer_timeout_ms} ms: taking over as primary of view {self.view}")
        self._actions.append(PersistView(self.view, Role.PRIMARY))
        uncommitted = [self._executed[s] for s in sorted(self._executed)]
        self._executed.clear()
        self._buffer.clear()
        self.peer = PeerState.DOWN
        self.synced = False
        self._log.clear()  # batches committed as a backup were not logged: start afresh
        if self.config.passive:
            # Keep every batch applied here: they are the old primary's results (its replies
            # are in the replicated reply cache, so a retry finds them) and there is nothing to
            # re-execute them against: they commit as they are.  A batch still being applied
            # was never reported, so never committed by the old primary: it goes, with the
            # batches after it.
            kept = 0
            while kept < len(uncommitted) and uncommitted[kept].local_token:
                kept += 1
            if kept < len(uncommitted):
                self._rollback_to(uncommitted[kept].batch.seq)
            for old in uncommitted[:kept]:
                self._in_flight[old.batch.seq] = _InFlight(old.batch, old.attempt, local_token=old.primary_token,
                                                           local_replies=(), local_root=old.local_token)
            self._batcher = Batcher(self.config.max_batch, self.config.batch_delay_ms, self.last_seq + 1, self.view)
            self.last_heard_ms = now_ms
            self._try_commit()
            return
        if uncommitted:
            # Re-execute, sequentially, every batch the old primary may have answered for.
            self._rollback_to(uncommitted[0].batch.seq)
        for old in uncommitted:
            entry = self._in_flight[old.batch.seq] = _InFlight(old.batch, old.attempt + 1, True)
            for request in old.batch.requests:
                self._known_requests.add((request.client_id, request.request_id))
            self._dispatch(entry, now_ms)
        self._batcher = Batcher(self.config.max_batch, self.config.batch_delay_ms, self.last_seq + 1, self.view)
        self.last_heard_ms = now_ms


def not_primary_reply(request: Request, primary: str | None) -> Reply:
    """What a node that is not the primary answers a client."""
    where = f"; the primary is {primary}" if primary else ""
    return Reply(request.client_id, request.request_id, (), ErrorInfo("NotPrimary", f"this node is not the primary{where}"))
