"""One simulated node: a `Replica` core, its fake engine, and what survives a crash.

Owns: the core of the current life (None while down), the `FakeStore`, the persisted
(view, role), and the node's engine queue.

Rules kept, mirroring the asyncio runtime (evedb/runtime/node.py) and the core's contract:
- every input is fed to the core and its actions are taken at once;
- actions are *performed in order* through one FIFO engine queue: engine work takes simulated
  time, and a Send or SendReply goes out only once the work queued before it is done (a reply
  never leaves before its CommitUpTo is durable, a Commit message never before the
  primary's own commit; SimConfig.sends_wait_for_engine=False breaks this on purpose).
  Results (`on_executed`, `on_reads_executed`, ...) come back to the core when their work
  completes, in order, possibly after the core has moved on: the core must recognise stale
  ones;
- a crash discards the core, everything queued on the engine and every message in flight to
  or from this life (`life` changes); the store recovers to its committed state; a restart
  builds a new core from the persisted (view, role) and the store's committed seq;
- with `SimConfig.committed_snapshot_reads`, read groups are answered as the runtime's
  committed snapshot does (runtime/committed_reads.py): a copy of the data taken when a
  CommitUpTo is taken with no state-changing engine work pending and the last execution
  that very batch, used while it is of the core's committed seq;
- the engine is checked as it is used: executing or applying a seq that does not follow the
  last one (an application refused for another parent root aside), committing a seq never
  executed, serving state with uncommitted batches or installing a state older than the
  committed one are violations of the core's contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..messages import Batch, Request, StateData, StateRequest
from ..replica import (
    ApplyBatch,
    CommitUpTo,
    ExecuteBatch,
    InstallState,
    Log,
    PersistView,
    Replica,
    ReplicaConfig,
    ReplicaStats,
    RequestState,
    Role,
    RollbackTo,
    RunReads,
    Send,
    SendReply,
    ServeState,
    not_primary_reply,
)
from .store import FakeStore, is_read_only, read_from


@dataclass(slots=True)
class NodeStats:
    crashes: int = 0
    restarts: int = 0
    forced_divergences: int = 0  # parallel executions this engine got wrong on purpose
    executions: int = 0
    applications: int = 0  # batches applied from the primary's changesets (passive replication)
    snapshot_reads: int = 0  # reads answered from the pinned committed state
    replica: ReplicaStats = field(default_factory=ReplicaStats)  # summed over past lives


class SimNode:
    def __init__(self, node_id: str, peer_id: str, role: Role, config: ReplicaConfig, world, *,
                 diverge_prob: float, corrupt_offset: int, forced: frozenset = frozenset(),
                 snapshot_reads: bool = False):
        self.node_id = node_id
        self.peer_id = peer_id
        self.config = config
        self.world = world  # the cluster: now_ms, rng, schedule, send_peer, send_client, history
        self.store = FakeStore()
        self.persisted_view = 0
        self.persisted_role = role
        self.replica: Replica | None = None
        self.life = 0
        self.stats = NodeStats()
        self.diverge_prob = diverge_prob
        self.corrupt_offset = corrupt_offset
        self.forced = set(forced)  # seqs whose first parallel execution here goes wrong
        self._engine_free_ms = 0
        self._uncommitted: dict[int, tuple[Batch, bytes]] = {}  # seq -> (batch, root after it)
        # Reads on the committed state (SimConfig.committed_snapshot_reads), as the runtime
        # does them: state-changing engine work queued and not yet done, the batch whose state
        # the store holds once it is done (None after anything but an execution), and the
        # pinned copy (seq, data).
        self.snapshot_reads = snapshot_reads
        self._state_changes_pending = 0
        self._state_seq: int | None = None
        self._snapshot: tuple[int, dict] | None = None

    @property
    def up(self) -> bool:
        return self.replica is not None

    # --- lifetime ---

    def start(self) -> None:
        self.life += 1
        self.replica = Replica(self.config, role=self.persisted_role, view=self.persisted_view,
                               committed_seq=self.store.committed_seq, now_ms=self.world.now_ms)
        self._note(f"start as {self.persisted_role.value} of view {self.persisted_view} "
                   f"at committed seq {self.store.committed_seq}")

    def crash(self) -> None:
        self._add_stats(self.replica.stats)
        self.replica = None
        self.life += 1
        self.store.recover()
        self._uncommitted.clear()
        self._engine_free_ms = self.world.now_ms
        self._state_changes_pending = 0
        self._state_seq = None
        self._snapshot = None
        self.stats.crashes += 1
        self._note(f"CRASH (durable: committed seq {self.store.committed_seq})")

    def total_replica_stats(self) -> ReplicaStats:
        total = ReplicaStats(**{name: getattr(self.stats.replica, name) for name in ReplicaStats.__slots__})
        if self.replica is not None:
            for name in ReplicaStats.__slots__:
                setattr(total, name, getattr(total, name) + getattr(self.replica.stats, name))
        return total

    def _add_stats(self, stats: ReplicaStats) -> None:
        for name in ReplicaStats.__slots__:
            setattr(self.stats.replica, name, getattr(self.stats.replica, name) + getattr(stats, name))

    # --- inputs ---

    def tick(self) -> None:
        if self.up:
            self.replica.tick(self.world.now_ms)
            self._take()

    def peer_connected(self) -> None:
        if self.up:
            self.replica.on_peer_connected(self.world.now_ms)
            self._take()

    def peer_message(self, message) -> None:
        if self.up:
            self.replica.on_peer_message(message, self.world.now_ms)
            self._take()

    def client_request(self, request: Request) -> None:
        if not self.up:
            return
        if self.replica.role is not Role.PRIMARY:
            # The runtime answers clients itself when this node is not the primary.
            self.world.send_client(self, not_primary_reply(request, self.peer_id))
            return
        self.replica.on_client_request(request, is_read_only(request), self.world.now_ms)
        self._take()

    # --- performing actions, in order, through the engine queue ---

    def _take(self) -> None:
        actions = self.replica.take_actions()
        while actions:  # what reads answered at once led to comes after, as in the runtime
            for action in actions:
                self._enqueue(action)
            actions = self.replica.take_actions()

    # Kinds of engine work that change the store's data (a commit only marks it durable).
    _STATE_CHANGES = (ExecuteBatch, ApplyBatch, RollbackTo, InstallState)

    def _snapshot_side(self, action) -> bool:
        """The runtime's committed-snapshot bookkeeping at the moment it takes an action; True
        if the action was answered here and must not be queued."""
        kind = type(action)
        if kind is ExecuteBatch:
            self._state_seq = action.batch.seq
        elif kind in (ApplyBatch, RollbackTo, InstallState):
            self._state_seq = None
        if kind in (PersistView, InstallState):
            self._snapshot = None
        elif kind is CommitUpTo:
            self._snapshot = None
            if (self.replica.role is Role.PRIMARY and self._state_seq == action.seq
                    and self._state_changes_pending == 0):
                self._snapshot = (action.seq, dict(self.store.data))
        elif kind is RunReads and self._snapshot is not None and self._snapshot[0] == self.replica.committed_seq:
            seq, data = self._snapshot
            self.stats.snapshot_reads += len(action.requests)
            self.replica.on_reads_executed(action.read_id, read_from(data, action.requests), observed_seq=seq)
            return True
        return False

    def _enqueue(self, action) -> None:
        world = self.world
        kind = type(action)
        if self.snapshot_reads and self._snapshot_side(action):
            return
        if kind in self._STATE_CHANGES:
            self._state_changes_pending += 1
        if kind in (Send, SendReply) and not world.config.sends_wait_for_engine:
            self._perform(self.life, action)  # the contract broken on purpose (see SimConfig)
            return
        if kind is ExecuteBatch:
            duration = world.rng.randint(1, 4) * (2 if action.sequential else 1)
        elif kind in (Send, SendReply, Log):
            duration = 0
        else:
            duration = world.rng.randint(0, 2)
        done_ms = max(world.now_ms, self._engine_free_ms) + duration
        self._engine_free_ms = done_ms
        life = self.life
        world.schedule(done_ms, lambda: self._perform(life, action))

    def _perform(self, life: int, action) -> None:
        if life != self.life:
            return  # crashed since: the work and its result are gone
        kind = type(action)
        if kind in self._STATE_CHANGES:
            self._state_changes_pending -= 1
        if kind is Send:
            self.world.send_peer(self, action.message)
        elif kind is SendReply:
            self.world.send_client(self, action.reply)
        elif kind is ExecuteBatch:
            self._execute(action)
        elif kind is ApplyBatch:
            self._apply(action)
        elif kind is RollbackTo:
            self.store.rollback(action.seq)
            for seq in [s for s in self._uncommitted if s >= action.seq]:
                del self._uncommitted[seq]
        elif kind is CommitUpTo:
            self._commit(action.seq)
        elif kind is RunReads:
            replies = self.store.read(action.requests)
            self.replica.on_reads_executed(action.read_id, replies)
            self._take()
        elif kind is PersistView:
            self.persisted_view, self.persisted_role = action.view, action.role
        elif kind is RequestState:
            self.world.send_peer(self, StateRequest(self.replica.view, self.store.committed_seq, b"", ()))
        elif kind is ServeState:
            self._serve_state()
        elif kind is InstallState:
            self._install_state(action.data)
        elif kind is Log:
            self._note(action.text)
        else:
            self._violation(f"unknown action {action!r}")

    def _execute(self, action: ExecuteBatch) -> None:
        batch = action.batch
        expected = self.store.last_seq + 1
        if batch.seq != expected:
            self._violation(f"engine asked to execute seq {batch.seq} (attempt {action.attempt}) "
                            f"but the next seq is {expected} (committed {self.store.committed_seq}, "
                            f"uncommitted {self.store.uncommitted_seqs})")
        corrupt = None
        rng = self.world.rng
        if not action.sequential:
            # Drawn for every parallel execution, so the random sequence does not depend on
            # which executions are forced.
            hit = rng.random() < self.diverge_prob
            position = rng.randrange(len(batch.requests)) if batch.requests else 0
            if batch.seq in self.forced:
                self.forced.discard(batch.seq)
                hit, position = True, 0
            if hit:
                corrupt = (position, self.corrupt_offset)
        parent_root = self.store.root()
        token, replies, corrupted = self.store.execute(batch, corrupt=corrupt)
        self.stats.executions += 1
        if corrupted:
            self.stats.forced_divergences += 1
            self._note(f"engine: parallel execution of seq {batch.seq} went wrong (forced)")
        self._uncommitted[batch.seq] = (batch, self.store.root())
        if self.config.passive:
            self.replica.on_executed(batch.seq, action.attempt, token, replies,
                                     changesets=(self.store.changeset(batch.seq),), state_root=self.store.root(),
                                     parent_root=parent_root)
        else:
            self.replica.on_executed(batch.seq, action.attempt, token, replies)
        self._take()

    def _apply(self, action: ApplyBatch) -> None:
        batch = action.batch
        if action.parent_root and self.store.root() != action.parent_root:
            # Made on another state: a batch of an earlier life of the primary is held here, or
            # the batch before this one was refused too (its ApplyBatch was already queued).
            self.replica.on_applied(batch.seq, action.attempt, b"")
            self._take()
            return
        expected = self.store.last_seq + 1
        if batch.seq != expected:
            self._violation(f"engine asked to apply seq {batch.seq} (attempt {action.attempt}) "
                            f"but the next seq is {expected} (committed {self.store.committed_seq})")
        root = self.store.apply(batch.seq, action.changesets)
        self.stats.applications += 1
        self._uncommitted[batch.seq] = (batch, root)
        self.replica.on_applied(batch.seq, action.attempt, root)
        self._take()

    def _commit(self, seq: int) -> None:
        store = self.store
        for s in range(store.committed_seq + 1, seq + 1):
            if s not in self._uncommitted:
                self._violation(f"commit up to {seq}: seq {s} was never executed here")
                continue
            batch, root = self._uncommitted.pop(s)
            self.world.history.record_commit(self.world.now_ms, self.node_id, s, batch, root)
        store.commit(seq)

    def _serve_state(self) -> None:
        store = self.store
        if store.uncommitted_seqs:
            self._violation(f"serving state with uncommitted batches {store.uncommitted_seqs}")
        data = StateData(self.replica.view, store.committed_seq, None, store.snapshot_pages(), True, store.root())
        self.world.send_peer(self, data)
        self.replica.on_state_served(self.world.now_ms)
        self._take()

    def _install_state(self, data: StateData) -> None:
        store = self.store
        if data.committed_seq < store.committed_seq:
            self._violation(f"installing state at seq {data.committed_seq} over committed seq {store.committed_seq}")
        store.install(data.pages, data.committed_seq)
        self._uncommitted.clear()
        if store.root() != data.state_root:
            self._violation("installed state's root differs from the primary's")
        self.world.history.record_commit(self.world.now_ms, self.node_id, data.committed_seq, None, store.root())
        if data.final:
            self.replica.on_state_installed(data.committed_seq, self.world.now_ms)
            self._take()

    # --- helpers ---

    def _note(self, text: str) -> None:
        self.world.history.note(self.world.now_ms, self.node_id, text)

    def _violation(self, text: str) -> None:
        self.world.history.violation(self.world.now_ms, self.node_id, text)
