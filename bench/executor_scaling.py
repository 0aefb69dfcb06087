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
plans) and `ExecutionEngine(b, workers=1)` (inline, the whole batch in order).  Both run the
same warm-up batches, then the same batches round by round, alternating which goes first;
a round is one chunk of batches on each engine, plus one CPU control measurement (pure-Python
loop in 2 processes vs 1, see `common.CpuControl`) showing how many cores were free.  Reported:
medians over rounds of requests/s, the ratio parallel/sequential, and the state roots of both
engines at the end, which must be equal.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from evedb.engine import ExecutionEngine

from . import common


@dataclass(frozen=True)
class Workload:
    name: str
    make_request: object
    batch_size: int
    batches_per_round: int


def workloads(quick: bool) -> list[Workload]:
    factor = 1 if quick else 2
    return [
        Workload("read_mix", common.read_mix_request, 32, 4 * factor),
        Workload("kv_90_10_b64", common.kv_request_maker(0.10), 64, 10 * factor),
        Workload("kv_90_10_b256", common.kv_request_maker(0.10), 256, 3 * factor),
        Workload("kv_50_50_b64", common.kv_request_maker(0.50), 64, 10 * factor),
        Workload("kv_50_50_b256", common.kv_request_maker(0.50), 256, 3 * factor),
    ]


def measure(workload: Workload, golden, directory, rounds: int, seed: int,
            scale: common.TpcwScale, control: common.CpuControl) -> dict:
    common.progress(f"{workload.name}: opening engines")
    parallel_path = common.copy_database(golden, directory / f"{workload.name}-parallel.db")
    sequential_path = common.copy_database(golden, directory / f"{workload.name}-sequential.db")
    parallel = ExecutionEngine(str(parallel_path), workers=2)
    sequential = ExecutionEngine(str(sequential_path), workers=1)
    try:
        warm = 2
        batches = common.make_batches(
            workload.make_request, (rounds + warm) * workload.batches_per_round,
            workload.batch_size, seed, scale,
        )
        chunks = [batches[i:i + workload.batches_per_round]
                  for i in range(0, len(batches), workload.batches_per_round)]
        for chunk in chunks[:warm]:
            common.run_batches(parallel, chunk)
            common.run_batches(sequential, chunk)
        timed = chunks[warm:]
        requests_per_round = workload.batches_per_round * workload.batch_size
        engine_rounds = {"parallel": iter(timed), "sequential": iter(timed)}
        engines = {"parallel": parallel, "sequential": sequential}

        def variant(name):
            return lambda: requests_per_round / common.run_batches(engines[name], next(engine_rounds[name]))

        before = parallel.stats.batches, parallel.stats.parallel_batches
        results = common.interleave(rounds, {
            "parallel": variant("parallel"),
            "sequential": variant("sequential"),
            "control": control.measure,
        }, label=workload.name)
        mixer_rounds = (parallel.stats.parallel_batches - before[1]) / (parallel.stats.batches - before[0])
        parallel_rate, sequential_rate, ratio = common.median_ratio(results["parallel"], results["sequential"])
        roots = {"parallel": parallel.state_root_hex(), "sequential": sequential.state_root_hex()}
        return {
            "workload": workload.name,
            "batch_size": workload.batch_size,
            "batches_per_round": workload.batches_per_round,
            "rounds": rounds,
            "requests_per_s": {k: results[k] for k in ("parallel", "sequential")},
            "median_parallel": parallel_rate,
            "median_sequential": sequential_rate,
            "ratio": ratio,
            "control": results["control"],
            "median_control": common.median(results["control"]),
            "parallel_batches_per_batch": mixer_rounds,
            "state_roots": roots,
            "roots_equal": roots["parallel"] == roots["sequential"],
        }
    finally:
        parallel.close()
        sequential.close()


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    rounds = 5 if arguments.quick else 9
    scale = common.TpcwScale()
    results = []
    with common.scratch_directory() as directory:
        golden = directory / "golden.db"
        common.progress("populating TPC-W-like tables and kv ...")
        counts = common.populate_tpcw(golden, arguments.seed, scale)
        common.progress(f"rows: {counts}")
        control = common.CpuControl()
        try:
            for workload in workloads(arguments.quick):
                results.append(measure(workload, golden, directory, rounds, arguments.seed, scale, control))
        finally:
            control.close()
    rows = [
        (r["workload"], r["batch_size"], r["median_parallel"], r["median_sequential"], r["ratio"],
         r["parallel_batches_per_batch"], r["median_control"], "equal" if r["roots_equal"] else "DIFFERENT")
        for r in results
    ]
    print(common.format_table(
        ("workload", "batch", "parallel req/s", "sequential req/s", "ratio", "mixer rounds/batch",
         "control 2p/1p", "state roots"),
        rows,
    ))
    for r in results:
        print(f"{r['workload']}: state root {r['state_roots']['parallel']} (parallel) "
              f"{r['state_roots']['sequential']} (sequential)")
    common.write_json("executor_scaling", {"rows": counts, "results": results})
    return 0 if all(r["roots_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
