"""`evedb bench kv`: the key-value workload in several replication modes (or against any DSN),
over a grid of mixes, client counts and knobs, each figure the median of several short runs.

How a measurement goes: for each value size and server configuration (mixer false negatives,
parallel writers), every mode gets one fresh deployment (evedb/runtime/modes.py), all started
and populated before the first run; every other point of the grid (mix, clients, CPU demand,
conflict share) then runs `runs` times in each mode, the modes interleaved (A B C D, then
D C B A, ...) so that a shared machine's changing load falls on all of them alike.  A run: clients connect, warm up, are measured for `duration_s`; the
primary's counters are read before and after (their difference is the run's batches,
rollbacks, ...), the CPU of the nodes, the clients and the rest of the machine at the window's
edges; then the load stops and both nodes' roots are compared once they have caught up.

Rules kept: every run reports whether both nodes ended at the same state root, and the
report says if any did not; a figure is the median of its runs (counts of rollbacks,
divergences, state transfers and errors are totals over the runs); nothing is timed in a
test, only reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from evedb.client import parse_dsn
from evedb.runtime.modes import MODES, deployment, percentile, settled_statuses

from . import cpu
from .driver import LoadRun
from .procedures import RULES_PATH
from .workload import MIXES, Workload, calibrate_iterations_per_us, iterations_for, populate

SERVER_ARGS = ("--procedures", "kvbench.procedures", "--rules", RULES_PATH)
DEFAULT_MODES = ("unreplicated", "sequential", "eve", "passive")
_COUNTERS = ("batches", "requests", "parallel_batches", "rollbacks", "reexecutions", "divergences")
GOALS = {"eve_w100_16_writes_per_s": 10_000, "eve_w10_16_ops_per_s": 40_000}


@dataclass(frozen=True)
class Settings:
    modes: tuple[str, ...] = DEFAULT_MODES
    mixes: tuple[str, ...] = ("w100", "w50", "w10", "r100")
    clients: tuple[int, ...] = (1, 4, 16)
    keys: int = 10_000
    value_bytes: tuple[int, ...] = (100,)
    cpu_us: tuple[int, ...] = (0,)
    conflict: tuple[float, ...] = (0.0,)
    hot_keys: int = 1
    false_negative: tuple[float, ...] = (0.0,)
    parallel_writers: bool = False
    server_args: tuple[str, ...] = ()  # more `evedb serve` options for every node
    runs: int = 3
    duration_s: float = 3.0
    warmup_s: float = 1.0
    client_processes: int | None = None
    workers: int | None = None
    seed: int = 7
    dsn: str | None = None
    timeout_s: float = 30.0

    def check(self) -> None:
        if self.dsn is None:
            for mode in self.modes:
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
        for mix in self.mixes:
            if mix not in MIXES:
                raise ValueError(f"unknown mix {mix!r}: choose from {', '.join(MIXES)}")
        if not self.clients or min(self.clients) < 1:
            raise ValueError("client counts must be at least 1")
        if self.runs < 1 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("runs must be at least 1 and the duration positive")
        for share in self.false_negative:
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"a false-negative rate is a share from 0 to 1, not {share}")
        for value in self.value_bytes:
            Workload(keys=self.keys, value_bytes=value, hot_keys=self.hot_keys)  # validates
        for share in self.conflict:
            Workload(keys=self.keys, conflict=share, hot_keys=self.hot_keys)

    def processes_for(self, clients: int) -> int:
        return max(1, min(clients, self.client_processes or 2))


class DsnTarget:
    """A deployment someone else runs: the addresses of a DSN (`settled_statuses` needs only these)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.addresses = parse_dsn(dsn)
        self.standalone = len(self.addresses) == 1
        self.processes: dict = {}

    def address(self, name: str) -> str:
        return self.addresses[0] if name == "primary" or self.standalone else self.addresses[1]


def server_supports(option: str) -> bool:
    """Whether `evedb serve` of this checkout offers `option` (some knobs come from other work)."""
    completed = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--help"], capture_output=True,
                               text=True, timeout=60)
    return option in completed.stdout


def server_args_for(false_negative: float, parallel_writers: bool) -> tuple[str, ...]:
    extra = SERVER_ARGS
    if false_negative:
        extra += ("--mixer-false-negative-rate", repr(false_negative))
    if parallel_writers:
        extra += ("--parallel-writers",)
    return extra


