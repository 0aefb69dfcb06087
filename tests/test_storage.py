"""Storage: PRAGMAs, the client authorizer, the statement-cache pitfall, deterministic functions.

These run client SQL through a real `Worker` on a real SQLite file, the way every request runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import apsw
import pytest

from evedb import errors, storage
from evedb.executor import Worker
from evedb.messages import Request, Statement


def worker_over(path: str, *statements) -> Worker:
    """A worker over a new database at `path` made by `statements` (SQL text, or a callable
    given the setup connection)."""
    setup = storage.open_connection(path)
    storage.ensure_internal_tables(setup)
    for statement in statements:
        statement(setup) if callable(statement) else setup.execute(statement)
    setup.close()
    return Worker(path, storage.StorageOptions())


@pytest.fixture
def worker(tmp_path):
    w = worker_over(str(tmp_path / "t.db"), "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, price REAL)",
                    "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'ink', 3.0)")
    yield w
    w.close()


def run(worker, sql, params=None, *, seq=1, timestamp_ms=1_700_000_000_000, seed=42, position=0):
    request = Request.statement("c", position, sql, params)
    share = worker.run_share(seq, timestamp_ms, seed, [(position, request)], writes=True)
    return share.replies[0][1]


def rows(worker):
    return worker.connection.execute("SELECT * FROM item ORDER BY id").fetchall()


def test_connection_pragmas(tmp_path):
    connection = storage.open_connection(str(tmp_path / "p.db"), storage.StorageOptions(synchronous="FULL", cache_mb=80))
    assert connection.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchall()[0][0] == 2  # FULL
    assert connection.execute("PRAGMA cache_size").fetchall()[0][0] == -80 * 1024
    default = storage.open_connection(str(tmp_path / "q.db"))
    assert default.execute("PRAGMA synchronous").fetchall()[0][0] == 1  # NORMAL
    assert default.execute("PRAGMA cache_size").fetchall()[0][0] <= -64 * 1024


def test_synchronous_is_validated():
    with pytest.raises(ValueError, match="synchronous"):
        storage.StorageOptions(synchronous="sometimes")


FORBIDDEN = [
    ("ATTACH DATABASE 'other.db' AS other", errors.NotSupportedError, "ATTACH"),
    ("DETACH DATABASE other", errors.NotSupportedError, "DETACH"),
    ("PRAGMA journal_mode=DELETE", errors.ProgrammingError, "journal_mode"),
    ("PRAGMA user_version=7", errors.ProgrammingError, "user_version"),
    ("PRAGMA writable_schema=ON", errors.ProgrammingError, "writable_schema"),
    ("SELECT load_extension('x')", errors.NotSupportedError, "load_extension"),
    ("BEGIN", errors.NotSupportedError, "BEGIN"),
    ("COMMIT", errors.NotSupportedError, "COMMIT"),
    ("SAVEPOINT s1", errors.NotSupportedError, "SAVEPOINT"),
    ("RELEASE s1", errors.NotSupportedError, "RELEASE"),
    ("ROLLBACK", errors.NotSupportedError, "ROLLBACK"),
    ("VACUUM", errors.NotSupportedError, "VACUUM"),
    ("  /* sneaky */ begin immediate", errors.NotSupportedError, "BEGIN"),
    ("SELECT * FROM _evedb_undo", errors.ProgrammingError, "_evedb_undo"),
    ("DELETE FROM _evedb_meta", errors.ProgrammingError, "_evedb_meta"),
    ("UPDATE item SET name = (SELECT value FROM _evedb_meta)", errors.ProgrammingError, "_evedb_meta"),
    ("CREATE TEMP TABLE scratch(a INTEGER PRIMARY KEY)", errors.NotSupportedError, "temporary"),
    ("SELECT changes()", errors.ProgrammingError, "changes()"),
    ("SELECT total_changes()", errors.ProgrammingError, "total_changes()"),
    ("INSERT INTO item(name) VALUES ('x'); SELECT last_insert_rowid()", errors.ProgrammingError, None),
    ("SELECT last_insert_rowid()", errors.ProgrammingError, "last_insert_rowid()"),
    ("CREATE TABLE nokey(a, b)", errors.ProgrammingError, "PRIMARY KEY"),
    # Keys SQLite finds equal but stores differently ('p' and 'P' under NOCASE, 1 and 1.0
    # without affinity): its changesets cannot describe an UPDATE between them.
    ("CREATE TABLE folded(k TEXT PRIMARY KEY COLLATE NOCASE, v)", errors.ProgrammingError, "collation NOCASE"),
    ("CREATE TABLE folded(a INTEGER, k TEXT, PRIMARY KEY (a, k COLLATE RTRIM)) WITHOUT ROWID",
     errors.ProgrammingError, "collation RTRIM"),
    ("CREATE TABLE untyped(k PRIMARY KEY, v)", errors.ProgrammingError, "no type affinity"),
    ("CREATE TABLE blobkey(k BLOB, j INTEGER, PRIMARY KEY (j, k))", errors.ProgrammingError, "no type affinity"),
]


@pytest.mark.parametrize("ddl", [
    "CREATE TABLE k1(k TEXT PRIMARY KEY COLLATE BINARY, v)",
    "CREATE TABLE k2(k REAL PRIMARY KEY, v)",
    "CREATE TABLE k3(k NUMERIC, j VARCHAR(10), PRIMARY KEY (k, j)) WITHOUT ROWID",
    "CREATE TABLE k4(k INTEGER PRIMARY KEY, v COLLATE NOCASE, w)",  # only key columns matter
])
def test_keys_that_cannot_be_equal_yet_differ_are_accepted(worker, ddl):
    assert run(worker, ddl).ok


@pytest.mark.parametrize("sql, kind, named", FORBIDDEN, ids=[f[0][:40] for f in FORBIDDEN])
def test_forbidden_statement_is_refused_and_changes_nothing(worker, sql, kind, named):
    before = rows(worker)
    reply = run(worker, sql)
    assert reply.error is not None, sql
    assert reply.error.kind == kind.__name__, reply.error
    if named:
        assert named in reply.error.message, reply.error.message
    assert rows(worker) == before
    # The connection keeps working afterwards, for reads and writes.
    assert run(worker, "UPDATE item SET price = price + 1 WHERE id = 1").ok
    assert run(worker, "SELECT count(*) FROM item").results[0].rows == ((2,),)


def test_schema_pragmas_are_allowed(worker):
    reply = run(worker, "PRAGMA table_info(item)")
    assert reply.ok, reply.error
    assert [row[1] for row in reply.results[0].rows] == ["id", "name", "price"]
    assert run(worker, "PRAGMA user_version").ok


def test_refused_statement_stays_refused_after_internal_use_of_same_text(worker):
    # apsw's statement cache skips the authorizer when it reuses a prepared statement.  evedb's
    # internal statements enter it only under a secret tag, so a client's text (even one that
    # copies the statement, or the tag's shape) is prepared and checked anew.
    internal_text = "SELECT value FROM _evedb_meta"
    with worker.authorizer.internal():
        worker.connection.execute(internal_text, can_cache=False).fetchall()
    assert worker._internal(internal_text) == []
    for _ in range(3):
        reply = run(worker, internal_text)
        assert reply.error is not None and "_evedb_meta" in reply.error.message
    forged = "/* evedb-internal 00000000000000000000000000000000 */ " + internal_text
    assert "_evedb_meta" in run(worker, forged).error.message
    # The same holds for transaction control, which the executor itself uses.
    reply = run(worker, "SAVEPOINT evedb_request")
    assert reply.error.kind == "NotSupportedError"


def test_internal_statements_enter_the_cache_only_under_the_secret_tag(worker):
    # A write request runs the executor's savepoint and reply-cache statements, tagged and
    # cached; afterwards the same statement text without the tag is still refused to a client.
    reply = run(worker, "INSERT INTO item(id, name, price) VALUES (99, 'x', 1.0)", position=1)
    assert reply.ok, reply.error
    assert storage.INTERNAL_TAG.startswith("/* evedb-internal ") and len(storage.INTERNAL_TAG) > 40
    untagged = "SELECT request_id, reply FROM _evedb_replies WHERE client_id = ?"
    for position in (2, 3):
        refused = run(worker, untagged, ("c",), position=position)
        assert refused.error is not None and "_evedb_replies" in refused.error.message


def test_cache_pitfall_is_real_without_can_cache_false(tmp_path):
    # Documents why the rule exists: with caching, a statement prepared while allowed is
    # reused without a check.  If this ever stops holding, the rule is merely cautious.
    connection = apsw.Connection(str(tmp_path / "pitfall.db"))
    connection.execute("CREATE TABLE secret(a)")
    allowed = {"on": True}
    connection.authorizer = lambda action, *rest: apsw.SQLITE_OK if allowed["on"] or action != apsw.SQLITE_READ else apsw.SQLITE_DENY
    connection.execute("SELECT * FROM secret").fetchall()
    allowed["on"] = False
    connection.execute("SELECT * FROM secret").fetchall()  # reused from the cache: not re-checked
    with pytest.raises(apsw.AuthError):
        connection.execute("SELECT * FROM secret", can_cache=False).fetchall()


def test_failed_request_rolls_back_alone(worker):
    items = [
        (0, Request.statement("c", 1, "UPDATE item SET price = 10 WHERE id = 1")),
        (1, Request.script("c", 2, [
            Statement("UPDATE item SET price = 20 WHERE id = 2"),
            Statement("INSERT INTO item(id, name) VALUES (1, 'dup')"),
        ])),
        (2, Request.statement("c", 3, "UPDATE item SET name = 'quill' WHERE id = 1")),
    ]
    share = worker.run_share(1, 0, 0, items, writes=True)
    replies = dict(share.replies)
    assert replies[0].ok and replies[2].ok
    assert replies[1].error.kind == "IntegrityError"
    assert rows(worker) == [(1, "quill", 10.0), (2, "ink", 3.0)]


DETERMINISTIC_SQL = (
    "SELECT random(), randomblob(16), datetime('now'), CURRENT_TIMESTAMP, unixepoch(), "
    "strftime('%Y-%m-%d %H:%M:%f', 'now'), julianday('now'), random()"
)


def test_same_batch_same_seed_and_timestamp_gives_identical_results(tmp_path):
    results = []
    for attempt in range(2):
        path = str(tmp_path / f"d{attempt}.db")
        storage.ensure_internal_tables(storage.open_connection(path))
        worker = Worker(path, storage.StorageOptions())
        items = [(position, Request.statement("c", position, DETERMINISTIC_SQL)) for position in range(3)]
        share = worker.run_share(7, 1_700_000_000_123, 99, items, writes=False)
        results.append([reply.results[0].rows for _, reply in share.replies])
        worker.close()
    assert results[0] == results[1]
    first = results[0][0][0]
    assert first[2] == "2023-11-14 22:13:20"  # datetime('now') is the batch timestamp
    assert first[4] == 1_700_000_000
    assert first[5].endswith("20.123")
    # Different positions in the batch draw different random values.
    assert results[0][0][0][0] != results[0][1][0][0]
    assert isinstance(first[1], bytes) and len(first[1]) == 16


def test_different_seed_gives_different_random(worker):
    a = run(worker, "SELECT random()", seed=1).results[0].rows
    b = run(worker, "SELECT random()", seed=2).results[0].rows
    c = run(worker, "SELECT random()", seed=1).results[0].rows
    assert a == c and a != b


def test_clock_outside_a_batch_is_real_time(worker):
    value = worker.connection.execute("SELECT unixepoch()").fetchall()[0][0]
    assert value > 1_750_000_000  # after mid-2025, i.e. not a stale batch timestamp


def test_multiple_statements_in_one_execute_are_refused(worker):
    reply = run(worker, "UPDATE item SET price = 1 WHERE id = 1; UPDATE item SET price = 2 WHERE id = 2")
    assert reply.error.kind == "ProgrammingError"
    assert "one statement" in reply.error.message
    assert rows(worker)[0][2] == 1.5


def test_the_c_clock_vfs_is_used_where_it_was_built(tmp_path):
    pytest.importorskip("evedb._clock", reason="the C clock VFS was not built here")
    assert storage.clock_vfs_kind() == "c"
    connection = storage.open_connection(str(tmp_path / "m.db"), storage.StorageOptions(mmap_mb=32))
    # Only a VFS whose files are SQLite's own can map them: the Python VFS answers 0 here.
    assert connection.execute("PRAGMA mmap_size").fetchall()[0][0] == 32 * 1024 * 1024


def test_each_thread_sees_its_own_batch_time(tmp_path):
    path = str(tmp_path / "c.db")
    storage.open_connection(path).close()
    barrier = threading.Barrier(2)
    seen = {}

    def reader(timestamp_ms):
        connection = storage.open_connection(path)
        storage.set_batch_timestamp(timestamp_ms)
        try:
            barrier.wait()  # both clocks are set before either thread reads
            seen[timestamp_ms] = connection.execute("SELECT unixepoch('now', 'subsec')").fetchall()[0][0]
        finally:
            storage.set_batch_timestamp(None)

    threads = [threading.Thread(target=reader, args=(ms,)) for ms in (1_600_000_000_250, 1_700_000_000_500)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {1_600_000_000_250: 1_600_000_000.25, 1_700_000_000_500: 1_700_000_000.5}


def test_the_python_clock_vfs_gives_the_same_results(tmp_path):
    """The fallback (no compiler at install, or EVEDB_CLOCK_VFS=python) keeps determinism."""
    script = (
        "import sys\n"
        "from evedb import storage\n"
        "from evedb.executor import Worker\n"
        "from evedb.messages import Request\n"
        "path = sys.argv[1]\n"
        "storage.ensure_internal_tables(storage.open_connection(path))\n"
        "worker = Worker(path, storage.StorageOptions())\n"
        f"items = [(0, Request.statement('c', 0, {DETERMINISTIC_SQL!r}))]\n"
        "share = worker.run_share(7, 1_700_000_000_123, 99, items, writes=False)\n"
        "print(storage.clock_vfs_kind(), repr(share.replies[0][1].results[0].rows))\n"
    )
    outputs = {}
    for kind in ("python", "default"):
        environment = dict(os.environ)
        environment.pop(storage.CLOCK_VFS_ENV, None)
        if kind == "python":
            environment[storage.CLOCK_VFS_ENV] = "python"
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{kind}.db")],
                              env=environment, capture_output=True, text=True, timeout=60, check=True)
        outputs[kind] = done.stdout.split(" ", 1)
    assert outputs["python"][0] == "python"
    assert outputs["python"][1] == outputs["default"][1]
    assert "2023-11-14 22:13:20" in outputs["python"][1]


def test_a_statement_is_not_prepared_again_for_each_new_binding(tmp_path):
    # ANALYZE with an index gives STAT4 samples; without the planner stability guarantee
    # SQLite re-prepares such a statement for every new value bound (3 authorizer calls each).
    def fill(setup):
        with setup:
            setup.executemany("INSERT INTO t VALUES (?, ?, 'x')", [(i, i % 7 if i % 3 else 0) for i in range(2000)])

    w = worker_over(str(tmp_path / "stat4.db"), "CREATE TABLE t(k INTEGER PRIMARY KEY, a INT, b TEXT)",
                    "CREATE INDEX t_a ON t(a)", fill, "ANALYZE t")
    assert w.connection.execute("SELECT count(*) FROM sqlite_stat4").fetchall()[0][0] > 0
    calls = []
    real = w.authorizer

    def counting(*args):
        calls.append(args)
        return real(*args)

    w.connection.authorizer = counting
    try:
        counts = []
        for value in range(6):
            result = w.run_statement("SELECT count(*) FROM t WHERE a = ?", (value,))
            counts.append(result.rows[0][0])
        assert counts == [sum(1 for i in range(2000) if (i % 7 if i % 3 else 0) == v) for v in range(6)]
        prepared = len(calls)
        w.run_statement("SELECT count(*) FROM t WHERE a = ?", (99,))
        assert len(calls) == prepared  # the cached statement was reused, not prepared again
    finally:
        w.close()
