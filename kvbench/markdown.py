"""Markdown tables from `evedb bench kv` JSON reports (what bench/RESULTS.md quotes):

    python -m kvbench.markdown bench/results/kv_base.json [more.json ...]
"""

from __future__ import annotations

import json
import sys

_MODE_ORDER = ("unreplicated", "sequential", "eve", "passive", "single", "dsn")


def grid_table(report: dict) -> list[str]:
    points = report["points"]
    swept = [name for name in ("cpu_us", "value_bytes", "conflict", "false_negative")
             if len({point[name] for point in points}) > 1]
    head = ["mix", "clients"] + swept + ["mode", "ops/s", "writes/s", "p50 ms", "p99 ms", "write p50/p99 ms",
                                         "read p50/p99 ms", "req/batch", "width", "rollbacks", "div", "xfers",
                                         "errors", "cores p/b/clients/other", "client µs/op", "roots equal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ordered = sorted(points, key=lambda point: (point["mix"], point["clients"], *[point[name] for name in swept],
                                                _MODE_ORDER.index(point["mode"])))
    for point in ordered:
        cores = point["cores"]
        cells = [point["mix"], str(point["clients"])] + [f"{point[name]:g}" for name in swept] + [
            point["mode"], f"{point['ops_per_s']:,.0f}", f"{point['writes_per_s']:,.0f}", f"{point['p50_ms']:.2f}",
            f"{point['p99_ms']:.1f}",
            f"{point['write_p50_ms']:.2f} / {point['write_p99_ms']:.1f}" if point["writes_per_s"] else "-",
            f"{point['read_p50_ms']:.2f} / {point['read_p99_ms']:.1f}" if point["reads_per_s"] else "-",
            f"{point['requests_per_batch']:.1f}", f"{point['parallel_batch_width']:.2f}", str(point["rollbacks"]),
            str(point["divergences"]), str(point["state_transfers"]), str(point["errors"]),
            f"{cores.get('primary', 0):.2f}/{cores.get('backup', 0):.2f}/{cores.get('clients', 0):.2f}/"
            f"{cores.get('other', 0):.2f}",
            f"{point['client_cpu_us_per_op']:.0f}", "yes" if point["roots_equal"] else "**NO**"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pivot_table(report: dict, dimension: str) -> list[str]:
    """One row per value of `dimension` (and mix, clients), one column per mode:
    ops/s (p50 / p99 ms), then rollbacks where any happened."""
    points = report["points"]
    modes = [mode for mode in _MODE_ORDER if any(point["mode"] == mode for point in points)]
    lines = [f"| mix | clients | {dimension} | " + " | ".join(f"{mode} ops/s (p50/p99 ms)" for mode in modes)
             + " | rollbacks (" + "/".join(modes) + ") |", "|" + "---|" * (4 + len(modes))]
    keys = sorted({(point["mix"], point["clients"], point[dimension]) for point in points})
    for mix, clients, value in keys:
        row = {point["mode"]: point for point in points
               if (point["mix"], point["clients"], point[dimension]) == (mix, clients, value)}
        cells = [mix, str(clients), f"{value:g}"]
        for mode in modes:
            point = row.get(mode)
            cells.append("-" if point is None else
                         f"{point['ops_per_s']:,.0f} ({point['p50_ms']:.1f} / {point['p99_ms']:.0f})")
        cells.append("/".join(str(row[mode]["rollbacks"]) if mode in row else "-" for mode in modes))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio_table(report: dict) -> list[str]:
    rows = report["ratios"]
    if not rows:
        return []
    names = [name for name in ("eve/sequential", "eve/unreplicated", "eve/passive", "passive/unreplicated",
                               "sequential/unreplicated") if any(name in row for row in rows)]
    swept = [name for name in ("cpu_us", "value_bytes", "conflict", "false_negative")
             if len({row[name] for row in rows}) > 1]
    lines = ["| mix | clients | " + " | ".join(swept + names) + " |", "|" + "---|" * (2 + len(swept) + len(names))]
    for row in sorted(rows, key=lambda row: (row["mix"], row["clients"], *[row[name] for name in swept])):
        cells = [row["mix"], str(row["clients"])] + [f"{row[name]:g}" for name in swept] + \
            [f"{row[name]:.2f}" if name in row else "-" for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        print(f"<!-- {path} -->")
        if report.get("benchmark") == "kv":
            print("\n".join(grid_table(report)))
            print()
            print("\n".join(ratio_table(report)))
            for dimension in ("cpu_us", "value_bytes", "conflict", "false_negative"):
                if len({point[dimension] for point in report["points"]}) > 1:
                    print()
                    print("\n".join(pivot_table(report, dimension)))
            for name, goal in report.get("goals", {}).items():
                print(f"\ngoal {name}: {goal['measured']:,.0f} of {goal['goal']:,} ({goal['share_of_goal']:.1%})")
        print()


if __name__ == "__main__":
    main()
