"""PNG charts of `evedb bench kv` reports (optional: needs matplotlib, the `plot` extra).

One chart per swept dimension of a grid report (throughput against clients, CPU demand, value
size, conflict share, mixer false-negative rate), one line per mode and mix, the other
dimensions held at their first value; and the failure timeline with its events marked.
"""

from __future__ import annotations

SWEEPS = {
    "clients": "closed-loop clients",
    "cpu_us": "CPU demand per request (µs)",
    "value_bytes": "value size (bytes)",
    "conflict": "share of requests on the hot key(s)",
    "false_negative": "mixer false-negative rate",
}
_PALETTE = {"unreplicated": "#888888", "single": "#bbbbbb", "sequential": "#d65b5b", "eve": "#2ca25f",
            "passive": "#5b8dd6", "dsn": "#444444"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_report(report: dict, prefix: str) -> tuple[list[str], str | None]:
    """Charts for every dimension with more than one value; (paths written, why none if none)."""
    plt = _pyplot()
    if plt is None:
        return [], "matplotlib is not installed (pip install matplotlib, or the `plot` extra)"
    points = report["points"]
    written = []
    mixes = list(dict.fromkeys(point["mix"] for point in points))
    modes = list(dict.fromkeys(point["mode"] for point in points))
    for dimension, label in SWEEPS.items():
        values = sorted({point[dimension] for point in points})
        if len(values) < 2:
            continue
        held = {other: points[0][other] for other in SWEEPS if other != dimension}
        # One panel per mix, one line per mode: lines of different mixes differ by 10x.
        columns = min(2, len(mixes))
        rows = (len(mixes) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
        for number, mix in enumerate(mixes):
            axis = axes[number // columns][number % columns]
            for mode in modes:
                line = sorted((point[dimension], point["ops_per_s"]) for point in points
                              if point["mode"] == mode and point["mix"] == mix
                              and all(point[other] == value for other, value in held.items()))
                if line:
                    axis.plot([x for x, _ in line], [y for _, y in line], marker="o",
                              color=_PALETTE.get(mode, "#999999"), label=mode)
            if dimension in ("cpu_us", "value_bytes") and min(values) > 0:
                axis.set_xscale("log")
            axis.set_xlabel(label)
            axis.set_ylabel("operations/s (median of runs)")
            axis.set_ylim(bottom=0)
            axis.set_title(f"mix {mix}", fontsize=10)
            axis.legend(fontsize=7)
            axis.grid(alpha=0.3)
        for number in range(len(mixes), rows * columns):
            axes[number // columns][number % columns].axis("off")
        figure.suptitle(f"kv: throughput vs {label}, {report['cpus']} CPUs", fontsize=11)
        figure.tight_layout()
        path = f"{prefix}_{dimension}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written, None if written else "no dimension was swept (every option had one value)"


def plot_timeline(report: dict, path: str) -> str | None:
    """The timeline chart; returns None, or why no chart was drawn."""
    plt = _pyplot()
    if plt is None:
        return "matplotlib is not installed (pip install matplotlib, or the `plot` extra)"
    rates = report["ops_per_bucket_s"]
    bucket_s = report["bucket_s"]
    figure, axis = plt.subplots(figsize=(8, 3.8))
    axis.plot([index * bucket_s for index in range(len(rates))], rates, color="#2ca25f", linewidth=1,
              label=f"ops/s per {bucket_s:g} s")
    seconds = report["ops_per_second"]
    axis.step([index + 1 for index in range(len(seconds))], seconds, where="pre", color="#333333", linewidth=1.2,
              label="ops/s per second")
    axis.axhline(report["baseline_ops_per_s"] * 0.5, color="#999999", linestyle=":", linewidth=1, label="50% of baseline")
    for event in report["events"]:
        colour = "#d65b5b" if event["action"] == "kill" else "#5b8dd6"
        axis.axvline(event["at_s"], color=colour, linestyle="--", linewidth=1)
        axis.text(event["at_s"], axis.get_ylim()[1] * 0.97, f" {'kill -9' if event['action'] == 'kill' else 'restart'}"
                  f" {event['node']}", rotation=90, va="top", fontsize=7, color=colour)
    axis.set_xlabel("seconds")
    axis.set_ylabel("operations/s")
    axis.set_ylim(bottom=0)
    axis.set_title(f"kv {report['workload']['mix']}, {report['mode']}, {report['clients']} clients: "
                   f"kill and restart the backup, then the primary", fontsize=10)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def main() -> None:
    """`python -m kvbench.plots REPORT.json PREFIX`: redraw the charts of a saved report."""
    import json
    import sys

    with open(sys.argv[1], encoding="utf-8") as handle:
        report = json.load(handle)
    if report.get("benchmark") == "kv-timeline":
        problem = plot_timeline(report, f"{sys.argv[2]}_timeline.png")
        print(problem or f"wrote {sys.argv[2]}_timeline.png")
    else:
        written, problem = plot_report(report, sys.argv[2])
        print(problem or "wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
