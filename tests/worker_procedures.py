"""Procedures the worker-process tests need; spawned workers import this module by name."""

import os
import signal
import time

import evedb


@evedb.procedure
def die_once(db, marker_path, account):
    """Write, then kill this worker process the first time it runs (a marker file remembers)."""
    db.execute("UPDATE acct SET balance = balance + 1000 WHERE id = ?", (account,))
    if not os.path.exists(marker_path):
        open(marker_path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return db.execute("SELECT balance FROM acct WHERE id = ?", (account,))


@evedb.procedure
def slow_total(db, seconds):
    """The sum of all balances, read after `seconds` of sleep (the read snapshot is the share's)."""
    time.sleep(seconds)
    return db.execute("SELECT sum(balance) FROM acct")
