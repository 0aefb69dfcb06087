"""Concurrency-bug masking: the mixer's false-negative knob, parallel writer shares (undo,
rollback, recovery and a dead worker with several SQLite transactions per batch), the race
probe, and end to end a pair that catches and repairs the races it manifests while every
reply a client received matches the committed history.

Real SQLite files and worker processes; the pair test runs two `evedb serve` processes.
"""

from __future__ import annotations

import json
import os

import pytest

from bench import race_masking
from evedb import storage
from evedb.access import Access
from evedb.engine import ExecutionEngine
from evedb.messages import Batch, Request
from evedb.mixer import conflicts, mix
from mixer_rules import load_rules


def _row_access(key: int) -> Access:
    return Access(frozenset({"t"}), frozenset({"t"}), frozenset({("t", (key,))}), False, False)


def test_false_negatives_are_a_pure_function_of_the_batch_seed():
    hot = [_row_access(1) for _ in range(200)]  # every pair conflicts
    assert mix(hot, 256) == [[i] for i in range(200)]  # the correct mixer: one at a time
    assert mix(hot, 256, false_negative_rate=0.0, seed=3) == mix(hot, 256)
    wrong = mix(hot, 256, false_negative_rate=0.25, seed=3)
    assert wrong == mix(hot, 256, false_negative_rate=0.25, seed=3)  # every replica: same plan
    assert wrong != mix(hot, 256, false_negative_rate=0.25, seed=4)
    together = [group for group in wrong if len(group) > 1]
    assert together and all(conflicts(hot[a], hot[b]) for group in together for a in group for b in group if a < b)
    misplaced = sum(len(group) - 1 for group in together)
    assert 20 < misplaced < 90  # about a quarter of 200 forgot their conflicts
    assert mix(hot, 256, false_negative_rate=1.0, seed=3) == [list(range(200))]
    with pytest.raises(ValueError):
        mix(hot, false_negative_rate=1.5)


def _make_database(path: str) -> None:
    connection = storage.open_connection(path)
    storage.ensure_internal_tables(connection)
    connection.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    with connection:
        connection.executemany("INSERT INTO acct VALUES (?, ?)", [(i, 100) for i in range(20)])
    connection.close()


def _balances(engine: ExecutionEngine) -> dict[int, int]:
    return dict(engine._connection.execute("SELECT id, balance FROM acct").fetchall())


def _undo_records(engine: ExecutionEngine, seq: int) -> int:
    return engine._connection.execute(
        f"SELECT count(*) FROM {storage.INTERNAL_PREFIX}undo WHERE seq = ?", (seq,)).fetchone()[0]


def _full_root(engine: ExecutionEngine) -> int:
    incremental = engine.tree
    engine.full_build()
    rebuilt = engine.tree.root()
    engine.tree = incremental
    return rebuilt


