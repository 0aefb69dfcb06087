"""Concurrency-bug masking, measured as Eve measured it (OSDI 2012, section 6: an H2 bug whose
manifestations Eve caught and corrected 82% of the time).

The bug is made on purpose: the race workload (bench/race_procedures.py, a read-modify-write
whose result depends on order) runs on nodes started with `--parallel-writers` (a parallel
batch's writes are split across worker processes and serialize on SQLite's write lock in a
timing-dependent order) and `--mixer-false-negative-rate P` (the mixer wrongly admits a
conflicting request with probability P, the same wrong plan on every replica).  Every node
also runs `--race-probe`: before each parallel execution it executes the batch in its serial
(execution) order, undoes it, and logs whether the parallel token differed (a *manifestation*).

Modes, each a fresh set of processes on loopback with the same clients and duration:
- `unreplicated`: one node alone.  Manifestations are committed as they are: nobody checks.
- `eve`: the pair, both nodes dispatching writer shares in the same order.
- `eve-reversed`: the same, but the backup dispatches writer shares last-first;
- `eve-diverse`: schedule diversity: the backup dispatches last-first and on both nodes the
  k-th writer share waits k * `--stagger-ms` (0.5) ms before taking the lock (`--writer-stagger-ms`), so the
  lock order mostly follows the dispatch order and the two replicas rarely take the same one.
- `passive`: the primary executes, the backup applies its changesets: it copies whatever the
  primary did, so it can never detect anything (shown for contrast).

Per mode it reports: batches probed and manifestations per node; for the pair, the two nodes'
probe records joined by seq: batches where either node manifested, of those detected (the
tokens differed) and undetected (both took the same non-serial order, equal tokens), the
primary's `divergences` counter, rollbacks, re-executions, state transfers, whether the final
roots are equal; and the client check: every reply a client received equals the committed
history's record of that step, and each counter's committed steps form one chain (a reply
from a rolled-back execution would name values the history lacks).

    python -m bench.race_masking --seconds 20 --rate 0.3 --json bench/results/race_masking.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import evedb
from evedb.client import node_status
from evedb.runtime.launch import Pair, free_port_pair

from bench import race_procedures
from bench.common import machine_note, progress, source_note

RULES = Path(__file__).resolve().parent / "race_rules.toml"
MODES = ("unreplicated", "eve", "eve-reversed", "eve-diverse", "passive")
STAGGER_MS = 0.5
EVE_REPORTED_DETECTION = 0.82


class RaceClient(threading.Thread):
    """One closed-loop client calling race_step on a random counter; keeps every reply."""

    def __init__(self, dsn: str, number: int, counters: int, seed: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.dsn, self.number, self.counters, self.stop = dsn, number, counters, stop
        self.generator = random.Random(seed * 1000 + number)
        self.replies: list[tuple] = []
        self.errors: list[str] = []

    def run(self) -> None:
        connection = evedb.connect(self.dsn, autocommit=True, timeout=30)
        calls = 0
        try:
            while not self.stop.is_set():
                calls += 1
                counter = self.generator.randrange(self.counters)
                addend = self.number * 10_000_000 + calls  # distinct per call: orders always differ
                cursor = connection.cursor()
                try:
                    cursor.callproc("race_step", (counter, addend))
                    self.replies.extend(tuple(row) for row in cursor.fetchall())
                except evedb.Error as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                    if len(self.errors) > 20:
                        return
        finally:
            connection.close()


def _node_args(rate: float, workers: int, pipeline: int) -> tuple[str, ...]:
    return ("--procedures", "bench.race_procedures", "--rules", str(RULES), "--parallel-writers",
            "--mixer-false-negative-rate", str(rate), "--race-probe", "--workers", str(workers),
            "--pipeline", str(pipeline))


def _probe_records(path: str) -> dict[int, dict]:
    """The last probe record of each seq (a seq runs in parallel again only after a rollback
    of an earlier batch; the last run is the one whose token was compared)."""
    records: dict[int, dict] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                records[record["seq"]] = record
    return records


def _join_probes(primary: dict[int, dict], backup: dict[int, dict]) -> dict:
    common = sorted(set(primary) & set(backup))
    # Only runs from the same state were compared by the pair (with a pipeline, a batch after
    # a divergence runs on diverged states and is re-executed before any comparison).
    both = [seq for seq in common if primary[seq]["root_before"] == backup[seq]["root_before"]]
    manifested = detected = undetected = detected_without_manifestation = 0
    for seq in both:
        p, b = primary[seq], backup[seq]
        tokens_differ = p["parallel_token"] != b["parallel_token"]
        either = p["manifested"] or b["manifested"]
        manifested += either
        if tokens_differ:
            detected += 1
            detected_without_manifestation += not either
        elif either:
            undetected += 1  # both nodes took the same non-serial order: nothing to compare
    return {
        "batches_probed_on_both": len(both),
        "batches_probed_from_different_states": len(common) - len(both),
        "manifested_on_either": manifested,
        "manifested_on_primary": sum(primary[s]["manifested"] for s in both),
        "manifested_on_backup": sum(backup[s]["manifested"] for s in both),
        "detected_by_token_mismatch": detected,
        "undetected_same_wrong_order": undetected,
        "detected_without_manifestation": detected_without_manifestation,
        "detection_rate": round(detected / manifested, 4) if manifested else None,
    }


def _settled_statuses(pair: Pair, names: list[str], timeout: float = 30.0) -> dict[str, dict]:
    """Statuses once every node has committed the same seq (the backup commits a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {name: node_status(pair.address(name), timeout=5) for name in names}
        seqs = {status["committed_seq"] for status in statuses.values()}
        roots = {status["state_root"] for status in statuses.values()}
        if (len(seqs) == 1 and len(roots) == 1) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def run_mode(mode: str, *, rate: float, seconds: float, clients: int, counters: int, workers: int,
             seed: int, work_dir: str, pipeline: int = 1, stagger_ms: float = STAGGER_MS) -> dict:
    standalone = mode == "unreplicated"
    data_dir = os.path.join(work_dir, mode)
    pair = Pair(data_dir, free_port_pair(), standalone=standalone,
                replication="passive" if mode == "passive" else None,
                extra_args=_node_args(rate, workers, pipeline)
                + (("--writer-stagger-ms", str(stagger_ms)) if mode == "eve-diverse" else ()))
    names = ["primary"] if standalone else ["primary", "backup"]
    progress(f"race_masking: {mode}: starting ({pair.dsn}, data {data_dir})")
    pair.start("primary")
    if not standalone:
        pair.start("backup", ("--reverse-writer-dispatch",) if mode in ("eve-reversed", "eve-diverse") else ())
    try:
        try:
            pair.wait_ready(90)
        except TimeoutError:
            for name in names:  # say why before the data directory goes away
                log = Path(data_dir) / f"{name}.log"
                progress(f"--- {log} (tail)\n" + "".join(log.read_text(errors="replace").splitlines(True)[-20:]))
            raise
        setup = evedb.connect(pair.dsn, autocommit=True, timeout=30)
        race_procedures.create(setup, counters)
        stop = threading.Event()
        threads = [RaceClient(pair.dsn, n, counters, seed, stop) for n in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join(60)
        statuses = _settled_statuses(pair, names)
        steps = setup.execute("SELECT id, counter_id, old, new FROM race_step").fetchall()
        values = dict(setup.execute("SELECT id, v FROM race_counter").fetchall())
        setup.close()
    finally:
        pair.stop()
    replies = [reply for thread in threads for reply in thread.replies]
    errors = [error for thread in threads for error in thread.errors]
    probes = {name: _probe_records(os.path.join(data_dir, name, "race_probe.jsonl")) for name in names}
    primary = statuses["primary"]
    result = {
        "mode": mode,
        "requests_acknowledged": len(replies),
        "client_errors": len(errors),
        "client_error_samples": errors[:3],
        "nodes": {
            name: {key: statuses[name][key] for key in (
                "role", "committed_seq", "state_root", "batches", "requests", "parallel_batches",
                "rollbacks", "reexecutions", "divergences", "state_transfers", "applied_batches",
                "race_probes", "race_manifestations")}
            for name in names
        },
        "roots_equal": len({statuses[name]["state_root"] for name in names}) == 1,
        "history_check": race_procedures.check_history(replies, steps, values),
    }
    records = probes["primary"]
    result["probe"] = {
        "batches_probed": len(records),
        "manifested": sum(r["manifested"] for r in records.values()),
        "manifestation_rate": round(sum(r["manifested"] for r in records.values()) / len(records), 4)
        if records else None,
    }
    if mode.startswith("eve"):
        joined = _join_probes(probes["primary"], probes["backup"])
        joined["divergences_counted_by_primary"] = primary["divergences"]
        # A divergence is repaired when the sequential re-execution agreed: no state transfer
        # was needed and the final roots are equal.
        joined["repaired"] = primary["divergences"] if (
            primary["state_transfers"] == 0 and result["roots_equal"]) else None
        result["pair"] = joined
    progress(f"race_masking: {mode}: {json.dumps({k: result[k] for k in ('probe', 'roots_equal')})} "
             f"{json.dumps(result.get('pair', {}))} consistent={result['history_check']['consistent']}")
    return result


def main(argv=None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--modes", default=",".join(MODES))
    arguments.add_argument("--rate", type=float, default=0.3, help="--mixer-false-negative-rate of the nodes")
    arguments.add_argument("--seconds", type=float, default=20.0, help="load per mode")
    arguments.add_argument("--clients", type=int, default=16)
    arguments.add_argument("--counters", type=int, default=4)
    arguments.add_argument("--workers", type=int, default=2, help="worker processes per node")
    arguments.add_argument("--seed", type=int, default=7)
    arguments.add_argument("--stagger-ms", type=float, default=STAGGER_MS, help="eve-diverse's --writer-stagger-ms")
    arguments.add_argument("--pipeline", type=int, default=1,
                           help="batches in flight (1: every divergence is one comparison; with more, "
                                "batches after a divergence re-run before they are compared)")
    arguments.add_argument("--json", dest="json_path", default=None, help="write the results here")
    options = arguments.parse_args(argv)
    modes = [mode.strip() for mode in options.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        arguments.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    results = []
    with tempfile.TemporaryDirectory(prefix="evedb-race-") as work_dir:
        for mode in modes:
            results.append(run_mode(mode, rate=options.rate, seconds=options.seconds, clients=options.clients,
                                    counters=options.counters, workers=options.workers, seed=options.seed,
                                    work_dir=work_dir, pipeline=options.pipeline, stagger_ms=options.stagger_ms))
    document = {
        "benchmark": "race_masking",
        "command": "python -m bench.race_masking" + "".join(" " + a for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_note(),
        "source": source_note(),
        "settings": vars(options),
        "eve_reported_detection_rate": EVE_REPORTED_DETECTION,
        "modes": results,
    }
    text = json.dumps(document, indent=2, default=str)
    if options.json_path:
        Path(options.json_path).write_text(text + "\n")
        progress(f"wrote {options.json_path}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
