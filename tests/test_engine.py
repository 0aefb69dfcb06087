"""One replica's engine: determinism across worker counts and orders, mixer soundness,
incremental Merkle roots, rollback, and crash recovery with kill -9.

Real SQLite files, real worker processes (spawned once per module and reused: each example
rolls its batch back, which is itself under test).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evedb import storage
from evedb.engine import ExecutionEngine
from evedb.messages import Batch, Request, Statement

SCHEMA = [
    "CREATE TABLE acct(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE pair(a INTEGER, b TEXT, v, PRIMARY KEY (a, b))",
    "CREATE TABLE note(code TEXT PRIMARY KEY, body TEXT)",
]


def make_database(path: str) -> None:
    connection = storage.open_connection(path)
    storage.ensure_internal_tables(connection)
    for ddl in SCHEMA:
        connection.execute(ddl)
    with connection:
        connection.executemany("INSERT INTO acct VALUES (?, ?)", [(i, 100) for i in range(50)])
        connection.executemany("INSERT INTO pair VALUES (?, ?, ?)", [(i, "x", i * 2) for i in range(20)])
        connection.executemany("INSERT INTO note VALUES (?, ?)", [(f"n{i}", "body") for i in range(10)])
    connection.close()


@contextlib.contextmanager
def fresh_engine(tmp_path, name: str, **options):
    """An engine over a new copy of SCHEMA's database, closed on the way out."""
    path = str(tmp_path / name)
    make_database(path)
    engine = ExecutionEngine(path, **options)
    try:
        yield engine
    finally:
        engine.close()


def point_reads(count: int) -> list[Request]:
    return [Request.statement("r", i, "SELECT balance FROM acct WHERE id = ?", (i,)) for i in range(1, count + 1)]


def table_rows(engine: ExecutionEngine) -> dict:
    connection = engine._connection
    return {
        table: connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("acct", "pair", "note")
    }


def full_root(engine: ExecutionEngine) -> int:
    incremental = engine.tree
    engine.full_build()
    rebuilt = engine.tree.root()
    engine.tree = incremental
    return rebuilt


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    directory = tmp_path_factory.mktemp("engines")
    built = {}
    for workers in (1, 2, 4):
        path = str(directory / f"w{workers}.db")
        make_database(path)
        built[workers] = ExecutionEngine(path, workers=workers)
    yield built
    for engine in built.values():
        engine.close()


# Requests over the three tables: point and table-level reads and writes, compound keys,
# scripts, failures, and the functions evedb makes deterministic.
def request_strategy(position):
    account = st.integers(0, 60)
    amount = st.integers(-5, 5)
    return st.one_of(
        st.builds(lambda a, n: [("UPDATE acct SET balance = balance + ? WHERE id = ?", (n, a))], account, amount),
        st.builds(lambda a, n: [("INSERT OR REPLACE INTO acct(id, balance) VALUES (?, ?)", (a, n))], account, amount),
        st.builds(lambda a: [("DELETE FROM acct WHERE id = ?", (a,))], account),
        st.builds(lambda a: [("SELECT balance FROM acct WHERE id = ?", (a,))], account),
        st.just([("SELECT sum(balance), count(*) FROM acct", ())]),
        st.builds(lambda a, b: [("INSERT INTO pair(a, b, v) VALUES (?, ?, randomblob(4))", (a, b))],
                  st.integers(0, 25), st.sampled_from(["x", "y"])),
        st.builds(lambda a: [("UPDATE pair SET v = random() WHERE a = ?", (a,))], st.integers(0, 25)),
        st.builds(lambda c: [("INSERT INTO note VALUES (?, datetime('now'))", (c,))], st.sampled_from(["n1", "z1", "z2"])),
        st.builds(lambda c: [("UPDATE note SET body = body || '!' WHERE code = ?", (c,))], st.sampled_from(["n1", "n2", "z1"])),
        st.builds(
            lambda a, b, n: [
                ("UPDATE acct SET balance = balance - ? WHERE id = ?", (n, a)),
                ("UPDATE acct SET balance = balance + ? WHERE id = ?", (n, b)),
            ],
            account, account, amount,
        ),
    )


batches = st.lists(st.integers(0, 10**6), min_size=1, max_size=40).flatmap(
    lambda seeds: st.tuples(*[request_strategy(i) for i in range(len(seeds))])
)


