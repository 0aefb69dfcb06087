"""Where a parallel batch's write share runs: in the coordinator's process (the default) or
in worker process 0, side by side on one replica's engine.

    python -m bench.local_writes [--rounds 6] [--batches 300] [--batch-size 3]

Two `ExecutionEngine(workers=2)` on two copies of a 10,000-row kv table, one with
`local_writes=True`, one with `local_writes=False`; each round runs `--batches` batches of
`--batch-size` point UPDATEs on random keys (execute + commit) on one engine, then on the
other, alternating, so machine noise falls on both.  Prints the median µs per request of each
and their ratio, and writes JSON to bench/out/local_writes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

from evedb import storage
from evedb.engine import ExecutionEngine
from evedb.messages import Batch, Request

UPDATE = "UPDATE kv SET v = ? WHERE k = ?"
ROWS = 10_000


def _database(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    connection = storage.open_connection(path)
    connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    with connection:
        connection.executemany("INSERT INTO kv VALUES (?, ?)", [(k, "x" * 100) for k in range(ROWS)])
    connection.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=3)
    arguments = parser.parse_args()
    generator = random.Random(1)
    timings: dict[str, list[float]] = {"in process": [], "worker 0": []}
    with tempfile.TemporaryDirectory(prefix="evedb-local-writes-") as directory:
        engines = {
            "in process": ExecutionEngine(_database(directory, "local.db"), workers=2, local_writes=True),
            "worker 0": ExecutionEngine(_database(directory, "pool.db"), workers=2, local_writes=False),
        }
        try:
            for round_number in range(arguments.rounds):
                order = list(engines) if round_number % 2 == 0 else list(reversed(engines))
                for name in order:
                    engine = engines[name]
                    started = time.perf_counter()
                    for _ in range(arguments.batches):
                        seq = engine.committed_seq + 1
                        requests = tuple(
                            Request.statement(f"c{i}", seq, UPDATE, (f"v{seq}", generator.randrange(ROWS)))
                            for i in range(arguments.batch_size))
                        engine.execute(Batch(seq, 0, 1_700_000_000_000, seq, requests))
                        engine.commit(seq)
                    elapsed = time.perf_counter() - started
                    timings[name].append(elapsed / (arguments.batches * arguments.batch_size) * 1e6)
                    print(f"round {round_number + 1}/{arguments.rounds} {name:10s} {timings[name][-1]:7.1f} µs/request",
                          flush=True)
            roots_match_rebuild = all(_root_matches_rebuild(engine) for engine in engines.values())
        finally:
            for engine in engines.values():
                engine.close()
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["worker 0"] / medians["in process"]
    print(f"median µs/request: in process {medians['in process']:.1f}, worker 0 {medians['worker 0']:.1f}; "
          f"worker 0 / in process {ratio:.2f}; roots equal a full rebuild: {roots_match_rebuild}")
    os.makedirs("bench/out", exist_ok=True)
    with open("bench/out/local_writes.json", "w", encoding="utf-8") as handle:
        json.dump({"settings": vars(arguments), "cpus": os.cpu_count(), "us_per_request": timings,
                   "medians": medians, "ratio_worker0_over_in_process": ratio,
                   "roots_match_rebuild": roots_match_rebuild}, handle, indent=2)


def _root_matches_rebuild(engine: ExecutionEngine) -> bool:
    root = engine.state_root()
    engine.full_build()
    return engine.state_root() == root


if __name__ == "__main__":
    main()
