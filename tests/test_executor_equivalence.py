"""Every executor gives the same batch the same outcome, including on its failure paths.

Checks the cost-aware read split, cheap reads in the coordinator, the reply cache read and
stored once per writer share, page deltas without a row read and `Catalog.version_checked`:
tokens, replies, rows and roots equal to inline sequential execution across the local-writer,
pooled and parallel-writer configurations (also with random cost estimates forcing other
splits); page deltas equal to the earlier row-reading algorithm (type coercion, generated
columns, ALTER TABLE); a worker killed inside a read share after the write share committed,
or between its write share and its queued read share; an exception in the coordinator's read
or write share; large requests and replies with queued messages (no pipe deadlock).

Real SQLite files, real worker processes, as in tests/test_engine.py.
"""

from __future__ import annotations

import threading
import time

import apsw
import pytest

from evedb import merkle, storage
from evedb.engine import ExecutionEngine
from evedb.errors import InternalError
from evedb.executor import Worker
from evedb.messages import Batch, Request
from test_engine import fresh_engine, full_root, make_database, table_rows

TS = 1_700_000_000_001


def _old_page_deltas(worker: Worker, changeset: bytes) -> dict:
    """Page deltas from whole rows: an UPDATE's new row read back by SELECT, its old row that with
    the changed columns' old values.  The oracle for hashing UPDATEs from their changed cells."""
    deltas: dict = {}
    for change in apsw.Changeset.iter(changeset):
        table = change.name
        key_of = lambda row: tuple(row[i] for i in sorted(change.pk_columns))  # noqa: E731
        if change.op == "INSERT":
            merkle.add_row(deltas, table, key_of(change.new), change.new, 1)
        elif change.op == "DELETE":
            merkle.add_row(deltas, table, key_of(change.old), change.old, -1)
        else:
            columns, _ = storage.table_columns(worker.connection, table)
            select = (f"SELECT {', '.join(map(storage.quote_identifier, columns))} FROM "
                      f"{storage.quote_identifier(table)} WHERE "
                      + " AND ".join(f"{storage.quote_identifier(columns[i])} = ?" for i in sorted(change.pk_columns)))
            if table.startswith(storage.INTERNAL_PREFIX):
                select = storage.INTERNAL_TAG + select
            key = key_of(change.old)
            new_row = worker.connection.execute(select, key).fetchall()[0]
            old_row = tuple(n if o is apsw.no_change else o for o, n in zip(change.old, new_row))
            merkle.add_row(deltas, table, key, old_row, -1)
            merkle.add_row(deltas, table, key, new_row, 1)
    return deltas


EXTRA_SCHEMA = [
    "CREATE TABLE r(id INTEGER PRIMARY KEY, v REAL, n NUMERIC, t TEXT, b BLOB)",
    "CREATE TABLE w(a TEXT, b INTEGER, v, PRIMARY KEY (b, a)) WITHOUT ROWID",
]


def _extra_database(path: str) -> None:
    make_database(path)
    connection = storage.open_connection(path)
    for ddl in EXTRA_SCHEMA:
        connection.execute(ddl)
    with connection:
        connection.execute("INSERT INTO r VALUES (1, 1, 1, 1, x'01'), (2, 2.5, '3', 'a', NULL), (3, NULL, 'x', 5, 7)")
        connection.execute("INSERT INTO w VALUES ('k', 1, 1), ('k', 2, 'two'), ('j', 1, 2.0)")
    connection.close()


UPDATES = [
    "UPDATE r SET v = 5, n = '7', t = 8, b = 9 WHERE id = 1",        # every column changes, types coerced
    "UPDATE r SET v = '6.0', n = 2.0, t = x'00', b = 'z' WHERE id = 2",
    "UPDATE r SET v = 1, n = 1 WHERE id = 3",                        # some columns unchanged
    "UPDATE w SET v = 3 WHERE a = 'k' AND b = 1",                    # WITHOUT ROWID, compound key
    "UPDATE w SET v = v WHERE a = 'k' AND b = 2",                    # no change at all
    "UPDATE acct SET balance = balance + 1 WHERE id < 5",
    "UPDATE pair SET v = NULL WHERE a = 3",
    "UPDATE note SET body = 'b2' WHERE code = 'n1'",
]


