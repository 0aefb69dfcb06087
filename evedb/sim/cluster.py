"""The simulated pair: event queue, clock, network, clients and fault injection for one seed.

Owns the simulated clock (integer ms), the event queue (heapq keyed by (time, sequence
number): events at the same ms run in the order they were scheduled), the two `SimNode`s
("a" primary and "b" backup of view 0), the clients, and the fault plan.

Rules kept:
- the run is a function of (seed, SimConfig): the only randomness is one `random.Random(seed)`;
  no wall clock, no global random, no iteration over sets or unordered dicts;
- at most one node is down at a time (the pair tolerates one fault); a crash planned while the
  other node is down is skipped;
- faults (crashes, link breaks, loss, duplication, forced divergence) stop at `duration_ms`:
  every node is restarted, the network heals, and the quiet tail lets clients finish; clients
  stop starting new requests `drain_ms` before the end;
- the checks (checks.py) run after the end; a violation seen while running is kept too.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from ..replica import ReplicaConfig, Role
from .checks import check_run
from .clients import SimClient
from .history import Ack, History, brief
from .network import LinkFaults, Network
from .node import SimNode


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on besides its seed.  Times are simulated ms; the protocol's
    timers are scaled down from production (heartbeat 50, peer timeout 300, retransmit 100)."""

    duration_ms: int = 3000  # the faulty part of the run
    tail_ms: int = 2500  # the quiet tail after it
    drain_ms: int = 1000  # no new client requests in the last drain_ms
    clients: int = 4
    keys: int = 4
    read_ratio: float = 0.2
    faults: bool = True
    tick_ms: int = 10
    client_timeout_ms: int = 250
    max_batch: int = 8
    batch_delay_ms: int = 2
    pipeline_depth: int = 4
    heartbeat_ms: int = 50
    peer_timeout_ms: int = 300
    retransmit_ms: int = 100
    log_limit: int | None = None  # the primary's catch-up log; None: drawn from the seed
    # What a seed's fault profile is drawn from (when faults is on).
    loss_choices: tuple[float, ...] = (0.0, 0.01, 0.03, 0.06)
    crash_counts: tuple[int, ...] = (0, 1, 1, 2, 3)
    # The fault profile; None: drawn from the seed (when faults is on), else no such fault.
    link: LinkFaults | None = None
    diverge_prob: float | None = None
    crashes: tuple[tuple[int, str, int], ...] | None = None  # (at_ms, node, down_ms)
    reconnects: tuple[int, ...] | None = None  # when the peer link breaks and both ends redial
    forced_divergence: tuple[tuple[str, int], ...] = ()  # (node, seq): that parallel execution goes wrong
    max_events: int = 3_000_000
    # The runtime's side of the core's contract: a Send or SendReply leaves only after the engine
    # work asked for before it.  False breaks it (replies before their commit is durable), to
    # show what that costs.
    sends_wait_for_engine: bool = True
    trace_messages: bool = False  # note every peer message delivered (verbose debugging)
    # Reads on the committed state (runtime/committed_reads.py): the primary's runtime copies the
    # state at each commit it performs with no engine work pending and its last execution that
    # batch, and answers a read group from the copy at once while the copy is of the core's
    # committed seq (`on_reads_executed(..., observed_seq)`).
    committed_snapshot_reads: bool = False
    # Passive (Remus-like) replication: the primary ships changesets, the backup applies them.
    # Nothing verifies a parallel execution there, so a wrong one would be copied and the
    # replay check would (rightly) fail: the drawn divergence is off (forced_divergence stays).
    passive: bool = False


@dataclass
class SimResult:
    seed: int
    violations: list[str]
    stats: dict
    history: History = field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.violations


