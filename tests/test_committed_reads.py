"""Reads on the pinned committed state (runtime/committed_reads.py): what the snapshot shows,
that it never writes, that its replies are released without waiting for the batch in flight,
and that an always-pinned reader does not keep the write-ahead log from being reset."""

import asyncio
import os
import threading
import time

import pytest

import evedb
from evedb import procedures, replica as core
from evedb.client import node_status
from evedb.executor import ReadsTooLong
from evedb.messages import Reply, Request
from evedb.runtime.node import Node, NodeConfig
from evedb.runtime.committed_reads import PIN_GAP, CommittedSnapshot, SnapshotUnusable
from evedb import storage
from test_pair import standalone_node
from test_read_path import COUNT_TO
from test_storage import worker_over


@procedures.procedure(name="test_committed_reads_sneaky_write")
def sneaky_write(db, item_id):
    db.execute("UPDATE item SET name = 'changed' WHERE id = ?", (item_id,))
    return db.execute("SELECT name FROM item WHERE id = ?", (item_id,)).rows


def read_name(item_id: int, request_id: int = 1) -> Request:
    return Request.statement("c", request_id, "SELECT name FROM item WHERE id = ?", (item_id,))


@pytest.fixture
def database(tmp_path):
    """A small database, a writer connection on it (the engine's part) and a snapshot."""
    path = str(tmp_path / "snapshot.db")
    writer = worker_over(path, "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT)",
                         "INSERT INTO item VALUES (1, 'pen'), (2, 'ink')")
    snapshot = CommittedSnapshot(path, storage.StorageOptions())
    yield writer.connection, snapshot
    snapshot.close()
    writer.close()


def names(snapshot: CommittedSnapshot) -> list:
    replies = snapshot.run_reads([read_name(1), read_name(2, 2)], 0, time.perf_counter() + 5)
    return [reply.results[0].rows[0][0] for reply in replies]


def test_the_snapshot_shows_the_state_it_was_pinned_on_until_pinned_again(database):
    writer, snapshot = database
    snapshot.pin(1)
    writer.execute("UPDATE item SET name = 'pencil' WHERE id = 1")  # the next batch, committed
    assert names(snapshot) == ["pen", "ink"]
    assert names(snapshot) == ["pen", "ink"]  # the read transaction stays open between groups
    snapshot.pin(2)
    assert snapshot.seq == 2
    assert names(snapshot) == ["pencil", "ink"]


def test_every_pin_gapth_commit_is_left_unpinned(database):
    _, snapshot = database
    snapshot.pin(PIN_GAP - 1)
    assert snapshot.seq == PIN_GAP - 1
    snapshot.pin(PIN_GAP)
    assert snapshot.seq is None and snapshot._worker.connection.get_autocommit()


def test_a_read_only_procedure_that_writes_is_not_answered_and_writes_nothing(database):
    writer, snapshot = database
    snapshot.pin(1)
    with pytest.raises(SnapshotUnusable):
        snapshot.run_reads([Request.call("c", 1, "test_committed_reads_sneaky_write", (1,))], 0,
                           time.perf_counter() + 5)
    assert writer.execute("SELECT name FROM item WHERE id = 1").fetchall() == [("pen",)]
    writer.execute("UPDATE item SET name = 'pencil' WHERE id = 1")  # the write lock was never held
    assert names(snapshot) == ["pen", "ink"]  # and the pin holds


def test_a_group_after_which_the_read_transaction_has_ended_is_not_answered(database):
    writer, snapshot = database
    snapshot.pin(1)
    snapshot._worker._internal("ROLLBACK")  # as SQLite does itself on some errors
    writer.execute("UPDATE item SET name = 'pencil' WHERE id = 1")  # a batch not yet verified
    with pytest.raises(SnapshotUnusable, match="ended"):
        names(snapshot)
    assert snapshot.seq is None


def test_a_group_past_its_deadline_is_interrupted_and_the_snapshot_released(database):
    _, snapshot = database
    snapshot.pin(1)
    with pytest.raises(ReadsTooLong):
        snapshot.run_reads([Request.statement("c", 1, COUNT_TO, (50_000_000,))], 0, time.perf_counter() + 0.002)
    assert snapshot.seq is None and snapshot._worker.connection.get_autocommit()


def test_the_core_releases_reads_on_the_committed_state_before_the_batch_in_flight_commits():
    replica = standalone_replica(committed_seq=0)
    replica.on_client_request(Request.statement("w", 1, "UPDATE item SET name = 'x' WHERE id = 1"), False, 0)
    execute = [a for a in replica.take_actions() if isinstance(a, core.ExecuteBatch)]
    assert [a.batch.seq for a in execute] == [1]  # batch 1 in flight, not yet executed
    for request_id, observed in ((1, None), (2, 0)):
        replica.on_client_request(read_name(1, request_id), True, 0)
        (run,) = [a for a in replica.take_actions() if isinstance(a, core.RunReads)]
        replica.on_reads_executed(run.read_id, tuple(_reply(r) for r in run.requests), observed_seq=observed)
        released = [a for a in replica.take_actions() if isinstance(a, core.SendReply)]
        # Read after batch 1 (the engine's order): held until it commits.  Read on the
        # committed state (seq 0): released at once.
        assert len(released) == (0 if observed is None else 1)


