"""Durability under process crash (README "Durability"): real `evedb serve` processes, real
SQLite files, acknowledged writes, kill -9 at a random instant under load, restart.

The workload: each client request is one atomic script that appends a ledger row (SQLite
picks its rowid, so nothing in the schema stops a duplicate) naming a unique entry, and adds
one to its client's tally.  Checks after the restart: every write a client saw acknowledged
is in the ledger; no entry is there twice and each client's tally equals its number of ledger
rows (a write applied twice, or half of one, breaks them: clients ride through the crash and
retry their in-flight request with the same request id); both nodes end with equal roots.
The power-loss half of the statement is SQLite's documented behaviour and is not tested here.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

import evedb
from evedb.client import node_status
from evedb.runtime.launch import Pair, free_port_pair

CLIENTS = 3


class LedgerClient(threading.Thread):
    def __init__(self, dsn: str, number: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.dsn, self.number, self.stop = dsn, number, stop
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        # A long timeout: a request in flight at the crash is retried, with its request id,
        # until the restarted pair answers it.
        connection = evedb.connect(self.dsn, timeout=40)
        sequence = 0
        while not self.stop.is_set():
            sequence += 1
            entry = f"{self.number}-{sequence}"
            try:
                with connection.transaction() as tx:
                    tx.execute("INSERT INTO ledger(entry, client) VALUES (?, ?)", (entry, self.number))
                    tx.execute("UPDATE tally SET n = n + 1 WHERE client = ?", (self.number,))
            except evedb.Error as error:  # not acknowledged: it may or may not have applied
                self.errors.append(error)
                continue
            self.acknowledged.append(entry)
        connection.close()


def _settled(pair: Pair, timeout: float = 20.0) -> tuple[dict, dict]:
    deadline = time.monotonic() + timeout
    while True:
        primary = node_status(pair.address("primary"), timeout=5)
        backup = node_status(pair.address("backup"), timeout=5)
        if primary["committed_seq"] == backup["committed_seq"] and primary["state_root"] == backup["state_root"]:
            return primary, backup
        if time.monotonic() > deadline:
            return primary, backup
        time.sleep(0.1)


@pytest.mark.parametrize("synchronous,victims", [
    ("NORMAL", ("primary", "backup")),
    ("FULL", ("primary", "backup")),
    ("NORMAL", ("primary",)),
], ids=["NORMAL-both", "FULL-both", "NORMAL-primary"])
def test_acknowledged_writes_survive_kill_9(tmp_path, synchronous, victims):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")  # a failure names the instant it was killed at
    generator = random.Random(seed)
    pair = Pair(str(tmp_path / "pair"), free_port_pair(), workers=1,
                extra_args=("--synchronous", synchronous, "--peer-timeout-ms", "700"))
    pair.start_all()
    stop = threading.Event()
    clients: list[LedgerClient] = []
    try:
        pair.wait_ready(60)
        setup = evedb.connect(pair.dsn, autocommit=True, timeout=20)
        setup.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, entry TEXT NOT NULL, client INTEGER NOT NULL)")
        setup.execute("CREATE TABLE tally(client INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        setup.cursor().executemany("INSERT INTO tally VALUES (?, 0)", [(c,) for c in range(CLIENTS)])
        setup.close()
        clients = [LedgerClient(pair.dsn, number, stop) for number in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(0.4 + generator.random())  # a random instant under load
        acknowledged_before_kill = sum(len(client.acknowledged) for client in clients)
        for name in victims:
            pair.processes[name].kill()  # SIGKILL, both at once when both are victims
        for name in victims:
            pair.processes[name].wait()
        assert acknowledged_before_kill > 0
        for name in victims:
            pair.start(name)
        pair.wait_ready()
        time.sleep(0.5)  # the clients' retries go through, and some new writes after them
        stop.set()
        for client in clients:
            client.join(60)
        assert not any(client.is_alive() for client in clients)
        primary, backup = _settled(pair)
        assert primary["state_root"] == backup["state_root"], (primary, backup)
        check = evedb.connect(pair.dsn, autocommit=True, timeout=20)
        ledger = check.execute("SELECT entry, client FROM ledger").fetchall()
        tallies = dict(check.execute("SELECT client, n FROM tally").fetchall())
        check.close()
    finally:
        stop.set()
        pair.stop()
    entries = {entry for entry, _ in ledger}
    assert len(entries) == len(ledger), "a write was applied twice"
    acknowledged = [entry for client in clients for entry in client.acknowledged]
    missing = [entry for entry in acknowledged if entry not in entries]
    assert not missing, f"acknowledged writes lost after kill -9 of {victims}: {missing[:5]}"
    for number in range(CLIENTS):
        rows = sum(1 for _, client in ledger if client == number)
        assert tallies[number] == rows, f"client {number}: tally {tallies[number]} but {rows} ledger rows"
    assert len(acknowledged) > acknowledged_before_kill  # the pair served again after the crash
