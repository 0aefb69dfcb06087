"""Parallel (2 worker processes) vs sequential (inline, batch order) execution throughput.

What is measured: requests per second through `ExecutionEngine.execute(batch, commit=True)`,
driven directly with pre-built batches (no batcher, no client), for
- `read_mix`: a read-heavy mix of real SQL over TPC-W-like tables (item 10k, author 2.5k,
  orders 30k, order_line ~105k rows): best sellers over the 3333 most recent orders for a
  random subject (~3 ms), new products, author search, two aggregates, point reads and an
  order display join (weights in `common.READ_MIX`); batches of 32;
- `kv_*`: point reads and point updates on a 10k-row kv table, 90/10 and 50/50, batches of
  64 and 256.

How: the data is populated once (deterministic seed, then ANALYZE) and copied, per workload,
into two files, one per engine: `ExecutionEngine(a, workers=2)` (process pool, as the mixer
plans) and `ExecutionEngine(b, workers=1)` (inline: one worker in this process, each
parallel batch of the mixer's plan run in turn, in batch order).  Both run the same warm-up
batches, then the same batches in many short rounds (one or a few batches per engine), the
order of parallel / sequential / control alternating round by round, so both engines of a
round see nearly the same machine.  The control (`common.CpuControl`: a pure-Python loop in
2 processes vs 1, ~50 ms) says how many cores were free in that round.  Reported: medians
over rounds of requests/s and their ratio; the median of per-round ratios (robust to drift
on a shared host), also restricted to rounds whose control showed two free cores; for
`read_mix` the best speedup the executor's split of reads between the two workers allows
(per-request costs through evedb's `Worker.run_statement`, each parallel batch as long as its
most loaded worker) and, measured in the same rounds, the plain-apsw ceiling (`ApswCeiling`:
the round's batch on 2 plain apsw processes, best split, vs 1): what the machine itself
gives two processes reading SQLite at once; and the state roots of both engines at the end,
which must be equal.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import dataclass

import apsw

from evedb import storage
from evedb.engine import ExecutionEngine
from evedb.executor import RequestCosts, Worker, split_reads

from . import common


@dataclass(frozen=True)
class Workload:
    name: str
    make_request: object
    batch_size: int
    batches_per_round: int


WORKLOADS = (
    Workload("read_mix", common.read_mix_request, 32, 1),
    Workload("kv_90_10_b64", common.kv_request_maker(0.10), 64, 2),
    Workload("kv_90_10_b256", common.kv_request_maker(0.10), 256, 1),
    Workload("kv_50_50_b64", common.kv_request_maker(0.50), 64, 2),
    Workload("kv_50_50_b256", common.kv_request_maker(0.50), 256, 1),
)
WARM_ROUNDS = 4


def split_limited_speedup(path, batches, engine) -> float:
    """The best 2-worker speedup the executor's split of a batch allows, from per-request costs.

    Each request is timed alone through an in-process evedb `Worker.run_statement` (what a
    worker runs for it, without the share's transaction and transport).  The reads are split
    as the executor splits them: by cost estimates learnt, batch after batch, from those same
    timings (`RequestCosts`); a parallel batch then takes as long as its most loaded worker.
    Median over batches of sum / critical path.  Read-only workloads only.
    """
    worker = Worker(str(path), storage.StorageOptions())
    costs_model = RequestCosts()
    ratios = []
    for batch in batches:
        costs = []
        for request in batch.requests:
            statement = request.statements[0]
            started = time.perf_counter()
            worker.run_statement(statement.sql, statement.params)
            costs.append(time.perf_counter() - started)
        plan, writes = engine.plan(batch)
        critical = sum(_makespan(group, writes, costs, costs_model, batch, 2) for group in plan)
        ratios.append(sum(costs) / critical)
        for request, cost in zip(batch.requests, costs):
            costs_model.observe(request, cost)
    worker.close()
    return common.median(ratios)


def _makespan(group, writes, costs, costs_model, batch, workers: int) -> float:
    """How long a parallel batch of reads takes split as the executor splits it."""
    reads = [p for p in group if not writes[p]]
    shares = split_reads(reads, [costs_model.estimate(batch.requests[p]) for p in reads], [0.0] * workers)
    return max(sum(costs[p] for p in share) for share in shares)


def _apsw_worker(connection, path: str) -> None:
    """Plain apsw, no evedb: run the statements it is sent in one read transaction and answer
    with the wall time and each statement's time."""
    database = apsw.Connection(path)
    database.execute(f"PRAGMA cache_size = -{storage.StorageOptions().cache_mb * 1024}")
    while True:
        statements = connection.recv()
        if statements is None:
            break
        started = time.perf_counter()
        each = []
        database.execute("BEGIN")
        for sql, params in statements:
            statement_started = time.perf_counter()
            database.execute(sql, params).fetchall()
            each.append(time.perf_counter() - statement_started)
        database.execute("ROLLBACK")
        connection.send((time.perf_counter() - started, each))
    database.close()


class ApswCeiling:
    """What this machine allows for a batch of reads, without evedb: 2 plain-apsw processes vs 1.

    Per round: one process runs the whole batch (and times each statement); then two others
    run it split by those very timings (longest first, to the less loaded: the best split,
    known in hindsight), each in one read transaction.  Returns the speedup, wall 1 / wall 2.
    The same memory, caches and cores as the evedb engines of that round, none of evedb's
    work: the hardware's ceiling for evedb's ratio.
    """

    def __init__(self, path, batches):
        context = multiprocessing.get_context("spawn")
        self._batches = iter(batches)
        self._pipes, self._processes = [], []
        for _ in range(3):
            mine, theirs = context.Pipe()
            process = context.Process(target=_apsw_worker, args=(theirs, str(path)), daemon=True)
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)

    def measure(self) -> float:
        statements = [(r.statements[0].sql, tuple(r.statements[0].params or ()))
                      for batch in next(self._batches) for r in batch.requests]
        started = time.perf_counter()
        self._pipes[2].send(statements)
        _, each = self._pipes[2].recv()
        one = time.perf_counter() - started
        shares = split_reads(list(range(len(statements))), each, [0.0, 0.0])
        started = time.perf_counter()
        for pipe, share in zip(self._pipes, shares):
            pipe.send([statements[i] for i in share])
        for pipe in self._pipes[:2]:
            pipe.recv()
        return one / (time.perf_counter() - started)

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.send(None)
        for process in self._processes:
            process.join(timeout=5)


