"""The read path outside batches: `Worker.run_reads` (one read transaction, rolled back) and
its deadline, and a node that begins a long read on its event loop and finishes it on the
engine thread."""

import time

import pytest

from evedb import procedures, storage
from evedb.client import node_status
from evedb.errors import InternalError
from evedb.executor import ReadsTooLong, Worker
from evedb.messages import Request
from test_pair import standalone_node
from test_storage import worker_over

COUNT_TO = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) SELECT count(*) FROM n"


@procedures.procedure(name="test_read_path_sneaky_write")
def sneaky_write(db, item_id):
    """Declared read-only by the caller, writes anyway: the read transaction must undo it."""
    db.execute("UPDATE item SET name = 'changed' WHERE id = ?", (item_id,))
    return db.execute("SELECT name FROM item WHERE id = ?", (item_id,)).rows


@pytest.fixture
def worker(tmp_path):
    w = worker_over(str(tmp_path / "reads.db"), "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT)",
                    "INSERT INTO item VALUES (1, 'pen'), (2, 'ink')")
    yield w
    w.close()


def names(worker: Worker) -> list:
    return worker.connection.execute("SELECT id, name FROM item ORDER BY id").fetchall()


def assert_clean(worker: Worker) -> None:
    assert worker.connection.get_autocommit()  # no transaction left open
    assert storage.batch_timestamp() is None  # the batch clock is not left set on this thread


def test_reads_answer_from_the_current_state_and_leave_nothing_behind(worker):
    replies = worker.run_reads([Request.statement("c", 1, "SELECT name FROM item WHERE id = ?", (2,)),
                                Request.statement("c", 2, "SELECT date('now')")], 86_400_000)
    assert replies[0].results[0].rows == (("ink",),)
    assert replies[1].results[0].rows == (("1970-01-02",),)  # the group's timestamp, not the clock
    assert_clean(worker)


def test_a_request_analysed_as_read_only_that_writes_fails_the_group_and_changes_nothing(worker):
    with pytest.raises(InternalError, match="read-only but wrote"):
        worker.run_reads([Request.statement("c", 1, "UPDATE item SET name = 'x' WHERE id = 1")], 0)
    assert names(worker) == [(1, "pen"), (2, "ink")]
    assert_clean(worker)


def test_a_read_only_procedures_writes_are_rolled_back(worker):
    replies = worker.run_reads([Request.call("c", 1, "test_read_path_sneaky_write", (1,))], 0)
    assert replies[0].error is None and replies[0].results[0].rows == (("changed",),)
    assert names(worker) == [(1, "pen"), (2, "ink")]
    assert_clean(worker)


def test_a_group_past_its_deadline_is_interrupted_and_the_connection_stays_usable(worker):
    started = time.perf_counter()
    with pytest.raises(ReadsTooLong):
        worker.run_reads([Request.statement("c", 1, COUNT_TO, (50_000_000,))], 0, deadline=time.perf_counter() + 0.002)
    assert time.perf_counter() - started < 1.0  # counting to 50 million takes several seconds
    assert_clean(worker)
    replies = worker.run_reads([Request.statement("c", 2, COUNT_TO, (1000,))], 0, deadline=time.perf_counter() + 5)
    assert replies[0].results[0].rows == ((1000,),)


def test_a_long_read_begun_on_the_event_loop_is_finished_on_the_engine_thread(tmp_path):
    with standalone_node(tmp_path) as (alone, connection):
        connection.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v)")
        connection.execute("INSERT INTO t VALUES (1, 'a')")
        for _ in range(30):  # cheap reads: the loop takes reads from now on
            assert connection.execute("SELECT v FROM t WHERE k = 1").fetchall() == [("a",)]
        before = node_status(alone.address("primary"))
        assert before["inline_reads"] > 0
        assert connection.execute(COUNT_TO, (300_000,)).fetchall() == [(300_000,)]
        after = node_status(alone.address("primary"))
        assert after["inline_reads_interrupted"] == before["inline_reads_interrupted"] + 1