def run_benchmark(settings: Settings, echo=None, directory: str | None = None) -> dict:
    """Run the grid; returns the report (what --json writes)."""
    say = echo or (lambda *args, **kwargs: None)
    settings.check()
    needs = [("--mixer-false-negative-rate", any(settings.false_negative)),
             ("--parallel-writers", settings.parallel_writers)]
    for option, needed in needs:
        if needed and settings.dsn is None and not server_supports(option):
            raise ValueError(f"`evedb serve` has no {option} option in this checkout yet: the sweep cannot run")
    iterations_per_us = calibrate_iterations_per_us() if any(settings.cpu_us) else 0.0
    points = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="evedb-kv-") as scratch:
        for value_bytes in settings.value_bytes:
            for false_negative in settings.false_negative:
                points += _run_configuration(settings, value_bytes, false_negative, iterations_per_us,
                                             directory or scratch, say)
    report = {
        "benchmark": "kv",
        "settings": asdict(settings),
        "iterations_per_us": iterations_per_us,
        "cpus": os.cpu_count(),
        "started_unix": started,
        "seconds": time.time() - started,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "client_api": "evedb.connect(dsn, autocommit=True) (the DB-API driver), one connection per client",
        "points": points,
    }
    report["roots_equal_all"] = all(point["roots_equal"] for point in points)
    report["ratios"] = ratios(points)
    report["goals"] = goals(points)
    return report


class _Deployment:
    """One mode's running deployment (or the DSN's) and its label in progress lines."""

    def __init__(self, settings: Settings, mode: str, value_bytes: int, false_negative: float, directory: str):
        self.mode = mode
        self.label = f"{mode} {value_bytes}B" + (f" fn={false_negative:g}" if false_negative else "")
        if mode == "dsn":
            self.target, self.pair = DsnTarget(settings.dsn), None
        else:
            folder = os.path.join(directory, f"{mode}-{value_bytes}-{false_negative:g}")
            self.pair = deployment(mode, folder, settings.workers,
                                   server_args=server_args_for(false_negative, settings.parallel_writers)
                                   + settings.server_args)
            self.target = self.pair


def _run_configuration(settings: Settings, value_bytes: int, false_negative: float, iterations_per_us: float,
                       directory: str, say) -> list[dict]:
    """Every grid point for one value size and server configuration: all modes are deployed at
    once and their runs interleave (A B C D, then D C B A, ...), so a change in what else the
    machine is doing falls on every mode alike instead of on whichever ran last."""
    import evedb

    modes = ["dsn"] if settings.dsn else list(settings.modes)
    deployments = [_Deployment(settings, mode, value_bytes, false_negative, directory) for mode in modes]
    points = []
    try:
        for each in deployments:
            if each.pair is not None:
                each.pair.start_all()
        for each in deployments:
            if each.pair is not None:
                each.pair.wait_ready(90)
            connection = evedb.connect(each.target.dsn, autocommit=True, timeout=settings.timeout_s)
            say(f"[{each.label}] populating kv: {settings.keys} rows of {value_bytes} bytes through {each.target.dsn}")
            each.populate_s = populate(connection, settings.keys, value_bytes)
            connection.close()
            settled_statuses(each.target, timeout=30)
        for mix in settings.mixes:
            for clients in settings.clients:
                for cpu_us in settings.cpu_us:
                    for conflict in settings.conflict:
                        workload = Workload(mix=mix, keys=settings.keys, value_bytes=value_bytes, cpu_us=cpu_us,
                                            conflict=conflict, hot_keys=settings.hot_keys,
                                            iterations=iterations_for(cpu_us, iterations_per_us))
                        runs = {each.mode: [] for each in deployments}
                        for number in range(settings.runs):
                            order = deployments if number % 2 == 0 else deployments[::-1]
                            for each in order:
                                name = (f"[{each.label} {mix} c{clients}" + (f" cpu{cpu_us}us" if cpu_us else "")
                                        + (f" conflict{conflict:g}" if conflict else "")
                                        + f" run {number + 1}/{settings.runs}]")
                                run = one_run(each.target, workload, clients, settings, seed=settings.seed + number,
                                              say=say, name=name)
                                runs[each.mode].append(run)
                                say(f"\r{name} {run['ops_per_s']:8.0f} ops/s  p50 {run['p50_ms']:6.2f} ms  "
                                    f"p99 {run['p99_ms']:6.2f} ms  roots {'equal' if run['roots_equal'] else 'DIFFER'}"
                                    + (f"  errors {run['errors']}" if run["errors"] else "") + " " * 12)
                        for each in deployments:
                            point = {"mode": each.mode, "mix": mix, "clients": clients, "cpu_us": cpu_us,
                                     "value_bytes": value_bytes, "conflict": conflict,
                                     "false_negative": false_negative, "parallel_writers": settings.parallel_writers,
                                     "populate_s": each.populate_s, "runs": runs[each.mode]}
                            point.update(summarise(point["runs"]))
                            points.append(point)
    finally:
        for each in deployments:
            if each.pair is not None:
                each.pair.stop()
    return points


