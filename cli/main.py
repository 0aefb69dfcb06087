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


def _set_disk_full_file(path) -> None:
    # An environment variable, so the node's worker processes inherit the hook.
    if path:
        import os

        from evedb.storage import DISK_FULL_FILE_ENV

        os.environ[DISK_FULL_FILE_ENV] = os.path.abspath(path)


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
@click.option("--pipeline", "pipeline_depth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batches in flight (more overlap, smaller batches: on 2 cores 1 is fastest).")
@click.option("--peer-timeout-ms", type=int, default=1500, show_default=True)
@click.option("--replication", type=click.Choice(["eve", "passive"]), default="eve", show_default=True,
              help="eve: execute-verify (both nodes execute, tokens compared); passive: the primary "
                   "executes and ships changesets, the backup applies them (Remus-like baseline). "
                   "Both nodes must use the same.")
@click.option("--fixed-clock-ms", type=int, default=None, hidden=True,
              help="Reproducible runs: batch n executes at this Unix time (ms) + n; same value on both nodes.")
@click.option("--test-perturb", type=int, default=0, hidden=True,
              help="Test hook: make the next N parallel executions give a wrong reply.")
@click.option("--test-disk-full-file", type=click.Path(dir_okay=False), default=None, hidden=True,
              expose_value=False, callback=lambda _ctx, _param, value: _set_disk_full_file(value),
              help="Test hook: while this file exists, the node's SQLite writes fail with SQLITE_FULL.")
@click.option("--parallel-writers", is_flag=True,
              help="Split a parallel batch's writes across workers (they serialize on SQLite's write "
                   "lock in a timing-dependent order); default: all writes on one worker.")
@click.option("--mixer-false-negative-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Make the mixer wrongly admit a conflicting request with this probability (the same "
                   "wrong plan on every replica), to measure how divergences are caught and repaired.")
@click.option("--reverse-writer-dispatch", is_flag=True,
              help="With --parallel-writers: hand writer shares out last-first (give the two nodes of a "
                   "pair different dispatch orders so they rarely take the same wrong order).")
@click.option("--writer-stagger-ms", type=click.FloatRange(0.0, 100.0), default=0.0, show_default=True,
              help="With --parallel-writers: the k-th writer share handed out waits k times this long "
                   "before taking the write lock, so the lock order mostly follows the dispatch order.")
@click.option("--race-probe", is_flag=True, hidden=True,
              help="Measurement: also execute each parallel batch in batch order first and log whether "
                   "the tokens differ (DATA/race_probe.jsonl).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate: the node then requires TLS from clients and its peer.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="PEM key of --tls-cert.")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA of the peer's certificate: makes the peer link mutual TLS.")
@click.option("--auth-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Users and salted secret hashes (`evedb auth add`); clients must then authenticate.")
@click.option("--max-connections", type=int, default=None, help="Client connections at once [default: 256].")
@click.option("--max-inflight", type=int, default=None,
              help="Requests in flight per client; past it the node stops reading that client [default: 32].")
@click.option("--max-frame-bytes", type=int, default=None, help="Largest client frame [default: 16 MiB].")
@click.option("--max-statement-bytes", type=int, default=None, help="Longest SQL statement [default: 64 KiB].")
@click.option("--max-result-bytes", type=int, default=None, help="Largest reply [default: 16 MiB].")
@click.option("--max-output-buffer-bytes", type=int, default=None,
              help="Unread reply bytes after which a client is disconnected [default: 64 MiB].")
@click.option("--verbose", is_flag=True, help="Log what the node decides and why.")
def serve_command(role, data_dir, listen, peer, secret_file, workers, synchronous, procedures, rules,
                  max_batch, pipeline_depth, peer_timeout_ms, replication, fixed_clock_ms, test_perturb,
                  parallel_writers, mixer_false_negative_rate, reverse_writer_dispatch, race_probe, verbose,
                  writer_stagger_ms,
                  **hardening) -> None:
    """Run one node of a primary-backup pair."""
    from evedb.procedures import load_modules
    from evedb.runtime.hardening import node_settings
    from evedb.runtime.launch import configure_logging, serve
    from evedb.runtime.node import NodeConfig

    try:
        hardening_settings = node_settings(**hardening)
    except ValueError as error:
        raise click.UsageError(str(error))

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
        parallel_writers=parallel_writers, mixer_false_negative_rate=mixer_false_negative_rate,
        reverse_writer_dispatch=reverse_writer_dispatch, writer_stagger_ms=writer_stagger_ms,
        race_probe=race_probe, **hardening_settings,
    ))


@main.command("pair")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@click.option("--port", type=int, default=7480, show_default=True, help="Primary port; the backup uses port+1.")
@click.option("--workers", type=int, default=None)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Both nodes serve TLS with this certificate (it must name the loopback address).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA of the certificate: mutual TLS between the nodes, and what the printed DSN trusts.")
def pair_command(data_dir, port, workers, tls_cert, tls_key, tls_ca) -> None:
    """Start a primary on PORT and a backup on PORT+1 on loopback; Ctrl-C stops both."""
    import time

    from evedb.runtime.hardening import node_settings
    from evedb.runtime.launch import Pair

    try:
        tls = node_settings(tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca)["tls"]
    except ValueError as error:
        raise click.UsageError(str(error))
    pair = Pair(data_dir, port, workers=workers, tls=tls)
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
    """Print a node's role, view, committed seq, state root and counters.

    ADDRESS is HOST:PORT, or a one-node DSN for TLS or credentials
    (evedb+tls://USER:PASSWORD@HOST:PORT?ca=FILE)."""
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


