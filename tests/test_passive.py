"""Passive (Remus-like) replication, the baseline the execute-verify pair is measured against:
the primary executes each batch and ships its changesets, the backup applies them instead of
executing, and replies leave once the backup acknowledged applying.

End to end with real processes (`serve --replication passive`), the bank workload and helpers
of tests/test_pair.py: writes reach both nodes with equal roots without the backup executing
them, kill -9 of either node loses no acknowledged transfer, a pair of mismatched modes refuses
to pair; then the core's passive rules input by input, and many simulated seeds with faults.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from evedb.client import node_status
from evedb.messages import Apply, Batch, CatchUp, Execute, Heartbeat, NeedState, SyncRequest, TokenReport
from evedb.replica import (
    ApplyBatch,
    CommitUpTo,
    ExecuteBatch,
    Log,
    PeerState,
    Replica,
    ReplicaConfig,
    Role,
    RollbackTo,
    Send,
    SendReply,
)
from evedb.runtime.launch import Pair, free_port_pair
from evedb.sim import format_result, run_seed
from evedb.sim.store import FakeStore, add_request
from test_pair import (
    acknowledged_count,
    check_bank,
    kill_backup_scenario,
    kill_primary_scenario,
    roots_equal,
    run_clients,
    running_pair,
    setup_bank,
    stop_clients,
    wait_for,
)


@pytest.fixture
def passive_pair(tmp_path):
    yield from running_pair(tmp_path, workers=2, replication="passive")


def test_passive_pair_serves_writes_and_the_backup_applies_instead_of_executing(passive_pair):
    pair = passive_pair
    setup_bank(pair.dsn)
    stop, clients = run_clients(pair.dsn, 3)
    wait_for(lambda: acknowledged_count(clients) >= 60, 60, "60 transfers")
    stop_clients(stop, clients)
    check_bank(pair.dsn, clients)
    wait_for(lambda: roots_equal(pair), 10, "equal roots")
    primary, backup = node_status(pair.address("primary")), node_status(pair.address("backup"))
    assert primary["replication"] == backup["replication"] == "passive"
    assert primary["role"] == "primary" and primary["view"] == 0 and primary["peer_state"] == "synced"
    assert primary["divergences"] == 0 and primary["reexecutions"] == 0  # nothing is verified
    # The backup applied the transfers' changesets; it executed only the two CREATE TABLE
    # batches (sessions record no DDL).
    assert backup["applied_batches"] >= 20
    assert backup["batches"] <= 2
    assert primary["applied_batches"] == 0


def test_passive_kill_backup_mid_load_primary_serves_and_backup_catches_up(passive_pair):
    alone = kill_backup_scenario(passive_pair)
    assert alone["reexecutions"] == 0  # alone, passive commits its parallel executions as they are
    assert node_status(passive_pair.address("backup"))["applied_batches"] > 0  # applying again once in sync


def test_passive_kill_primary_mid_load_backup_takes_over_and_old_primary_rejoins(passive_pair):
    kill_primary_scenario(passive_pair)


def test_a_pair_of_mismatched_modes_refuses_to_pair(tmp_path):
    pair = Pair(str(tmp_path / "pair"), free_port_pair(), workers=1, replication="passive")
    pair.start("primary")
    pair.start("backup", ("--replication", "eve"))  # the last --replication wins
    try:
        def logged(name: str) -> str:
            with open(os.path.join(pair.log_dir, f"{name}.log"), errors="replace") as handle:
                return handle.read()

        wait_for(lambda: all("replication mode mismatch" in logged(name) for name in ("primary", "backup")), 30,
                 "both nodes to log the mismatch")
        time.sleep(0.5)
        for name in ("primary", "backup"):
            text = logged(name)
            assert "ERROR" in text and "refus" in text and "must run the same --replication" in text
            assert "linked to peer" not in text  # never paired
        assert node_status(pair.address("primary"))["replication"] == "passive"
        assert node_status(pair.address("backup"))["replication"] == "eve"
    finally:
        pair.stop()


# --- The core's passive rules, input by input -----------------------------------------------

CONFIG = ReplicaConfig(node_id="x", batch_delay_ms=1, heartbeat_ms=50, peer_timeout_ms=300, retransmit_ms=100,
                       passive=True)


def _kinds(actions, kind):
    return [action for action in actions if isinstance(action, kind)]


def _sent(actions, kind):
    return [action.message for action in actions if isinstance(action, Send) and isinstance(action.message, kind)]


def _batch(seq, request_id=None):
    return Batch(seq, 0, seq, seq, (add_request("c", request_id or seq, "k", 1),))


def _synced_backup(config=CONFIG):
    backup = Replica(config, role=Role.BACKUP, view=0, committed_seq=0, now_ms=0)
    backup.on_peer_message(CatchUp(0, (), 0), 1)  # the sync point
    assert backup.synced
    backup.take_actions()
    return backup


def test_core_passive_primary_ships_changesets_and_commits_on_equal_roots():
    primary = Replica(CONFIG, role=Role.PRIMARY, view=0, committed_seq=0, now_ms=0)
    primary.on_peer_message(Heartbeat(0, "backup", 0, True), 1)  # the peer spoke
    request = add_request("c", 1, "k", 1)
    primary.on_client_request(request, False, 1)
    primary.tick(5)
    actions = primary.take_actions()
    assert not _sent(actions, Execute)  # passive: no Execute before executing
    execute = _kinds(actions, ExecuteBatch)[0]
    assert not execute.sequential
    store = FakeStore()
    token, replies, _ = store.execute(execute.batch)
    primary.on_executed(1, 0, token, replies, changesets=(store.changeset(1),), state_root=store.root())
    actions = primary.take_actions()
    [apply] = _sent(actions, Apply)
    assert apply.batch == execute.batch and apply.state_root == store.root() and apply.token == token
    assert not _kinds(actions, CommitUpTo) and not _kinds(actions, SendReply)  # waits for the backup
    primary.on_peer_message(TokenReport(0, 1, 0, store.root()), 10)
    actions = primary.take_actions()
    assert _kinds(actions, CommitUpTo) == [CommitUpTo(1)] and _kinds(actions, SendReply) == [SendReply(replies[0])]


def test_core_passive_primary_has_a_backup_with_another_root_take_its_state():
    primary = Replica(CONFIG, role=Role.PRIMARY, view=0, committed_seq=0, now_ms=0)
    primary.on_peer_message(Heartbeat(0, "backup", 0, True), 1)
    primary.on_client_request(add_request("c", 1, "k", 1), False, 1)
    primary.tick(5)
    primary.take_actions()
    primary.on_executed(1, 0, b"T", (), changesets=(b"cs",), state_root=b"R")
    primary.take_actions()
    primary.on_peer_message(TokenReport(0, 1, 0, b"other"), 10)
    actions = primary.take_actions()
    assert len(_sent(actions, NeedState)) == 1  # state transfer, never a re-execution
    assert not _kinds(actions, ExecuteBatch) and not _kinds(actions, CommitUpTo)


def test_core_passive_backup_applies_in_seq_order_and_reports_its_root():
    backup = _synced_backup()
    first, second = _batch(1), _batch(2)
    backup.on_peer_message(Apply(0, second, 0, (b"cs2",), b"R2", b"T2"), 2)  # early: buffered
    assert not _kinds(backup.take_actions(), ApplyBatch)
    backup.on_peer_message(Apply(0, first, 0, (b"cs1",), b"R1", b"T1"), 3)
    expected = [ApplyBatch(first, 0, (b"cs1",)), ApplyBatch(second, 0, (b"cs2",))]
    assert _kinds(backup.take_actions(), ApplyBatch) == expected
    backup.on_applied(1, 0, b"R1")
    backup.on_applied(2, 0, b"R2")
    reports = _sent(backup.take_actions(), TokenReport)
    assert reports == [TokenReport(0, 1, 0, b"R1"), TokenReport(0, 2, 0, b"R2")]
    backup.on_peer_message(Execute(0, _batch(3), 0), 4)  # the other mode's message: ignored, logged
    actions = backup.take_actions()
    assert not _kinds(actions, ExecuteBatch) and any("same --replication" in log.text for log in _kinds(actions, Log))


def test_core_passive_take_over_commits_applied_batches_without_re_executing():
    backup = _synced_backup()
    first, second, third = _batch(1), _batch(2), _batch(3)
    backup.on_peer_message(Apply(0, first, 0, (b"cs1",), b"R1", b"T1"), 2)
    backup.on_peer_message(Apply(0, second, 0, (b"cs2",), b"R2", b"T2"), 3)
    backup.on_applied(1, 0, b"R1")  # batch 2's application is still running at the take-over
    backup.take_actions()
    backup.tick(400)  # the primary is silent past the timeout
    actions = backup.take_actions()
    assert backup.role is Role.PRIMARY and backup.view == 1
    assert not _kinds(actions, ExecuteBatch)  # nothing is re-executed
    # Batch 1 was applied and reported: kept and committed.  Batch 2 was never reported (so
    # never committed by the old primary): undone, and its late result ignored.
    assert _kinds(actions, RollbackTo) == [RollbackTo(2)] and _kinds(actions, CommitUpTo) == [CommitUpTo(1)]
    backup.on_applied(2, 0, b"R2")
    assert not _kinds(backup.take_actions(), CommitUpTo)
    assert backup._log == {1: (first, b"T1")}  # the old primary's token, for catch-up
    # New batches follow the kept ones and run in parallel although alone (passive).
    backup.on_client_request(third.requests[0], False, 401)
    backup.tick(410)
    execute = _kinds(backup.take_actions(), ExecuteBatch)[0]
    assert execute.batch.seq == 2 and not execute.sequential
    assert backup.peer is PeerState.DOWN


def test_core_passive_backup_refuses_changesets_made_on_another_state():
    backup = _synced_backup()
    backup.on_peer_message(Apply(0, _batch(1), 0, (b"cs1",), b"R1", b"T1", b"R0"), 2)
    assert _kinds(backup.take_actions(), ApplyBatch) == [ApplyBatch(_batch(1), 0, (b"cs1",), b"R0")]
    backup.on_applied(1, 0, b"")  # the runtime found another root than R0: nothing applied
    actions = backup.take_actions()
    assert not _sent(actions, TokenReport) and _kinds(actions, RollbackTo) == [RollbackTo(1)]
    assert not backup.synced and _sent(actions, SyncRequest)  # re-syncs from the primary


def test_apply_travels_through_the_codec_and_malformed_ones_are_refused():
    from evedb import codec

    message = Apply(3, _batch(7), 0, (b"cs-a", b"cs-b"), b"R" * 16, b"T" * 16, b"P" * 16, True)
    assert codec.peer_from_plain(codec.unpack(codec.pack(codec.peer_to_plain(message)))) == message
    plain = codec.peer_to_plain(message)
    for index, bad in ((4, ["not bytes"]), (5, "root as text"), (1, "view")):
        broken = list(plain)
        broken[index] = bad
        with pytest.raises(codec.CodecError):
            codec.peer_from_plain(broken)


# --- The simulator: a passive pair under faults ---------------------------------------------


def test_60_passive_seeds_with_faults():
    failed = []
    totals = Counter()
    for seed in range(60):
        result = run_seed(seed, passive=True)
        totals.update({name: result.stats[name] for name in (
            "crashes", "view_changes", "state_transfers", "applied_batches", "divergences", "acknowledged_writes")})
        if not result.ok:
            failed.append(result)
    assert not failed, f"seeds {[r.seed for r in failed]} failed; the first:\n" + "\n".join(format_result(failed[0]))
    assert totals["crashes"] > 20 and totals["view_changes"] > 5 and totals["state_transfers"] > 2
    assert totals["applied_batches"] > 60 * 100 and totals["divergences"] == 0
    assert totals["acknowledged_writes"] > 60 * 100


def test_passive_copies_a_wrong_parallel_execution_where_eve_repairs_it():
    # The point of execute-verify: the same wrong parallel execution on the primary is caught
    # and repaired by eve, and simply copied by passive replication (the roots agree, and the
    # replies differ from a sequential replay of the committed log).
    faults = dict(diverge_prob=0.0, crashes=(), reconnects=(), log_limit=100_000, forced_divergence=(("a", 10),))
    eve = run_seed(1, **faults)
    assert eve.ok and eve.stats["divergences"] == 1
    passive = run_seed(1, passive=True, **faults)
    assert passive.stats["divergences"] == 0 and passive.stats["forced_divergences"] == 1
    assert not [v for v in passive.violations if v.startswith("(a)")]  # both nodes hold the same state
    assert [v for v in passive.violations if v.startswith("(b)")]  # ...which is not the right one