def to_batch(seq: int, statements_per_request) -> Batch:
    requests = []
    for position, statements in enumerate(statements_per_request):
        parts = tuple(Statement(sql, params) for sql, params in statements)
        if len(parts) == 1:
            requests.append(Request.statement("client", position, parts[0].sql, parts[0].params))
        else:
            requests.append(Request.script("client", position, parts))
    return Batch(seq, 0, 1_700_000_000_000 + seq, 12345 + seq, tuple(requests))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches, st.integers(0, 2**32))
def test_same_batch_same_token_whatever_the_workers_or_order(engines, statements, order_seed):
    batch = to_batch(1000, statements)
    initial_roots = {w: engine.state_root() for w, engine in engines.items()}
    assert len(set(initial_roots.values())) == 1
    outcomes = {}
    for workers, engine in engines.items():
        outcomes[workers] = engine.execute(batch)
    # The inline engine once more, each parallel batch in a seeded random order.
    inline = engines[1]
    plan, _ = inline.plan(batch)
    shuffled = [random.Random(order_seed + i).sample(group, len(group)) for i, group in enumerate(plan)]
    inline.rollback(batch.seq)
    outcomes["shuffled"] = inline.execute(batch, plan=shuffled)
    tokens = {key: outcome.token for key, outcome in outcomes.items()}
    assert len(set(tokens.values())) == 1, tokens
    replies = {key: outcome.replies for key, outcome in outcomes.items()}
    assert all(r == replies[1] for r in replies.values())
    for workers, engine in engines.items():
        assert engine.state_root() == full_root(engine)  # incremental == full rebuild
        engine.rollback(batch.seq)
        assert engine.state_root() == initial_roots[workers]
        assert engine.state_root() == full_root(engine)


def test_logically_different_state_gives_different_root(engines):
    engine = engines[1]
    before = engine.state_root()
    batch = to_batch(2000, [[("UPDATE acct SET balance = balance + 1 WHERE id = 7", ())]])
    engine.execute(batch)
    assert engine.state_root() != before
    engine.rollback(batch.seq)
    assert engine.state_root() == before


def test_wrong_mixer_is_caught_and_repaired_by_sequential_reexecution(engines):
    engine = engines[1]
    rows_before = table_rows(engine)
    # Two conflicting transactions on one row: doubling then adding is not adding then doubling.
    batch = to_batch(3000, [
        [("UPDATE acct SET balance = balance * 2 WHERE id = 3", ())],
        [("UPDATE acct SET balance = balance + 1 WHERE id = 3", ())],
        [("SELECT balance FROM acct WHERE id = 3", ())],
    ])
    sequential = engine.execute(batch, sequential=True)
    sequential_rows = table_rows(engine)
    engine.rollback(batch.seq)
    assert table_rows(engine) == rows_before
    # A deliberately wrong mixer: all three in one parallel batch, run in reverse.
    wrong = engine.execute(batch, plan=[[2, 1, 0]])
    assert wrong.token != sequential.token  # the divergence is visible in the token
    engine.rollback(batch.seq)
    repaired = engine.execute(batch, sequential=True)
    assert repaired.token == sequential.token
    assert table_rows(engine) == sequential_rows
    assert repaired.replies[2].results[0].rows == ((201,),)
    engine.rollback(batch.seq)


def test_rollback_restores_rows_and_root_across_tables_and_batches(engines):
    engine = engines[2]
    rows_before, root_before = table_rows(engine), engine.state_root()
    first = to_batch(4000, [
        [("INSERT INTO acct VALUES (500, 1)", ())],
        [("DELETE FROM acct WHERE id = 4", ())],
        [("UPDATE pair SET v = 'changed' WHERE a < 10", ())],
        [("INSERT INTO note VALUES ('new', 'n')", ())],
        [("DELETE FROM note WHERE code = 'n3'", ())],
    ])
    second = to_batch(4001, [[("UPDATE acct SET balance = 0", ())], [("DELETE FROM pair", ())]])
    engine.execute(first)
    engine.execute(second)
    assert table_rows(engine) != rows_before
    engine.rollback(first.seq)  # undoes both, newest first
    assert table_rows(engine) == rows_before
    assert engine.state_root() == root_before == full_root(engine)


