"""`evedb bench tpcw` and the demo: TPC-W against evedb in several replication modes, side by
side, with the same data, mix, clients and duration, and one report.

Modes (each a fresh deployment on loopback, populated with the same seed):
- `unreplicated`: one node alone (no peer), parallel workers: what a single server does;
- `sequential`:   the pair, one worker per node: traditional agree-then-execute replication;
- `eve`:          the pair, parallel workers, execute-verify;
- `passive`:      the pair, the primary executes in parallel and ships its changesets, the
                  backup applies them (Remus-like primary-backup);
- `single`:       one node alone with one worker: with `unreplicated`, the executor's scaling.

Every mode's report says whether both nodes ended at the same state root.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from evedb.client import node_status
from evedb.runtime.launch import Pair
from evedb.runtime.modes import deployment as _deployment, percentile as _percentile, \
    settled_statuses as _settled_statuses

from .driver import RunResult, run_browsers
from .navigation import INTERACTION_NAMES
from .populate import populate

_SERVER_ARGS = ("--procedures", "tpcw.procedures", "--rules", "tpcw")


@dataclass
class ModeResult:
    mode: str
    run: RunResult
    primary: dict
    backup: dict | None
    roots_equal: bool
    populate_rows_per_s: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        latencies = [value for values in self.run.stats.latencies.values() for value in values]
        requests = self.primary.get("requests", 0)
        parallel_batches = self.primary.get("parallel_batches", 0)
        return {
            "wips": self.run.wips,
            "interactions": self.run.stats.interactions,
            "procedure_calls": self.run.stats.calls,
            "p50_ms": _percentile(latencies, 50) * 1000,
            "p99_ms": _percentile(latencies, 99) * 1000,
            "errors": sum(self.run.stats.errors.values()),
            "failures": self.run.failures[:10],
            "per_interaction": {
                INTERACTION_NAMES[name]: {
                    "count": len(values),
                    "p50_ms": _percentile(values, 50) * 1000,
                    "p99_ms": _percentile(values, 99) * 1000,
                }
                for name, values in sorted(self.run.stats.latencies.items())
            },
            "batches": self.primary.get("batches", 0),
            "batched_requests": requests,
            "parallel_batch_width": requests / parallel_batches if parallel_batches else 0.0,
            "rollbacks": self.primary.get("rollbacks", 0),
            "divergences": self.primary.get("divergences", 0),
            "state_transfers": self.primary.get("state_transfers", 0) + (self.backup or {}).get("state_transfers", 0),
            "roots_equal": self.roots_equal,
            "state_root": self.primary.get("state_root"),
            "backup_state_root": (self.backup or {}).get("state_root"),
            "populate_rows_per_s": self.populate_rows_per_s,
            "notes": self.notes,
        }


def deployment(mode: str, directory: str, workers: int | None, fixed_clock_ms: int | None = None) -> Pair:
    return _deployment(mode, directory, workers, server_args=_SERVER_ARGS, fixed_clock_ms=fixed_clock_ms)


def run_mode(mode: str, *, mix: str, clients: int, duration_s: float, items: int, ebs: int, seed: int,
             workers: int | None, directory: str, echo=None, warmup_s: float = 1.0,
             max_interactions: int | None = None, fixed_clock_ms: int | None = None) -> ModeResult:
    say = echo or (lambda *args, **kwargs: None)
    pair = deployment(mode, directory, workers, fixed_clock_ms)
    with pair:
        pair.wait_ready(90)
        say(f"[{mode}] populating items={items} ebs={ebs} through {pair.dsn}")
        report = populate(pair.dsn, items=items, ebs=ebs, seed=seed)
        rows = sum(report.rows.values())
        say(f"[{mode}] running the {mix} mix: {clients} clients, {duration_s:g}s (+{warmup_s:g}s warm-up)")

        def progress(remaining: float) -> None:
            status = node_status(pair.address("primary"))
            say(f"\r[{mode}] {remaining:5.1f}s left, committed seq {status['committed_seq']}, "
                f"peer {status['peer_state']}   ", nl=False)

        run = run_browsers(pair.dsn, mix=mix, clients=clients, duration_s=duration_s, items=items, ebs=ebs,
                           seed=seed, progress=progress, warmup_s=warmup_s, max_interactions=max_interactions)
        say("")
        primary, backup, roots_equal = _settled_statuses(pair)
    return ModeResult(mode, run, primary, backup, roots_equal, rows / max(report.load_seconds, 1e-9))


def compare_modes(modes, *, mix: str, clients: int, duration_s: float, items: int, ebs: int, seed: int = 7,
                  workers: int | None = None, echo=None, directory: str | None = None) -> dict:
    """Run each mode in turn and return the report as a dict (what --json writes)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="evedb-tpcw-") as scratch:
        for mode in modes:
            results[mode] = run_mode(mode, mix=mix, clients=clients, duration_s=duration_s, items=items, ebs=ebs,
                                     seed=seed, workers=workers, directory=directory or scratch, echo=echo)
    report = {
        "benchmark": "tpcw",
        "mix": mix,
        "clients": clients,
        "duration_s": duration_s,
        "items": items,
        "ebs": ebs,
        "seed": seed,
        "workers": workers or os.cpu_count(),
        "cpus": os.cpu_count(),
        "modes": {mode: result.as_dict() for mode, result in results.items()},
    }
    report["ratios"] = _ratios(report["modes"])
    return report


