"""evedb: a replicated SQLite database using Eve's execute-verify replication.

The public surface is a PEP 249 module: `evedb.connect(...)`, the DB-API globals, type
objects, constructors and exceptions, plus `@evedb.procedure` for server-side procedures.
"""

from __future__ import annotations

from .dbapi import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Connection,
    Cursor,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    apilevel,
    paramstyle,
    threadsafety,
)
from .errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotPrimary,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from .procedures import procedure

__version__ = "0.1.0"


def connect(
    database: str,
    *,
    workers: int | None = None,
    synchronous: str = "NORMAL",
    procedures=(),
    rules=None,
    autocommit: bool = False,
    max_batch: int = 256,
    timeout: float | None = None,
    client_id: str | None = None,
    user: str | None = None,
    password: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> Connection:
    """Open a connection.

    database: a file path (embedded: this process runs the engine), or
      "evedb://host:port,host:port" for a replicated pair (`timeout`: seconds to keep
      retrying a request across failover before OperationalError; default 10).
    workers: connections executing in parallel, each in its own process (default: one per
      core): this process's own and a pool of workers-1 processes; 1 runs everything
      sequentially inside this process.
    synchronous: SQLite's durability setting, NORMAL (default) or FULL.
    procedures: module names whose `@evedb.procedure` functions the workers import.
    rules: mixer rules for procedures: a MixerRules, a TOML path or an application name.
    client_id: this client's identity for exactly-once replies (default: a fresh random one).
      Requests are numbered from 1 per connection, so reuse an id only for a client that
      continues where it left off, never for two live connections.
    user, password: credentials for a node started with --auth-file (or in the DSN:
      "evedb://user:password@host:port").
    tls_ca, tls_cert, tls_key: TLS to the nodes (or "evedb+tls://host:port?ca=FILE"): the CA
      that signed their certificates (default: the system's), and a client certificate.
    """
    from .storage import StorageOptions

    if database.startswith(("evedb://", "evedb+tls://")):
        from .client import RemoteTransport

        transport = RemoteTransport(database, timeout=timeout or 10.0, user=user, password=password,
                                    tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        return Connection(transport, autocommit=autocommit, client_id=client_id)
    from .embedded import open_database
    from .procedures import load_modules, registered_modules

    if isinstance(procedures, str):
        procedures = (procedures,)
    load_modules(procedures)
    if isinstance(rules, str):
        from mixer_rules import load_rules

        rules = load_rules(rules)
    try:
        options = StorageOptions(synchronous=synchronous)
    except ValueError as error:
        raise ProgrammingError(str(error)) from None
    database_handle = open_database(
        database,
        workers=workers,
        options=options,
        procedure_modules=sorted(set(procedures) | set(registered_modules())),
        rules=rules,
        max_batch=max_batch,
    )
    return Connection(database_handle, autocommit=autocommit, client_id=client_id)


__all__ = [
    "connect",
    "procedure",
    "apilevel",
    "threadsafety",
    "paramstyle",
    "Connection",
    "Cursor",
    "STRING",
    "BINARY",
    "NUMBER",
    "DATETIME",
    "ROWID",
    "Date",
    "Time",
    "Timestamp",
    "DateFromTicks",
    "TimeFromTicks",
    "TimestampFromTicks",
    "Binary",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "NotPrimary",
]
