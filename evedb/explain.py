"""`evedb mix --explain`: a statement's access sets, as a user writing mixer rules wants them."""

from __future__ import annotations

from .access import Catalog, analyze


def explain_statement(sql: str, params=None, *, schema_file: str | None = None, database: str | None = None) -> dict:
    catalog = None
    if schema_file is not None:
        with open(schema_file, encoding="utf-8") as handle:
            catalog = Catalog.from_sql(handle.read())
    elif database is not None:
        from .storage import open_connection

        catalog = Catalog.from_connection(open_connection(database))
    if isinstance(params, list):
        params = tuple(params)
    access = analyze(sql, params, catalog)
    keys = sorted((table, list(key)) for table, key in access.keys)
    report = {
        "sql": sql,
        "reads": sorted(access.reads),
        "writes": sorted(access.writes),
        "keys": [{"table": table, "key": key} for table, key in keys],
        "exclusive": access.exclusive,
        "read_only": access.read_only,
    }

    def granularity(table: str) -> str:
        table_keys = [key for name, key in keys if name == table]
        if not table_keys:
            return f"{table} (whole table)"
        return f"{table} rows " + ", ".join("(" + ", ".join(map(repr, key)) + ")" for key in table_keys)

    report["lines"] = [
        f"statement: {sql}",
        f"reads:     {', '.join(granularity(t) for t in sorted(access.reads)) or '-'}",
        f"writes:    {', '.join(granularity(t) for t in sorted(access.writes)) or '-'}",
        f"exclusive: {'yes (runs alone)' if access.exclusive else 'no'}",
        f"read-only: {'yes' if access.read_only else 'no'}",
    ]
    if catalog is None:
        report["lines"].append("note: no schema given (--schema or --db), so no row keys can be derived")
    return report