def _ratios(modes: dict) -> dict:
    pairs = [("eve", "sequential"), ("eve", "unreplicated"), ("passive", "unreplicated"), ("eve", "passive"),
             ("sequential", "unreplicated"), ("unreplicated", "single")]
    ratios = {}
    for top, bottom in pairs:
        if top in modes and bottom in modes and modes[bottom]["wips"]:
            ratios[f"{top}/{bottom}"] = modes[top]["wips"] / modes[bottom]["wips"]
    if "eve" in modes and "unreplicated" in modes and modes["unreplicated"]["wips"]:
        # Both nodes of the pair share this machine's cores: a pair that used them as well as
        # one unreplicated node would reach half its throughput.
        ratios["pair_efficiency"] = modes["eve"]["wips"] / (modes["unreplicated"]["wips"] / 2)
    return ratios


def format_report(report: dict) -> list[str]:
    lines = [
        f"TPC-W {report['mix']} mix, {report['clients']} clients, {report['duration_s']:g}s, "
        f"items={report['items']} ebs={report['ebs']}, workers={report['workers']} on {report['cpus']} CPUs",
        "",
        f"{'mode':13s} {'WIPS':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'batches':>8s} {'width':>6s} "
        f"{'rollbk':>6s} {'xfers':>5s} {'errors':>6s}  roots equal",
    ]
    for mode, data in report["modes"].items():
        lines.append(
            f"{mode:13s} {data['wips']:8.1f} {data['p50_ms']:8.2f} {data['p99_ms']:8.2f} {data['batches']:8d} "
            f"{data['parallel_batch_width']:6.2f} {data['rollbacks']:6d} {data['state_transfers']:5d} "
            f"{data['errors']:6d}  {'yes' if data['roots_equal'] else 'NO'}"
        )
    if report["ratios"]:
        lines.append("")
        lines.append("ratios: " + ", ".join(f"{name} {value:.2f}" for name, value in report["ratios"].items()))
    lines.append("")
    lines.append("per interaction (p50 / p99 ms), first mode: " + next(iter(report["modes"])))
    first = next(iter(report["modes"].values()))
    for name, data in first["per_interaction"].items():
        lines.append(f"  {name:22s} {data['count']:7d}  {data['p50_ms']:8.2f} / {data['p99_ms']:8.2f}")
    return lines


def write_json(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)


def write_plot(report: dict, path: str) -> str | None:
    """A bar chart of WIPS per mode; returns None, or why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or the `plot` extra)"
    modes = list(report["modes"])
    values = [report["modes"][mode]["wips"] for mode in modes]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    palette = {"unreplicated": "#888888", "single": "#bbbbbb", "sequential": "#d65b5b", "eve": "#5bd68d",
               "passive": "#5b8dd6"}
    bars = axis.bar(modes, values, color=[palette.get(mode, "#999999") for mode in modes])
    axis.bar_label(bars, fmt="%.0f")
    axis.set_ylim(0, max(values + [1]) * 1.15)
    axis.set_ylabel("WIPS (interactions/s)")
    axis.set_title(f"TPC-W {report['mix']}, {report['clients']} clients, {report['cpus']} CPUs")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None
