"""Cost per request of evedb's request path, next to a plain apsw execute of the same statement.

What is measured, in µs per request, for a point SELECT by primary key, a point UPDATE and a
join with an aggregate over small tables (dept 20 rows, emp 400 rows):
- `apsw`: a plain apsw connection, opened as evedb opens its own (`storage.open_connection`:
  WAL, synchronous=NORMAL, same cache), `execute(sql, params).fetchall()`; statement cache
  hit, each UPDATE its own autocommit transaction.  The baseline of every ratio.
- `plan cached`: the planning part of the path, what the coordinator does before a worker
  runs: `Request.statement(...)`, `Batcher.add` + `Batcher.cut` (a batch of one, as a lone
  embedded client gets), then `ExecutionEngine.plan(batch)` = access analysis of the
  statement against the engine's `Catalog` (shape cache hit: a schema-cookie read, a dict
  lookup, binding the key parameters) + `mix`.  Nothing is executed.
- `plan uncached`: the same with a unique comment appended to the SQL text of every call
  (`... /* <counter> */`), so the shape cache and the catalog's prepare-observation cache
  miss: tokenize, sqlglot parse, EXPLAIN-prepare under the observing authorizer, derive.
- `plan cached b64`: 64 requests added, one cut, one plan; per request.
- `embedded`: the full round trip through `evedb.connect(path, workers=1, autocommit=True)`:
  DB-API `cursor.execute` + `fetchall()` (`rowcount` for the UPDATE): batcher, planning,
  inline execution in a SQLite transaction, Merkle update, token, commit.

How: every side has its own copy of one deterministic database.  Each round runs every
variant for about `--round-ms` of calls (the call count is calibrated once), alternating the
order of variants round by round; medians over rounds, the ratio of medians vs `apsw` and the
median of per-round ratios are reported.
"""

from __future__ import annotations

import itertools
import random
import sys

import evedb
from evedb import storage
from evedb.batcher import Batcher
from evedb.engine import ExecutionEngine
from evedb.messages import Request

from . import common

JOIN_AGGREGATE = (
    "SELECT d.name, COUNT(*), AVG(e.salary) FROM emp e JOIN dept d ON d.id = e.dept_id"
    " WHERE d.region = ? GROUP BY d.name ORDER BY d.name"
)
STATEMENTS = {
    "point_select": (common.KV_SELECT, lambda rng: (rng.randint(1, 10_000),)),
    "point_update": (common.KV_UPDATE, lambda rng: (rng.randint(1, 10_000),)),
    "join_aggregate": (JOIN_AGGREGATE, lambda rng: (rng.choice(common.REGIONS),)),
}
PARAMETER_SETS = 4096
BATCH = 64


def planning_variants(engine: ExecutionEngine, sql: str, params: list) -> dict:
    batcher = Batcher(max_requests=1 << 20)
    unique = itertools.count()
    count = len(params)

    def plan_one(i: int, text: str = sql) -> None:
        batcher.add(Request.statement("bench", i, text, params[i % count]), 0)
        engine.plan(batcher.cut(0))

    def plan_uncached(i: int) -> None:
        plan_one(i, f"{sql} /* {next(unique)} */")

    def plan_batch(i: int) -> None:
        for j in range(BATCH):
            batcher.add(Request.statement("bench", j, sql, params[(i * BATCH + j) % count]), 0)
        engine.plan(batcher.cut(0))

    return {"plan cached": (plan_one, 1), "plan uncached": (plan_uncached, 1), "plan cached b64": (plan_batch, BATCH)}


def execution_variants(apsw_connection, db_connection, sql: str, params: list, query: bool) -> dict:
    count = len(params)
    cursor = db_connection.cursor()

    def plain(i: int) -> None:
        apsw_connection.execute(sql, params[i % count]).fetchall()

    def embedded(i: int) -> None:
        cursor.execute(sql, params[i % count])
        cursor.fetchall() if query else cursor.rowcount

    return {"apsw": (plain, 1), "embedded": (embedded, 1)}


