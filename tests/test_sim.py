"""The seeded simulator of the primary-backup pair (evedb/sim): many seeds with faults, and the
scenarios the pair must survive, each checked end to end (equal committed roots on both nodes,
replies equal to a sequential replay of the committed log, no acknowledged write lost, the
pair live and in sync after a quiet tail)."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from cli.main import main
from evedb.sim import LinkFaults, SimConfig, format_result, run_seed
from evedb.sim.cluster import Cluster
from evedb.sim.store import FakeStore, add_request, get_request, reply_value
from evedb.messages import Batch
from evedb.replica import PeerState, Role

QUIET = LinkFaults(0.0, 0.0, 1, 5)


def _explain(result) -> str:
    return "\n".join(format_result(result))


def _run(seed=1, **overrides):
    """A run with nothing but the faults named: no loss, duplication, divergence or crash."""
    settings = dict(link=QUIET, diverge_prob=0.0, crashes=(), reconnects=(), log_limit=100_000)
    settings.update(overrides)
    cluster = Cluster(seed, SimConfig(**settings))
    result = cluster.run()
    assert result.ok, _explain(result)
    return cluster, result


def test_200_seeds_with_faults():
    failed = []
    totals = Counter()
    for seed in range(200):
        result = run_seed(seed)
        totals.update({name: result.stats[name] for name in (
            "crashes", "view_changes", "state_transfers", "divergences", "acknowledged_writes")})
        if not result.ok:
            failed.append(result)
    assert not failed, f"seeds {[r.seed for r in failed]} failed; the first:\n{_explain(failed[0])}"
    # The faults really happened.
    assert totals["crashes"] > 100 and totals["view_changes"] > 20
    assert totals["state_transfers"] > 10 and totals["divergences"] > 500
    assert totals["acknowledged_writes"] > 200 * 100


def test_150_seeds_with_faults_and_reads_on_the_committed_snapshot():
    """The runtime answers reads from a copy of the state pinned at its last commit
    (runtime/committed_reads.py), released at once: the read check (b) holds them to the
    committed values between the last acknowledged write and the answer."""
    failed, snapshot_reads, divergences = [], 0, 0
    for seed in range(150):
        result = run_seed(seed, committed_snapshot_reads=True)
        snapshot_reads += result.stats["snapshot_reads"]
        divergences += result.stats["divergences"]
        if not result.ok:
            failed.append(result)
    assert not failed, f"seeds {[r.seed for r in failed]} failed; the first:\n{_explain(failed[0])}"
    assert snapshot_reads > 5000 and divergences > 500  # the path ran, with rollbacks about


def test_the_checks_catch_reads_on_a_state_pinned_with_unverified_batches(monkeypatch):
    """Pinning whatever the store holds at a commit (an executed batch not yet verified
    included) shows reads state a rollback erases: the read check must say so."""
    from evedb.sim import node as sim_node

    careful = sim_node.SimNode._snapshot_side

    def careless(self, action):
        if type(action) is sim_node.CommitUpTo and self.replica.role is Role.PRIMARY:
            self._snapshot = (action.seq, dict(self.store.data))
            return False
        return careful(self, action)

    monkeypatch.setattr(sim_node.SimNode, "_snapshot_side", careless)
    results = [run_seed(seed, committed_snapshot_reads=True) for seed in range(10)]
    assert any("(b) read" in line for result in results for line in result.violations)


def test_60_seeds_with_harsh_faults():
    # Many crashes, a message in three duplicated, delays up to 30 ms (so heavy reordering).
    config = SimConfig(duration_ms=5000, link=LinkFaults(0.03, 0.35, 1, 30), crash_counts=(6, 10, 14))
    failed = [result for result in (run_seed(seed, config) for seed in range(1000, 1060)) if not result.ok]
    assert not failed, f"seeds {[r.seed for r in failed]} failed; the first:\n{_explain(failed[0])}"


def test_a_seed_replays_exactly():
    first, second = run_seed(7), run_seed(7)
    assert first.history.trace == second.history.trace
    assert first.history.acks == second.history.acks
    assert first.stats == second.stats


def test_forced_divergence_is_detected_and_repaired():
    cluster, result = _run(forced_divergence=(("a", 10), ("b", 20)))
    assert result.stats["forced_divergences"] == 2
    assert result.stats["divergences"] == 2  # both caught by comparing tokens
    assert result.stats["sequential_reexecutions"] >= 2
    # Repaired: the run's checks passed (replies equal the sequential replay, equal roots).
    assert result.stats["committed_seq"] > 100
    assert any("tokens differ: rolling back" in text for _, _, text in cluster.history.trace)


def test_backup_crash_primary_goes_on_and_backup_catches_up_from_the_log():
    cluster, result = _run(crashes=((800, "b", 1200),))
    acks_while_down = [ack for ack in cluster.history.acks if 1200 < ack.received_ms < 2000]
    assert len(acks_while_down) > 20  # the primary went on alone
    assert result.stats["view_changes"] == 0 and cluster.primary().node_id == "a"
    assert result.stats["catch_up_batches"] > 10 and result.stats["state_transfers"] == 0
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert a.store.root() == b.store.root() and a.store.committed_seq == b.store.committed_seq
    roots_a, roots_b = cluster.history.commit_roots["a"], cluster.history.commit_roots["b"]
    assert len(set(roots_a) & set(roots_b)) > 50


def test_primary_crash_backup_takes_over_and_old_primary_rejoins():
    cluster, result = _run(crashes=((800, "a", 1200),))
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert result.stats["view_changes"] == 1
    assert b.replica.role is Role.PRIMARY and b.replica.view == 1
    assert a.replica.role is Role.BACKUP and a.replica.view == 1 and a.replica.synced
    assert b.replica.peer is PeerState.SYNCED
    assert [ack for ack in cluster.history.acks if ack.node == "b" and ack.received_ms < 2000]  # clients went on
    assert a.store.root() == b.store.root() and a.store.committed_seq == b.store.committed_seq


def test_a_short_log_makes_the_returning_node_take_the_state():
    cluster, result = _run(crashes=((800, "b", 1200),), log_limit=8)
    assert result.stats["state_transfers"] >= 1


def test_retried_and_duplicated_requests_are_applied_once():
    # Clients give up after 4 ms and retry the same request on the other node; the network
    # duplicates a third of all messages.  Retries land in later batches: the reply cache
    # answers them without running them again.
    cluster, result = _run(client_timeout_ms=4, link=LinkFaults(0.0, 0.3, 1, 5))
    assert result.stats["client_sends"] > 2 * result.stats["acknowledged"]
    committed = {}
    for batches in cluster.history.committed_batches.values():
        committed.update({seq: batch for seq, batch in batches.items() if batch is not None})
    occurrences = Counter((r.client_id, r.request_id) for batch in committed.values() for r in batch.requests)
    assert max(occurrences.values()) >= 2  # some request was committed in two batches...
    final = cluster.primary().store.data
    acknowledged = sum(ack.request.statements[0].params[1] for ack in cluster.history.acks
                       if ack.request.statements[0].sql == "add")
    # ...yet every write counts once: the keys hold at least every acknowledged amount, and the
    # checks (applied exactly once per acknowledged write) passed.
    assert sum(final.values()) >= acknowledged


def test_restarted_primary_waits_for_its_peer():
    # a crashes; b takes over in view 1 and commits; a restarts and b crashes before they
    # talk.  a must not go on alone in view 0: it waits, and yields to b's view 1 later.
    for gap in (2, 10):
        cluster, result = _run(crashes=((500, "a", 400), (900 + gap, "b", 1000)))
        assert cluster.primary().node_id == "b" and cluster.primary().replica.view == 1


def test_link_break_then_primary_crash_loses_nothing():
    # The peer link breaks and both ends dial again (a backup's Hello reaches the primary),
    # then the primary crashes: the backup in sync takes over with every committed batch.
    for seed, gap in ((1, 25), (4, 40), (6, 40), (7, 25)):  # each lost a batch before the fix
        _run(seed=seed, reconnects=(1000,), crashes=((1000 + gap, "a", 600),), duration_ms=2500)


def test_fake_store_reply_cache_and_undo():
    store = FakeStore()
    first = store.execute(Batch(1, 0, 10, 0, (add_request("c", 1, "k", 5),)))
    again = store.execute(Batch(2, 0, 20, 0, (add_request("c", 1, "k", 5), add_request("c", 2, "k", 1))))
    assert reply_value(first[1][0]) == 5 and again[1][0] == first[1][0]  # the retry: cached
    assert store.data == {"k": 6}
    older = store.execute(Batch(3, 0, 30, 0, (add_request("c", 1, "k", 5),)))
    assert older[1][0].error.kind == "ProgrammingError" and store.data == {"k": 6}
    store.commit(1)
    store.rollback(2)
    assert store.data == {"k": 5} and reply_value(store.read((get_request("c", 9, "k"),))[0]) == 5
    store.execute(Batch(2, 0, 20, 0, (add_request("c", 2, "k", 1),)))
    store.recover()  # a crash: back to the committed state
    assert store.data == {"k": 5} and store.committed_seq == 1


@pytest.mark.parametrize("broken", ["alone_commits_parallel", "replies_before_commit"])
def test_the_checks_catch_known_bad_behaviour(broken, monkeypatch):
    if broken == "alone_commits_parallel":
        # The original verdict: a primary alone commits a parallel execution unchecked.
        from evedb.verification import PrimaryBackupVerification, Verdict

        original = PrimaryBackupVerification.verdict

        def verdict(self, local, remote, backup_synced, sequential):
            if local is not None and not backup_synced:
                return Verdict.AGREE
            return original(self, local, remote, backup_synced, sequential)

        monkeypatch.setattr(PrimaryBackupVerification, "verdict", verdict)
        results = [run_seed(seed, diverge_prob=0.5) for seed in range(10)]
    else:
        # A runtime that sends replies before the engine made their commit durable.
        results = [run_seed(seed, sends_wait_for_engine=False) for seed in range(10)]
    assert any(not result.ok for result in results)


def test_cli_sim_runs_seeds_and_reports():
    result = CliRunner().invoke(main, ["sim", "--seed", "3", "--seeds", "2", "--duration-ms", "800"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("seed 3: ok  committed ")
    assert "2 seeds, 0 failed" in result.output


# --- The core's rules the simulator found broken, pinned input by input -------------------

from evedb.messages import CatchUp, Execute, Heartbeat, NeedState, StateRequest, TokenReport  # noqa: E402
from evedb.replica import (  # noqa: E402
    CommitUpTo,
    ExecuteBatch,
    Replica,
    ReplicaConfig,
    RollbackTo,
    Send,
    SendReply,
)

CONFIG = ReplicaConfig(node_id="x", batch_delay_ms=1, heartbeat_ms=50, peer_timeout_ms=300, retransmit_ms=100)


def _batch(seq, client="c", request_id=None):
    return Batch(seq, 0, seq, seq, (add_request(client, request_id or seq, "k", 1),))


def _kinds(actions, kind):
    return [action for action in actions if isinstance(action, kind)]


def _sent(actions, kind):
    return [action.message for action in actions if isinstance(action, Send) and isinstance(action.message, kind)]


def _synced_backup():
    backup = Replica(CONFIG, role=Role.BACKUP, view=0, committed_seq=0, now_ms=0)
    backup.on_peer_message(CatchUp(0, (), 0), 1)  # the sync point
    assert backup.synced
    backup.take_actions()
    return backup


def test_core_ignores_the_late_result_of_an_undone_execution():
    backup = _synced_backup()
    old, new = _batch(1), _batch(1, request_id=7)
    backup.on_peer_message(Execute(0, old, 0), 2)
    # The primary went on alone past this backup: it drops batch 1, then catches up with the
    # primary's committed batch 1 (another batch, the same seq and attempt).
    backup.on_peer_message(Heartbeat(0, "primary", 1, False), 3)
    backup.on_peer_message(CatchUp(0, ((new, b"T-new"),), 1), 4)
    actions = backup.take_actions()
    assert _kinds(actions, RollbackTo) == [RollbackTo(1)]
    assert _kinds(actions, ExecuteBatch)[-1] == ExecuteBatch(new, 0, True)
    backup.on_executed(1, 0, b"T-old", ())  # the undone execution's result comes back first
    assert not _kinds(backup.take_actions(), CommitUpTo)
    backup.on_executed(1, 0, b"T-new", ())
    assert _kinds(backup.take_actions(), CommitUpTo) == [CommitUpTo(1)]


def test_core_backup_reruns_later_batches_after_a_higher_attempt():
    backup = _synced_backup()
    first, second = _batch(1), _batch(2)
    backup.on_peer_message(Execute(0, first, 0), 2)
    backup.on_peer_message(Execute(0, second, 0), 3)
    backup.on_executed(1, 0, b"t1", ())
    backup.on_executed(2, 0, b"t2", ())
    backup.take_actions()
    # Attempt 1 of seq 2 arrives before attempt 1 of seq 1: undo from seq 1, run batch 1 again
    # (sequentially, its own attempt) and then attempt 1 of seq 2 on top of it.
    backup.on_peer_message(Execute(0, second, 1, True), 4)
    actions = backup.take_actions()
    assert _kinds(actions, RollbackTo) == [RollbackTo(1)]
    assert _kinds(actions, ExecuteBatch) == [ExecuteBatch(first, 0, True), ExecuteBatch(second, 1, True)]


def _primary_with_batch(now_ms=0):
    primary = Replica(CONFIG, role=Role.PRIMARY, view=0, committed_seq=0, now_ms=now_ms)
    primary.on_peer_message(Heartbeat(0, "backup", 0, True), now_ms + 1)  # the peer spoke
    primary.on_client_request(add_request("c", 1, "k", 1), False, now_ms + 1)
    primary.tick(now_ms + 5)
    batch = _kinds(primary.take_actions(), ExecuteBatch)[0].batch
    return primary, batch


def test_core_primary_alone_never_commits_a_parallel_execution():
    primary, batch = _primary_with_batch()
    primary.tick(400)  # the backup is silent past the timeout: alone
    primary.on_executed(1, 0, b"parallel", ())
    actions = primary.take_actions()
    assert not _kinds(actions, CommitUpTo)
    assert _kinds(actions, RollbackTo) == [RollbackTo(1)]
    assert _kinds(actions, ExecuteBatch) == [ExecuteBatch(batch, 1, True)]
    primary.on_executed(1, 1, b"sequential", ())
    assert _kinds(primary.take_actions(), CommitUpTo) == [CommitUpTo(1)]
    primary.on_client_request(add_request("c", 2, "k", 1), False, 401)
    primary.tick(410)
    assert _kinds(primary.take_actions(), ExecuteBatch)[0].sequential  # alone: sequential at once


def test_core_restarted_primary_does_not_go_alone_before_hearing_its_peer():
    primary = Replica(CONFIG, role=Role.PRIMARY, view=0, committed_seq=5, now_ms=0)
    primary.tick(5000)
    assert primary.peer is PeerState.SYNCED  # the peer may have taken over meanwhile
    primary.on_peer_message(Heartbeat(0, "backup", 5, False), 5001)
    primary.tick(5400)
    assert primary.peer is PeerState.DOWN


def test_core_take_primary_commits_only_once_the_backup_is_out_of_sync():
    primary, batch = _primary_with_batch()
    primary.on_executed(1, 0, b"A0", ())
    primary.on_peer_message(TokenReport(0, 1, 0, b"B0"), 10)  # differ: re-execute sequentially
    reply = FakeStore().execute(batch)[1]
    primary.on_executed(1, 1, b"A1", reply)
    primary.on_peer_message(TokenReport(0, 1, 1, b"B1"), 20)  # still differ: the primary wins...
    actions = primary.take_actions()
    assert len(_sent(actions, NeedState)) == 1
    assert not _kinds(actions, CommitUpTo) and not _kinds(actions, SendReply)
    # ...once the backup, out of sync, asks for the state (not a possibly stale request).
    primary.on_peer_message(StateRequest(0, 0, b"", ()), 100)
    assert not _kinds(primary.take_actions(), CommitUpTo)
    primary.on_peer_message(StateRequest(0, 0, b"", ()), 400)
    actions = primary.take_actions()
    assert _kinds(actions, CommitUpTo) == [CommitUpTo(1)] and _kinds(actions, SendReply) == [SendReply(reply[0])]


def test_cli_sim_names_a_failing_seed_first_and_exits_non_zero(monkeypatch):
    import evedb.sim.report as report

    def failing(seed, config=None, **overrides):
        result = run_seed(seed, config, **overrides)
        result.violations.append("(c) planted for the test")
        return result

    monkeypatch.setattr(report, "run_seed", failing)
    result = CliRunner().invoke(main, ["sim", "--seed", "4", "--duration-ms", "500"])
    assert result.exit_code == 1
    assert result.output.startswith("seed 4: FAILED with 1 violation(s)")
    assert "violation: (c) planted for the test" in result.output