def test_page_deltas_equal_those_of_whole_rows_read_back(tmp_path):
    path = str(tmp_path / "deltas.db")
    _extra_database(path)
    worker = Worker(path, storage.StorageOptions(reply_cache=True))
    try:
        connection = worker.connection
        with worker.authorizer.internal():
            connection.execute("BEGIN IMMEDIATE")
            session = apsw.Session(connection, "main")
            session.table_filter(storage.is_replicated_table)
            session.attach()
        for sql in UPDATES:
            worker.run_statement(sql, None)
        with worker.authorizer.internal():
            changeset = session.changeset()
            session.close()
            new = worker.page_deltas(changeset)
            new_python = worker.page_deltas_python(changeset)
            old = _old_page_deltas(worker, changeset)
            connection.execute("ROLLBACK")
        assert new == old and new_python == old
    finally:
        worker.close()


def _run_all(tmp_path, name, batches, **engine_options):
    path = str(tmp_path / f"{name}.db")
    _extra_database(path)
    engine = ExecutionEngine(path, **engine_options)
    try:
        outcomes = [engine.execute(batch, commit=True) for batch in batches]
        assert engine.state_root() == full_root(engine)
        return [o.token for o in outcomes], [[r.results or r.error for r in o.replies] for o in outcomes], \
            table_rows(engine), engine.state_root_hex()
    finally:
        engine.close()


def _updates_batches():
    requests = tuple(Request.statement(f"c{i}", 1, sql) for i, sql in enumerate(UPDATES))
    reads = tuple(Request.statement(f"r{i}", 1, "SELECT * FROM r ORDER BY id") for i in range(3))
    return [Batch(1, 0, TS, 7, requests), Batch(2, 0, TS, 7, reads + requests[:2])]


@pytest.mark.parametrize("workers", [1, 2])
def test_incremental_root_equals_full_build_after_type_coercing_updates(tmp_path, workers):
    _run_all(tmp_path, f"coerce{workers}", _updates_batches(), workers=workers,
             options=storage.StorageOptions(reply_cache=True))


def test_generated_columns_root_and_deltas(tmp_path):
    path = str(tmp_path / "gen.db")
    make_database(path)
    connection = storage.open_connection(path)
    connection.execute("CREATE TABLE g(id INTEGER PRIMARY KEY, v INTEGER, s AS (v * 2) STORED, x AS (v + 1))")
    with connection:
        connection.execute("INSERT INTO g(id, v) VALUES (1, 1), (2, 2)")
    connection.close()
    engine = ExecutionEngine(path, workers=1)
    try:
        engine.execute(Batch(1, 0, TS, 7, (Request.statement("c", 1, "UPDATE g SET v = 10 WHERE id = 1"),
                                           Request.statement("d", 1, "INSERT INTO g(id, v) VALUES (3, 3)"))),
                       commit=True)
        assert engine.state_root() == full_root(engine)
    finally:
        engine.close()


def _retry_batches():
    bump = "UPDATE acct SET balance = balance + 1 WHERE id = ? RETURNING balance"
    fail = "INSERT INTO acct VALUES (1, 0)"  # a constraint error: an error reply, cached too
    point = "SELECT balance FROM acct WHERE id = ?"
    total = "SELECT sum(balance), count(*) FROM acct, note"
    b1 = (
        Request.statement("a", 5, bump, (1,)),
        Request.statement("b", 1, fail),
        Request.statement("a", 5, bump, (1,)),       # retry in the same batch
        Request.statement("c", 3, point, (1,)),
        Request.statement("c", 4, bump, (2,)),
        Request.statement("a", 4, bump, (1,)),       # older
        Request.statement("b", 1, fail),             # retry of an error reply
        Request.statement("d", 9, total),
        Request.statement("e", 1, bump, (3,)),
        Request.statement("e", 2, bump, (3,)),
        Request.statement("f", 1, point, (3,)),
        Request.statement("a", 6, point, (1,)),      # a read of a client with writes
    )
    b2 = (
        Request.statement("a", 5, bump, (1,)),       # retry in a later batch
        Request.statement("e", 2, bump, (3,)),
        Request.statement("c", 3, bump, (2,)),       # older than c's 4
        Request.statement("g", 1, total),
        Request.statement("b", 2, bump, (4,)),
        Request.statement("b", 2, bump, (4,)),
    ) + tuple(Request.statement(f"p{i}", 1, point, (i,)) for i in range(12))
    return [Batch(1, 0, TS, 7, b1), Batch(2, 0, TS + 1, 8, b2)]


