"""The one thread that runs a node's engine work, with commits ahead of queued executions.

What it owns: running the calls a node makes on its `ExecutionEngine` one at a time, in the
order they were asked for, except that an *urgent* call (a commit) runs before the ordinary
calls still waiting.  A primary keeps several batches in flight, so when a batch's tokens
match, the executions of the batches after it are usually queued already; its commit, and so
its clients' replies (which wait for that commit), would otherwise wait for all of them.

Rules kept:
- ordinary calls run in submission order; urgent calls run in submission order among
  themselves, each before any ordinary call still waiting when it was submitted;
- a call never overlaps another (the engine is used by this thread only);
- `done_through(n)`: every call numbered up to n has finished, whatever order they ran in, so a
  send that must follow "all the work asked for before it" can wait on that number.

Urgent calls must not depend on ordinary calls still waiting: the replica core commits a
batch only after its execution reported back, and never commits a batch it is rolling back.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading


class EngineThread:
    def __init__(self, name: str = "evedb-engine"):
        self._condition = threading.Condition()
        self._urgent: collections.deque = collections.deque()
        self._ordinary: collections.deque = collections.deque()
        self._submitted = 0
        self._finished: set[int] = set()
        self._finished_through = 0  # every call numbered up to this has finished
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def last_number(self) -> int:
        """The number of the last call submitted (0: none yet)."""
        return self._submitted

    def submit(self, function, *args, urgent: bool = False) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._condition:
            if self._closing:
                raise RuntimeError("the engine thread is shut down")
            self._submitted += 1
            (self._urgent if urgent else self._ordinary).append((self._submitted, future, function, args))
            self._condition.notify()
        return future

    def done_through(self, number: int) -> bool:
        return self._finished_through >= number

    def idle(self) -> bool:
        """Every call submitted so far has finished (read by the submitting thread, which is
        the only one that can make it false again)."""
        return self._finished_through >= self._submitted

    def shutdown(self, wait: bool = True) -> None:
        with self._condition:
            self._closing = True
            self._condition.notify()
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._urgent and not self._ordinary and not self._closing:
                    self._condition.wait()
                if self._urgent:
                    number, future, function, args = self._urgent.popleft()
                elif self._ordinary:
                    number, future, function, args = self._ordinary.popleft()
                else:
                    return  # closing, and nothing left
            if future.set_running_or_notify_cancel():
                try:
                    result = function(*args)
                except BaseException as error:
                    # A failed call's callbacks run first (a node stops on a storage failure
                    # there), before anything gated on it can pass.
                    future.set_exception(error)
                    self._finish(number)
                    continue
                self._finish(number)
                future.set_result(result)
            else:
                self._finish(number)

    def _finish(self, number: int) -> None:
        # Marked before the future's callbacks run, so a callback that checks a gate sees it.
        with self._condition:
            self._finished.add(number)
            while self._finished_through + 1 in self._finished:
                self._finished_through += 1
                self._finished.discard(self._finished_through)
