"""The body of `evedb bench kv` (cli/main.py only parses options): turn option strings into
settings, run the grid or the timeline, print the report, write JSON and charts.  Exit status
1 when any run ended with the two nodes' state roots different."""

from __future__ import annotations

import shlex

from .bench import DsnTarget, Settings, format_report, run_benchmark, write_json
from .plots import plot_report, plot_timeline
from .timeline import format_timeline, run_timeline
from .workload import Workload, calibrate_iterations_per_us, iterations_for


def _list(text: str, kind, option: str) -> tuple:
    try:
        values = tuple(kind(part.strip()) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--{option}: expected a comma-separated list of numbers, not {text!r}") from None
    if not values:
        raise ValueError(f"--{option}: no value given")
    return values


def settings_from(options: dict) -> Settings:
    return Settings(
        modes=tuple(part.strip() for part in options["modes"].split(",") if part.strip()),
        mixes=tuple(part.strip() for part in options["mixes"].split(",") if part.strip()),
        clients=_list(options["clients"], int, "clients"),
        keys=options["keys"],
        value_bytes=_list(options["value_bytes"], int, "value-bytes"),
        cpu_us=_list(options["cpu_us"], int, "cpu-us"),
        conflict=_list(options["conflict"], float, "conflict"),
        hot_keys=options["hot_keys"],
        false_negative=_list(options["false_negative"], float, "false-negative"),
        parallel_writers=options["parallel_writers"],
        server_args=tuple(shlex.split(options.get("server_args") or "")),
        runs=options["runs"],
        duration_s=options["duration"],
        warmup_s=options["warmup"],
        client_processes=options["client_processes"],
        workers=options["workers"],
        seed=options["seed"],
        dsn=options["dsn"],
    )


def run_command(options: dict, echo) -> int:
    import click

    from evedb.errors import Error

    try:
        settings = settings_from(options)
        settings.check()
        if settings.dsn:
            DsnTarget(settings.dsn)  # a malformed DSN is a usage error, before anything starts
        if options["timeline"]:
            return _timeline(settings, options, echo)
        report = run_benchmark(settings, echo=echo)
    except ValueError as error:
        raise click.UsageError(str(error))
    except Error as error:  # a DSN that names no node, or a node that does not answer
        raise click.ClickException(str(error))
    for line in format_report(report):
        echo(line)
    if options["json_path"]:
        write_json(report, options["json_path"])
        echo(f"wrote {options['json_path']}")
    if options["plot_prefix"]:
        written, problem = plot_report(report, options["plot_prefix"])
        echo(f"no chart: {problem}" if problem else "wrote " + ", ".join(written))
    if not report["roots_equal_all"]:
        echo("state roots differ between the nodes of a pair", err=True)
        return 1
    return 0


def _timeline(settings: Settings, options: dict, echo) -> int:
    if settings.dsn:
        raise ValueError("--timeline starts its own pair (it kills and restarts the nodes): no --dsn")
    modes = settings.modes if len(settings.modes) == 1 else ("eve",)
    cpu_us = settings.cpu_us[0]
    workload = Workload(mix=settings.mixes[0], keys=settings.keys, value_bytes=settings.value_bytes[0], cpu_us=cpu_us,
                        conflict=settings.conflict[0], hot_keys=settings.hot_keys,
                        iterations=iterations_for(cpu_us, calibrate_iterations_per_us() if cpu_us else 0.0))
    clients = settings.clients[-1]
    report = run_timeline(workload, mode=modes[0], clients=clients, processes=settings.processes_for(clients),
                          workers=settings.workers, seed=settings.seed, echo=echo)
    for line in format_timeline(report):
        echo(line)
    if options["json_path"]:
        write_json(report, options["json_path"])
        echo(f"wrote {options['json_path']}")
    if options["plot_prefix"]:
        path = f"{options['plot_prefix']}_timeline.png"
        problem = plot_timeline(report, path)
        echo(f"no chart: {problem}" if problem else f"wrote {path}")
    return 0 if report["roots_equal"] else 1