@pytest.mark.parametrize("options", [
    dict(workers=2),
    dict(workers=2, local_writes=False),
    dict(workers=2, parallel_writers=True),
    dict(workers=3, parallel_writers=True, reverse_writer_dispatch=True),
])
def test_reply_cache_same_tokens_replies_and_rows_as_sequential(tmp_path, options):
    cache = storage.StorageOptions(reply_cache=True)
    expected = _run_all(tmp_path, "seq", _retry_batches(), workers=1, options=cache)
    got = _run_all(tmp_path, "par", _retry_batches(), options=cache, **options)
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    assert got[3] == expected[3]
    assert got[0] == expected[0]
    replies = expected[1][0]
    assert replies[2] == replies[0] and replies[6] == replies[1]


# --- failure paths -------------------------------------------------------------------------

import os  # noqa: E402
import signal  # noqa: E402

import evedb  # noqa: E402
from evedb.access import EMPTY, Access  # noqa: E402

MODULE = __name__  # spawned workers import this module by name for its procedures
POINT = "SELECT balance FROM acct WHERE id = ?"
TOTAL = "SELECT sum(balance), count(*) FROM acct, note"
BUMP = "UPDATE acct SET balance = balance + 1 WHERE id = ? RETURNING balance"


@evedb.procedure
def equiv_read_or_die(db, marker_path, coordinator_pid):
    """Read-only; kills the worker process it runs in the first time (never the coordinator).
    Reads are self-scheduled, so a batch holds two calls, and the coordinator waits a little
    in one before the marker exists: meanwhile a worker takes the other."""
    if not os.path.exists(marker_path):
        if os.getpid() == coordinator_pid:
            time.sleep(0.3)
        else:
            try:
                os.close(os.open(marker_path, os.O_CREAT | os.O_EXCL))  # one death, whoever is first
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
    return db.execute("SELECT sum(balance) FROM acct")


@evedb.procedure
def equiv_bump_then_die_later(db, marker_path, coordinator_pid):
    """A write that answers, then has its worker process die shortly after (first time only)."""
    db.execute("UPDATE acct SET balance = balance + 1000 WHERE id = 7")
    if os.getpid() != coordinator_pid and not os.path.exists(marker_path):
        open(marker_path, "w").close()
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return db.execute("SELECT balance FROM acct WHERE id = 7")


class _Rules:
    def access(self, name, args):
        if name == "equiv_read_or_die":
            return Access(frozenset({"acct"}), EMPTY, EMPTY, False, True)
        if name == "equiv_bump_then_die_later":
            return Access(frozenset({"acct"}), frozenset({"acct"}), frozenset({("acct", (7,))}), False, False)
        raise KeyError(name)


def _die_batch(marker, procedure="equiv_read_or_die"):
    return Batch(1, 0, TS, 7, (
        Request.statement("w", 1, BUMP, (1,)),
        Request.statement("w2", 1, BUMP, (2,)),
        Request.call("x", 1, procedure, (marker, os.getpid())),
        Request.call("y", 1, "equiv_read_or_die", (marker, os.getpid())),
        Request.statement("r", 1, POINT, (3,)),
        Request.statement("r2", 1, TOTAL),
        Request.statement("w", 1, BUMP, (1,)),  # a retry (another parallel batch)
    ))


def _sequential_reference(tmp_path, batch):
    with fresh_engine(tmp_path, "reference.db", workers=1, rules=_Rules(), procedure_modules=[MODULE],
                      options=storage.StorageOptions(reply_cache=True)) as engine:
        outcome = engine.execute(batch, commit=True)
        return outcome.token, [r.results or r.error for r in outcome.replies], table_rows(engine)


def _assert_as_sequential(engine, outcome, reference) -> None:
    """The batch's token, replies, rows and root are the sequential reference's."""
    token, replies, rows = reference
    assert outcome.token == token
    assert [r.results or r.error for r in outcome.replies] == replies
    assert table_rows(engine) == rows
    assert engine.state_root() == full_root(engine)


