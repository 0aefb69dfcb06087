"""Full Merkle build time: `ExecutionEngine.full_build()` over a whole table.

What is measured: wall time of `full_build()` (read every row of every user table, hash it,
add it to its page, then compute the state root once: `tree.root()`) on
- `customer`: 100k rows of a TPC-W-like customer table (9 columns, ~110 bytes a row);
- `narrow`: 1M rows of (id INTEGER PRIMARY KEY, value INTEGER) (200k with --quick).
Each database holds only that table.  The two builds alternate for several rounds; reported
are medians in ms per 100k rows and µs per row.  `--profile` adds the top cProfile entries
of one customer build.
"""

from __future__ import annotations

import sys
import time

from evedb.engine import ExecutionEngine

from . import common


def build_seconds(engine: ExecutionEngine) -> float:
    started = time.perf_counter()
    engine.full_build()
    engine.state_root()
    return time.perf_counter() - started


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--profile", action="store_true", help="print cProfile's top costs of one build")
    arguments = arguments.parse_args(argv)
    sizes = {"customer": 100_000, "narrow": 200_000 if arguments.quick else 1_000_000}
    rounds = 3 if arguments.quick else 7
    engines = {}
    controls = common.control_readings()
    with common.scratch_directory() as directory:
        common.progress("populating ...")
        common.populate_customer(directory / "customer.db", sizes["customer"], arguments.seed)
        common.populate_narrow(directory / "narrow.db", sizes["narrow"], arguments.seed)
        try:
            for name in sizes:
                engines[name] = ExecutionEngine(str(directory / f"{name}.db"), workers=1)
            results = common.interleave(
                rounds, {name: (lambda e=engine: build_seconds(e)) for name, engine in engines.items()},
                label="full_build", reports=rounds)
            profile = common.profile_top(engines["customer"].full_build) if arguments.profile else None
        finally:
            for engine in engines.values():
                engine.close()
    summary = {}
    for name, seconds in results.items():
        rows = sizes[name]
        median = common.median(seconds)
        summary[name] = {"rows": rows, "seconds": seconds, "median_s": median,
                         "ms_per_100k_rows": median / rows * 100_000 * 1e3, "us_per_row": median / rows * 1e6}
    print(common.format_table(
        ("table", "rows", "median build s", "ms per 100k rows", "µs/row", "min s", "max s"),
        [(name, f"{s['rows']:,}", s["median_s"], s["ms_per_100k_rows"], s["us_per_row"],
          min(s["seconds"]), max(s["seconds"])) for name, s in summary.items()],
    ))
    if profile:
        print(profile)
    controls += common.control_readings()
    print(common.control_line(controls))
    common.write_json("merkle_build", {"control": controls, "rounds": rounds, "results": summary, "profile": profile})
    return 0


if __name__ == "__main__":
    sys.exit(main())
