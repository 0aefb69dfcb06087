"""One node's executor scaling on a TPC-W mix: parallel (2 worker processes) vs sequential.

What is measured: interactions' procedure calls per second through
`ExecutionEngine.execute(batch, commit=True)` with `workers=2` and with `workers=1`, on
identical copies of a populated TPC-W database (tpcw/populate.py), driven directly with
pre-built batches: no clients, no sockets, no driver competing for the 2 cores.  It isolates
the executor, which the end-to-end `evedb bench tpcw` cannot on this machine (there the
driver alone takes about one core).

The batches: `--browsers` emulated browsers (tpcw/driver.py, the real navigation graph and
inputs) run in threads against a batching connection; each batch holds one procedure call
from every browser (a server with that many concurrent clients batches about so), executed
on a recording engine (`workers=1`) whose replies go back to the browsers, so carts, lists
and customers evolve as in a real run.  Those same batches, with the same seq, timestamp and
seed, are then replayed on both measured engines from the same initial file: execution is
deterministic, so both see exactly what the recorder saw (same ids, same results), and must
end at the same state root as the recorder.

Rounds alternate parallel / sequential / CPU control (`common.interleave`), as in
`bench.executor_scaling`; reported: medians of calls/s, their ratio, the median per-round
ratio, also over rounds whose control showed two free cores, and the mixer's parallel batches
per batch; and per procedure, the median time of one call where it ran: in the sequential
engine's one process, in a worker process of the parallel engine, or in its coordinator
(cheap reads and writes), which shows what running side by side costs each call.  Also the
granularity ceiling: the speedup two workers would reach if every batch's calls, at the
sequential engine's measured times, were dealt out ideally at no cost (a call is never split).

`--batches-per-round N` runs N consecutive batches per measured round, as a loaded node runs
them; with one batch per round (the default) each round also pays the pool worker's wake-up
and cold caches after the other engine's round and the control (bench/RESULTS.md, "TPC-W").

Run: `python -m bench.tpcw_scaling [--mix browsing] [--items 10000 --ebs 10] [--rounds 60]
[--batches-per-round 10]`.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import defaultdict

from evedb.engine import ExecutionEngine
from evedb.messages import Batch, Request
from mixer_rules import load_rules
from tpcw import navigation
from tpcw.driver import EmulatedBrowser
from tpcw.populate import populate

from . import common
from .executor_scaling import IDLE_CONTROL, WARM_ROUNDS, Workload, measure

PROCEDURES = ("tpcw.procedures",)


class _RecordingStopped(Exception):
    pass


class _Call:
    def __init__(self, procedure: str, args: tuple):
        self.procedure = procedure
        self.args = args
        self.done = threading.Event()
        self.reply = None


class _BatchingCursor:
    """The DB-API surface EmulatedBrowser uses: callproc, fetchall, description."""

    def __init__(self, outbox: queue.Queue):
        self._outbox = outbox
        self.description = None
        self._rows: list = []

    def callproc(self, procedure: str, args=()):
        call = _Call(procedure, tuple(args))
        self._outbox.put(call)
        call.done.wait()
        reply = call.reply
        if reply is None:
            raise _RecordingStopped()
        if reply.error is not None:
            raise RuntimeError(f"{procedure}: {reply.error.message}")
        result = reply.results[0] if reply.results else None
        self.description = tuple(result.columns) if result is not None and result.columns else None
        self._rows = list(result.rows) if result is not None else []
        return args

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows


class _BatchingConnection:
    def __init__(self, outbox: queue.Queue):
        self._outbox = outbox

    def cursor(self):
        return _BatchingCursor(self._outbox)


def record_batches(path, *, mix: str, browsers: int, count: int, items: int, ebs: int,
                   seed: int) -> tuple[list[Batch], str]:
    """`count` batches of one call per browser, executed (and committed) on `path` as recorded;
    returns them and the recorder's final state root."""
    recorder = ExecutionEngine(str(path), workers=1, procedure_modules=PROCEDURES, rules=load_rules("tpcw"))
    inboxes = [queue.Queue() for _ in range(browsers)]
    stop = threading.Event()

    def browse(number: int) -> None:
        browser = EmulatedBrowser(_BatchingConnection(inboxes[number]), mix, items, ebs, number, seed)
        while not stop.is_set():
            try:
                browser.step()
            except _RecordingStopped:
                return
            except Exception:  # a failed interaction (its error is its reply) goes on
                pass

    threads = [threading.Thread(target=browse, args=(n,), daemon=True) for n in range(browsers)]
    for thread in threads:
        thread.start()
    batches, request_ids, failed = [], [0] * browsers, 0
    try:
        for n in range(count):
            calls = [inbox.get() for inbox in inboxes]
            requests = []
            for number, call in enumerate(calls):
                request_ids[number] += 1
                requests.append(Request.call(f"eb-{number}", request_ids[number], call.procedure, call.args))
            seq = recorder.committed_seq + 1
            batch = Batch(seq, 0, 1_700_000_000_000 + 1000 * seq, seq * 7919, tuple(requests))
            outcome = recorder.execute(batch, commit=True)
            for call, reply in zip(calls, outcome.replies):
                failed += reply.error is not None
                call.reply = reply
                call.done.set()
            batches.append(batch)
            if (n + 1) % max(1, count // 4) == 0:
                common.progress(f"  recorded {n + 1}/{count} batches")
        root = recorder.state_root_hex()
    finally:
        stop.set()
        for inbox in inboxes:  # release browsers blocked on a call that will not run
            while not inbox.empty():
                inbox.get().done.set()  # reply None: the browser stops
        recorder.close()
    if failed:
        common.progress(f"  {failed} recorded call(s) failed (their error is their reply, in both engines too)")
    return batches, root


def _noted(items, positions: set):
    for position, request in items:
        positions.add(position)
        yield position, request


class CallTimes:
    """Per procedure, the time of each call where it ran, from the engines' executors."""

    def __init__(self):
        self.seconds: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        # Per batch (seq), the sequential engine's time of each of its calls.
        self.sequential_batches: dict[int, list[float]] = defaultdict(list)

    def observe(self, name: str, engine: ExecutionEngine) -> None:
        executor = engine._executor
        run = executor.run
        local = getattr(executor, "local_writer", None)
        local_positions: set[int] = set()
        if local is not None:
            local_run_share = local.run_share

            def run_share_here(seq, timestamp_ms, seed, items, *args, **kwargs):
                if isinstance(items, list):
                    local_positions.update(position for position, _ in items)
                else:  # reads taken one at a time from a shared list: note them as they come
                    items = _noted(items, local_positions)
                return local_run_share(seq, timestamp_ms, seed, items, *args, **kwargs)

            local.run_share = run_share_here

        def timed_run(batch, plan, writes, final=False, **options):
            local_positions.clear()
            result = run(batch, plan, writes, final, **options)
            if name == "sequential":
                self.sequential_batches[batch.seq].extend(result.request_seconds.values())
            for position, seconds in result.request_seconds.items():
                where = name if name == "sequential" else ("coordinator" if position in local_positions else "worker")
                self.seconds[batch.requests[position].procedure][where].append(seconds)
            return result

        executor.run = timed_run

    def granularity_ceiling(self, workers: int = 2) -> float | None:
        """The speedup `workers` workers could reach if each batch's calls, at the sequential
        engine's measured times, were dealt longest first with no conflicts, no barrier and no
        cost of their own: total time over the sum of per-batch makespans.  One call cannot be
        split, so a batch holding one long best-sellers call bounds what two workers gain."""
        total = makespans = 0.0
        for seconds in self.sequential_batches.values():
            loads = [0.0] * workers
            for value in sorted(seconds, reverse=True):
                loads[loads.index(min(loads))] += value
            total += sum(seconds)
            makespans += max(loads)
        return total / makespans if makespans else None

    def table(self) -> list[dict]:
        rows = []
        for procedure, places in self.seconds.items():
            row = {"procedure": procedure, "calls": len(places.get("sequential", []))}
            for where in ("sequential", "worker", "coordinator"):
                values = places.get(where, [])
                row[f"{where}_us"] = common.median(values) * 1e6 if values else None
                row[f"{where}_calls"] = len(values)
            row["total_sequential_s"] = sum(places.get("sequential", []))
            rows.append(row)
        rows.sort(key=lambda row: -row["total_sequential_s"])
        return rows


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--mix", default="browsing", choices=sorted(navigation.MIXES))
    arguments.add_argument("--items", type=int, default=10_000)
    arguments.add_argument("--ebs", type=int, default=10)
    arguments.add_argument("--browsers", type=int, default=32, help="calls per batch (default 32)")
    arguments.add_argument("--rounds", type=int, help="measured rounds (default 60, 12 with --quick)")
    arguments.add_argument("--batches-per-round", type=int, default=1,
                           help="consecutive batches per measured round (default 1)")
    arguments = arguments.parse_args(argv)
    rounds = arguments.rounds or (12 if arguments.quick else 60)
    per_round = arguments.batches_per_round
    workload = Workload(f"tpcw_{arguments.mix}", None, arguments.browsers, per_round)
    options = {"procedure_modules": PROCEDURES, "rules": load_rules("tpcw")}
    with common.scratch_directory() as directory:
        golden = directory / "tpcw.db"
        common.progress(f"populating TPC-W: {arguments.items} items, {arguments.ebs} EBs ...")
        report = populate(str(golden), arguments.items, arguments.ebs, seed=arguments.seed)
        common.progress(f"rows: {report.total_rows:,} ({report.rows_per_second:,.0f} rows/s)")
        count = (WARM_ROUNDS + rounds) * per_round
        common.progress(f"recording {count} batches of {arguments.browsers} calls ({arguments.mix} mix) ...")
        batches, recorded_root = record_batches(
            common.copy_database(golden, directory / "recorder.db"), mix=arguments.mix,
            browsers=arguments.browsers, count=count, items=arguments.items, ebs=arguments.ebs,
            seed=arguments.seed)
        control = common.CpuControl()
        call_times = CallTimes()
        try:
            result = measure(workload, golden, directory, rounds, arguments.seed, common.TpcwScale(), control,
                             batches=batches, engine_options=options, observe=call_times.observe)
        finally:
            control.close()
    result["per_procedure"] = call_times.table()
    result["granularity_ceiling"] = call_times.granularity_ceiling()
    result["recorded_root"] = recorded_root
    result["roots_equal"] = result["roots_equal"] and result["state_roots"]["parallel"] == recorded_root
    result["mix"] = arguments.mix
    result["items"], result["ebs"] = arguments.items, arguments.ebs
    print(common.format_table(
        ("workload", "calls/batch", "parallel calls/s", "sequential calls/s", "ratio of medians",
         "median paired ratio", f"paired ratio, control >= {IDLE_CONTROL} (rounds)", "mixer rounds/batch",
         "control 2p/1p", "ceiling: calls dealt ideally", "state roots (both engines and the recorder)"),
        [(result["workload"], result["batch_size"], result["median_parallel"], result["median_sequential"],
          result["ratio_of_medians"], result["median_paired_ratio"],
          "-" if result["median_paired_ratio_idle"] is None
          else f"{result['median_paired_ratio_idle']:.2f} ({result['idle_rounds']})",
          result["parallel_batches_per_batch"], result["median_control"],
          "-" if result["granularity_ceiling"] is None else f"{result['granularity_ceiling']:.2f}",
          "equal" if result["roots_equal"] else "DIFFERENT")],
    ))
    total = sum(row["total_sequential_s"] for row in result["per_procedure"]) or 1.0
    print(common.format_table(
        ("procedure", "calls", "share of sequential time", "µs/call sequential", "µs/call in a worker",
         "µs/call in the coordinator", "worker / sequential"),
        [(row["procedure"], row["calls"], f"{row['total_sequential_s'] / total:.1%}",
          row["sequential_us"], row["worker_us"] if row["worker_us"] is not None else "-",
          row["coordinator_us"] if row["coordinator_us"] is not None else "-",
          f"{row['worker_us'] / row['sequential_us']:.2f}" if row["worker_us"] and row["sequential_us"] else "-")
         for row in result["per_procedure"]],
    ))
    common.write_json(f"tpcw_scaling_{arguments.mix}", result)
    return 0 if result["roots_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
