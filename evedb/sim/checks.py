"""The checks run at the end of a simulated run (DESIGN.md section 6).

Owns nothing; reads the run's History and final node states and returns violations, each a
line a person can act on.  The checks:

a. equal roots: every seq committed on both nodes has the same state root on both;
b. replies equal a sequential replay: the committed batches (one batch per seq, the same on
   every node that committed it, no seq missing) are replayed sequentially on a fresh store;
   every node's root at each commit point equals the replay's, and every reply a client
   accepted for a write equals the replay's reply for that (client_id, request_id); a read's
   value is the key's value at some committed seq between the last write acknowledged before
   the read was sent and the highest seq committed when its answer arrived (no read shows
   state a rollback could erase, none misses an acknowledged write);
c. no acknowledged write lost: every acknowledged write is in the committed log, applied
   exactly once, at or below the final primary's committed seq;
d. liveness: after the quiet tail, every client's last request is answered and the pair is
   back in sync (one primary, its backup synced, same view, same committed seq and root).
"""

from __future__ import annotations

from collections import Counter

from ..replica import PeerState, Role
from .store import ADD, FakeStore, reply_value


def check_run(cluster) -> list[str]:
    violations: list[str] = []
    history = cluster.history
    _equal_roots(history, violations)
    log = _committed_log(history, violations)
    replay = _Replay(log)
    _roots_match_replay(history, replay, violations)
    _acknowledgements(cluster, replay, violations)
    _liveness(cluster, violations)
    return violations


def _equal_roots(history, violations) -> None:
    roots_a = history.commit_roots.get("a", {})
    roots_b = history.commit_roots.get("b", {})
    for seq in sorted(set(roots_a) & set(roots_b)):
        if roots_a[seq] != roots_b[seq]:
            violations.append(f"(a) seq {seq}: committed roots differ between a and b")


def _committed_log(history, violations) -> dict:
    log = {}
    for node_id in sorted(history.committed_batches):
        for seq, batch in sorted(history.committed_batches[node_id].items()):
            if batch is None:
                continue
            if seq in log and log[seq] != batch:
                violations.append(f"(b) seq {seq}: the nodes committed different batches")
            log.setdefault(seq, batch)
    highest = max([0] + [seq for roots in history.commit_roots.values() for seq in roots])
    missing = [seq for seq in range(1, highest + 1) if seq not in log]
    if missing:
        violations.append(f"(b) committed seqs with no committed batch anywhere: {missing[:10]}")
    return log


class _Replay:
    """The committed log replayed sequentially from an empty store."""

    def __init__(self, log: dict):
        store = FakeStore()
        self.roots = {0: store.root()}
        self.first: dict[tuple[str, int], tuple[int, object]] = {}  # (client, id) -> (seq, reply)
        self.applied: Counter = Counter()
        self.changes: dict[str, list[tuple[int, int]]] = {}  # key -> [(seq, value after it)]
        self.highest = 0
        for seq in range(1, max([0] + list(log)) + 1):
            batch = log.get(seq)
            if batch is None:
                break  # reported by _committed_log
            before = dict(store.data)
            applied: list = []
            _, replies, _ = store.execute(batch, applied=applied)
            store.commit(seq)
            self.applied.update(applied)
            for request, reply in zip(batch.requests, replies):
                self.first.setdefault((request.client_id, request.request_id), (seq, reply))
            for key in sorted(store.data):
                if before.get(key) != store.data[key]:
                    self.changes.setdefault(key, []).append((seq, store.data[key]))
            self.roots[seq] = store.root()
            self.highest = seq

    def values_between(self, key: str, low: int, high: int) -> set[int]:
        """Every value `key` had after some seq in [low, high]."""
        value, values = 0, set()
        for seq, after in self.changes.get(key, []):
            if seq <= low:
                value = after
            elif seq <= high:
                values.add(after)
        values.add(value)
        return values


def _roots_match_replay(history, replay, violations) -> None:
    for node_id in sorted(history.commit_roots):
        for seq, root in sorted(history.commit_roots[node_id].items()):
            if seq in replay.roots and replay.roots[seq] != root:
                violations.append(f"(b) {node_id}: root at committed seq {seq} differs from the sequential replay")
                return


def _acknowledgements(cluster, replay, violations) -> None:
    primary = cluster.primary()
    final_committed = primary.store.committed_seq if primary is not None else None
    # When each acknowledged write was committed, in acknowledgement order, for the reads.
    write_acks = []
    for ack in cluster.history.acks:
        request, reply = ack.request, ack.reply
        identity = (request.client_id, request.request_id)
        statement = request.statements[0]
        if statement.sql == ADD:
            first = replay.first.get(identity)
            if first is None:
                violations.append(f"(c) acknowledged write {identity} (at t={ack.received_ms} from "
                                  f"{ack.node}) is not in the committed log")
                continue
            seq, expected = first
            if reply != expected:
                violations.append(f"(b) reply to {identity} from {ack.node} differs from the replay's "
                                  f"(got {reply_value(reply)!r} {reply.error}, replay {reply_value(expected)!r} "
                                  f"{expected.error}, committed at seq {seq})")
            if replay.applied[identity] != 1:
                violations.append(f"(c) acknowledged write {identity} applied {replay.applied[identity]} times")
            if final_committed is not None and seq > final_committed:
                violations.append(f"(c) acknowledged write {identity} at seq {seq} is beyond the final "
                                  f"primary's committed seq {final_committed}")
            write_acks.append((ack.received_ms, seq))
    write_acks.sort()
    for ack in cluster.history.acks:
        request, reply = ack.request, ack.reply
        if request.statements[0].sql == ADD:
            continue
        value = reply_value(reply)
        if value is None:
            violations.append(f"(b) read {request.client_id}/{request.request_id} failed: {reply.error}")
            continue
        low = max([0] + [seq for when, seq in write_acks if when < ack.first_sent_ms])
        high = cluster.history.max_committed_at(ack.received_ms)
        key = request.statements[0].params[0]
        if value not in replay.values_between(key, low, high):
            violations.append(f"(b) read {request.client_id}/{request.request_id} of {key} gave {value}, "
                              f"a value {key} never had between committed seqs {low} and {high}")


def _liveness(cluster, violations) -> None:
    for client in cluster.clients:
        if client.outstanding is not None:
            request = client.outstanding.request
            violations.append(f"(d) client {client.client_id}: request {request.request_id} sent at "
                              f"t={client.outstanding.first_sent_ms} never answered")
    nodes = [cluster.nodes[node_id] for node_id in sorted(cluster.nodes)]
    if not all(node.up for node in nodes):
        violations.append("(d) a node is down at the end")
        return
    primaries = [node for node in nodes if node.replica.role is Role.PRIMARY]
    if len(primaries) != 1:
        violations.append(f"(d) {len(primaries)} primaries at the end")
        return
    primary = primaries[0]
    backup = nodes[0] if nodes[1] is primary else nodes[1]
    if primary.replica.view != backup.replica.view:
        violations.append(f"(d) views differ at the end: primary {primary.replica.view}, backup {backup.replica.view}")
    if primary.replica.peer is not PeerState.SYNCED or not backup.replica.synced:
        violations.append(f"(d) the pair is not in sync at the end (primary sees {primary.replica.peer.value}, "
                          f"backup synced={backup.replica.synced})")
    if primary.store.committed_seq != backup.store.committed_seq or primary.store.root() != backup.store.root():
        violations.append(f"(d) committed seqs or roots differ at the end: primary {primary.store.committed_seq}, "
                          f"backup {backup.store.committed_seq}")
