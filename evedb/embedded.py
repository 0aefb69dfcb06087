"""An evedb database inside the calling process: the path every request takes, unreplicated.

A request submitted here goes through the same pipeline the replicated server uses:
batcher -> access analysis -> mixer -> execution on the workers -> Merkle tree and token.
With no peer to verify against, a batch commits as soon as it has executed.

One `EmbeddedDatabase` serves every connection to a file in this process (they share one
batcher, so requests from several threads are batched together and can run in parallel);
a lock file keeps a second process from running its own engine on the same file.

Threading: callers submit from any thread; whichever submitting thread finds no batch running
becomes the leader and executes batches until the queue is empty (see `_lead`).  A reply is
handed back only after its batch has committed.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Sequence

from .batcher import Batcher
from .engine import ExecutionEngine
from .errors import OperationalError
from .messages import Reply, Request
from .storage import StorageOptions

_open: dict[str, "EmbeddedDatabase"] = {}
_open_lock = threading.Lock()


class EmbeddedDatabase:
    def __init__(
        self,
        path: str,
        *,
        workers: int | None = None,
        options: StorageOptions = StorageOptions(),
        procedure_modules: Sequence[str] = (),
        rules=None,
        max_batch: int = 256,
    ):
        self.path = path
        self._lock_file = _take_file_lock(path)
        try:
            self.engine = ExecutionEngine(
                path,
                workers=workers,
                options=options,
                procedure_modules=procedure_modules,
                rules=rules,
            )
        except BaseException:
            os.close(self._lock_file)
            raise
        self._batcher = Batcher(max_requests=max_batch, max_delay_ms=0, next_seq=self.engine.committed_seq + 1)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._leader = threading.Lock()
        self._client_ids = itertools.count(1)
        self._process_tag = uuid.uuid4().hex[:8]
        self._users = 0
        self._closed = False

    def new_client_id(self) -> str:
        return f"embedded-{self._process_tag}-{next(self._client_ids)}"

    # --- submitting ---

    def submit(self, request: Request) -> Future:
        """Queue a request and, if no thread is executing batches, become the one that does."""
        future: Future = Future()
        if self._closed:
            future.set_exception(OperationalError("the database is closed"))
            return future
        self._inbox.put((request, future))
        self._lead()
        return future

    def execute(self, request: Request) -> Reply:
        return self.submit(request).result()

    def _lead(self) -> None:
        # Leader batching: the submitting thread that finds no leader runs batches of whatever
        # is queued (its own request and those of threads that arrived meanwhile) until the
        # queue is empty; the others wait on their futures.  No thread hop for a lone client.
        # After letting go it looks once more, so a request queued during the hand-over is
        # never stranded: either its own thread gets the lock, or this one takes it back.
        while self._leader.acquire(blocking=False):
            try:
                while self._run_one_batch():
                    pass
            finally:
                self._leader.release()
            if self._inbox.empty():
                return

    def _run_one_batch(self) -> bool:
        futures = []
        while len(futures) < self._batcher.max_requests:
            try:
                request, future = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._batcher.add(request, 0)
            futures.append(future)
        if not futures:
            return False
        batch = self._batcher.cut(int(time.time() * 1000))
        try:
            outcome = self.engine.execute(batch, commit=True)
        except BaseException as error:  # the engine broke: every waiter hears why
            failure = OperationalError(f"batch {batch.seq} failed: {error}")
            for future in futures:
                future.set_exception(failure)
            return True
        for future, reply in zip(futures, outcome.replies):
            future.set_result(reply)
        return True

    # --- inspection ---

    def state_root(self) -> str:
        return self.engine.state_root_hex()

    def stats(self) -> dict:
        return self.engine.stats.as_dict() | {"workers": self.engine.workers, "committed_seq": self.engine.committed_seq}

    # --- lifetime ---

    def acquire(self) -> "EmbeddedDatabase":
        self._users += 1
        return self

    def release(self) -> None:
        with _open_lock:
            self._users -= 1
            if self._users > 0:
                return
            _open.pop(self.path, None)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._leader:
            self.engine.close()
        os.close(self._lock_file)


def _take_file_lock(path: str) -> int:
    lock_path = path + "-evedb.lock"
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise OperationalError(
            f"{path} is open in another evedb process; open it there, or serve it with `evedb serve`"
        ) from None
    return descriptor


def open_database(path: str, **settings) -> EmbeddedDatabase:
    """The process-wide database for `path`, opened on first use and shared afterwards."""
    if path == ":memory:" or not path:
        raise OperationalError("evedb needs a database file: its workers are separate processes")
    key = os.path.realpath(path)
    with _open_lock:
        database = _open.get(key)
        if database is None:
            database = _open[key] = EmbeddedDatabase(key, **settings)
        return database.acquire()
