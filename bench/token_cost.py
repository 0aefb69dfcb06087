"""Cost of the token per batch, as a share of batch execution time.

The engine accumulates `stats.execute_seconds` (the executor's run: everything the workers
did, their row hashing included) and `stats.token_seconds` (worker-side hashing of the
changed rows + the coordinator's Merkle tree update, state root and reply hash).  Reported
per workload: token_seconds / execute_seconds (median over rounds of the per-round shares;
goal <= 10%), the parts of the token (worker hashing vs coordinator tree/root/replies), and
µs per changed row of worker hashing (changed rows counted from the batch changesets: an
UPDATE is one changed row, whose changed cells are hashed twice, old and new).

Workloads, on the TPC-W-like data of `common.populate_tpcw`:
- `write_b64`, `write_b256`: write-heavy batches of 64 and 256 requests: 30% kv point UPDATE,
  20% item point UPDATE (11-column rows), 15% orders status UPDATE, 20% INSERT of a new
  order, 15% DELETE of one existing order line; every write keyed, so few parallel batches;
- `write_lines_b256`: the same, but a new order is a script that also inserts 2 order
  lines, a table-level write (see `WriteMix`): many parallel batches, i.e. many SQLite
  transactions per batch;
- `read_mix_b32`: the read-heavy mix of `executor_scaling` (the token is only tree root and
  reply hash there).

Both engines (`workers=2` process pool and `workers=1` inline) run the same batches on
identical copies, in alternating short rounds; their state roots must match at the end.
Worker hashing time per batch is read from the executor's result (`PlanResult.hash_seconds`)
by wrapping the engine's executors' `run`.
"""

from __future__ import annotations

import sys

import apsw

from evedb.engine import ExecutionEngine
from evedb.messages import Request, Statement

from . import common

WARM_ROUNDS = 3


class WriteMix:
    """Deterministic write requests; inserts take fresh order ids, deletes walk old orders.

    with_lines: a new order also inserts 2 order lines.  Access analysis makes such an
    INSERT table-level (order_line's key is not a rowid alias), so each new order is a
    barrier for every other order_line write and a batch splits into many parallel batches
    (SQLite transactions).  Without lines every write is keyed and a batch mixes into few.
    """

    def __init__(self, scale: common.TpcwScale, with_lines: bool):
        self.with_lines = with_lines
        self.next_order = scale.orders + 1
        self.next_delete = 1

    def __call__(self, rng, scale: common.TpcwScale, request_id: int) -> Request:
        draw = rng.random()
        if draw < 0.30:
            return Request.statement("bench", request_id, common.KV_UPDATE, (rng.randint(1, scale.kv),))
        if draw < 0.50:
            return Request.statement("bench", request_id,
                                     "UPDATE item SET i_stock = i_stock - 1, i_cost = i_cost * 1.01 WHERE i_id = ?",
                                     (rng.randint(1, scale.items),))
        if draw < 0.65:
            return Request.statement("bench", request_id, "UPDATE orders SET o_status = ? WHERE o_id = ?",
                                     (rng.choice(common.STATUSES), rng.randint(1, scale.orders)))
        if draw < 0.85:
            return self._new_order(rng, scale, request_id)
        order, self.next_delete = self.next_delete, self.next_delete + 1
        return Request.statement("bench", request_id, "DELETE FROM order_line WHERE ol_o_id = ? AND ol_id = 1",
                                 (order,))

    def _new_order(self, rng, scale, request_id) -> Request:
        order, self.next_order = self.next_order, self.next_order + 1
        total = round(rng.uniform(10, 500), 2)
        statements = [Statement("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (order, rng.randint(1, 28_800), "2003-06-01", total, 0.0, total, "AIR", None,
                                 "PENDING"))]
        for line in (1, 2) if self.with_lines else ():
            statements.append(Statement("INSERT INTO order_line VALUES (?, ?, ?, ?, ?, ?)",
                                        (order, line, rng.randint(1, scale.items), rng.randint(1, 5), 0.0, "new")))
        return Request.script("bench", request_id, statements)


WORKLOADS = {
    # name: (request maker factory, batch size, batches per round)
    "write_b64": (lambda scale: WriteMix(scale, with_lines=False), 64, 4),
    "write_b256": (lambda scale: WriteMix(scale, with_lines=False), 256, 1),
    "write_lines_b256": (lambda scale: WriteMix(scale, with_lines=True), 256, 1),
    "read_mix_b32": (lambda scale: common.read_mix_request, 32, 2),
}


class HashRecorder:
    """Wraps an executor's `run` to add up the worker hashing time of every batch."""

    def __init__(self, executor):
        self.seconds = 0.0
        run = executor.run

        def recorded(*args, **kwargs):
            result = run(*args, **kwargs)
            self.seconds += result.hash_seconds
            return result

        executor.run = recorded


def changed_rows(changesets) -> int:
    return sum(1 for changeset in changesets for _ in apsw.Changeset.iter(changeset))


