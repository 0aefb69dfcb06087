"""End to end: a real primary-backup pair (two `evedb serve` processes on loopback), the
network driver, kill -9 of either node under a bank workload, forced divergence, bad input.

The bank workload: each transfer is one atomic script that moves money between two accounts
and records the transfer under a unique id.  Checks: the total balance never changes; every
transfer the client saw acknowledged is recorded exactly once; balances equal a replay of the
recorded transfers; both nodes end with equal state roots.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time

import pytest

import evedb
from evedb.client import node_status
from evedb.runtime.launch import Pair, free_port_pair
from evedb.runtime.transport import PROTOCOL_VERSION, encode_frame, read_frame_blocking

ACCOUNTS = 20
INITIAL = 1000


def running_pair(tmp_path, **settings):
    """A started, ready pair on loopback (a short peer timeout keeps failover tests quick),
    stopped when the test ends: use it with `yield from`."""
    started = Pair(str(tmp_path / "pair"), free_port_pair(), extra_args=("--peer-timeout-ms", "700"), **settings)
    started.start_all()
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


@pytest.fixture
def pair(tmp_path):
    yield from running_pair(tmp_path, workers=1)


def setup_bank(dsn: str) -> None:
    connection = evedb.connect(dsn, autocommit=True, timeout=20)
    connection.execute("CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    connection.execute("CREATE TABLE transfer(id TEXT PRIMARY KEY, source INTEGER, target INTEGER, amount INTEGER)")
    connection.cursor().executemany("INSERT INTO account VALUES (?, ?)", [(i, INITIAL) for i in range(ACCOUNTS)])
    connection.close()


class BankClient(threading.Thread):
    def __init__(self, dsn: str, number: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.dsn, self.number, self.stop = dsn, number, stop
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        generator = random.Random(self.number)
        connection = evedb.connect(self.dsn, timeout=30)
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            transfer_id = f"{self.number}-{sequence}"
            source, target = generator.sample(range(ACCOUNTS), 2)
            amount = generator.randint(1, 9)
            try:
                with connection.transaction() as tx:
                    tx.execute("UPDATE account SET balance = balance - ? WHERE id = ?", (amount, source))
                    tx.execute("UPDATE account SET balance = balance + ? WHERE id = ?", (amount, target))
                    tx.execute("INSERT INTO transfer VALUES (?, ?, ?, ?)", (transfer_id, source, target, amount))
            except BaseException as error:  # recorded, the test fails on it
                self.errors.append(error)
                return
            self.acknowledged.append(transfer_id)
        connection.close()


def run_clients(dsn: str, count: int):
    stop = threading.Event()
    clients = [BankClient(dsn, number, stop) for number in range(count)]
    for client in clients:
        client.start()
    return stop, clients


def acknowledged_count(clients) -> int:
    return sum(len(client.acknowledged) for client in clients)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_bank(dsn: str, clients) -> None:
    for client in clients:
        assert not client.errors, client.errors
    connection = evedb.connect(dsn, autocommit=True, timeout=20)
    balances = dict(connection.execute("SELECT id, balance FROM account").fetchall())
    transfers = connection.execute("SELECT id, source, target, amount FROM transfer").fetchall()
    connection.close()
    assert sum(balances.values()) == ACCOUNTS * INITIAL
    recorded = [row[0] for row in transfers]
    assert len(recorded) == len(set(recorded))
    acknowledged = [tid for client in clients for tid in client.acknowledged]
    missing = set(acknowledged) - set(recorded)
    assert not missing, f"acknowledged transfers lost: {sorted(missing)[:5]}"
    replay = {i: INITIAL for i in range(ACCOUNTS)}
    for _, source, target, amount in transfers:
        replay[source] -= amount
        replay[target] += amount
    assert replay == balances  # every recorded transfer applied exactly once


def roots_equal(pair: Pair) -> bool:
    primary, backup = node_status(pair.address("primary")), node_status(pair.address("backup"))
    return primary["state_root"] == backup["state_root"] and primary["committed_seq"] == backup["committed_seq"]


def test_writes_through_the_driver_reach_both_nodes(pair):
    setup_bank(pair.dsn)
    stop, clients = run_clients(pair.dsn, 3)
    wait_for(lambda: acknowledged_count(clients) >= 60, 60, "60 transfers")
    stop_clients(stop, clients)
    check_bank(pair.dsn, clients)
    wait_for(lambda: roots_equal(pair), 10, "equal roots")
    status = node_status(pair.address("primary"))
    assert status["role"] == "primary" and status["view"] == 0 and status["peer_state"] == "synced"


def stop_clients(stop, clients) -> None:
    stop.set()
    for client in clients:
        client.join(30)


def kill_backup_scenario(pair: Pair) -> dict:
    """Bank load; kill -9 the backup; the primary serves alone; the backup restarts and
    catches up; the bank checks and equal roots hold.  Returns the primary's status while alone."""
    setup_bank(pair.dsn)
    stop, clients = run_clients(pair.dsn, 3)
    wait_for(lambda: acknowledged_count(clients) >= 30, 60, "first transfers")
    pair.kill("backup")
    before = acknowledged_count(clients)
    wait_for(lambda: acknowledged_count(clients) >= before + 40, 60, "progress without the backup")
    alone = node_status(pair.address("primary"))
    assert alone["peer_state"] == "down"
    pair.start("backup")
    wait_for(lambda: node_status(pair.address("primary"))["peer_state"] == "synced", 60, "backup back in sync")
    after = acknowledged_count(clients)
    wait_for(lambda: acknowledged_count(clients) >= after + 20, 60, "progress with the backup back")
    stop_clients(stop, clients)
    check_bank(pair.dsn, clients)
    wait_for(lambda: roots_equal(pair), 20, "equal roots after catch-up")
    return alone


