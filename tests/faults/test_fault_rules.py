"""The rules the fault campaign made: a node's own stall is not its peer's silence (core), and a
full disk stops the node instead of becoming a reply (storage hook, in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

from evedb.messages import CatchUp, Heartbeat
from evedb.replica import PeerState, Replica, ReplicaConfig, Role

CONFIG = ReplicaConfig(node_id="x", batch_delay_ms=1, heartbeat_ms=50, peer_timeout_ms=300, retransmit_ms=100,
                       local_stall_ms=150)


def synced_backup(config: ReplicaConfig) -> Replica:
    backup = Replica(config, role=Role.BACKUP, view=0, committed_seq=0, now_ms=0)
    backup.on_peer_message(CatchUp(0, (), 0), 1)  # the sync point
    assert backup.synced
    for now in range(10, 101, 10):
        backup.tick(now)
    backup.take_actions()
    return backup


def test_a_backup_waking_from_its_own_stall_does_not_take_over_at_once():
    backup = synced_backup(CONFIG)
    backup.tick(3000)  # paused for ~3 s: the primary's messages are still unread
    assert backup.role is Role.BACKUP
    # The unread messages say the primary went on without it: it leaves sync, never takes over.
    backup.on_peer_message(Heartbeat(0, "primary", 40, False), 3001)
    for now in range(3010, 3800, 10):
        backup.tick(now)
    assert backup.role is Role.BACKUP and not backup.synced


def test_a_backup_whose_primary_really_died_still_takes_over_after_a_timeout():
    backup = synced_backup(CONFIG)
    backup.tick(3000)
    for now in range(3010, 3400, 10):  # silence past the timeout, counted from the wake-up
        backup.tick(now)
    assert backup.role is Role.PRIMARY and backup.view == 1


def test_without_the_rule_a_stalled_backup_takes_over_on_waking():
    backup = synced_backup(replace(CONFIG, local_stall_ms=0))
    backup.tick(3000)
    assert backup.role is Role.PRIMARY  # what the campaign found: a second primary


def test_a_primary_waking_from_its_own_stall_does_not_go_on_alone_at_once():
    primary = Replica(CONFIG, role=Role.PRIMARY, view=0, committed_seq=0, now_ms=0)
    primary.on_peer_message(Heartbeat(0, "backup", 0, True), 1)
    for now in range(10, 101, 10):
        primary.tick(now)
    primary.tick(3000)
    assert primary.peer is PeerState.SYNCED
    # The backup took over meanwhile: its view reaches the old primary, which steps down.
    primary.on_peer_message(Heartbeat(1, "backup", 0, True), 3001)
    assert primary.role is Role.BACKUP


_DISK_FULL_SCRIPT = """
import os, sys, apsw
from evedb import storage
directory = sys.argv[1]
connection = storage.open_connection(os.path.join(directory, "x.db"))
connection.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v)")
connection.execute("INSERT INTO t VALUES (1, 'before')")
open(os.path.join(directory, "full"), "w").close()
try:
    connection.execute("INSERT INTO t VALUES (2, zeroblob(100000))")
    print("written")
except apsw.FullError as error:
    print("full", storage.is_storage_failure(error))
os.remove(os.path.join(directory, "full"))
connection.execute("INSERT INTO t VALUES (3, 'after')")
print(connection.execute("SELECT k FROM t ORDER BY k").fetchall())
"""


def test_the_disk_full_hook_fails_writes_while_its_file_exists(tmp_path):
    environment = dict(os.environ, EVEDB_TEST_DISK_FULL_FILE=str(tmp_path / "full"))
    output = subprocess.run([sys.executable, "-c", _DISK_FULL_SCRIPT, str(tmp_path)], env=environment,
                            capture_output=True, text=True, timeout=60, check=True).stdout.split("\n")
    assert output[:2] == ["full True", "[(1,), (3,)]"]  # the failed write left nothing behind