def test_the_core_never_sends_reads_that_observed_less_than_the_committed_state_and_reads_again():
    replica = standalone_replica(committed_seq=5)
    replica.on_client_request(read_name(1), True, 0)
    (run,) = [a for a in replica.take_actions() if isinstance(a, core.RunReads)]
    replica.on_reads_executed(run.read_id, tuple(_reply(r) for r in run.requests), observed_seq=4)
    actions = replica.take_actions()
    assert not [a for a in actions if isinstance(a, core.SendReply)]
    (again,) = [a for a in actions if isinstance(a, core.RunReads)]
    assert again.requests == run.requests and again.read_id != run.read_id
    replica.on_reads_executed(again.read_id, tuple(_reply(r) for r in again.requests), observed_seq=5)
    assert len([a for a in replica.take_actions() if isinstance(a, core.SendReply)]) == 1


@pytest.fixture
def node(tmp_path):
    """A standalone node built in this process (not serving): its pin decisions, tested alone."""
    built = Node(NodeConfig(data_dir=str(tmp_path / "node"), listen="127.0.0.1:0", peer=None, workers=1))
    yield built
    built._engine_thread.shutdown(wait=True)
    built._snapshot.close()
    built.engine.close()


def test_a_node_pins_only_a_state_it_knows_is_the_file(node):
    node._state_seq = 3
    node._pin_committed_state(3)  # primary, engine idle, its last execution batch 3
    assert node._snapshot.seq == 3
    node._pin_committed_state(4)  # the last execution was batch 3, not 4
    assert node._snapshot.seq is None
    node._state_seq = None  # a rollback, an applied batch or a state transfer since
    node._pin_committed_state(3)
    assert node._snapshot.seq is None


def test_a_node_pins_nothing_while_its_engine_works_or_when_it_is_not_primary(node):
    node._state_seq = 3
    running = threading.Event()
    release = threading.Event()
    node._engine_thread.submit(lambda: (running.set(), release.wait(10)))
    running.wait(10)
    node._pin_committed_state(3)  # the engine may be changing the file
    assert node._snapshot.seq is None
    release.set()
    node._engine_thread.submit(lambda: None).result(10)
    node.core.role = core.Role.BACKUP
    node._pin_committed_state(3)
    assert node._snapshot.seq is None


def test_a_view_change_releases_the_snapshot(node):
    async def persist_view():
        node._loop = asyncio.get_running_loop()
        node._perform_one(core.PersistView(1, core.Role.PRIMARY))
        assert node._snapshot.seq is None and node._snapshot._worker.connection.get_autocommit()
        await asyncio.wrap_future(node._engine_thread.submit(lambda: None))

    node._state_seq = 3
    node._pin_committed_state(3)
    assert node._snapshot.seq == 3
    asyncio.run(persist_view())


def standalone_replica(committed_seq: int) -> core.Replica:
    return core.Replica(core.ReplicaConfig(node_id="p", standalone=True, batch_delay_ms=0), role=core.Role.PRIMARY,
                        view=0, committed_seq=committed_seq, now_ms=0)


def _reply(request: Request) -> Reply:
    return Reply(request.client_id, request.request_id, ())


def test_a_node_under_writes_keeps_its_write_ahead_log_bounded_and_reads_see_acknowledged_writes(tmp_path):
    """The primary pins a snapshot at nearly every commit; SQLite resets the WAL only when no
    reader holds part of it, which the unpinned commits allow.  Without them this load grew the
    WAL to 119 MB; with them it ends at 4.6 MB, about the checkpoint threshold (1,000 pages)."""
    with standalone_node(tmp_path) as (alone, connection):
        connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)")
        value = os.urandom(3000)
        reader = evedb.connect(alone.dsn, autocommit=True, timeout=30)
        try:
            for k in range(3000):
                connection.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k % 500, value + k.to_bytes(4, "big")))
                if k % 10 == 0:  # an acknowledged write is seen by the next read, on any path
                    (row,) = reader.execute("SELECT v FROM kv WHERE k = ?", (k % 500,)).fetchall()
                    assert row[0][-4:] == k.to_bytes(4, "big")
        finally:
            reader.close()
        status = node_status(alone.address("primary"))
        wal = os.path.getsize(os.path.join(alone.data_dir, "primary", "evedb.db-wal"))
        assert status["snapshot_reads"] > 0
        assert wal < 12 * 2**20, wal


def test_a_release_that_cannot_roll_back_opens_a_new_connection_and_does_not_raise(database):
    writer, snapshot = database
    snapshot.pin(1)
    broken = snapshot._worker

    def failing(sql, bindings=None):
        raise RuntimeError("disk I/O error")

    broken._internal = failing
    snapshot.release()  # performing the core's actions goes on
    assert snapshot.seq is None and snapshot._worker is not broken
    writer.execute("UPDATE item SET name = 'pencil' WHERE id = 1")
    snapshot.pin(2)
    assert names(snapshot) == ["pencil", "ink"]