def kill_primary_scenario(pair: Pair) -> None:
    """Bank load; kill -9 the primary; the backup takes over in view 1 and clients go on; the
    old primary restarts and rejoins as backup; the bank checks and equal roots hold."""
    setup_bank(pair.dsn)
    stop, clients = run_clients(pair.dsn, 3)
    wait_for(lambda: acknowledged_count(clients) >= 30, 60, "first transfers")
    pair.kill("primary")
    before = acknowledged_count(clients)
    wait_for(lambda: acknowledged_count(clients) >= before + 40, 60, "progress through failover")
    backup = node_status(pair.address("backup"))
    assert backup["role"] == "primary" and backup["view"] == 1
    pair.start("primary")  # the old primary: it must see view 1 and rejoin as backup
    wait_for(lambda: node_status(pair.address("primary"))["role"] == "backup", 60, "old primary steps down")
    wait_for(lambda: node_status(pair.address("backup"))["peer_state"] == "synced", 60, "old primary in sync")
    after = acknowledged_count(clients)
    wait_for(lambda: acknowledged_count(clients) >= after + 20, 60, "progress with the old primary as backup")
    stop_clients(stop, clients)
    check_bank(pair.dsn, clients)
    wait_for(lambda: roots_equal(pair), 20, "equal roots after rejoin")


def test_kill_backup_mid_load_primary_serves_and_backup_catches_up(pair):
    kill_backup_scenario(pair)


def test_kill_primary_mid_load_backup_takes_over_and_old_primary_rejoins(pair):
    kill_primary_scenario(pair)


def test_forced_divergence_is_repaired_and_clients_see_only_correct_replies(tmp_path):
    started = Pair(str(tmp_path / "pair"), free_port_pair(), workers=1, extra_args=("--peer-timeout-ms", "700"))
    started.start("primary", ("--test-perturb", "3"))
    started.start("backup")
    try:
        started.wait_ready(60)
        connection = evedb.connect(started.dsn, autocommit=True, timeout=20)
        connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER)")
        connection.execute("INSERT INTO kv VALUES (1, 10)")
        cursor = connection.execute("UPDATE kv SET v = v + 5 WHERE k = 1 RETURNING v")
        assert cursor.fetchall() == [(15,)]
        assert cursor.rowcount == 1  # the perturbed execution said 2 rows and v = 16
        assert connection.execute("SELECT v FROM kv").fetchall() == [(15,)]
        connection.close()
        status = node_status(started.address("primary"))
        assert status["divergences"] >= 1 and status["rollbacks"] >= 1 and status["reexecutions"] >= 1
        wait_for(lambda: roots_equal(started), 10, "equal roots")
    finally:
        started.stop()


