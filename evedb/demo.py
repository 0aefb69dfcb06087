"""The demo the README's first command runs, until the replicated pair and TPC-W exist:
a bank workload from several threads on an embedded database with parallel workers, real
SQLite file in a temporary directory, checked at the end (total balance unchanged)."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

ACCOUNTS = 1000
INITIAL_BALANCE = 100


def run_embedded_demo(*, workers: int, seconds: float, clients: int, echo) -> int:
    """Run the demo; `echo` prints like click.echo (it takes nl=).  Returns the exit code."""
    import evedb

    with tempfile.TemporaryDirectory(prefix="evedb-demo-") as directory:
        path = str(Path(directory) / "bank.db")
        echo(f"evedb demo: embedded database {path}, {workers} worker(s), {clients} client thread(s)")
        setup = evedb.connect(path, workers=workers, autocommit=True)
        setup.execute("CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        setup.cursor().executemany(
            "INSERT INTO account(id, balance) VALUES (?, ?)", [(i, INITIAL_BALANCE) for i in range(ACCOUNTS)]
        )
        done = {"transfers": 0, "reads": 0}
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(number: int) -> None:
            generator = random.Random(number)
            connection = evedb.connect(path, workers=workers)
            transfers = reads = 0
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
            connection.close()
            with lock:
                done["transfers"] += transfers
                done["reads"] += reads

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.5)
            remaining = max(0.0, deadline - time.monotonic())
            echo(f"\r  running... {remaining:4.1f}s left ", nl=False)
        elapsed = time.monotonic() - started
        total = setup.execute("SELECT sum(balance) FROM account").fetchone()[0]
        stats = setup.stats()
        root = setup.state_root()
        setup.close()
        operations = done["transfers"] + done["reads"]
        echo("")
        echo(f"transfers:        {done['transfers']}")
        echo(f"balance reads:    {done['reads']}")
        echo(f"throughput:       {operations / elapsed:,.0f} transactions/s")
        echo(f"batches:          {stats['batches']} (avg {stats['requests'] / max(1, stats['batches']):.1f} requests each)")
        echo(f"parallel batches: {stats['parallel_batches']}")
        echo(f"state root:       {root}")
        ok = total == ACCOUNTS * INITIAL_BALANCE
        echo(f"total balance:    {total} ({'intact' if ok else 'WRONG'})")
        return 0 if ok else 1