def _dying_engine(tmp_path, local_writes: bool):
    return fresh_engine(tmp_path, "die.db", workers=2, rules=_Rules(), procedure_modules=[MODULE],
                        options=storage.StorageOptions(reply_cache=True), local_writes=local_writes)


@pytest.mark.parametrize("commit", [True, False])
@pytest.mark.parametrize("local_writes", [True, False])
def test_worker_dying_in_a_read_share_after_the_write_share_ran(tmp_path, commit, local_writes):
    marker = str(tmp_path / "died")
    reference = _sequential_reference(tmp_path, _die_batch(marker + ".ref"))
    with _dying_engine(tmp_path, local_writes) as engine:
        # The procedure is costly: with local writes this process runs the writes first, then
        # takes reads longest first from the list a worker takes from too (see the procedure);
        # without, the calls are dealt to the two workers.
        engine._executor.costs._by_shape.update(
            {("procedure", "equiv_read_or_die"): 1.0, POINT: 1e-6, TOTAL: 0.5, BUMP: 1e-6})
        outcome = engine.execute(_die_batch(marker), commit=commit)
        assert os.path.exists(marker) and engine.stats.worker_restarts == 1
        if not commit:
            engine.commit(1)
        _assert_as_sequential(engine, outcome, reference)
        again = engine.execute(Batch(2, 0, TS, 8, (Request.statement("q", 1, POINT, (1,)),
                                                   Request.statement("q2", 1, TOTAL))), commit=True)
        assert again.replies[0].results[0].rows == ((101,),)


def test_worker_dying_between_its_write_share_and_its_queued_read_share(tmp_path):
    marker = str(tmp_path / "died")
    batch = Batch(1, 0, TS, 7, (
        Request.call("w", 1, "equiv_bump_then_die_later", (marker, os.getpid())),
        Request.statement("r", 1, POINT, (3,)),
        Request.statement("r2", 1, TOTAL),
        Request.statement("r3", 1, TOTAL),
    ))
    reference = _sequential_reference(tmp_path, _with_marker(batch, marker + ".ref"))
    with _dying_engine(tmp_path, local_writes=False) as engine:
        engine._executor.costs._by_shape.update(
            {("procedure", "equiv_bump_then_die_later"): 1e-6, POINT: 1e-6, TOTAL: 0.5})
        # worker 0: the write share, then (queued) a read share; worker 1 a read share.
        outcome = engine.execute(batch, commit=False)
        engine.commit(1)
        assert os.path.exists(marker)
        _assert_as_sequential(engine, outcome, reference)


def _with_marker(batch, marker):
    """`batch` with its first request (a dying procedure) given another marker file."""
    first = batch.requests[0]
    return Batch(batch.seq, batch.view, batch.timestamp_ms, batch.seed,
                 (Request.call(first.client_id, first.request_id, first.procedure, (marker, os.getpid())),)
                 + batch.requests[1:])


@pytest.mark.parametrize("fail_in", ["reads", "writes"])
@pytest.mark.parametrize("commit", [True, False])
def test_a_failing_local_share_leaves_nothing_and_the_pool_in_step(tmp_path, fail_in, commit):
    with fresh_engine(tmp_path, "fail.db", workers=2,
                      options=storage.StorageOptions(reply_cache=True)) as engine:
        costs = engine._executor.costs
        costs._by_shape[POINT] = 1e-6
        costs._by_shape[BUMP] = 1e-6
        costs._by_shape[TOTAL] = 0.5
        local = engine.sequential_executor._worker
        real = local.run_share
        armed = [True]

        def failing(seq, timestamp_ms, seed, items, writes, final=False, reads=frozenset()):
            if armed[0] and writes == (fail_in == "writes"):
                armed[0] = False
                if writes:  # after the write share's work, as a late failure would be
                    real(seq, timestamp_ms, seed, items, writes, False, reads)
                raise InternalError("injected")
            return real(seq, timestamp_ms, seed, items, writes, final, reads)

        local.run_share = failing
        rows = table_rows(engine)
        root = engine.state_root()
        batch = Batch(1, 0, TS, 7, (
            Request.statement("w", 1, BUMP, (1,)),
            Request.statement("r", 1, POINT, (3,)),
            Request.statement("r2", 1, TOTAL),
            Request.statement("r3", 1, TOTAL),
        ))
        with pytest.raises(Exception):
            engine.execute(batch, commit=commit)
        assert not armed[0]
        assert table_rows(engine) == rows and engine.state_root() == root == full_root(engine)
        # The next batch (same seq, as a replica would retry) runs and its replies are its own.
        outcome = engine.execute(batch, commit=commit)
        assert outcome.replies[0].results[0].rows == ((101,),)
        assert outcome.replies[1].results[0].rows == ((100,),)
        # Other clients' reads run first in a batch (engine.execution_order): before the bump.
        assert outcome.replies[2].results[0].rows == outcome.replies[3].results[0].rows == ((5000 * 10, 500),)
        assert engine.execute(Batch(2, 0, TS, 8, (Request.statement("r2", 2, TOTAL),)),
                              commit=commit).replies[0].results[0].rows == ((5001 * 10, 500),)


