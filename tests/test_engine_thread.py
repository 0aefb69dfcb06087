"""The node's engine thread: commits (urgent calls) run ahead of queued executions, and
`done_through` waits for every call asked for before, whatever order they ran in."""

import threading

import pytest

from evedb.runtime.engine_thread import EngineThread


def test_urgent_calls_run_before_waiting_ordinary_ones_and_gates_follow_numbers():
    thread = EngineThread()
    release = threading.Event()
    ran: list[str] = []
    try:
        started = threading.Event()
        blocker = thread.submit(lambda: (started.set(), release.wait()))  # 1: holds the thread
        assert started.wait(10)
        first = thread.submit(ran.append, "execute 2")        # 2: ordinary, waits
        second = thread.submit(ran.append, "execute 3")       # 3: ordinary, waits
        commit = thread.submit(ran.append, "commit", urgent=True)  # 4: jumps ahead of 2 and 3
        assert thread.last_number == 4
        release.set()
        commit.result(timeout=10)
        second.result(timeout=10)
        assert ran == ["commit", "execute 2", "execute 3"]
        assert thread.done_through(4) and blocker.done() and first.done()
    finally:
        release.set()
        thread.shutdown()


def test_done_through_is_false_while_an_earlier_call_is_still_waiting():
    thread = EngineThread()
    release = threading.Event()
    try:
        started = threading.Event()
        thread.submit(lambda: (started.set(), release.wait()))  # 1: holds the thread
        assert started.wait(10)
        ordinary = thread.submit(lambda: "late")               # 2: waits
        seen = []
        # 3 runs before 2 (urgent), so at that moment call 2 has not finished.
        urgent = thread.submit(lambda: seen.append((thread.done_through(1), thread.done_through(2))),
                               urgent=True)
        assert not thread.done_through(1)
        release.set()
        urgent.result(timeout=10)
        assert ordinary.result(timeout=10) == "late"
        assert seen == [(True, False)]
        assert thread.done_through(3)
    finally:
        release.set()
        thread.shutdown()


def test_a_failing_call_reports_its_error_and_the_thread_goes_on():
    thread = EngineThread()
    try:
        failing = thread.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=10)
        assert thread.submit(lambda: 7).result(timeout=10) == 7
        assert thread.done_through(2)
    finally:
        thread.shutdown()
    with pytest.raises(RuntimeError):
        thread.submit(lambda: None)