class Side:
    """One engine with its counters, run round by round."""

    def __init__(self, path: str, workers: int):
        self.engine = ExecutionEngine(path, workers=workers)
        self.hashing = HashRecorder(self.engine._executor)
        self.rounds: list[dict] = []

    def run(self, batches, record: bool = True) -> float:
        stats = self.engine.stats
        before = (stats.execute_seconds, stats.token_seconds, self.hashing.seconds)
        rows = 0
        for batch in batches:
            outcome = self.engine.execute(batch, commit=True)
            common.check_replies(outcome.replies)
            rows += changed_rows(outcome.changesets)
        execute, token, hashing = (stats.execute_seconds - before[0], stats.token_seconds - before[1],
                                   self.hashing.seconds - before[2])
        if record:
            self.rounds.append({"execute_s": execute, "token_s": token, "hash_s": hashing, "changed_rows": rows})
        return token / execute

    def summary(self, batches: int) -> dict:
        totals = {key: sum(r[key] for r in self.rounds) for key in ("execute_s", "token_s", "hash_s", "changed_rows")}
        rows = totals["changed_rows"]
        return {
            "execute_ms_per_batch": totals["execute_s"] / batches * 1e3,
            "token_ms_per_batch": totals["token_s"] / batches * 1e3,
            "median_token_share": common.median([r["token_s"] / r["execute_s"] for r in self.rounds]),
            "total_token_share": totals["token_s"] / totals["execute_s"],
            "worker_hash_share": totals["hash_s"] / totals["execute_s"],
            "coordinator_share": (totals["token_s"] - totals["hash_s"]) / totals["execute_s"],
            "hash_us_per_changed_row": totals["hash_s"] / rows * 1e6 if rows else None,
            "changed_rows": rows,
            "mixer_rounds_per_batch": self.engine.stats.parallel_batches / self.engine.stats.batches,
            "totals": totals,
            "rounds": self.rounds,
            "state_root": self.engine.state_root_hex(),
        }

    def close(self) -> None:
        self.engine.close()


def measure(name: str, golden, directory, rounds: int, seed: int, scale: common.TpcwScale) -> dict:
    factory, size, per_round = WORKLOADS[name]
    batches = common.make_batches(factory(scale), (WARM_ROUNDS + rounds) * per_round, size, seed, scale)
    chunks = [batches[i:i + per_round] for i in range(0, len(batches), per_round)]
    sides = {f"workers={w}": Side(str(common.copy_database(golden, directory / f"{name}-{w}.db")), w) for w in (2, 1)}
    try:
        for chunk in chunks[:WARM_ROUNDS]:
            for side in sides.values():
                side.run(chunk, record=False)
        queues = {label: iter(chunks[WARM_ROUNDS:]) for label in sides}
        common.interleave(rounds, {label: (lambda l=label: sides[l].run(next(queues[l]))) for label in sides},
                          label=name, reports=3)
        summaries = {label: side.summary(rounds * per_round) for label, side in sides.items()}
    finally:
        for side in sides.values():
            side.close()
    roots = {summary["state_root"] for summary in summaries.values()}
    return {"batch_size": size, "batches_per_round": per_round, "rounds": rounds, "sides": summaries,
            "roots_equal": len(roots) == 1}


def profile_inline(golden, directory, seed: int, scale: common.TpcwScale, batches: int = 12) -> str:
    """cProfile's top costs of write_b256 batches on an inline engine (workers=1)."""
    factory, size, _ = WORKLOADS["write_b256"]
    work = common.make_batches(factory(scale), batches + 2, size, seed, scale)
    engine = ExecutionEngine(str(common.copy_database(golden, directory / "profile.db")), workers=1)
    try:
        common.run_batches(engine, work[:2])
        return common.profile_top(lambda: common.run_batches(engine, work[2:]), limit=25)
    finally:
        engine.close()


def _percent(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


COLUMNS = ("workload", "engine", "execute ms/batch", "token ms/batch", "token share (median)",
           "token share (total)", "worker hashing", "coordinator tree+root+replies", "hash µs/changed row",
           "changed rows", "mixer rounds/batch", "<= 10%", "state roots")


def table_row(name: str, label: str, s: dict, roots_equal: bool) -> tuple:
    per_row = s["hash_us_per_changed_row"]
    return (name, label, s["execute_ms_per_batch"], s["token_ms_per_batch"],
            _percent(s["median_token_share"]), _percent(s["total_token_share"]),
            _percent(s["worker_hash_share"]), _percent(s["coordinator_share"]),
            "-" if per_row is None else f"{per_row:.1f}", s["changed_rows"], s["mixer_rounds_per_batch"],
            "yes" if s["total_token_share"] <= 0.10 else "NO", "equal" if roots_equal else "DIFFERENT")


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--profile", action="store_true", help="also profile write_b256 on an inline engine")
    arguments = arguments.parse_args(argv)
    rounds = 8 if arguments.quick else 30
    scale = common.TpcwScale()
    results = {}
    controls = common.control_readings()
    with common.scratch_directory() as directory:
        golden = directory / "golden.db"
        common.progress("populating TPC-W-like tables and kv ...")
        common.populate_tpcw(golden, arguments.seed, scale)
        for name in WORKLOADS:
            results[name] = measure(name, golden, directory, rounds, arguments.seed, scale)
        profile = profile_inline(golden, directory, arguments.seed, scale) if arguments.profile else None
    print(common.format_table(COLUMNS, [table_row(name, label, side, result["roots_equal"])
                                         for name, result in results.items()
                                         for label, side in result["sides"].items()]))
    if profile:
        print(profile)
    controls += common.control_readings()
    print(common.control_line(controls))
    common.write_json("token_cost", {"control": controls, "results": results, "profile": profile})
    return 0 if all(r["roots_equal"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