# --- Bad input on the port ------------------------------------------------------------------


def raw_connection(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def client_hello(sock: socket.socket) -> None:
    sock.sendall(encode_frame(["hello", PROTOCOL_VERSION, "client", "test"]))
    assert read_frame_blocking(sock, 1 << 20)[0] == "welcome"


def closed_or_error(sock: socket.socket) -> bool:
    try:
        answer = read_frame_blocking(sock, 1 << 20)
    except (OSError, Exception):
        return True
    return answer is None or answer[0] == "error"


def test_bad_input_gets_an_error_or_a_closed_connection_and_others_keep_working(pair):
    setup_bank(pair.dsn)
    good = evedb.connect(pair.dsn, autocommit=True, timeout=20)
    address = pair.address("primary")

    garbage = raw_connection(address)
    garbage.sendall(os.urandom(64))
    assert closed_or_error(garbage)

    oversized = raw_connection(address)
    client_hello(oversized)
    oversized.sendall(struct.pack(">I", 1 << 30))  # a 1 GiB frame: refused from its header
    assert closed_or_error(oversized)

    unknown = raw_connection(address)
    client_hello(unknown)
    unknown.sendall(encode_frame(["launch_missiles", 1]))
    answer = read_frame_blocking(unknown, 1 << 20)
    assert answer[0] == "error" and "unknown message type" in answer[2]
    unknown.sendall(encode_frame(["status"]))  # the connection still works after the error
    assert read_frame_blocking(unknown, 1 << 20)[0] == "status"

    malformed = raw_connection(address)
    client_hello(malformed)
    malformed.sendall(encode_frame(["request", ["not", "a", "request"]]))
    assert read_frame_blocking(malformed, 1 << 20)[0] == "error"

    forged_peer = raw_connection(address)
    forged_peer.sendall(encode_frame(["hello", PROTOCOL_VERSION, "peer", "intruder"], b"wrong secret"))
    assert closed_or_error(forged_peer)

    unsigned_peer = raw_connection(address)
    unsigned_peer.sendall(encode_frame(["hello", PROTOCOL_VERSION, "peer", "intruder"]))
    assert closed_or_error(unsigned_peer)

    half = raw_connection(address)
    client_hello(half)
    frame = encode_frame(["status"])
    half.sendall(frame[: len(frame) // 2])
    half.close()  # disconnects mid-frame

    # The node still serves its other clients and its peer.
    for socket_ in (garbage, oversized, unknown, malformed, forged_peer, unsigned_peer):
        socket_.close()
    good.execute("UPDATE account SET balance = balance + 0 WHERE id = 1")
    assert good.execute("SELECT count(*) FROM account").fetchall() == [(ACCOUNTS,)]
    good.close()
    assert node_status(address)["peer_state"] == "synced"
    wait_for(lambda: roots_equal(pair), 10, "equal roots")


def test_no_node_answering_raises_operational_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = evedb.connect(f"evedb://127.0.0.1:{port}", autocommit=True, timeout=0.5)
    with pytest.raises(evedb.OperationalError, match="no evedb node answered"):
        connection.execute("SELECT 1")


def test_a_retried_request_gets_the_original_reply_and_runs_once(pair):
    from evedb import codec
    from evedb.messages import Request

    setup_bank(pair.dsn)
    address = pair.address("primary")
    request = Request.statement("retry-client", 1, "UPDATE account SET balance = balance - 5 WHERE id = 1 RETURNING balance")
    answers = []
    for _ in range(3):  # the same (client id, request id) three times, on fresh connections
        sock = raw_connection(address)
        client_hello(sock)
        sock.sendall(encode_frame(["request", codec.request_to_plain(request)]))
        answers.append(read_frame_blocking(sock, 1 << 20))
        sock.close()
    assert answers[0] == answers[1] == answers[2]
    assert codec.reply_from_plain(answers[0][1]).results[0].rows == ((INITIAL - 5,),)
    connection = evedb.connect(pair.dsn, autocommit=True, timeout=20)
    assert connection.execute("SELECT balance FROM account WHERE id = 1").fetchall() == [(INITIAL - 5,)]
    connection.close()


def test_a_node_with_an_empty_data_directory_joins_by_state_transfer(pair):
    import shutil

    setup_bank(pair.dsn)
    stop, clients = run_clients(pair.dsn, 2)
    wait_for(lambda: acknowledged_count(clients) >= 40, 60, "some transfers")
    stop_clients(stop, clients)
    # Restart the primary (its in-memory log of batches is gone) and give the backup nothing.
    pair.stop()
    shutil.rmtree(os.path.join(pair.data_dir, "backup"))
    pair.start("primary")
    pair.start("backup")
    wait_for(lambda: node_status(pair.address("backup"))["peer_state"] == "synced" and roots_equal(pair), 60,
             "empty backup in sync")
    backup = node_status(pair.address("backup"))
    assert backup["state_transfers"] >= 1  # it took the state, not a replay of a log
    wait_for(lambda: roots_equal(pair), 20, "equal roots after the transfer")
    check_bank(pair.dsn, clients)


@contextlib.contextmanager
def standalone_node(tmp_path, workers: int = 1, **settings):
    """A ready unreplicated node and an autocommit connection to it; both closed after."""
    alone = Pair(str(tmp_path / "alone"), free_port_pair(), workers=workers, standalone=True, **settings)
    with alone:
        alone.wait_ready(60)
        connection = evedb.connect(alone.dsn, autocommit=True, timeout=30)
        try:
            yield alone, connection
        finally:
            connection.close()


def test_a_standalone_node_serves_unreplicated(tmp_path):
    with standalone_node(tmp_path, workers=2) as (alone, connection):
        connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v)")
        connection.cursor().executemany("INSERT INTO kv VALUES (?, ?)", [(i, i) for i in range(50)])
        assert connection.execute("SELECT sum(v) FROM kv").fetchall() == [(1225,)]
        connection.close()
        status = node_status(alone.address("primary"))
        assert status["role"] == "primary" and status["peer_state"] == "none" and status["committed_seq"] >= 2


@pytest.mark.parametrize("setting, expected", [("", "uvloop"), ("asyncio", "asyncio")])
def test_a_node_runs_on_uvloop_unless_told_to_use_asyncios_loop(tmp_path, setting, expected):
    environment = dict(os.environ, EVEDB_EVENT_LOOP=setting)
    with standalone_node(tmp_path, env=environment) as (alone, connection):
        connection.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v)")
        connection.execute("INSERT INTO t VALUES (1, 'a')")
        assert connection.execute("SELECT v FROM t").fetchall() == [("a",)]
        assert node_status(alone.address("primary"))["event_loop"] == expected


def test_reads_under_load_see_every_acknowledged_transfer_and_a_constant_total(tmp_path):
    """Reads run on the primary's event loop, on the pinned committed state or, when its engine
    is idle, on the engine's connection, and on the engine thread otherwise; either way a read
    sees whole batches only, and every transfer acknowledged before it began."""
    for started in running_pair(tmp_path, workers=2):
        setup_bank(started.dsn)
        stop, clients = run_clients(started.dsn, 4)
        reader = evedb.connect(started.dsn, autocommit=True, timeout=30)
        reads = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            acknowledged_before = {tid for client in clients for tid in list(client.acknowledged)}
            (total,), = reader.execute("SELECT sum(balance) FROM account").fetchall()
            assert total == ACCOUNTS * INITIAL
            seen = {row[0] for row in reader.execute("SELECT id FROM transfer").fetchall()}
            assert acknowledged_before <= seen, sorted(acknowledged_before - seen)[:5]
            reads += 2
        stop.set()
        for client in clients:
            client.join(30)
        reader.close()
        check_bank(started.dsn, clients)
        status = node_status(started.address("primary"))
        assert status["read_requests"] >= reads
        assert status["inline_reads"] > 0 and status["snapshot_reads"] > 0
        assert acknowledged_count(clients) > 0