def _counters(status: dict | None) -> dict:
    return {name: (status or {}).get(name, 0) for name in _COUNTERS + ("state_transfers",)}


def one_run(target, workload: Workload, clients: int, settings: Settings, *, seed: int, say, name: str) -> dict:
    before_primary, before_backup, _ = settled_statuses(target, timeout=30)
    load = LoadRun(target.dsn, workload, clients=clients, processes=settings.processes_for(clients), seed=seed,
                   timeout_s=settings.timeout_s)
    _, measure_from, deadline = load.start(settings.warmup_s, settings.duration_s)
    groups = lambda: {**{role: [process.pid] for role, process in target.processes.items()},  # noqa: E731
                      "clients": load.pids}
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before, cpu_started = cpu.sample(groups()), time.monotonic()
    while time.monotonic() < deadline - 0.01:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        say(f"\r{name} {max(0.0, deadline - time.monotonic()):4.1f}s left   ", nl=False)
    cores = cpu.cores_used(cpu_before, cpu.sample(groups()), time.monotonic() - cpu_started)
    result = load.finish()
    primary, backup, roots_equal = settled_statuses(target, timeout=30)
    return measurements(result, before_primary, before_backup, primary, backup, roots_equal, cores)


def measurements(result, before_primary, before_backup, primary, backup, roots_equal, cores) -> dict:
    every = result.write_latencies_s + result.read_latencies_s
    delta = {name: _counters(primary)[name] - _counters(before_primary)[name] for name in _COUNTERS}
    transfers = (_counters(primary)["state_transfers"] + _counters(backup)["state_transfers"]
                 - _counters(before_primary)["state_transfers"] - _counters(before_backup)["state_transfers"])
    operations = len(every)
    return {
        "ops_per_s": operations / result.duration_s,
        "writes_per_s": result.writes / result.duration_s,
        "reads_per_s": result.reads / result.duration_s,
        "p50_ms": percentile(every, 50) * 1000,
        "p99_ms": percentile(every, 99) * 1000,
        "write_p50_ms": percentile(result.write_latencies_s, 50) * 1000,
        "write_p99_ms": percentile(result.write_latencies_s, 99) * 1000,
        "read_p50_ms": percentile(result.read_latencies_s, 50) * 1000,
        "read_p99_ms": percentile(result.read_latencies_s, 99) * 1000,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "batches": delta["batches"],
        "batched_requests": delta["requests"],
        "parallel_batches": delta["parallel_batches"],
        "parallel_batch_width": delta["requests"] / delta["parallel_batches"] if delta["parallel_batches"] else 0.0,
        "requests_per_batch": delta["requests"] / delta["batches"] if delta["batches"] else 0.0,
        "rollbacks": delta["rollbacks"],
        "reexecutions": delta["reexecutions"],
        "divergences": delta["divergences"],
        "state_transfers": transfers,
        "roots_equal": roots_equal,
        "state_root": (primary or {}).get("state_root"),
        "backup_state_root": (backup or {}).get("state_root"),
        "committed_seq": [(primary or {}).get("committed_seq"), (backup or {}).get("committed_seq")],
        "cores": cores,
        "client_cpu_us_per_op": cores.get("clients", 0.0) * 1e6 / (operations / result.duration_s) if operations else 0.0,
        "node_cpu_us_per_op": (cores.get("primary", 0.0) + cores.get("backup", 0.0)) * 1e6
        / (operations / result.duration_s) if operations else 0.0,
    }


_TOTALS = ("errors", "rollbacks", "reexecutions", "divergences", "state_transfers", "batches")


def summarise(runs: list[dict]) -> dict:
    """Medians over runs for rates, latencies, widths and CPU; totals for event counts."""
    summary = {}
    for name, value in runs[0].items():
        if name in _TOTALS:
            summary[name] = sum(run[name] for run in runs)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            summary[name] = statistics.median(run[name] for run in runs)
    summary["cores"] = {name: statistics.median(run["cores"].get(name, 0.0) for run in runs)
                        for name in runs[0]["cores"]}
    summary["roots_equal"] = all(run["roots_equal"] for run in runs)
    summary["ops_per_s_runs"] = [run["ops_per_s"] for run in runs]
    return summary