def measure(name: str, paths: dict, rounds: int, round_seconds: float, seed: int) -> dict:
    sql, make_params = STATEMENTS[name]
    rng = random.Random(seed)
    params = [make_params(rng) for _ in range(PARAMETER_SETS)]
    engine = ExecutionEngine(str(paths["plan"]), workers=1)
    apsw_connection = storage.open_connection(str(paths["apsw"]))
    db_connection = evedb.connect(str(paths["embedded"]), workers=1, autocommit=True)
    try:
        variants = execution_variants(apsw_connection, db_connection, sql, params, name != "point_update")
        variants |= planning_variants(engine, sql, params)
        timed = {}
        for label, (function, per_call) in variants.items():
            calls = common.calls_for(function, round_seconds)
            timed[label] = (lambda f=function, n=calls, k=per_call: common.per_call_us(f, n) / k)
        results = common.interleave(rounds, timed, label=name, reports=3)
    finally:
        db_connection.close()
        apsw_connection.close()
        engine.close()
    baseline = results["apsw"]
    summary = {}
    for label, values in results.items():
        _, _, ratio = common.median_ratio(values, baseline)
        summary[label] = {"us": common.median(values), "ratio_vs_apsw": ratio,
                          "paired_ratio_vs_apsw": common.paired_ratio(values, baseline), "rounds_us": values}
    return summary


def profile_embedded(path, seed: int, name: str, calls: int = 5000) -> str:
    """cProfile's top costs (cumulative) of one statement's embedded round trips, workers=1."""
    sql, make_params = STATEMENTS[name]
    rng = random.Random(seed)
    params = [make_params(rng) for _ in range(calls)]
    connection = evedb.connect(str(path), workers=1, autocommit=True)
    round_trip, _ = execution_variants(None, connection, sql, params, name != "point_update")["embedded"]
    try:
        for i in range(calls):  # warm
            round_trip(i)
        return common.profile_top(lambda: [round_trip(i) for i in range(calls)], limit=25, sort="cumulative")
    finally:
        connection.close()


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--round-ms", type=float, default=None, help="time per variant per round")
    arguments.add_argument("--profile", action="store_true", help="also profile embedded point SELECT and UPDATE")
    arguments = arguments.parse_args(argv)
    rounds = 5 if arguments.quick else 15
    round_seconds = (arguments.round_ms or (40 if arguments.quick else 100)) / 1000
    results = {}
    controls = common.control_readings()
    with common.scratch_directory() as directory:
        golden = directory / "golden.db"
        common.populate_small(golden, arguments.seed)
        for name in STATEMENTS:
            paths = {side: common.copy_database(golden, directory / f"{name}-{side}.db")
                     for side in ("plan", "apsw", "embedded")}
            common.progress(f"{name}: measuring")
            results[name] = measure(name, paths, rounds, round_seconds, arguments.seed)
        profiles = {}
        if arguments.profile:
            for name in ("point_select", "point_update"):
                path = common.copy_database(golden, directory / f"profile-{name}.db")
                profiles[name] = profile_embedded(path, arguments.seed, name)
    columns = ("apsw", "plan cached", "plan uncached", "plan cached b64", "embedded")
    print("µs per request (median over rounds); in brackets: ratio of medians vs plain apsw")
    print(common.format_table(
        ("statement",) + columns,
        [(name,) + tuple(f"{r[c]['us']:.1f} ({r[c]['ratio_vs_apsw']:.1f}x)" for c in columns)
         for name, r in results.items()],
    ))
    for name, profile in profiles.items():
        print(f"embedded {name}, cProfile top costs:\n{profile}")
    controls += common.control_readings()
    print(common.control_line(controls))
    common.write_json("path_overhead", {"control": controls, "rounds": rounds, "round_seconds": round_seconds,
                                        "results": results, "profiles": profiles})
    return 0


if __name__ == "__main__":
    sys.exit(main())