class Cluster:
    NODE_IDS = ("a", "b")

    def __init__(self, seed: int, config: SimConfig):
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.history = History()
        self._queue: list = []
        self._counter = itertools.count()
        self.events = 0
        self._link_epoch = 0  # a broken peer link loses what travels on it
        self.end_ms = config.duration_ms + config.tail_ms
        self.stop_requests_ms = self.end_ms - config.drain_ms
        link, diverge_prob, crashes = self._fault_profile()
        if config.passive and config.diverge_prob is None:
            diverge_prob = 0.0
        # A short primary log makes a returning backup need a state transfer more often.
        log_limit = config.log_limit if config.log_limit is not None else self.rng.choice((16, 100_000))
        # Peer links that break and are dialled again, neither node restarting.
        drawn_reconnects = tuple(sorted(self.rng.randint(100, max(101, config.duration_ms - 100))
                                        for _ in range(self.rng.choice((0, 0, 1, 3)))))
        if config.reconnects is not None:
            self._reconnects = config.reconnects
        else:
            self._reconnects = drawn_reconnects if config.faults else ()
        self.profile = {"link": link, "diverge_prob": diverge_prob, "crashes": crashes, "log_limit": log_limit,
                        "reconnects": self._reconnects}
        self.network = Network(self.rng, link)
        replica_config = dict(max_batch=config.max_batch, batch_delay_ms=config.batch_delay_ms,
                              pipeline_depth=config.pipeline_depth, heartbeat_ms=config.heartbeat_ms,
                              peer_timeout_ms=config.peer_timeout_ms, retransmit_ms=config.retransmit_ms,
                              log_limit=log_limit, passive=config.passive)
        self.nodes: dict[str, SimNode] = {}
        for index, (node_id, peer_id) in enumerate((("a", "b"), ("b", "a"))):
            forced = frozenset(seq for who, seq in config.forced_divergence if who == node_id)
            self.nodes[node_id] = SimNode(
                node_id, peer_id, Role.PRIMARY if index == 0 else Role.BACKUP,
                ReplicaConfig(node_id=node_id, **replica_config), self,
                diverge_prob=diverge_prob, corrupt_offset=index + 1, forced=forced,
                snapshot_reads=config.committed_snapshot_reads)
        keys = tuple(f"k{i}" for i in range(config.keys))
        self.clients = [SimClient(f"c{i}", self.NODE_IDS, keys, config.read_ratio) for i in range(config.clients)]
        self._clients_by_id = {client.client_id: client for client in self.clients}
        self.client_requests_sent = 0
        self._crashes = crashes

    def _fault_profile(self):
        config, rng = self.config, self.rng
        # Always draw, so a seed's profile does not depend on which parts are given.
        drawn_link = LinkFaults(loss=rng.choice(config.loss_choices),
                                duplicate=rng.choice((0.0, 0.01, 0.05)),
                                min_delay_ms=1, max_delay_ms=rng.choice((2, 5, 10, 20)))
        drawn_diverge = rng.choice((0.0, 0.05, 0.2, 0.5))
        count = rng.choice(config.crash_counts)
        drawn_crashes = tuple(sorted(
            (rng.randint(100, max(101, config.duration_ms - 100)), rng.choice(self.NODE_IDS),
             rng.choice((rng.randint(20, config.peer_timeout_ms), rng.randint(config.peer_timeout_ms, 4 * config.peer_timeout_ms))))
            for _ in range(count)))
        if not config.faults:
            drawn_link, drawn_diverge, drawn_crashes = LinkFaults(max_delay_ms=drawn_link.max_delay_ms), 0.0, ()
        link = config.link if config.link is not None else drawn_link
        diverge = config.diverge_prob if config.diverge_prob is not None else drawn_diverge
        crashes = config.crashes if config.crashes is not None else drawn_crashes
        return link, diverge, crashes

    # --- the event queue ---

    def schedule(self, at_ms: int, function) -> None:
        heapq.heappush(self._queue, (at_ms, next(self._counter), function))

    def run(self) -> SimResult:
        config = self.config
        for node in self.nodes.values():
            node.start()
        self._connect_both()
        for node_id in self.NODE_IDS:
            self.schedule(self.rng.randint(0, config.tick_ms - 1), lambda n=node_id: self._tick(n))
        for client in self.clients:
            self.schedule(self.rng.randint(0, 20), lambda c=client: self._issue(c))
        for at_ms, node_id, down_ms in self._crashes:
            self.schedule(at_ms, lambda n=node_id, d=down_ms: self._crash(n, d))
        for at_ms in self._reconnects:
            self.schedule(at_ms, self._reconnect)
        self.schedule(config.duration_ms, self._end_faults)
        while self._queue:
            at_ms, _, function = heapq.heappop(self._queue)
            if at_ms > self.end_ms:
                break
            self.now_ms = at_ms
            self.events += 1
            if self.events > config.max_events:
                self.history.violation(self.now_ms, "sim", f"more than {config.max_events} events: livelock?")
                break
            function()
        self.now_ms = self.end_ms
        violations = list(self.history.violations) + check_run(self)
        return SimResult(self.seed, violations, self.summary(), self.history)

    # --- nodes, ticks and faults ---

    def _tick(self, node_id: str) -> None:
        self.nodes[node_id].tick()
        self.schedule(self.now_ms + self.config.tick_ms, lambda: self._tick(node_id))

    def _connect_both(self, first: str = "a") -> None:
        """A (re)started node dials its peer at once; the other end redials a little later."""
        other = "b" if first == "a" else "a"
        for node_id, delay in ((first, self.rng.randint(1, 10)), (other, self.rng.randint(5, 60))):
            node = self.nodes[node_id]
            life = node.life
            self.schedule(self.now_ms + delay, lambda n=node, l=life: n.peer_connected() if n.life == l else None)

    def _reconnect(self) -> None:
        """The peer link breaks: what is on it is lost, and both ends dial again."""
        if self.now_ms >= self.config.duration_ms or not all(node.up for node in self.nodes.values()):
            return
        self.history.note(self.now_ms, "sim", "peer link breaks; both ends redial")
        self._link_epoch += 1
        self._connect_both(self.rng.choice(self.NODE_IDS))

    def _crash(self, node_id: str, down_ms: int) -> None:
        node, other = self.nodes[node_id], self.nodes["b" if node_id == "a" else "a"]
        if self.now_ms >= self.config.duration_ms or not node.up or not other.up:
            self.history.note(self.now_ms, "sim", f"crash of {node_id} skipped (one node down at most)")
            return
        node.crash()
        life = node.life
        self.schedule(self.now_ms + down_ms, lambda: self._restart(node_id, life))

    def _restart(self, node_id: str, life: int) -> None:
        node = self.nodes[node_id]
        if node.up or node.life != life:
            return
        node.stats.restarts += 1
        node.start()
        self._connect_both(node_id)

    def _end_faults(self) -> None:
        self.history.note(self.now_ms, "sim", "faults end: network heals, every node runs")
        self.network.heal()
        for node in self.nodes.values():
            node.diverge_prob = 0.0
            if not node.up:
                self._restart(node.node_id, node.life)

    # --- the network ---

    def send_peer(self, sender: SimNode, message) -> None:
        receiver = self.nodes[sender.peer_id]
        if not receiver.up:
            return
        lives = (sender.life, receiver.life, self._link_epoch)
        for delay in self.network.deliveries():
            self.schedule(self.now_ms + delay, lambda: self._deliver_peer(sender, receiver, lives, message))

    def _deliver_peer(self, sender: SimNode, receiver: SimNode, lives, message) -> None:
        if (sender.life, receiver.life, self._link_epoch) == lives:
            if self.config.trace_messages:
                self.history.note(self.now_ms, receiver.node_id, f"<- {brief(message)}")
            receiver.peer_message(message)

    def send_client(self, sender: SimNode, reply) -> None:
        client = self._clients_by_id.get(reply.client_id)
        if client is None:
            return
        life = sender.life
        for delay in self.network.deliveries():
            self.schedule(self.now_ms + delay, lambda: self._deliver_reply(sender, life, client, reply))

    # --- clients ---

    def _issue(self, client: SimClient) -> None:
        if self.now_ms >= self.stop_requests_ms:
            return
        client.new_request(self.rng, self.now_ms)
        self._send_request(client)

    def _send_request(self, client: SimClient) -> None:
        current = client.outstanding
        if current is None:
            return
        current.attempts += 1
        client.send_generation += 1
        generation = client.send_generation
        node = self.nodes[client.target]
        life = node.life
        self.client_requests_sent += 1
        for delay in self.network.deliveries():
            self.schedule(self.now_ms + delay,
                          lambda: node.client_request(current.request) if node.life == life else None)
        self.schedule(self.now_ms + self.config.client_timeout_ms, lambda: self._client_timeout(client, generation))

    def _client_timeout(self, client: SimClient, generation: int) -> None:
        if client.outstanding is None or client.send_generation != generation:
            return
        client.switch_target()
        self._send_request(client)

    def _deliver_reply(self, sender: SimNode, life: int, client: SimClient, reply) -> None:
        if sender.life != life:
            return
        outcome = client.on_reply(reply)
        if outcome == "retry":
            client.send_generation += 1  # cancels the pending timeout
            self.schedule(self.now_ms + 10, lambda: self._send_request(client))
        elif outcome == "done":
            current = client.outstanding
            self.history.acks.append(Ack(current.request, reply, sender.node_id, current.first_sent_ms, self.now_ms))
            client.outstanding = None
            client.send_generation += 1
            self.schedule(self.now_ms + self.rng.randint(0, 5), lambda: self._issue(client))

    # --- the summary ---

    def summary(self) -> dict:
        totals = {name: 0 for name in ("batches_committed", "divergences", "sequential_reexecutions",
                                       "state_transfers", "view_changes", "catch_up_batches")}
        for node in self.nodes.values():
            stats = node.total_replica_stats()
            for name in totals:
                totals[name] += getattr(stats, name)
        primary = self.primary()
        return {
            "committed_seq": max(node.store.committed_seq for node in self.nodes.values()),
            "divergences": totals["divergences"],
            "forced_divergences": sum(node.stats.forced_divergences for node in self.nodes.values()),
            "sequential_reexecutions": totals["sequential_reexecutions"],
            "view_changes": totals["view_changes"],
            "state_transfers": totals["state_transfers"],
            "catch_up_batches": totals["catch_up_batches"],
            "applied_batches": sum(node.stats.applications for node in self.nodes.values()),
            "snapshot_reads": sum(node.stats.snapshot_reads for node in self.nodes.values()),
            "crashes": sum(node.stats.crashes for node in self.nodes.values()),
            "acknowledged": len(self.history.acks),
            "acknowledged_writes": sum(1 for ack in self.history.acks if ack.request.statements[0].sql == "add"),
            "client_sends": self.client_requests_sent,
            "messages": self.network.sent,
            "lost": self.network.lost,
            "duplicated": self.network.duplicated,
            "final_view": max(node.replica.view for node in self.nodes.values() if node.up) if primary else None,
            "final_primary": primary.node_id if primary else None,
            "events": self.events,
            "profile": self.profile,
        }

    def primary(self) -> SimNode | None:
        """The node that is primary of the highest view among the running ones, if any."""
        running = [node for node in self.nodes.values() if node.up]
        primaries = [node for node in running if node.replica.role is Role.PRIMARY]
        if not primaries:
            return None
        return max(primaries, key=lambda node: (node.replica.view, node.node_id))


def run_seed(seed: int, config: SimConfig | None = None, **overrides) -> SimResult:
    """Run one seed; `overrides` replace fields of `config` (e.g. duration_ms=5000)."""
    config = config or SimConfig()
    if overrides:
        config = SimConfig(**{**config.__dict__, **overrides})
    return Cluster(seed, config).run()


__all__ = ["Cluster", "LinkFaults", "SimConfig", "SimResult", "run_seed"]
