"""Closed-loop key-value clients, spread over a few client processes.

Each client is one DB-API connection (`evedb.connect(dsn, autocommit=True)`, what users run),
in a thread of a client process, with one request outstanding: it sends the next operation as
soon as the previous one is answered (no think time).  Python clients are costly on a small
machine, so the clients are spread over `processes` spawned processes (one GIL each), and the
bench measures how much CPU they take (kvbench/cpu.py).

Timing: the parent picks one start instant after every process has connected its clients;
requests completed in [start + warm-up, start + warm-up + duration) are measured, and every
completion is also counted in time buckets from the start (the timeline's per-second series).
An error (a failover that outlasted the client timeout, a refused request) is counted, never
hidden, and the client goes on.

Rules kept: a client id is fresh for every run (the pair's reply cache answers a reused
(client id, request id) with the old reply); each client's operations come from its own
`random.Random(seed, run, client number)`.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from .workload import Generator, Workload

_ERRORS_KEPT = 10


@dataclass(frozen=True)
class ClientPlan:
    dsn: str
    workload: Workload
    client_numbers: tuple[int, ...]
    seed: int
    run_tag: str
    timeout_s: float
    bucket_s: float


@dataclass
class LoadResult:
    duration_s: float
    write_latencies_s: list[float] = field(default_factory=list)
    read_latencies_s: list[float] = field(default_factory=list)
    # Completions (reads + writes, and writes alone) per bucket from the start, warm-up included.
    buckets_ops: list[int] = field(default_factory=list)
    buckets_writes: list[int] = field(default_factory=list)
    bucket_s: float = 1.0
    warmup_s: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.write_latencies_s)

    @property
    def reads(self) -> int:
        return len(self.read_latencies_s)

    def merge(self, part: dict) -> None:
        self.write_latencies_s.extend(part["write_latencies_s"])
        self.read_latencies_s.extend(part["read_latencies_s"])
        for mine, theirs in ((self.buckets_ops, part["buckets_ops"]), (self.buckets_writes, part["buckets_writes"])):
            if len(mine) < len(theirs):
                mine.extend([0] * (len(theirs) - len(mine)))
            for index, count in enumerate(theirs):
                mine[index] += count
        self.errors += part["errors"]
        self.error_samples.extend(part["error_samples"][: max(0, _ERRORS_KEPT - len(self.error_samples))])


def _run_clients(plan: ClientPlan, pipe) -> None:
    """Child process: connect the clients, report ready, wait for the window, run, report."""
    import evedb

    connections = []
    try:
        for number in plan.client_numbers:
            connections.append(evedb.connect(plan.dsn, autocommit=True, timeout=plan.timeout_s,
                                             client_id=f"kvbench-{plan.run_tag}-{number}"))
    except Exception as error:
        pipe.send(("failed", f"{type(error).__name__}: {error}"))
        return
    pipe.send(("ready",))
    _, start_at, measure_from, deadline = pipe.recv()
    # The parent may end the run early ("stop", instant): the clients read the deadline here.
    deadline_box = [deadline]
    lock = threading.Lock()
    part = {"write_latencies_s": [], "read_latencies_s": [], "buckets_ops": [], "buckets_writes": [],
            "errors": 0, "error_samples": []}

    def client(connection, number: int) -> None:
        generator = Generator(plan.workload, random.Random(f"{plan.seed}:{plan.run_tag}:{number}"),
                              tag=f"{plan.run_tag}.{number}")
        cursor = connection.cursor()
        writes, reads, ops, write_counts, errors, samples = [], [], [], [], 0, []
        time.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < deadline_box[0]:
            operation = generator.next()
            began = time.monotonic()
            try:
                if operation.method == "execute":
                    cursor.execute(operation.target, operation.params)
                else:
                    cursor.callproc(operation.target, operation.params)
                if not operation.is_write:
                    cursor.fetchall()
            except Exception as error:
                errors += 1
                if len(samples) < _ERRORS_KEPT:
                    samples.append(f"client {number}: {type(error).__name__}: {error}")
                continue
            ended = time.monotonic()
            bucket = int((ended - start_at) / plan.bucket_s)
            while len(ops) <= bucket:
                ops.append(0)
                write_counts.append(0)
            ops[bucket] += 1
            if operation.is_write:
                write_counts[bucket] += 1
            if measure_from <= ended < deadline_box[0]:
                (writes if operation.is_write else reads).append(ended - began)
        with lock:
            part["write_latencies_s"].extend(writes)
            part["read_latencies_s"].extend(reads)
            for mine, theirs in ((part["buckets_ops"], ops), (part["buckets_writes"], write_counts)):
                mine.extend([0] * max(0, len(theirs) - len(mine)))
                for index, count in enumerate(theirs):
                    mine[index] += count
            part["errors"] += errors
            part["error_samples"].extend(samples)

    threads = [threading.Thread(target=client, args=(connection, number), daemon=True)
               for connection, number in zip(connections, plan.client_numbers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if pipe.poll(0.1):
            message = pipe.recv()
            if message[0] == "stop":
                deadline_box[0] = min(deadline_box[0], message[1])
    for thread in threads:
        thread.join()
    for connection in connections:
        try:
            connection.close()
        except Exception:
            pass
    pipe.send(("done", part))


class LoadRun:
    """`clients` closed-loop clients in `processes` processes: `start()`, then `finish()`."""

    def __init__(self, dsn: str, workload: Workload, *, clients: int, processes: int, seed: int = 1,
                 timeout_s: float = 30.0, bucket_s: float = 1.0):
        if clients < 1:
            raise ValueError("at least one client")
        processes = max(1, min(processes, clients))
        run_tag = uuid.uuid4().hex[:12]
        numbers = list(range(clients))
        self.plans = [ClientPlan(dsn, workload, tuple(numbers[index::processes]), seed, run_tag, timeout_s, bucket_s)
                      for index in range(processes)]
        self.bucket_s = bucket_s
        self.processes: list[multiprocessing.Process] = []
        self.pipes = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def start(self, warmup_s: float, duration_s: float, connect_timeout_s: float = 60.0) -> tuple[float, float, float]:
        """Start the clients; returns (start, measure_from, deadline) in `time.monotonic()`."""
        context = multiprocessing.get_context("spawn")
        for plan in self.plans:
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_run_clients, args=(plan, child_end), daemon=True)
            process.start()
            child_end.close()
            self.processes.append(process)
            self.pipes.append(parent_end)
        for pipe in self.pipes:
            if not pipe.poll(connect_timeout_s):
                self.stop()
                raise TimeoutError("a client process did not connect in time")
            message = pipe.recv()
            if message[0] != "ready":
                self.stop()
                raise RuntimeError(f"a client process could not connect: {message[1]}")
        start_at = time.monotonic() + 0.05
        self.window = (start_at, start_at + warmup_s, start_at + warmup_s + duration_s)
        self.warmup_s, self.duration_s = warmup_s, duration_s
        for pipe in self.pipes:
            pipe.send(("go",) + self.window)
        return self.window

    def stop_at(self, instant: float) -> None:
        """End the run at `instant` (`time.monotonic()`) instead of the deadline `start` gave."""
        start_at, measure_from, deadline = self.window
        self.window = (start_at, measure_from, min(deadline, instant))
        self.duration_s = max(0.0, self.window[2] - measure_from)
        for pipe in self.pipes:
            pipe.send(("stop", instant))

    def finish(self, timeout_s: float = 120.0) -> LoadResult:
        """Wait for every client to stop and merge what they measured."""
        result = LoadResult(self.duration_s, bucket_s=self.bucket_s, warmup_s=self.warmup_s)
        deadline = time.monotonic() + self.duration_s + self.warmup_s + timeout_s
        for pipe in self.pipes:
            if not pipe.poll(max(0.1, deadline - time.monotonic())):
                self.stop()
                raise TimeoutError("a client process did not report")
            message = pipe.recv()
            if message[0] == "done":
                result.merge(message[1])
        self.stop()
        return result

    def stop(self) -> None:
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
