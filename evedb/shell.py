"""`evedb shell`: type SQL, see rows.  Each statement is its own transaction (autocommit)."""

from __future__ import annotations

import sys


def run_shell(dsn: str, *, timeout: float, echo, stdin=None) -> int:
    import evedb

    stdin = stdin or sys.stdin
    connection = evedb.connect(dsn, autocommit=True, timeout=timeout)
    interactive = stdin.isatty()
    buffer = ""
    try:
        while True:
            if interactive:
                echo("evedb> " if not buffer else "  ...> ", nl=False)
            line = stdin.readline()
            if not line:
                break
            buffer += line
            if not buffer.strip().endswith(";"):
                continue
            sql, buffer = buffer.strip().rstrip(";"), ""
            if not sql:
                continue
            try:
                cursor = connection.execute(sql)
            except evedb.Error as error:
                echo(f"error: {type(error).__name__}: {error}")
                continue
            if cursor.description:
                echo(" | ".join(column[0] for column in cursor.description))
                for row in cursor.fetchall():
                    echo(" | ".join("NULL" if value is None else str(value) for value in row))
            else:
                echo(f"ok ({cursor.rowcount} row(s))")
    finally:
        connection.close()
    return 0