def test_commit_keeps_state_and_drops_undo(tmp_path):
    path = str(tmp_path / "c.db")
    make_database(path)
    engine = ExecutionEngine(path, workers=1)
    try:
        engine.execute(to_batch(1, [[("UPDATE acct SET balance = 7 WHERE id = 1", ())]]))
        engine.commit(1)
        assert engine._connection.execute("SELECT count(*) FROM _evedb_undo").fetchall() == [(0,)]
        assert engine.committed_seq == 1
    finally:
        engine.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from evedb.engine import ExecutionEngine
    from evedb.messages import Batch, Request
    import evedb

    @evedb.procedure
    def stall(db):
        db.execute("UPDATE acct SET balance = -1 WHERE id = 2")
        open(sys.argv[2], "w").close()   # tell the test we are inside the batch
        time.sleep(60)

    engine = ExecutionEngine(sys.argv[1], workers=1)
    committed = Batch(1, 0, 0, 1, (Request.statement("c", 1, "UPDATE acct SET balance = 1 WHERE id = 1"),))
    engine.execute(committed); engine.commit(1)
    # Batch 2: a parallel batch of writes commits in SQLite (undo recorded), then the next
    # parallel batch stalls inside a procedure, mid-batch.
    batch = Batch(2, 0, 0, 2, (
        Request.statement("c", 2, "INSERT INTO acct VALUES (900, 9)"),
        Request.statement("c", 3, "DELETE FROM note WHERE code = 'n1'"),
        Request.call("c", 4, "stall"),
    ))
    engine.execute(batch, plan=[[0, 1], [2]])
    """
)


def test_kill_9_mid_batch_reopens_at_last_committed_batch(tmp_path):
    path = str(tmp_path / "crash.db")
    make_database(path)
    marker = tmp_path / "inside"
    expected = None
    reference = str(tmp_path / "reference.db")
    make_database(reference)
    engine = ExecutionEngine(reference, workers=1)
    engine.execute(Batch(1, 0, 0, 1, (Request.statement("c", 1, "UPDATE acct SET balance = 1 WHERE id = 1"),)))
    engine.commit(1)
    expected = (table_rows(engine), engine.state_root())
    engine.close()

    process = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, path, str(marker)])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None, "the crash script exited early"
            assert time.monotonic() < deadline, "the crash script never reached the batch"
            time.sleep(0.05)
        # The first parallel batch of batch 2 is committed in SQLite: prove it, then kill.
        peek = storage.open_connection(path)
        assert peek.execute("SELECT count(*) FROM acct WHERE id = 900").fetchall() == [(1,)]
        assert peek.execute("SELECT count(*) FROM _evedb_undo WHERE seq = 2").fetchall() == [(1,)]
        peek.close()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    reopened = ExecutionEngine(path, workers=1)
    try:
        assert (table_rows(reopened), reopened.state_root()) == expected
        assert reopened.committed_seq == 1
    finally:
        reopened.close()


def test_dead_worker_is_replaced_and_its_batch_rerun(tmp_path):
    path = str(tmp_path / "die.db")
    make_database(path)
    marker = str(tmp_path / "died")
    # Write shares run in worker processes only without local writes (and with parallel
    # writers); by default they run in this process, where a dying procedure would kill pytest.
    engine = ExecutionEngine(path, workers=2, procedure_modules=["worker_procedures"], local_writes=False)
    try:
        pids_before = engine.worker_pids()
        batch = Batch(1, 0, 0, 1, (
            Request.statement("c", 1, "UPDATE acct SET balance = 0 WHERE id = 1"),
            Request.call("c", 2, "die_once", (marker, 2)),
            Request.statement("c", 3, "SELECT balance FROM acct WHERE id = 2"),
        ))
        outcome = engine.execute(batch, commit=True)
        assert os.path.exists(marker)  # the worker really died once
        assert engine.worker_pids() != pids_before  # and was replaced
        assert engine.stats.worker_restarts == 1
        assert [reply.ok for reply in outcome.replies] == [True, True, True]
        assert outcome.replies[1].results[0].rows == ((1100,),)
        assert outcome.replies[2].results[0].rows == ((1100,),)
        # The batch ran exactly once in effect: no double increment, nothing left undone.
        assert table_rows(engine)["acct"][1:3] == [(1, 0), (2, 1100)]
        assert engine.state_root() == full_root(engine)
        # The pool still works.
        again = engine.execute(Batch(2, 0, 0, 2, (Request.statement("c", 4, "SELECT count(*) FROM acct"),)), commit=True)
        assert again.replies[0].results[0].rows == ((50,),)
    finally:
        engine.close()


def test_state_transfer_then_same_batch_gives_same_token(tmp_path):
    """After a transfer the replicas hold the same logical state, though SQLite's hidden rowids
    of a table keyed by TEXT differ (rows arrived in another order); the next batch must give
    equal tokens: no hidden rowid may reach a reply (lastrowid) or the root."""
    engines = []
    for name in ("source", "target"):
        path = str(tmp_path / f"{name}.db")
        make_database(path)
        engines.append(ExecutionEngine(path, workers=1, options=storage.StorageOptions(reply_cache=True)))
    source, target = engines
    try:
        # Different histories: the target inserted and deleted notes the source never had.
        target.execute(to_batch(1, [[("INSERT INTO note VALUES ('tmp1', 'x')", ())], [("INSERT INTO note VALUES ('tmp2', 'x')", ())]]))
        target.commit(1)
        target.execute(to_batch(2, [[("DELETE FROM note WHERE code LIKE 'tmp%'", ())]]))
        target.commit(2)
        for seq in range(1, 4):
            source.execute(to_batch(seq, [[(f"INSERT INTO note VALUES ('s{seq}', 'y')", ())],
                                          [("UPDATE acct SET balance = balance + 1 WHERE id = ?", (seq,))]]))
            source.commit(seq)
        for part in source.state_data(target.state_request(0), 0):
            installed = target.install_state(part)
        assert installed and target.state_root() == source.state_root() and target.committed_seq == 3
        batch = to_batch(4, [[("INSERT INTO note VALUES ('next', 'z')", ())], [("INSERT INTO acct(balance) VALUES (5)", ())]])
        tokens = [engine.execute(batch).token for engine in engines]
        assert tokens[0] == tokens[1]
    finally:
        for engine in engines:
            engine.close()


def test_rollback_with_triggers_and_cascades_restores_exactly(tmp_path):
    """Undo replays recorded rows: triggers and foreign-key actions must not fire again."""
    path = str(tmp_path / "trig.db")
    connection = storage.open_connection(path)
    storage.ensure_internal_tables(connection)
    connection.execute("CREATE TABLE item(id INTEGER PRIMARY KEY, stock INTEGER)")
    connection.execute("CREATE TABLE audit(id INTEGER PRIMARY KEY, item INTEGER, note TEXT)")
    connection.execute("CREATE TABLE line(id INTEGER PRIMARY KEY, item INTEGER REFERENCES item(id) ON DELETE CASCADE)")
    connection.execute("CREATE TRIGGER stock_audit AFTER UPDATE ON item BEGIN "
                       "INSERT INTO audit(item, note) VALUES (NEW.id, 'stock ' || NEW.stock); END")
    connection.execute("CREATE TRIGGER delete_audit AFTER DELETE ON item BEGIN "
                       "INSERT INTO audit(item, note) VALUES (OLD.id, 'deleted'); END")
    with connection:
        connection.executemany("INSERT INTO item VALUES (?, ?)", [(i, 10) for i in range(5)])
        connection.executemany("INSERT INTO line VALUES (?, ?)", [(i, i % 5) for i in range(10)])
    connection.close()
    engine = ExecutionEngine(path, workers=1)
    try:
        def snapshot():
            c = engine._connection
            return [c.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("item", "audit", "line")]

        before, root_before = snapshot(), engine.state_root()
        batch = to_batch(1, [[("UPDATE item SET stock = stock - 1 WHERE id = 1", ())],
                             [("DELETE FROM item WHERE id = 2", ())]])
        engine.execute(batch)
        after = snapshot()
        assert len(after[1]) == 2 and len(after[2]) == 8  # two audit rows, cascade removed two lines
        engine.rollback(1)
        assert snapshot() == before
        assert engine.state_root() == root_before == full_root(engine)
    finally:
        engine.close()


def test_cheap_reads_run_in_process_and_costly_ones_in_the_pool_with_the_same_answers(tmp_path):
    with fresh_engine(tmp_path, "reads.db", workers=2) as engine:
        reads = point_reads(3)
        lone = engine.execute_reads(reads[:1], 0)
        assert engine.stats.local_read_requests == 1  # one read: nothing to run in parallel
        assert engine._local_read_us is not None  # the lone read was measured
        engine._local_read_us = 1.0  # as if reads had cost 1 µs each here (timing-free test)
        here = engine.execute_reads(reads, 0)
        assert engine.stats.local_read_requests == 4
        engine._local_read_us = 10_000.0  # as if each read had cost 10 ms here
        pooled = engine.execute_reads(reads, 0)
        assert engine.stats.local_read_requests == 4 and engine.stats.read_requests == 7
        assert [r.results for r in here] == [r.results for r in pooled]
        assert lone[0].results == here[0].results and here[0].results[0].rows == ((100,),)


def test_split_reads_deals_longest_first_to_the_least_loaded_worker():
    from evedb.executor import split_reads

    loads = [0.0, 0.0]
    assert split_reads([10, 11, 12, 13, 14], [5, 4, 3, 3, 3], loads) == [[10, 13], [11, 12, 14]]
    assert loads == [8, 10]
    # Work already given (a write share) counts: the reads go to the idle worker first.
    assert split_reads([1, 2, 3], [1.0, 1.0, 1.0], [10.0, 0.0]) == [[], [1, 2, 3]]
    # Every position lands once, each share in ascending order, whatever the costs.
    rng = random.Random(5)
    positions = list(range(40))
    shares = split_reads(positions, [rng.random() for _ in positions], [0.0] * 3)
    assert sorted(p for share in shares for p in share) == positions
    assert all(share == sorted(share) for share in shares)


def test_cheap_reads_stay_in_process_and_costly_ones_are_shared_with_the_pool(tmp_path):
    with fresh_engine(tmp_path, "cheap.db", workers=2) as engine:
        executor = engine._executor
        calls = []
        call = executor._call
        executor._call = lambda slot, message, busy: (calls.append(message[0]), call(slot, message, busy))
        reads = tuple(point_reads(3))
        costs = executor.costs._by_shape
        costs[reads[0].statements[0].sql] = 20e-6  # three point reads: not worth a worker's round trip
        engine.execute(Batch(1, 0, 1_700_000_000_001, 7, reads), commit=True)
        assert calls == []
        costs[reads[0].statements[0].sql] = 3e-3  # costly: the pool takes from the same list
        outcome = engine.execute(Batch(2, 0, 1_700_000_000_002, 7, reads), commit=True)
        assert calls == ["claim"]
        assert [reply.results[0].rows for reply in outcome.replies] == [((100,),)] * 3


def test_the_pool_has_one_process_fewer_when_this_process_is_a_worker(tmp_path):
    path = str(tmp_path / "pool.db")
    make_database(path)
    for options, processes in (({}, 2), ({"local_writes": False}, 3), ({"parallel_writers": True}, 3)):
        engine = ExecutionEngine(path, workers=3, **options)
        try:
            assert len(engine.worker_pids()) == processes, options
        finally:
            engine.close()


def test_request_costs_learn_per_shape_and_stay_bounded():
    from evedb.executor import RequestCosts

    costs = RequestCosts(max_shapes=3)
    point = Request.statement("c", 1, "SELECT balance FROM acct WHERE id = ?", (1,))
    total = Request.statement("c", 2, "SELECT sum(balance) FROM acct")
    assert costs.estimate(point) == costs.estimate(total) > 0  # nothing seen: one default
    costs.observe(point, 0.001)
    costs.observe(total, 0.010)
    assert costs.estimate(Request.statement("c", 3, point.statements[0].sql, (7,))) == 0.001  # params left out
    assert costs.estimate(total) == 0.010
    costs.observe(total, 0.020)
    assert 0.010 < costs.estimate(total) < 0.020  # a moving average
    unseen = Request.statement("c", 4, "SELECT count(*) FROM note")
    assert 0.001 < costs.estimate(unseen) < 0.020  # the average so far
    for n in range(5):
        costs.observe(Request.statement("c", 5, f"SELECT {n}"), 0.5)
    assert len(costs._by_shape) <= 3


def test_any_split_of_reads_gives_the_same_replies_and_token(tmp_path):
    with fresh_engine(tmp_path, "split.db", workers=2) as engine:
        point = "SELECT balance FROM acct WHERE id = ?"
        total = "SELECT sum(balance), count(*) FROM acct"
        requests = tuple(
            Request.statement("r", i, total) if i % 5 == 0 else Request.statement("r", i, point, (i,))
            for i in range(20)
        )
        learnt = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
        costs = engine._executor.costs
        assert point in costs._by_shape and total in costs._by_shape  # measured by the workers
        costs._by_shape[total] = 1.0  # a wildly wrong estimate: the aggregates alone on one worker
        skewed = engine.execute(Batch(2, 0, 1_700_000_000_001, 7, requests), commit=True)
        assert [r.results for r in skewed.replies] == [r.results for r in learnt.replies]
        assert skewed.state_root == learnt.state_root


def test_a_batch_runs_its_reads_first_against_the_state_before_it():
    from evedb.engine import execution_order
    from evedb.access import Access

    def read(client):
        return Request.statement(client, 1, "SELECT 1")

    def write(client):
        return Request.statement(client, 1, "UPDATE acct SET balance = 0 WHERE id = 1")

    requests = (write("a"), read("b"), read("a"), write("c"), read("d"), read("c"))
    writes = [True, False, False, True, False, False]
    plain = Access(reads=frozenset({"acct"}), writes=frozenset(), keys=frozenset(), exclusive=False, read_only=True)
    batch = Batch(1, 0, 1_700_000_000_001, 7, requests)
    # b's and d's reads first; a's and c's reads stay after their own client's writes.
    assert execution_order(batch, [plain] * 6, writes) == [1, 4, 0, 2, 3, 5]
    ddl = Access(reads=frozenset(), writes=frozenset(), keys=frozenset(), exclusive=True, read_only=False)
    assert execution_order(batch, [plain] * 5 + [ddl], writes) == [0, 1, 2, 3, 4, 5]  # DDL: batch order


def test_a_read_in_the_pool_keeps_the_state_before_the_batch_while_a_later_write_commits(tmp_path):
    from mixer_rules import MixerRules

    rules = MixerRules.from_dict({"procedures": {"slow_total": {"reads": ["acct"]}}})
    bump = "UPDATE acct SET balance = balance + 7 WHERE id = 3"
    requests = (Request.statement("w", 1, bump), Request.call("s", 1, "slow_total", (0.5,)),
                Request.call("q", 1, "slow_total", (0.0,)))
    outcomes = {}
    for workers in (2, 1):
        with fresh_engine(tmp_path, f"snapshot{workers}.db", workers=workers, rules=rules,
                          procedure_modules=["worker_procedures"]) as engine:
            assert engine.plan(Batch(1, 0, 1_700_000_000_001, 7, requests))[0] == [[1, 2], [0]]
            if workers == 2:
                # The write looks long, so this process leaves both reads to the pool and runs
                # the write (and commits it) while the pool's first read sleeps.
                costs = engine._executor.costs._by_shape
                costs[("procedure", "slow_total")], costs[bump] = 0.01, 10.0
                # And the pool is slow to start: the write must wait for its snapshot.
                (pid,) = engine.worker_pids()
                os.kill(pid, signal.SIGSTOP)
                threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
            started = time.perf_counter()
            outcomes[workers] = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
            assert time.perf_counter() - started >= (0.8 if workers == 2 else 0.5)
            assert engine.stats.overlapped_batches == (1 if workers == 2 else 0)
            assert table_rows(engine)["acct"][3] == (3, 107)
    for outcome in outcomes.values():
        assert [reply.results[0].rows for reply in outcome.replies[1:]] == [((5000,),), ((5000,),)]
    assert outcomes[2].token == outcomes[1].token


def _slow_engine(tmp_path, name):
    from mixer_rules import MixerRules

    rules = MixerRules.from_dict({"procedures": {"slow_total": {"reads": ["acct"]}}})
    return fresh_engine(tmp_path, name, workers=2, rules=rules, procedure_modules=["worker_procedures"])


@pytest.mark.parametrize("signalled", [True, False], ids=["after-its-snapshot", "before-its-snapshot"])
def test_a_pool_worker_dying_beside_later_writes_leaves_the_batch_run_once(tmp_path, signalled):
    bump = "UPDATE acct SET balance = balance + 7 WHERE id = 3"
    requests = (Request.call("s", 1, "slow_total", (0.6,)), Request.call("q", 1, "slow_total", (0.6,)),
                Request.statement("w", 1, bump))
    with _slow_engine(tmp_path, "dies.db") as engine:
        costs = engine._executor.costs._by_shape
        costs[("procedure", "slow_total")], costs[bump] = 0.01, 10.0  # both reads to the pool
        (pid,) = engine.worker_pids()
        if not signalled:
            os.kill(pid, signal.SIGSTOP)  # killed before it can take its snapshot
        threading.Timer(0.2, os.kill, (pid, signal.SIGKILL)).start()
        outcome = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
        assert engine.stats.worker_restarts == 1 and engine.worker_pids() != [pid]
        assert [reply.results[0].rows for reply in outcome.replies[:2]] == [((5000,),), ((5000,),)]
        assert outcome.replies[2].ok and table_rows(engine)["acct"][3] == (3, 107)  # the write ran once
        assert engine.state_root() == full_root(engine)


def test_ddl_after_pool_reads_waits_for_them_since_no_undo_reverts_it(tmp_path):
    create = "CREATE TABLE extra(id INTEGER PRIMARY KEY)"
    requests = (Request.call("s", 1, "slow_total", (0.6,)), Request.call("q", 1, "slow_total", (0.6,)),
                Request.statement("d", 1, create))
    with _slow_engine(tmp_path, "ddl.db") as engine:
        assert engine.plan(Batch(1, 0, 1_700_000_000_001, 7, requests))[0] == [[0, 1], [2]]
        costs = engine._executor.costs._by_shape
        costs[("procedure", "slow_total")], costs[create] = 0.01, 10.0
        (pid,) = engine.worker_pids()
        # The worker dies mid-read, after its snapshot: had the CREATE committed meanwhile, the
        # batch's sequential re-run would find the table there already.
        threading.Timer(0.2, os.kill, (pid, signal.SIGKILL)).start()
        outcome = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
        assert engine.stats.worker_restarts == 1
        assert outcome.replies[2].ok, outcome.replies[2].error
        assert [reply.results[0].rows for reply in outcome.replies[:2]] == [((5000,),), ((5000,),)]
        tables = engine._connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
        assert ("extra",) in tables and engine.state_root() == full_root(engine)


def test_reads_of_the_first_parallel_batch_run_beside_the_writes_after_them(tmp_path):
    costly = "SELECT count(*), sum(length(a.body)) FROM note AS a, note AS b"
    total = "SELECT sum(balance) FROM acct"
    requests = (
        Request.statement("w", 1, "UPDATE acct SET balance = balance + 1 WHERE id = 1"),
        Request.statement("t", 1, total),  # another client: reads the state before the batch
        Request.statement("w", 2, "UPDATE acct SET balance = balance + 5 WHERE id = 2"),
        Request.statement("w", 3, total),  # after its own client's writes: sees them
        *(Request.statement("n", i, costly) for i in range(4)),
    )
    outcomes = {}
    for workers in (2, 1):
        with fresh_engine(tmp_path, f"overlap{workers}.db", workers=workers) as engine:
            plan = engine.plan(Batch(1, 0, 1_700_000_000_001, 7, requests))[0]
            assert plan == [[1, 4, 5, 6, 7], [0, 2], [3]]
            first = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
            before = engine.stats.overlapped_batches
            if workers == 2:
                costs = engine._executor.costs._by_shape
                # Costly enough to ship: the pool reads on while this process runs the writes.
                costs[costly], costs[total] = 0.01, 0.02
            second = engine.execute(Batch(2, 0, 1_700_000_000_002, 7, requests), commit=True)
            third = engine.execute(Batch(3, 0, 1_700_000_000_003, 7, requests), sequential=True)
            engine.commit(3)
            outcomes[workers] = (first, second, third, engine.stats.overlapped_batches - before,
                                 table_rows(engine))
    assert outcomes[2][3] >= 1 and outcomes[1][3] == 0
    for parallel, sequential in zip(outcomes[2][:3], outcomes[1][:3]):
        assert parallel.replies == sequential.replies
        assert parallel.token == sequential.token
    for batch_number, outcome in enumerate(outcomes[2][:3]):
        before_batch = 100 * 50 + 6 * batch_number
        assert outcome.replies[1].results[0].rows == ((before_batch,),)  # t: the state before the batch
        assert outcome.replies[3].results[0].rows == ((before_batch + 6,),)  # w: its own writes
    assert outcomes[2][4] == outcomes[1][4]


def test_reply_cache_answers_a_retry_in_the_same_share_and_refuses_an_older_request(tmp_path):
    from evedb.executor import Worker

    path = str(tmp_path / "replies.db")
    make_database(path)
    worker = Worker(path, storage.StorageOptions(reply_cache=True))
    try:
        bump = "UPDATE acct SET balance = balance + 1 WHERE id = 1 RETURNING balance"
        first = [(0, Request.statement("c", 5, bump)), (1, Request.statement("c", 5, bump)),
                 (2, Request.statement("c", 4, bump)), (3, Request.statement("d", 1, bump))]
        share = worker.run_share(1, 1_700_000_000_000, 7, first, True, final=True)
        replies = [reply for _, reply in share.replies]
        assert replies[0].results[0].rows == ((101,),)
        assert replies[1] == replies[0]  # the retry, answered from the pending reply: ran once
        assert replies[2].error is not None and "older" in replies[2].error.message
        assert replies[3].results[0].rows == ((102,),)
        # A later share: the retry is answered from the stored reply, a new request runs.
        again = worker.run_share(2, 1_700_000_000_000, 7, [(0, Request.statement("c", 5, bump)),
                                                           (1, Request.statement("c", 6, bump))], True, final=True)
        assert again.replies[0][1] == replies[0]
        assert again.replies[1][1].results[0].rows == ((103,),)
    finally:
        worker.close()


def test_reads_in_a_batch_leave_the_reply_cache_alone_in_parallel_and_in_sequence(tmp_path):
    # Sequential execution runs a parallel batch's reads inside its writing share; parallel
    # execution runs them in a read share.  Either way only the writes' replies are cached,
    # so both executions end at the same root.
    roots = {}
    for workers in (1, 2):
        path = str(tmp_path / f"w{workers}.db")
        make_database(path)
        engine = ExecutionEngine(path, workers=workers, options=storage.StorageOptions(reply_cache=True))
        try:
            requests = (
                Request.statement("reader", 1, "SELECT balance FROM acct WHERE id = ?", (3,)),
                Request.statement("writer", 1, "UPDATE acct SET balance = balance + 1 WHERE id = ?", (4,)),
                Request.statement("reader2", 7, "SELECT sum(balance) FROM note, acct"),
            )
            outcome = engine.execute(Batch(1, 0, 1_700_000_000_001, 7, requests), commit=True)
            assert outcome.replies[0].results[0].rows == ((100,),)
            cached = engine._connection.execute(
                f"SELECT client_id, request_id FROM {storage.REPLIES_TABLE} ORDER BY client_id").fetchall()
            assert cached == [("writer", 1)]
            roots[workers] = engine.state_root_hex()
        finally:
            engine.close()
    assert roots[1] == roots[2]


def test_costly_reads_go_where_they_took_less_wall_time_per_read(tmp_path):
    with fresh_engine(tmp_path, "reads.db", workers=2) as engine:
        reads = point_reads(3)
        engine.execute_reads(reads[:1], 0)  # one read runs here and is measured
        engine._local_read_us = 10_000.0  # costly here (timing-free test)
        engine.execute_reads(reads, 0)  # no pool measure yet: the pool runs it and is measured
        assert engine.stats.local_read_requests == 1 and engine._pool_read_us is not None
        engine._local_read_us, engine._pool_read_us = 10_000.0, 20_000.0  # the pool was slower
        engine.execute_reads(reads, 0)
        assert engine.stats.local_read_requests == 4  # so they ran here
        engine._local_read_us, engine._pool_read_us = 10_000.0, 5_000.0  # the pool was faster
        engine.execute_reads(reads, 0)
        assert engine.stats.local_read_requests == 4  # so they ran in the pool