@main.group("auth")
def auth_group() -> None:
    """Manage an auth file (`serve --auth-file`): users and salted hashes of their secrets."""


@auth_group.command("add")
@click.argument("auth_file", type=click.Path(dir_okay=False))
@click.argument("user")
@click.option("--token", "make_token", is_flag=True, help="Generate a random token, print it once, store its hash.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
def auth_add_command(auth_file, user, make_token, password_stdin) -> None:
    """Add USER (or replace its secret) in AUTH_FILE, created if missing; asks for a password
    unless --token or --password-stdin."""
    from evedb.runtime.auth import add_user, generate_token

    if make_token and password_stdin:
        raise click.UsageError("--token and --password-stdin exclude each other")
    if make_token:
        secret = generate_token()
    elif password_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        add_user(auth_file, user, secret)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error))
    click.echo(f"token for {user}: {secret}" if make_token else f"stored {user} in {auth_file}")


@auth_group.command("remove")
@click.argument("auth_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("user")
def auth_remove_command(auth_file, user) -> None:
    """Remove USER from AUTH_FILE."""
    from evedb.runtime.auth import remove_user

    try:
        removed = remove_user(auth_file, user)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error))
    if not removed:
        raise click.ClickException(f"no user {user!r} in {auth_file}")
    click.echo(f"removed {user} from {auth_file}")


@main.command("sim")
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed to run.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="How many seeds, from --seed on.")
@click.option("--duration-ms", type=click.IntRange(min=100), default=3000, show_default=True,
              help="Simulated time with faults, before a quiet tail.")
@click.option("--verbose", is_flag=True, help="Print each run's fault profile and full trace.")
@click.option("--committed-snapshot-reads", is_flag=True,
              help="Answer reads from the state pinned at the last commit, as a node's event loop does.")
def sim_command(seed, seeds, duration_ms, verbose, committed_snapshot_reads) -> None:
    """Run the seeded simulator of the replication protocol; exit 1 on any violation."""
    from evedb.sim import run_cli

    sys.exit(run_cli(seed, seeds, duration_ms=duration_ms, verbose=verbose, echo=click.echo,
                     committed_snapshot_reads=committed_snapshot_reads))


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


@bench_group.command("kv")
@click.option("--dsn", default=None, help="Run against this DSN instead of starting the modes (its servers "
              "need --procedures kvbench.procedures --rules kvbench/rules.toml for --cpu-us).")
@click.option("--modes", default="unreplicated,sequential,eve,passive", show_default=True)
@click.option("--mixes", default="w100,w50,w10,r100", show_default=True, help="Write shares: w100, w50, w10, r100.")
@click.option("--clients", default="1,4,16", show_default=True, help="Closed-loop client counts, each run in turn.")
@click.option("--keys", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--value-bytes", default="100", show_default=True, help="Value size(s) in bytes, comma-separated.")
@click.option("--cpu-us", default="0", show_default=True, help="µs of computation per request (list: a sweep).")
@click.option("--conflict", default="0", show_default=True, help="Share of requests on the hot keys (list: a sweep).")
@click.option("--hot-keys", type=click.IntRange(min=1), default=1, show_default=True, help="Size of the hot set.")
@click.option("--false-negative", default="0", show_default=True,
              help="Mixer false-negative rate(s) given to the servers (serve --mixer-false-negative-rate).")
@click.option("--parallel-writers", is_flag=True, help="Pass serve --parallel-writers to the servers.")
@click.option("--server-args", default="", help='More `evedb serve` options for every node, e.g. "--pipeline 2".')
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per figure (median).")
@click.option("--duration", type=float, default=3.0, show_default=True, help="Measured seconds per run.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Unmeasured seconds before each run.")
@click.option("--client-processes", type=click.IntRange(min=1), default=None,
              help="Processes the clients are spread over (default: min(clients, 2)).")
@click.option("--workers", type=int, default=None, help="Workers per node (default: one per core).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--timeline", is_flag=True, help="Instead of the grid: throughput per second through kill -9 and "
              "restart of the backup, then of the primary (eve mode unless --modes names one mode; the first "
              "mix and knob values, the last --clients count).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--plot", "plot_prefix", default=None, help="Write PNG charts as PREFIX_<figure>.png.")
def bench_kv_command(**options) -> None:
    """Key-value microbenchmarks (Eve's evaluation) in each mode: throughput, latency, sweeps, timeline."""
    from kvbench.command import run_command

    sys.exit(run_command(options, echo=click.echo))


@main.command("torture")
@click.option("--duration", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds of faults under load (then the pair settles and is checked).")
@click.option("--seed", type=int, default=1, show_default=True, help="The fault schedule's seed.")
@click.option("--clients", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Workers per node.")
@click.option("--peer-timeout-ms", type=click.IntRange(min=200), default=1000, show_default=True)
@click.option("--kinds", default=None, help="Comma-separated fault kinds (default: all).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Keep data and node logs here (default: a temporary directory, kept only on failure).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def torture_command(duration, seed, clients, workers, peer_timeout_ms, kinds, data_dir, json_path) -> None:
    """Fault campaign: a pair under load, seeded faults, then the checks; exit 1 on any violation."""
    from evedb.faults.cli import run_torture

    sys.exit(run_torture(duration=duration, seed=seed, clients=clients, workers=workers,
                         peer_timeout_ms=peer_timeout_ms, kinds=kinds, data_dir=data_dir,
                         json_path=json_path, echo=click.echo))


if __name__ == "__main__":
    main()
