"""The main job (`evedb demo`, the README's first command): a local primary-backup pair in a
temporary directory, a small TPC-W database loaded through it, the browsing mix for about 20
seconds with a live progress line, the report, and everything stopped afterwards.  It exits
non-zero if the two nodes end at different state roots or an interaction failed."""

from __future__ import annotations

import tempfile


def run_demo(*, workers: int | None, seconds: float, clients: int, mix: str, echo) -> int:
    """Run the demo; `echo` prints like click.echo (it takes nl=).  Returns the exit code."""
    from tpcw.bench import _ratios, format_report, run_mode

    with tempfile.TemporaryDirectory(prefix="evedb-demo-") as directory:
        echo(f"evedb demo: a primary-backup pair on loopback (data in {directory}), TPC-W {mix} mix")
        result = run_mode("eve", mix=mix, clients=clients, duration_s=seconds, items=1000, ebs=1, seed=7,
                          workers=workers, directory=directory, echo=echo)
    data = result.as_dict()
    report = {"mix": mix, "clients": clients, "duration_s": seconds, "items": 1000, "ebs": 1,
              "workers": result.primary.get("workers"), "cpus": __import__("os").cpu_count(), "modes": {"eve": data}}
    report["ratios"] = _ratios(report["modes"])
    for line in format_report(report):
        echo(line)
    echo(f"primary state root {data['state_root']}, backup state root {data['backup_state_root']}: "
         f"{'equal' if data['roots_equal'] else 'DIFFERENT'}")
    echo(f"loaded at {data['populate_rows_per_s']:,.0f} rows/s; {data['procedure_calls']} procedure calls")
    for failure in data["failures"]:
        echo(f"failure: {failure}")
    return 0 if data["roots_equal"] and not data["failures"] else 1
