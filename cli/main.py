"""`evedb` commands.  Each command parses its options and calls into the library; no logic here."""

from __future__ import annotations

import json
import sys

import click


@click.group()
@click.version_option(package_name="evedb")
def main() -> None:
    """evedb: a replicated SQLite database using Eve's execute-verify replication."""


@main.command("mix")
@click.option("--explain", "sql", required=True, help="The SQL statement to analyze.")
@click.option("--params", default=None, help="Parameters as JSON: a list for ?, an object for :name.")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of DDL describing the tables (for primary keys, views, triggers).")
@click.option("--db", "database", type=click.Path(exists=True, dir_okay=False), default=None,
              help="An existing database file to take the schema from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def mix_command(sql, params, schema_file, database, as_json) -> None:
    """Print a statement's read and write sets, row keys and exclusivity."""
    from evedb.explain import explain_statement

    try:
        parameters = json.loads(params) if params else None
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="--params")
    report = explain_statement(sql, parameters, schema_file=schema_file, database=database)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in report["lines"]:
            click.echo(line)


@main.command("demo")
@click.option("--workers", type=int, default=None, help="Worker processes per node (default: one per core).")
@click.option("--seconds", type=float, default=20.0, show_default=True)
@click.option("--clients", type=int, default=8, show_default=True, help="Emulated browsers.")
@click.option("--mix", type=click.Choice(["browsing", "shopping", "ordering"]), default="browsing", show_default=True)
def demo_command(workers, seconds, clients, mix) -> None:
    """Start a local pair, load a small TPC-W, run a mix, print the report, stop everything."""
    from evedb.demo import run_demo

    sys.exit(run_demo(workers=workers, seconds=seconds, clients=clients, mix=mix, echo=click.echo))


@main.command("serve")
@click.option("--role", type=click.Choice(["primary", "backup"]), required=True,
              help="The role this node starts in (a restarted node resumes its stored role and view).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="Data directory.")
@click.option("--listen", required=True, help="HOST:PORT for clients and the peer.")
@click.option("--peer", default=None,
              help="HOST:PORT of the other node; without it the node runs alone, unreplicated.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Shared secret for the HMAC on peer frames.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: one per core).")
@click.option("--synchronous", type=click.Choice(["NORMAL", "FULL"]), default="NORMAL", show_default=True)
@click.option("--procedures", multiple=True, help="Module of server-side procedures (repeatable).")
@click.option("--rules", default=None, help="Mixer rules: an application name or a TOML path.")
@click.option("--max-batch", type=int, default=256, show_default=True)
@click.option("--pipeline", "pipeline_depth", type=int, default=4, show_default=True, help="Batches in flight.")
@click.option("--peer-timeout-ms", type=int, default=1500, show_default=True)
@click.option("--replication", type=click.Choice(["eve", "passive"]), default="eve", show_default=True,
              help="eve: execute-verify (both nodes execute, tokens compared); passive: the primary "
                   "executes and ships changesets, the backup applies them (Remus-like baseline). "
                   "Both nodes must use the same.")
@click.option("--fixed-clock-ms", type=int, default=None, hidden=True,
              help="Reproducible runs: batch n executes at this Unix time (ms) + n; same value on both nodes.")
@click.option("--test-perturb", type=int, default=0, hidden=True,
              help="Test hook: make the next N parallel executions give a wrong reply.")
@click.option("--verbose", is_flag=True, help="Log what the node decides and why.")
def serve_command(role, data_dir, listen, peer, secret_file, workers, synchronous, procedures, rules,
                  max_batch, pipeline_depth, peer_timeout_ms, replication, fixed_clock_ms, test_perturb, verbose) -> None:
    """Run one node of a primary-backup pair."""
    from evedb.procedures import load_modules
    from evedb.runtime.launch import configure_logging, serve
    from evedb.runtime.node import NodeConfig

    configure_logging(verbose)
    secret = None
    if secret_file:
        with open(secret_file, "rb") as handle:
            secret = handle.read().strip()
    loaded_rules = None
    if rules:
        from mixer_rules import load_rules

        loaded_rules = load_rules(rules)
    load_modules(procedures)
    serve(NodeConfig(
        data_dir=data_dir, listen=listen, peer=peer, role=role, secret=secret, workers=workers,
        synchronous=synchronous, procedure_modules=tuple(procedures), rules=loaded_rules,
        max_batch=max_batch, pipeline_depth=pipeline_depth, peer_timeout_ms=peer_timeout_ms,
        perturb_executions=test_perturb, fixed_clock_ms=fixed_clock_ms, replication=replication,
    ))


@main.command("pair")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@click.option("--port", type=int, default=7480, show_default=True, help="Primary port; the backup uses port+1.")
@click.option("--workers", type=int, default=None)
def pair_command(data_dir, port, workers) -> None:
    """Start a primary on PORT and a backup on PORT+1 on loopback; Ctrl-C stops both."""
    import time

    from evedb.runtime.launch import Pair

    pair = Pair(data_dir, port, workers=workers)
    with pair:
        pair.wait_ready()
        click.echo(f"pair ready: {pair.dsn}  (logs in {data_dir}/primary.log, backup.log; Ctrl-C stops)")
        try:
            while all(process.poll() is None for process in pair.processes.values()):
                time.sleep(0.5)
            click.echo("a node exited; stopping the pair", err=True)
        except KeyboardInterrupt:
            click.echo("stopping")


@main.command("status")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=float, default=5.0, show_default=True)
def status_command(address, as_json, timeout) -> None:
    """Print a node's role, view, committed seq, state root and counters."""
    from evedb.client import node_status
    from evedb.errors import Error

    try:
        status = node_status(address, timeout=timeout)
    except Error as error:
        raise click.ClickException(str(error))
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
    else:
        for key in sorted(status):
            click.echo(f"{key:18s} {status[key]}")


