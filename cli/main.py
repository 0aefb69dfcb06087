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
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--seconds", type=float, default=5.0, show_default=True)
@click.option("--clients", type=int, default=4, show_default=True)
def demo_command(workers, seconds, clients) -> None:
    """Run a small bank workload on an embedded database in a temporary directory."""
    from evedb.demo import run_embedded_demo

    sys.exit(run_embedded_demo(workers=workers, seconds=seconds, clients=clients, echo=click.echo))


if __name__ == "__main__":
    main()