IDLE_CONTROL = 1.8  # a control of 2p/1p >= this: the round had (nearly) two free cores


def measure(workload: Workload, golden, directory, rounds: int, seed: int,
            scale: common.TpcwScale, control: common.CpuControl, *, batches=None,
            engine_options: dict | None = None, observe=None) -> dict:
    """Both engines on the same batches in interleaved rounds, with a CPU control per round.

    `batches` (default: made from `workload.make_request`) must hold (4 + rounds) rounds'
    worth; `engine_options` go to both engines (procedure modules and mixer rules);
    `observe(name, engine)` is called for each engine before it runs anything.
    """
    common.progress(f"{workload.name}: opening engines")
    options = engine_options or {}
    parallel = ExecutionEngine(str(common.copy_database(golden, directory / f"{workload.name}-p.db")),
                               workers=2, **options)
    sequential = ExecutionEngine(str(common.copy_database(golden, directory / f"{workload.name}-s.db")),
                                 workers=1, **options)
    engines = {"parallel": parallel, "sequential": sequential}
    for name, engine in engines.items():
        if observe is not None:
            observe(name, engine)
    try:
        per_round = workload.batches_per_round
        if batches is None:
            batches = common.make_batches(workload.make_request, (WARM_ROUNDS + rounds) * per_round,
                                          workload.batch_size, seed, scale)
        chunks = [batches[i:i + per_round] for i in range(0, len(batches), per_round)]
        for chunk in chunks[:WARM_ROUNDS]:
            for engine in engines.values():
                common.run_batches(engine, chunk)
        requests_per_round = per_round * workload.batch_size
        queues = {name: iter(chunks[WARM_ROUNDS:]) for name in engines}

        def variant(name):
            return lambda: requests_per_round / common.run_batches(engines[name], next(queues[name]))

        variants = {"parallel": variant("parallel"), "sequential": variant("sequential"), "control": control.measure}
        ceiling = None
        if workload.name == "read_mix":
            # The last warm-up batch warms its page caches; then it runs the engines' batches.
            ceiling = ApswCeiling(golden, chunks[WARM_ROUNDS - 1:])
            ceiling.measure()
            variants["apsw_ceiling"] = ceiling.measure
        before = parallel.stats.batches, parallel.stats.parallel_batches
        try:
            results = common.interleave(rounds, variants, label=workload.name, reports=4)
        finally:
            if ceiling is not None:
                ceiling.close()
        mixer_rounds = (parallel.stats.parallel_batches - before[1]) / (parallel.stats.batches - before[0])
        roots = {name: engine.state_root_hex() for name, engine in engines.items()}
        ideal = split_limited_speedup(golden, batches[:64], parallel) if workload.name == "read_mix" else None
    finally:
        for engine in engines.values():
            engine.close()
    parallel_rate, sequential_rate, ratio = common.median_ratio(results["parallel"], results["sequential"])
    idle = [i for i, c in enumerate(results["control"]) if c >= IDLE_CONTROL]
    ceiling_values = results.get("apsw_ceiling")
    return {
        "workload": workload.name,
        "batch_size": workload.batch_size,
        "batches_per_round": per_round,
        "rounds": rounds,
        "requests_per_s": {name: results[name] for name in engines},
        "median_parallel": parallel_rate,
        "median_sequential": sequential_rate,
        "ratio_of_medians": ratio,
        "median_paired_ratio": common.paired_ratio(results["parallel"], results["sequential"]),
        "idle_rounds": len(idle),
        "median_paired_ratio_idle": (common.paired_ratio([results["parallel"][i] for i in idle],
                                                         [results["sequential"][i] for i in idle])
                                     if idle else None),
        "split_limited_speedup": ideal,
        "apsw_ceiling": ceiling_values,
        "median_apsw_ceiling": common.median(ceiling_values) if ceiling_values else None,
        "median_apsw_ceiling_idle": (common.median([ceiling_values[i] for i in idle])
                                     if ceiling_values and idle else None),
        "control": results["control"],
        "median_control": common.median(results["control"]),
        "parallel_batches_per_batch": mixer_rounds,
        "state_roots": roots,
        "roots_equal": roots["parallel"] == roots["sequential"],
    }


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--only", choices=[w.name for w in WORKLOADS], action="append",
                           help="run only this workload (repeatable)")
    arguments.add_argument("--rounds", type=int, help="rounds per workload (default 80, 16 with --quick)")
    arguments = arguments.parse_args(argv)
    rounds = arguments.rounds or (16 if arguments.quick else 80)
    scale = common.TpcwScale()
    results = []
    with common.scratch_directory() as directory:
        golden = directory / "golden.db"
        common.progress("populating TPC-W-like tables and kv ...")
        counts = common.populate_tpcw(golden, arguments.seed, scale)
        common.progress(f"rows: {counts}")
        control = common.CpuControl()
        try:
            for workload in WORKLOADS:
                if arguments.only and workload.name not in arguments.only:
                    continue
                results.append(measure(workload, golden, directory, rounds, arguments.seed, scale, control))
        finally:
            control.close()
    print(common.format_table(
        ("workload", "batch", "parallel req/s", "sequential req/s", "ratio of medians",
         "median paired ratio", f"paired ratio, control >= {IDLE_CONTROL} (rounds)", "split-limited ideal",
         "plain apsw 2p/1p (idle rounds)", "mixer rounds/batch", "control 2p/1p", "state roots"),
        [(r["workload"], r["batch_size"], r["median_parallel"], r["median_sequential"], r["ratio_of_medians"],
          r["median_paired_ratio"],
          "-" if r["median_paired_ratio_idle"] is None else f"{r['median_paired_ratio_idle']:.2f} ({r['idle_rounds']})",
          "-" if r["split_limited_speedup"] is None else r["split_limited_speedup"],
          "-" if r["median_apsw_ceiling"] is None else
          f"{r['median_apsw_ceiling']:.2f} ({'-' if r['median_apsw_ceiling_idle'] is None else format(r['median_apsw_ceiling_idle'], '.2f')})",
          r["parallel_batches_per_batch"], r["median_control"], "equal" if r["roots_equal"] else "DIFFERENT")
         for r in results],
    ))
    for r in results:
        print(f"{r['workload']}: state root {r['state_roots']['parallel']} (parallel) "
              f"{r['state_roots']['sequential']} (sequential)")
    common.write_json("executor_scaling", {"rows": counts, "results": results})
    return 0 if all(r["roots_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