@main.command("shell")
@click.argument("dsn")
@click.option("--timeout", type=float, default=10.0, show_default=True)
def shell_command(dsn, timeout) -> None:
    """Run SQL interactively against a DSN (evedb://host:port,... or a database file)."""
    from evedb.shell import run_shell

    sys.exit(run_shell(dsn, timeout=timeout, echo=click.echo))


@main.command("sim")
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed to run.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="How many seeds, from --seed on.")
@click.option("--duration-ms", type=click.IntRange(min=100), default=3000, show_default=True,
              help="Simulated time with faults, before a quiet tail.")
@click.option("--verbose", is_flag=True, help="Print each run's fault profile and full trace.")
def sim_command(seed, seeds, duration_ms, verbose) -> None:
    """Run the seeded simulator of the replication protocol; exit 1 on any violation."""
    from evedb.sim import run_cli

    sys.exit(run_cli(seed, seeds, duration_ms=duration_ms, verbose=verbose, echo=click.echo))


@main.group("tpcw")
def tpcw_group() -> None:
    """TPC-W: load the database (and, later, drive the workload)."""


@tpcw_group.command("populate")
@click.argument("dsn")
@click.option("--items", type=int, required=True, help="NUM_ITEMS: 1000, 10000, 100000, 1000000 or 10000000.")
@click.option("--ebs", type=int, required=True, help="NUM_EBS: customers = 2880 x EBs.")
@click.option("--seed", type=int, default=12345, show_default=True, help="Seed of the generated data.")
@click.option("--batch-rows", type=int, default=4000, show_default=True, help="Rows per atomic script.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes of an embedded database (ignored for evedb://).")
@click.option("--drop", "drop_existing", is_flag=True, help="Replace TPC-W tables already in the database.")
@click.option("--no-analyze", "no_analyze", is_flag=True, help="Skip ANALYZE after creating the indexes.")
@click.option("--progress", "show_progress", is_flag=True, help="Show a progress bar.")
def tpcw_populate_command(dsn, items, ebs, seed, batch_rows, workers, drop_existing, no_analyze,
                          show_progress) -> None:
    """Create and load the TPC-W tables in DSN (a database file or evedb://host:port,...)."""
    from evedb.errors import Error
    from tpcw.populate import populate

    bar = click.progressbar(length=1, label="populating", file=sys.stderr) if show_progress else None
    done = [0]

    def progress(rows_done: int, rows_total: int) -> None:
        bar.length = rows_total
        bar.update(rows_done - done[0])
        done[0] = rows_done

    options = dict(seed=seed, batch_rows=batch_rows, workers=workers, drop_existing=drop_existing,
                   analyze=not no_analyze)
    try:
        if bar is None:
            report = populate(dsn, items, ebs, **options)
        else:
            with bar:
                report = populate(dsn, items, ebs, progress=progress, **options)
    except (ValueError, Error) as error:
        raise click.ClickException(str(error))
    for table, count in report.rows.items():
        click.echo(f"{table:20s} {count:>12,}")
    click.echo(f"{'total':20s} {report.total_rows:>12,} rows in {report.load_seconds:.2f} s "
               f"({report.rows_per_second:,.0f} rows/s); indexes{' + ANALYZE' if report.analyzed else ''} "
               f"{report.index_seconds:.2f} s")


@main.group("bench")
def bench_group() -> None:
    """Benchmarks that compare replication modes side by side."""


@bench_group.command("tpcw")
@click.option("--mix", type=click.Choice(["browsing", "shopping", "ordering"]), default="browsing", show_default=True)
@click.option("--clients", type=int, default=8, show_default=True, help="Emulated browsers (closed loop, no think time).")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds measured per mode.")
@click.option("--modes", default="unreplicated,sequential,eve,passive", show_default=True,
              help="Comma-separated: unreplicated, sequential, eve, passive, single (one node, one worker).")
@click.option("--items", type=int, default=1000, show_default=True)
@click.option("--ebs", type=int, default=1, show_default=True, help="Scale: customers = 2880 x EBs.")
@click.option("--workers", type=int, default=None, help="Workers per node (default: one per core).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="A PNG of WIPS per mode.")
def bench_tpcw_command(mix, clients, duration, modes, items, ebs, workers, seed, json_path, plot_path) -> None:
    """TPC-W in each mode (same data, mix, clients): WIPS, latency, batches, rollbacks, roots."""
    from tpcw.bench import compare_modes, format_report, write_json, write_plot

    chosen = [mode.strip() for mode in modes.split(",") if mode.strip()]
    report = compare_modes(chosen, mix=mix, clients=clients, duration_s=duration, items=items, ebs=ebs,
                           seed=seed, workers=workers, echo=click.echo)
    for line in format_report(report):
        click.echo(line)
    if json_path:
        write_json(report, json_path)
        click.echo(f"wrote {json_path}")
    if plot_path:
        problem = write_plot(report, plot_path)
        click.echo(f"no chart: {problem}" if problem else f"wrote {plot_path}")
    if not all(data["roots_equal"] for data in report["modes"].values()):
        raise SystemExit("state roots differ between the nodes of a pair")


if __name__ == "__main__":
    main()