def _updates(seq: int, statements: list[str]) -> Batch:
    return Batch(seq, 0, 1_700_000_000_000, seq, tuple(
        Request.statement(f"c{i}", seq, sql) for i, sql in enumerate(statements)))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Two worker processes with parallel writers, shared by the tests below (spawning costs)."""
    path = str(tmp_path_factory.mktemp("race") / "race.db")
    _make_database(path)
    probe_path = path + ".probe.jsonl"
    started = ExecutionEngine(path, workers=2, parallel_writers=True, race_probe_path=probe_path,
                              procedure_modules=["worker_procedures"])
    yield started
    started.close()


def test_several_writer_shares_roll_back_and_recover(engine, tmp_path):
    before_rows, before_root = _balances(engine), engine.state_root()
    batch = _updates(engine.committed_seq + 1,
                     [f"UPDATE acct SET balance = balance + {i + 1} WHERE id = {i}" for i in range(6)])
    outcome = engine.execute(batch)
    assert all(reply.ok for reply in outcome.replies)
    assert _undo_records(engine, batch.seq) == 2  # two writer shares: two SQLite transactions
    assert _balances(engine) == {**before_rows, **{i: 100 + i + 1 for i in range(6)}}
    assert engine.state_root() == _full_root(engine) != before_root
    engine.rollback(batch.seq)
    assert _balances(engine) == before_rows and engine.state_root() == before_root
    assert _undo_records(engine, batch.seq) == 0
    # Recovery at open undoes every writer share's record, as after a crash.
    engine.execute(batch)
    reopened = ExecutionEngine(engine.path, workers=1)
    try:
        assert _balances(reopened) == before_rows
        assert reopened.state_root() == before_root
    finally:
        reopened.close()
    engine.rollback(batch.seq)  # the records are gone already: this only forgets the batch
    assert _balances(engine) == before_rows and engine.state_root() == before_root


def test_a_wrong_plan_gives_one_of_the_share_orders_and_sequential_repairs_it(engine):
    engine.mixer_false_negative_rate = 1.0  # every request joins the first parallel batch
    try:
        start = _balances(engine)[7]
        statements = ["UPDATE acct SET balance = balance * 2 WHERE id = 7",
                      "UPDATE acct SET balance = balance + 1 WHERE id = 7"] * 3
        batch = _updates(engine.committed_seq + 1, statements)
        outcome = engine.execute(batch)
        assert outcome.parallel_batches == 1
        # Writer shares take positions 0, 2, 4 (doubling) and 1, 3, 5 (adding one); the
        # write lock serializes them in one order or the other.
        doubled_first = (start * 8) + 3
        added_first = (start + 3) * 8
        assert _balances(engine)[7] in (doubled_first, added_first)
        assert engine.state_root() == _full_root(engine)
        engine.rollback(batch.seq)
        engine.execute(batch, sequential=True)
        value = start
        for _ in range(3):
            value = value * 2 + 1
        assert _balances(engine)[7] == value  # batch order
        engine.commit(batch.seq)
    finally:
        engine.mixer_false_negative_rate = 0.0


def test_race_probe_records_manifestations_only_when_the_mixer_errs(engine):
    with open(engine.race_probe_path, "w"):
        pass  # only this test's records
    probes_before = engine.stats.race_probes
    # A correct plan: requests on distinct rows, split across writer shares, never manifest.
    for _ in range(4):
        batch = _updates(engine.committed_seq + 1,
                         [f"UPDATE acct SET balance = balance + 1 WHERE id = {i}" for i in range(10, 16)])
        engine.execute(batch)
        engine.commit(batch.seq)
    with open(engine.race_probe_path) as handle:
        records = [json.loads(line) for line in handle]
    assert len(records) == 4 == engine.stats.race_probes - probes_before
    assert not any(record["manifested"] for record in records)
    assert all(record["parallel_token"] == record["serial_token"] for record in records)
    # A wrong plan on one row: each record says whether the kept run matched batch order.
    engine.mixer_false_negative_rate = 1.0
    try:
        for _ in range(6):
            batch = _updates(engine.committed_seq + 1, ["UPDATE acct SET balance = balance * 3 WHERE id = 16",
                                                         "UPDATE acct SET balance = balance + 1 WHERE id = 16"])
            before = _balances(engine)[16]
            engine.execute(batch)
            after = _balances(engine)[16]
            with open(engine.race_probe_path) as handle:
                record = json.loads(handle.readlines()[-1])
            assert record["seq"] == batch.seq
            assert record["manifested"] == (after != before * 3 + 1)
            engine.commit(batch.seq)
    finally:
        engine.mixer_false_negative_rate = 0.0


def test_a_dead_worker_among_several_writer_shares(engine, tmp_path):
    marker = str(tmp_path / "died")
    before = _balances(engine)
    pids_before = engine.worker_pids()
    batch = Batch(engine.committed_seq + 1, 0, 0, 9, (
        Request.statement("a", 1, "UPDATE acct SET balance = balance + 5 WHERE id = 0"),
        Request.call("b", 1, "die_once", (marker, 1)),
        Request.statement("c", 1, "UPDATE acct SET balance = balance + 5 WHERE id = 2"),
        Request.statement("d", 1, "UPDATE acct SET balance = balance + 5 WHERE id = 3"),
    ))
    # A rule for die_once so that all four share one parallel batch: writer shares [0, 2]
    # and [1, 3]; the second dies mid-share while the first may already have committed.
    rules_path = tmp_path / "die.toml"
    rules_path.write_text('[procedures.die_once]\nreads = ["acct"]\nwrites = ["acct"]\n'
                          'keys = [ { table = "acct", arg = 1 } ]\n')
    engine.rules = load_rules(str(rules_path))
    # No probe here: it would run die_once in this process first (the probe runs in-process).
    probe_path, engine.race_probe_path = engine.race_probe_path, None
    try:
        assert engine.plan(batch)[0] == [[0, 1, 2, 3]]
        outcome = engine.execute(batch)
    finally:
        engine.rules, engine.race_probe_path = None, probe_path
    assert os.path.exists(marker) and engine.worker_pids() != pids_before
    assert [reply.ok for reply in outcome.replies] == [True, True, True, True]
    # Whatever a surviving writer share committed was undone before the rerun: once each.
    after = _balances(engine)
    assert after[0] == before[0] + 5 and after[1] == before[1] + 1000
    assert after[2] == before[2] + 5 and after[3] == before[3] + 5
    assert engine.state_root() == _full_root(engine)
    engine.commit(batch.seq)


def test_pair_catches_and_repairs_races_and_no_reply_comes_from_a_diverged_run(tmp_path):
    result = race_masking.run_mode("eve-diverse", rate=0.5, seconds=3, clients=8, counters=3, workers=2,
                                   seed=1, work_dir=str(tmp_path))
    print(json.dumps(result, indent=1))
    assert result["client_errors"] == 0 and result["requests_acknowledged"] > 0
    assert result["history_check"]["consistent"], result["history_check"]
    assert result["roots_equal"]
    pair = result["pair"]
    assert pair["batches_probed_from_different_states"] == 0
    assert pair["detected_without_manifestation"] == 0
    # Every token mismatch the probes saw is a divergence the primary counted and repaired.
    assert pair["detected_by_token_mismatch"] == pair["divergences_counted_by_primary"] == pair["repaired"]
    assert result["nodes"]["primary"]["state_transfers"] == 0
    assert pair["manifested_on_either"] > 0  # the knob really made races (3 s at rate 0.5)


def test_a_worker_dead_before_its_writer_share_is_sent_leaves_no_answer_behind(engine):
    # Worker 1 dies between batches: the next batch's second writer share cannot be sent while
    # the first is already running.  That share must be finished and read before the batch is
    # undone and rerun, or its answer would be taken for the following batch's.
    victim = engine._executor._pool[1].process
    victim.kill()
    victim.join()
    before = _balances(engine)
    for round_number in range(2):
        batch = _updates(engine.committed_seq + 1,
                         [f"UPDATE acct SET balance = balance + 7 WHERE id = {i}" for i in range(4)])
        outcome = engine.execute(batch)
        assert [reply.ok for reply in outcome.replies] == [True] * 4
        assert _balances(engine) == {**before, **{i: before[i] + 7 * (round_number + 1) for i in range(4)}}
        assert engine.state_root() == _full_root(engine)
        engine.commit(batch.seq)
    assert engine._executor._pool[1].process.is_alive()


def test_a_writer_share_that_times_out_on_the_lock_is_undone_and_the_batch_rerun(tmp_path):
    # Each share holds SQLite's write lock for a slow statement, longer than the busy timeout:
    # whichever share waits fails outside any request after the other committed.
    path = str(tmp_path / "busy.db")
    _make_database(path)
    engine = ExecutionEngine(path, workers=2, parallel_writers=True,
                             options=storage.StorageOptions(busy_timeout_ms=50))
    try:
        before = _balances(engine)
        slow = ("UPDATE acct SET balance = balance + 1 + 0 * (SELECT count(*) FROM acct a, acct b, acct c, "
                "acct d, acct e, acct f WHERE f.id < 3) WHERE id = {}")
        batch = _updates(1, [slow.format(1), slow.format(2)])
        reexecutions = engine.stats.reexecutions
        outcome = engine.execute(batch, plan=[[0, 1]])
        assert engine.stats.reexecutions == reexecutions + 1  # the lock timeout did happen
        assert [reply.ok for reply in outcome.replies] == [True, True]
        assert _balances(engine) == {**before, 1: before[1] + 1, 2: before[2] + 1}  # once each
        assert engine.state_root() == _full_root(engine)
        engine.rollback(batch.seq)
        assert _balances(engine) == before and _undo_records(engine, batch.seq) == 0
    finally:
        engine.close()
