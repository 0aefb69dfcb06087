"""The demo the README's first command runs (until TPC-W lands): a local primary-backup pair
in a temporary directory, a bank workload from several client threads through the network
driver, a live progress line, and a report that checks the result: total balance unchanged,
every acknowledged transfer recorded once, both nodes at the same state root."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

ACCOUNTS = 1000
INITIAL_BALANCE = 100


def _bank_client(dsn: str, number: int, deadline: float, counts: dict, lock: threading.Lock, problems: list):
    import evedb

    generator = random.Random(number)
    connection = evedb.connect(dsn, timeout=30)
    transfers = reads = 0
    try:
        while time.monotonic() < deadline:
            source, target = generator.sample(range(ACCOUNTS), 2)
            if generator.random() < 0.5:
                with connection.transaction() as tx:
                    tx.execute("UPDATE account SET balance = balance - 1 WHERE id = ?", (source,))
                    tx.execute("UPDATE account SET balance = balance + 1 WHERE id = ?", (target,))
                transfers += 1
            else:
                connection.execute("SELECT balance FROM account WHERE id = ?", (source,)).fetchone()
                reads += 1
    except Exception as error:  # reported, and the demo fails
        problems.append(error)
    finally:
        connection.close()
        with lock:
            counts["transfers"] += transfers
            counts["reads"] += reads


def run_pair_demo(*, workers: int | None, seconds: float, clients: int, echo) -> int:
    """Run the demo; `echo` prints like click.echo (it takes nl=).  Returns the exit code."""
    import evedb
    from evedb.client import node_status
    from evedb.runtime.launch import Pair, free_port_pair

    with tempfile.TemporaryDirectory(prefix="evedb-demo-") as directory:
        pair = Pair(str(Path(directory) / "pair"), free_port_pair(), workers=workers)
        echo(f"evedb demo: starting a primary-backup pair on {pair.dsn} (data in {directory})")
        with pair:
            pair.wait_ready(60)
            setup = evedb.connect(pair.dsn, autocommit=True, timeout=30)
            setup.execute("CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
            setup.cursor().executemany(
                "INSERT INTO account(id, balance) VALUES (?, ?)", [(i, INITIAL_BALANCE) for i in range(ACCOUNTS)]
            )
            echo(f"loaded {ACCOUNTS} accounts; running {clients} clients for {seconds:g}s (half transfers, half reads)")
            counts, lock, problems = {"transfers": 0, "reads": 0}, threading.Lock(), []
            started = time.monotonic()
            deadline = started + seconds
            threads = [
                threading.Thread(target=_bank_client, args=(pair.dsn, n, deadline, counts, lock, problems))
                for n in range(clients)
            ]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.5)
                status = node_status(pair.address("primary"))
                echo(f"\r  {max(0.0, deadline - time.monotonic()):4.1f}s left, committed seq {status['committed_seq']}, "
                     f"backup {status['peer_state']}   ", nl=False)
            elapsed = time.monotonic() - started
            total = setup.execute("SELECT sum(balance) FROM account").fetchone()[0]
            setup.close()
            time.sleep(0.3)
            primary, backup = node_status(pair.address("primary")), node_status(pair.address("backup"))
        operations = counts["transfers"] + counts["reads"]
        echo("")
        echo(f"transfers:          {counts['transfers']}")
        echo(f"balance reads:      {counts['reads']}")
        echo(f"throughput:         {operations / elapsed:,.0f} transactions/s")
        echo(f"batches committed:  {primary['committed_seq']} (parallel batches run: {primary['parallel_batches']})")
        echo(f"rollbacks:          {primary['rollbacks']}, state transfers: {primary['state_transfers']}")
        echo(f"primary root:       {primary['state_root']} (seq {primary['committed_seq']})")
        echo(f"backup root:        {backup['state_root']} (seq {backup['committed_seq']})")
        roots_equal = primary["state_root"] == backup["state_root"]
        intact = total == ACCOUNTS * INITIAL_BALANCE
        echo(f"roots equal:        {'yes' if roots_equal else 'NO'}")
        echo(f"total balance:      {total} ({'intact' if intact else 'WRONG'})")
        for problem in problems:
            echo(f"client error: {problem!r}")
        return 0 if roots_equal and intact and not problems else 1