def _point_key(point: dict) -> tuple:
    return (point["mix"], point["clients"], point["cpu_us"], point["value_bytes"], point["conflict"],
            point["false_negative"])


def ratios(points: list[dict]) -> list[dict]:
    """Per grid point, the ratios of median ops/s between modes."""
    by_key: dict[tuple, dict[str, float]] = {}
    for point in points:
        by_key.setdefault(_point_key(point), {})[point["mode"]] = point["ops_per_s"]
    pairs = [("eve", "sequential"), ("eve", "unreplicated"), ("eve", "passive"), ("passive", "unreplicated"),
             ("sequential", "unreplicated")]
    rows = []
    for key, modes in by_key.items():
        row = {"mix": key[0], "clients": key[1], "cpu_us": key[2], "value_bytes": key[3], "conflict": key[4],
               "false_negative": key[5]}
        for top, bottom in pairs:
            if top in modes and bottom in modes and modes[bottom]:
                row[f"{top}/{bottom}"] = modes[top] / modes[bottom]
        if len(row) > 6:
            rows.append(row)
    return rows


def goals(points: list[dict]) -> dict:
    """The issue's two throughput goals, against the base eve points when they were measured."""
    found = {}
    for point in points:
        base = point["mode"] == "eve" and point["clients"] == 16 and not point["cpu_us"] and not point["conflict"] \
            and not point["false_negative"]
        if base and point["mix"] == "w100":
            found["eve_w100_16_writes_per_s"] = point["writes_per_s"]
        if base and point["mix"] == "w10":
            found["eve_w10_16_ops_per_s"] = point["ops_per_s"]
    return {name: {"measured": value, "goal": GOALS[name], "met": value >= GOALS[name],
                   "share_of_goal": value / GOALS[name]} for name, value in found.items()}


def format_report(report: dict) -> list[str]:
    settings = report["settings"]
    lines = [
        f"kv: {settings['keys']} keys, {settings['runs']} runs x {settings['duration_s']:g}s "
        f"(+{settings['warmup_s']:g}s warm-up) per point, medians; {report['cpus']} CPUs; "
        f"clients via the DB-API in {settings['client_processes'] or 'min(clients, 2)'} processes",
        "",
        f"{'mode':12s} {'mix':4s} {'cl':>3s} {'cpuus':>5s} {'bytes':>5s} {'confl':>5s} {'fn':>4s} "
        f"{'ops/s':>8s} {'wr/s':>8s} {'p50ms':>7s} {'p99ms':>7s} {'batch':>6s} {'width':>5s} {'rollb':>5s} "
        f"{'div':>4s} {'xfer':>4s} {'err':>4s} {'cores p/b/cl/oth':>18s} roots",
    ]
    for point in report["points"]:
        cores = point["cores"]
        lines.append(
            f"{point['mode']:12s} {point['mix']:4s} {point['clients']:3d} {point['cpu_us']:5d} {point['value_bytes']:5d} "
            f"{point['conflict']:5.2f} {point['false_negative']:4.2f} {point['ops_per_s']:8.0f} "
            f"{point['writes_per_s']:8.0f} {point['p50_ms']:7.2f} {point['p99_ms']:7.2f} {point['batches']:6d} "
            f"{point['parallel_batch_width']:5.2f} {point['rollbacks']:5d} {point['divergences']:4d} "
            f"{point['state_transfers']:4d} {point['errors']:4d} "
            f"{cores.get('primary', 0):4.2f}/{cores.get('backup', 0):4.2f}/{cores.get('clients', 0):4.2f}/"
            f"{cores.get('other', 0):4.2f} {'yes' if point['roots_equal'] else 'NO'}"
        )
    if report["ratios"]:
        lines.append("")
        lines.append("ratios of median ops/s:")
        for row in report["ratios"]:
            named = ", ".join(f"{name} {value:.2f}" for name, value in row.items() if "/" in name)
            lines.append(f"  {row['mix']} c{row['clients']} cpu{row['cpu_us']} {row['value_bytes']}B "
                         f"conflict {row['conflict']:g} fn {row['false_negative']:g}: {named}")
    for name, goal in report["goals"].items():
        lines.append(f"goal {name}: {goal['measured']:.0f} against {goal['goal']} "
                     f"({goal['share_of_goal']:.0%}) -> {'met' if goal['met'] else 'NOT met'}")
    lines.append(f"both nodes' state roots equal after every run: {'yes' if report['roots_equal_all'] else 'NO'}")
    return lines


def write_json(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