# --- randomized: any executor, any split, same tokens ---------------------------------------

import random  # noqa: E402


def _random_batches(seed: int, count: int = 6):
    rng = random.Random(seed)
    next_id: dict[str, int] = {}
    history: list[Request] = []
    batches = []
    for seq in range(1, count + 1):
        requests = []
        for _ in range(rng.randint(3, 14)):
            client = rng.choice("abcdefg")
            roll = rng.random()
            if history and roll < 0.15:
                requests.append(rng.choice(history))  # a retry, maybe an old one
                continue
            next_id[client] = next_id.get(client, 0) + rng.choice([1, 1, 2])
            rid = next_id[client]
            kind = rng.random()
            if kind < 0.35:
                request = Request.statement(client, rid, BUMP, (rng.randint(0, 9),))
            elif kind < 0.45:
                request = Request.statement(client, rid, "INSERT INTO note VALUES (?, 'x')", (f"k{rng.randint(0, 5)}",))
            elif kind < 0.55:
                request = Request.statement(client, rid, "UPDATE pair SET v = ?, b = b WHERE a = ?",
                                            (rng.randint(0, 3), rng.randint(0, 5)))
            elif kind < 0.8:
                request = Request.statement(client, rid, POINT, (rng.randint(0, 9),))
            else:
                request = Request.statement(client, rid, TOTAL)
            history.append(request)
            requests.append(request)
        batches.append(Batch(seq, 0, TS + seq, seq * 31, tuple(requests)))
    return batches


def _run_engine(path, batches, options, split_seed=None, commit=True, sequential=False):
    engine = ExecutionEngine(path, options=storage.StorageOptions(reply_cache=True), **options)
    try:
        rng = random.Random(split_seed)
        out = []
        for batch in batches:
            costs = getattr(engine._executor, "costs", None)
            if costs is not None and split_seed is not None:
                for sql in (BUMP, POINT, TOTAL):
                    costs._by_shape[sql] = rng.choice([1e-6, 1e-4, 1e-3, 0.5])
            outcome = engine.execute(batch, commit=commit, sequential=sequential)
            if not commit:
                engine.commit(batch.seq)
            out.append((outcome.token, [r.results or r.error for r in outcome.replies]))
        assert engine.state_root() == full_root(engine)
        return out, table_rows(engine)
    finally:
        engine.close()


@pytest.mark.parametrize("seed", range(4))
def test_random_batches_with_retries_same_everywhere(tmp_path, seed):
    batches = _random_batches(seed)
    runs = {}
    configs = {
        "inline": (dict(workers=1), None, True, False),
        "sequential": (dict(workers=2), None, False, True),
        "local": (dict(workers=2), seed, True, False),
        "local_uncommitted": (dict(workers=3), seed + 100, False, False),
        "pooled": (dict(workers=2, local_writes=False), seed, False, False),
        "writers": (dict(workers=2, parallel_writers=True), seed, True, False),
    }
    for name, (options, split_seed, commit, sequential) in configs.items():
        path = str(tmp_path / f"{name}.db")
        make_database(path)
        runs[name] = _run_engine(path, batches, options, split_seed, commit, sequential)
    reference = runs.pop("inline")
    for name, run in runs.items():
        assert run[0] == reference[0], name
        assert run[1] == reference[1], name


