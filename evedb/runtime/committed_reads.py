"""Reads on the primary's last committed state while the next batch executes and is verified.

Owns `CommittedSnapshot`: a read-only connection in the node process that holds a read
transaction open on the state right after the batch the core committed last.  The event loop
pins it when that state, and nothing newer, is in the database file: at CommitUpTo(seq), with
the engine thread idle and `seq` the last batch it executed.  Until the next pin, a cheap read
group runs there on the loop, while the engine thread executes the next batch and the backup
verifies it.  The replies show every acknowledged write (acknowledged writes are in committed
batches, at most the pinned one) and nothing unverified, so the core releases them at once
(`on_reads_executed(..., observed_seq=seq)`) instead of holding them until the batch in flight
is verified, which is what a read run after that batch has to wait for.  Linearizable: the
batch in flight holds only unacknowledged writes, concurrent with the read.

Rules it keeps:
- `pin(seq)` only when the file holds exactly the state after batch `seq` (the caller knows;
  this module cannot);
- the node uses the pin only while `seq` is the core's committed seq: an older one would miss
  acknowledged writes;
- it never writes (`query_only`): a read-only procedure that tries is not answered here
  (`SnapshotUnusable`), and runs the usual way, where its writes are undone as before;
- released before anything that replaces the state (state transfer, a view change), and on
  close; a group interrupted past its deadline releases it too, and so does one after which
  the read transaction is found ended (SQLite ends it on some errors): its replies are not
  used;
- every `PIN_GAP`-th commit is not pinned: a reader that is always pinned keeps SQLite from
  ever restarting the write-ahead log (the WAL would only grow); one unpinned batch lets a
  checkpoint copy it all back (tests/test_committed_reads.py checks the WAL stays bounded).
"""

from __future__ import annotations

import logging
from typing import Sequence

from .. import storage
from ..executor import Worker
from ..messages import Reply, Request

log = logging.getLogger(__name__)

# Every PIN_GAP-th commit leaves the snapshot released for one batch (see the module rules).
PIN_GAP = 16


class SnapshotUnusable(Exception):
    """The group cannot be answered on the snapshot (it tried to write): run it elsewhere."""


class CommittedSnapshot:
    def __init__(self, path: str, options: storage.StorageOptions, procedure_modules: Sequence[str] = ()):
        self._path, self._options, self._procedure_modules = path, options, tuple(procedure_modules)
        self._worker = self._open()
        self.seq: int | None = None  # the batch whose state is pinned, None when released

    def _open(self) -> Worker:
        worker = Worker(self._path, self._options, self._procedure_modules)
        worker._internal("PRAGMA query_only = ON")
        return worker

    def pin(self, seq: int) -> None:
        """Hold a read transaction on the file as it is now: the state after batch `seq`."""
        self.release()
        if seq % PIN_GAP == 0:
            return
        self._worker._internal("BEGIN")
        # A read transaction starts at its first read, not at BEGIN: read now, on this state.
        self._worker._internal("SELECT count(*) FROM sqlite_schema")
        if self._in_transaction():
            self.seq = seq

    def _in_transaction(self) -> bool:
        return not self._worker.connection.get_autocommit()

    def release(self) -> None:
        """End the read transaction; never raises (callers are in the middle of performing the
        core's actions): a connection that cannot roll back is closed and opened again."""
        self.seq = None
        try:
            if self._in_transaction():
                self._worker._internal("ROLLBACK")
        except Exception as error:
            log.warning("releasing the committed snapshot failed (%r): opening a new connection", error)
            try:
                self._worker.close()
                self._worker = self._open()
            except Exception as reopen_error:  # pins fail from now on: reads take the usual path
                log.error("reopening the committed snapshot's connection failed: %r", reopen_error)

    def run_reads(self, requests: Sequence[Request], timestamp_ms: int, deadline: float) -> list[Reply]:
        """The group's replies on the pinned state (raises ReadsTooLong past `deadline`, or
        SnapshotUnusable: either way nothing is answered and the caller runs the group
        elsewhere)."""
        assert self.seq is not None, "no snapshot pinned"
        try:
            replies = self._worker.run_reads(requests, timestamp_ms, deadline=deadline, in_open_transaction=True)
        except BaseException:
            self.release()  # an interrupted statement may have ended the transaction: do not guess
            raise
        if not self._in_transaction():
            # SQLite ends a transaction itself on some errors (I/O, out of memory): the group
            # may then have read the live file, which can hold a batch not yet verified.
            self.release()
            raise SnapshotUnusable("the snapshot's read transaction ended during the group")
        for reply in replies:
            if reply.error is not None and "readonly database" in reply.error.message:
                raise SnapshotUnusable(f"request {reply.request_id} tried to write")
        return replies

    def close(self) -> None:
        try:
            self.release()
        finally:
            self._worker.close()