# --- the schema version checked once per plan ----------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_plan_after_ddl_sees_the_new_schema(tmp_path, workers):
    with fresh_engine(tmp_path, "ddl.db", workers=workers,
                      options=storage.StorageOptions(reply_cache=True)) as engine:
        engine.execute(Batch(1, 0, TS, 7, (Request.statement("a", 1, "CREATE TABLE t2(id INTEGER PRIMARY KEY, v)"),)),
                       commit=True)
        batch = Batch(2, 0, TS, 8, tuple(
            Request.statement(f"c{i}", 1, "INSERT INTO t2 VALUES (?, ?)", (i, i)) for i in range(4)))
        plan, writes = engine.plan(batch)
        assert all(writes) and not any(engine.access_of(r).exclusive for r in batch.requests)
        engine.execute(batch, commit=True)
        engine.execute(Batch(3, 0, TS, 9, (Request.statement("a", 2, "ALTER TABLE t2 ADD COLUMN w DEFAULT 5"),)),
                       commit=True)
        outcome = engine.execute(Batch(4, 0, TS, 10, (
            Request.statement("c0", 2, "UPDATE t2 SET v = v + 1 WHERE id = 0"),
            Request.statement("c1", 2, "UPDATE t2 SET v = 9, w = 9 WHERE id = 1"),
            Request.statement("c1", 3, "SELECT * FROM t2 ORDER BY id"),  # after its client's write
        )), commit=True)
        assert outcome.replies[2].results[0].rows == ((0, 1, 5), (1, 9, 9), (2, 2, 5), (3, 3, 5))
        assert engine.state_root() == full_root(engine)


def test_version_checked_is_per_thread_and_nests(tmp_path):
    from evedb.access import Catalog, analyze

    path = str(tmp_path / "cat.db")
    make_database(path)
    catalog = Catalog.from_connection(storage.open_connection(path))
    other = storage.open_connection(path)
    inside = threading.Event()
    done = threading.Event()
    seen = {}

    def planner():
        with catalog.version_checked():
            with catalog.version_checked():
                pass
            assert catalog._checked.active
            inside.set()
            done.wait(10)
        seen["after"] = getattr(catalog._checked, "active", False)

    thread = threading.Thread(target=planner)
    thread.start()
    assert inside.wait(10)
    other.execute("CREATE TABLE t3(id INTEGER PRIMARY KEY, v)")
    # This thread is not inside version_checked: it sees the new table at once.
    access = analyze("INSERT INTO t3 VALUES (1, 2)", None, catalog)
    assert not access.exclusive and "t3" in access.writes
    done.set()
    thread.join(10)
    assert seen["after"] is False


# --- big messages both ways: no pipe deadlock ------------------------------------------------


@pytest.mark.parametrize("options", [dict(workers=2), dict(workers=2, local_writes=False),
                                     dict(workers=2, parallel_writers=True)])
def test_big_requests_and_replies_do_not_deadlock(tmp_path, options):
    with fresh_engine(tmp_path, "big.db", options=storage.StorageOptions(reply_cache=True), **options) as engine:
        blob = "x" * 300_000
        big_read = "SELECT ? || group_concat(code) FROM note"
        engine._executor.costs._by_shape[big_read] = 0.5
        requests = [Request.statement(f"w{i}", 1, "UPDATE note SET body = ? WHERE code = ?", (blob, f"n{i}"))
                    for i in range(3)]
        requests += [Request.statement(f"r{i}", 1, big_read, (blob,)) for i in range(8)]
        outcome = engine.execute(Batch(1, 0, TS, 7, tuple(requests)), commit=False)
        engine.commit(1)
        assert all(len(r.results[0].rows[0][0]) > 300_000 for r in outcome.replies[3:])
        assert engine.state_root() == full_root(engine)


def test_version_checked_falls_back_to_per_statement_checks_when_the_schema_cannot_be_read(tmp_path):
    with fresh_engine(tmp_path, "busy.db", workers=1) as engine:
        catalog = engine.catalog
        real = catalog._current_shapes
        calls = []

        def failing_once():
            calls.append(1)
            if len(calls) == 1:
                raise apsw.BusyError("injected: schema unreadable")
            return real()

        catalog._current_shapes = failing_once
        with catalog.version_checked():
            assert not getattr(catalog._checked, "active", False)  # not trusted: checks go on
        catalog._current_shapes = real
        outcome = engine.execute(Batch(1, 0, TS, 7, (Request.statement("r", 1, POINT, (3,)),)), commit=True)
        assert outcome.replies[0].results[0].rows == ((100,),)
