"""SQLite connections for evedb: how they are opened, what clients may do on them, and how
nondeterminism is removed at the source.

Owns:
- opening apsw connections in WAL mode with evedb's PRAGMAs (each run on its own: apsw stops a
  multi-statement execute at the first statement that returns rows);
- the clock VFS: `datetime('now')`, `CURRENT_TIMESTAMP`, `unixepoch()` read the batch
  timestamp set by the executor for the current thread, never the wall clock.  It is the C
  shim in evedb/_clock.c when that was built (files in C, memory-mapped reads), else the
  Python VFS below (every file call through the interpreter, no mmap);
- per-connection `random()`/`randomblob()` seeded from (batch seed, request position);
- the client authorizer: it refuses ATTACH/DETACH, PRAGMA writes, `load_extension`,
  transaction control, VACUUM, temporary objects, the nondeterministic `changes()`,
  `total_changes()` and `last_insert_rowid()`, and any access to evedb's `_evedb_*` tables,
  and remembers why, so the error names what was refused;
- evedb's internal tables (`_evedb_meta`, `_evedb_undo`).

Rules kept:
- the authorizer on a client connection never changes; evedb's own statements on such a
  connection (savepoints, the undo record) run inside `internal()` and either with
  `can_cache=False` or with their text prefixed by `INTERNAL_TAG`, a comment holding a secret
  drawn per process: no statement prepared while they were allowed can ever be reused for a
  client (apsw's statement cache skips the authorizer on reuse, and is keyed by the text);
- every user table has a primary key (checked after DDL by `tables_without_primary_key`),
  whose columns cannot hold keys that are equal but stored differently (`ambiguous_keys`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import secrets
import threading
from dataclasses import dataclass

import apsw

from .errors import NotSupportedError, ProgrammingError

INTERNAL_PREFIX = "_evedb_"
# The replicated reply cache: the last reply to each client, part of the state root.
REPLIES_TABLE = "_evedb_replies"
CLOCK_VFS_NAME = "evedb_clock"
# Prefix of evedb's own statements that may enter a client connection's statement cache.  The
# secret is never sent anywhere, so no client can write a text equal to a cached internal one.
INTERNAL_TAG = f"/* evedb-internal {secrets.token_hex(16)} */ "
# Julian day of the Unix epoch, in milliseconds: SQLite's clock is Julian-day milliseconds.
_UNIX_EPOCH_JULIAN_MS = 210_866_760_000_000

_batch_clock = threading.local()

try:
    from . import _clock as _c_clock
except ImportError:  # built without a C compiler or SQLite's headers: the Python VFS serves
    _c_clock = None


def batch_timestamp() -> int | None:
    """The time fixed for SQLite on this thread by `set_batch_timestamp`, None if none is."""
    if _clock_vfs == "c":
        return _c_clock.get_time()
    return getattr(_batch_clock, "timestamp_ms", None)


def set_batch_timestamp(timestamp_ms: int | None) -> None:
    """Fix the time SQLite sees on this thread (None: back to the real clock), in the clock
    VFS this process uses."""
    if _clock_vfs is None:
        _ensure_clock_vfs()
    if _clock_vfs == "c":
        _c_clock.set_time(timestamp_ms)
    else:
        _batch_clock.timestamp_ms = timestamp_ms


class _ClockVFS(apsw.VFS):
    """The default VFS with one change: the current time comes from the batch."""

    def __init__(self):
        super().__init__(CLOCK_VFS_NAME, base="")

    def xCurrentTimeInt64(self) -> int:  # noqa: N802 - apsw's name
        timestamp_ms = getattr(_batch_clock, "timestamp_ms", None)
        if timestamp_ms is None:
            return super().xCurrentTimeInt64()
        return timestamp_ms + _UNIX_EPOCH_JULIAN_MS


# Test hook (the fault campaign's full disk): while the file named by this variable exists,
# every SQLite write of this process fails with SQLITE_FULL.  An environment variable, not an
# argument, so the worker processes a node spawns inherit it.
DISK_FULL_FILE_ENV = "EVEDB_TEST_DISK_FULL_FILE"
# EVEDB_CLOCK_VFS=python makes this process (and the workers it starts) use the Python clock VFS
# even where the C one was built: to compare the two, or to rule the C shim out of a problem.
CLOCK_VFS_ENV = "EVEDB_CLOCK_VFS"


class _DiskFullFile(apsw.VFSFile):
    def __init__(self, vfs: str, filename, flags, trigger: str):
        super().__init__(vfs, filename, flags)
        self._trigger = trigger

    def xWrite(self, data, offset) -> None:  # noqa: N802 - apsw's name
        if os.path.exists(self._trigger):
            raise apsw.FullError("database or disk is full (test hook: " + self._trigger + " exists)")
        super().xWrite(data, offset)


class _DiskFullClockVFS(_ClockVFS):
    """The clock VFS whose files refuse writes while the trigger file exists."""

    def __init__(self, trigger: str):
        super().__init__()
        self._trigger = trigger

    def xOpen(self, name, flags):  # noqa: N802 - apsw's name
        return _DiskFullFile("", name, flags, self._trigger)


def is_storage_failure(error: BaseException) -> bool:
    """The disk failed under SQLite (full, or an I/O error): the node, not the request, is at
    fault.  A worker's failure reaches the coordinator as its traceback text, hence the names."""
    return isinstance(error, (apsw.FullError, apsw.IOError)) or any(
        name in str(error) for name in ("apsw.FullError", "apsw.IOError"))


_clock_vfs: _ClockVFS | str | None = None
_clock_lock = threading.Lock()


def load_private_extension(library: str, entry_point: str) -> bool:
    """Load one of evedb's own SQLite extensions into this process; False if it failed.
    It is loaded into a private in-memory connection and stays for the process (its entry
    point answers SQLITE_OK_LOAD_PERMANENTLY): client connections never have extension
    loading enabled."""
    loader = apsw.Connection(":memory:")
    try:
        loader.enable_load_extension(True)
        loader.load_extension(library, entry_point)
    except apsw.Error:
        return False
    finally:
        loader.close()
    return True


def _load_c_clock_vfs() -> bool:
    """Register the C clock VFS (evedb/_clock.c) in this process; False if it is unavailable."""
    if _c_clock is None or not load_private_extension(_c_clock.__file__, "sqlite3_evedbclock_init"):
        return False
    return CLOCK_VFS_NAME in apsw.vfs_names()


def _ensure_clock_vfs() -> None:
    global _clock_vfs
    with _clock_lock:
        if _clock_vfs is None:
            trigger = os.environ.get(DISK_FULL_FILE_ENV)
            if trigger:  # the fault campaign's full disk needs a VFS whose writes can fail
                _clock_vfs = _DiskFullClockVFS(trigger)
            elif os.environ.get(CLOCK_VFS_ENV) != "python" and _load_c_clock_vfs():
                _clock_vfs = "c"
            else:
                _clock_vfs = _ClockVFS()


def clock_vfs_kind() -> str:
    """Which clock VFS this process's connections use: "c" or "python"."""
    _ensure_clock_vfs()
    return "c" if _clock_vfs == "c" else "python"


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How connections are opened.  cache_mb is per connection (shared cache is compiled out)."""

    synchronous: str = "NORMAL"
    cache_mb: int = 64
    # Memory-mapped reads (SQLite's mmap_size; the C clock VFS only, the Python one has no
    # mmap).  A reader whose page cache another connection's commit emptied then refetches
    # pages from the mapping instead of read() calls: TPC-W best sellers right after another
    # connection's commit, 7.2 -> 4.3 ms; and the C VFS keeps the mapping itself across such
    # commits, so those pages cost no page faults either (evedb/DESIGN.md "Storage").
    mmap_mb: int = 1024
    busy_timeout_ms: int = 30_000
    # Keep each client's last reply in REPLIES_TABLE so a retried write is answered from it,
    # never run twice (the server turns this on; an embedded database has no retries).
    reply_cache: bool = False

    def __post_init__(self):
        if self.synchronous.upper() not in ("NORMAL", "FULL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be NORMAL, FULL, EXTRA or OFF, not {self.synchronous!r}")


def _pragma(connection: apsw.Connection, text: str) -> None:
    # One PRAGMA per execute, and read its result so it really runs.
    connection.execute(text, can_cache=False).fetchall()


def open_connection(path: str, options: StorageOptions = StorageOptions()) -> apsw.Connection:
    """An evedb connection to `path` in WAL mode with the clock VFS, no authorizer yet."""
    _ensure_clock_vfs()
    connection = apsw.Connection(
        path,
        flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI,
        vfs=CLOCK_VFS_NAME,
    )
    connection.set_busy_timeout(options.busy_timeout_ms)
    mode = connection.execute("PRAGMA journal_mode=WAL", can_cache=False).fetchall()
    if path not in ("", ":memory:") and mode and str(mode[0][0]).lower() != "wal":
        raise apsw.CantOpenError(f"could not put {path} in WAL mode (got {mode})")
    _pragma(connection, f"PRAGMA synchronous={options.synchronous.upper()}")
    _pragma(connection, f"PRAGMA cache_size=-{options.cache_mb * 1024}")
    _pragma(connection, f"PRAGMA mmap_size={options.mmap_mb * 1024 * 1024}")
    _pragma(connection, "PRAGMA foreign_keys=ON")
    # REPLACE deletes then go through delete triggers like any other delete.
    _pragma(connection, "PRAGMA recursive_triggers=ON")
    return connection


@contextlib.contextmanager
def replaying(connection: apsw.Connection):
    """Writes that replay rows already decided elsewhere (undo, a passive backup's apply, a
    state transfer): triggers and foreign-key actions must not fire again, their effects are
    among the rows replayed.  Call outside any transaction (foreign_keys is ignored inside)."""
    connection.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    _pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        _pragma(connection, "PRAGMA foreign_keys=ON")
        connection.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1)


def ensure_internal_tables(connection: apsw.Connection) -> None:
    """Create evedb's bookkeeping tables if they are missing (idempotent)."""
    with connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {INTERNAL_PREFIX}meta(key TEXT PRIMARY KEY, value)",
            can_cache=False,
        )
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {REPLIES_TABLE}("
            "client_id TEXT PRIMARY KEY, request_id INTEGER NOT NULL, reply BLOB NOT NULL)",
            can_cache=False,
        )
        # One row per committed SQLite transaction of an unverified batch: the inverse of its
        # changeset.  id grows with commit order, so undo applies ids newest-first.
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {INTERNAL_PREFIX}undo("
            "id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, changeset BLOB NOT NULL)",
            can_cache=False,
        )


def read_meta(connection: apsw.Connection, key: str, default=None):
    rows = connection.execute(
        f"SELECT value FROM {INTERNAL_PREFIX}meta WHERE key = ?", (key,), can_cache=False
    ).fetchall()
    return rows[0][0] if rows else default


META_UPSERT = (f"INSERT INTO {INTERNAL_PREFIX}meta(key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value")


def write_meta(connection: apsw.Connection, key: str, value) -> None:
    connection.execute(META_UPSERT, (key, value), can_cache=False)


# --- Deterministic functions -------------------------------------------------------------

_INT64_MIN = -(1 << 63)


class RequestEntropy:
    """random()/randomblob() for one connection, reseeded for every request.

    The seed mixes the batch seed and the request's position in the batch, so a request gets
    the same values on every replica and in every re-execution, whichever worker runs it.
    """

    def __init__(self):
        self._generator = random.Random(0)
        self._seed: int | None = None

    def reseed(self, batch_seed: int, position: int) -> None:
        # Seeding costs ~4 µs and most requests never call random(): seed on first use.
        self._seed = (batch_seed << 32) ^ position

    def _ready(self) -> random.Random:
        if self._seed is not None:
            self._generator.seed(self._seed, version=2)
            self._seed = None
        return self._generator

    def random(self) -> int:
        return self._ready().getrandbits(64) + _INT64_MIN

    def randomblob(self, size) -> bytes:
        size = max(1, int(size or 1))
        return self._ready().getrandbits(8 * size).to_bytes(size, "little")


def install_deterministic_functions(connection: apsw.Connection, entropy: RequestEntropy) -> None:
    connection.create_scalar_function("random", entropy.random, 0)
    connection.create_scalar_function("randomblob", entropy.randomblob, 1)


# --- The client authorizer ---------------------------------------------------------------

# Read-only PRAGMAs a client may run.  Those that take an object name as argument:
_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
# Those that only report a value (an argument would make them writes):
_PRAGMAS_VALUE_ONLY = frozenset({"user_version", "application_id", "foreign_keys", "encoding"})

_REFUSED_FUNCTIONS = {
    "load_extension": (NotSupportedError, "load_extension() is not allowed: evedb loads no extensions"),
    "changes": (ProgrammingError, "changes() is not deterministic under parallel execution; use cursor.rowcount"),
    "total_changes": (ProgrammingError, "total_changes() is not deterministic under parallel execution; use cursor.rowcount"),
    "last_insert_rowid": (ProgrammingError, "last_insert_rowid() is not deterministic under parallel execution; use cursor.lastrowid"),
}

_TRANSACTION_ADVICE = (
    "evedb runs one-shot transactions: use conn.commit() in manual-commit mode, "
    "conn.transaction(), executemany() or a server-side procedure instead"
)

_TABLE_ACTIONS = {
    apsw.SQLITE_READ: "read",
    apsw.SQLITE_INSERT: "insert into",
    apsw.SQLITE_UPDATE: "update",
    apsw.SQLITE_DELETE: "delete from",
    apsw.SQLITE_CREATE_TABLE: "create table",
    apsw.SQLITE_DROP_TABLE: "drop table",
    apsw.SQLITE_ALTER_TABLE: "alter table",
    apsw.SQLITE_CREATE_INDEX: "create index on",
    apsw.SQLITE_DROP_INDEX: "drop index on",
    apsw.SQLITE_CREATE_TRIGGER: "create trigger on",
    apsw.SQLITE_DROP_TRIGGER: "drop trigger on",
}
_TEMPORARY_ACTIONS = frozenset(
    {
        apsw.SQLITE_CREATE_TEMP_TABLE,
        apsw.SQLITE_CREATE_TEMP_INDEX,
        apsw.SQLITE_CREATE_TEMP_TRIGGER,
        apsw.SQLITE_CREATE_TEMP_VIEW,
        apsw.SQLITE_DROP_TEMP_TABLE,
        apsw.SQLITE_DROP_TEMP_INDEX,
        apsw.SQLITE_DROP_TEMP_TRIGGER,
        apsw.SQLITE_DROP_TEMP_VIEW,
    }
)


class ClientAuthorizer:
    """The fixed authorizer of a client connection, with the reason for its last refusal."""

    def __init__(self):
        self.internal_depth = 0
        self.refusal: tuple[type, str] | None = None

    def __call__(self, action, first, second, database, trigger_or_view):
        if self.internal_depth:
            return apsw.SQLITE_OK
        refusal = self._refusal(action, first, second, database)
        if refusal is None:
            return apsw.SQLITE_OK
        # Keep the first refusal of a statement: it names the statement's own fault.
        if self.refusal is None:
            self.refusal = refusal
        return apsw.SQLITE_DENY

    @staticmethod
    def _refusal(action, first, second, database):
        if action in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
            return (NotSupportedError, "ATTACH and DETACH are not allowed: an evedb database is one file")
        if action in (apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT):
            return (NotSupportedError, f"transaction control is not allowed: {_TRANSACTION_ADVICE}")
        if action == apsw.SQLITE_PRAGMA:
            name = (first or "").lower()
            if name in _PRAGMAS_WITH_ARGUMENT or (name in _PRAGMAS_VALUE_ONLY and second is None):
                return None
            shown = f"PRAGMA {name}" + (f"={second}" if second is not None else "")
            return (ProgrammingError, f"{shown} is not allowed: clients may only read schema PRAGMAs")
        if action == apsw.SQLITE_FUNCTION:
            return _REFUSED_FUNCTIONS.get((second or "").lower())
        if action in _TEMPORARY_ACTIONS or (database or "").lower() == "temp":
            return (NotSupportedError, "temporary tables, views and triggers are not allowed: they are not replicated")
        if action in _TABLE_ACTIONS and (first or "").lower().startswith(INTERNAL_PREFIX):
            return (ProgrammingError, f"{first} is internal to evedb: clients may not {_TABLE_ACTIONS[action]} it")
        return None

    def begin_statement(self) -> None:
        self.refusal = None

    @contextlib.contextmanager
    def internal(self):
        """Allow evedb's own statements.  Use only with `can_cache=False` or `INTERNAL_TAG`."""
        self.internal_depth += 1
        try:
            yield
        finally:
            self.internal_depth -= 1


# Statements refused from their first keyword, before SQLite prepares them, so the message is
# about the statement the user wrote (VACUUM, for one, shows up to the authorizer as ATTACH).
_REFUSED_KEYWORDS = {
    "begin": (NotSupportedError, f"BEGIN is not allowed: {_TRANSACTION_ADVICE}"),
    "commit": (NotSupportedError, f"COMMIT is not allowed: {_TRANSACTION_ADVICE}"),
    "end": (NotSupportedError, f"END is not allowed: {_TRANSACTION_ADVICE}"),
    "rollback": (NotSupportedError, f"ROLLBACK is not allowed: {_TRANSACTION_ADVICE}"),
    "savepoint": (NotSupportedError, f"SAVEPOINT is not allowed: {_TRANSACTION_ADVICE}"),
    "release": (NotSupportedError, f"RELEASE is not allowed: {_TRANSACTION_ADVICE}"),
    "vacuum": (NotSupportedError, "VACUUM is not allowed on a replicated database"),
    "attach": (NotSupportedError, "ATTACH is not allowed: an evedb database is one file"),
    "detach": (NotSupportedError, "DETACH is not allowed: an evedb database is one file"),
}

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")


@functools.lru_cache(maxsize=4096)
def first_keyword(sql: str) -> str:
    """The first word of a statement, lower-case, after comments and blanks."""
    position = _LEADING_NOISE.match(sql).end()
    match = _FIRST_WORD.match(sql, position)
    return match.group(0).lower() if match else ""


_IDENTIFIER = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_$]*)'
_INSERT_TARGET = re.compile(
    rf"(?:insert(?:\s+or\s+[a-z]+)?|replace)\s+into\s+({_IDENTIFIER})(?:\s*\.\s*({_IDENTIFIER}))?", re.I
)


@functools.lru_cache(maxsize=4096)
def insert_target(sql: str) -> str | None:
    """The table an INSERT/REPLACE statement writes, or None (not found, or WITH ... INSERT).

    Read from the text, not from the authorizer: apsw's statement cache skips the authorizer
    when it reuses a prepared statement, so prepare-time observations are not per execution.
    """
    position = _LEADING_NOISE.match(sql).end()
    match = _INSERT_TARGET.match(sql, position)
    if match is None:
        return None
    name = match.group(2) or match.group(1)
    if name[0] in "\"`[":
        name = name[1:-1].replace('""', '"')
    return name


def refusal_for_keyword(sql: str) -> tuple[type, str] | None:
    return _REFUSED_KEYWORDS.get(first_keyword(sql))


def open_client_connection(path: str, options: StorageOptions = StorageOptions()):
    """A connection that runs client SQL: authorizer fixed, deterministic functions installed.

    Returns (connection, authorizer, entropy).
    """
    connection = open_connection(path, options)
    # The query planner stability guarantee: one plan per statement whatever its bound values.
    # Without it, SQLite (built with STAT4, as apsw's is) re-prepares a statement on every new
    # binding that the statistics could plan differently, the authorizer called again for
    # each: most TPC-W reads, every call (evedb/DESIGN.md, "Storage").
    connection.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, 1)
    entropy = RequestEntropy()
    install_deterministic_functions(connection, entropy)
    authorizer = ClientAuthorizer()
    connection.authorizer = authorizer
    return connection, authorizer, entropy


# --- Schema facts ------------------------------------------------------------------------


def user_tables(connection: apsw.Connection) -> list[str]:
    """User tables in name order (internal and sqlite_ tables excluded)."""
    rows = connection.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_evedb\\_%' ESCAPE '\\' "
        "ORDER BY name",
        can_cache=False,
    ).fetchall()
    return [row[0] for row in rows]


def replicated_tables(connection: apsw.Connection) -> list[str]:
    """The tables the Merkle tree covers: user tables and the reply cache."""
    return user_tables(connection) + [REPLIES_TABLE]


def is_replicated_table(table: str) -> bool:
    """User tables and the reply cache; never evedb's bookkeeping or SQLite's own tables
    (sqlite_stat1 and friends are derived from the data by ANALYZE and have no key)."""
    if table == REPLIES_TABLE:
        return True
    return not table.startswith(INTERNAL_PREFIX) and not table.lower().startswith("sqlite_")


def table_columns(connection: apsw.Connection, table: str) -> tuple[list[str], list[str]]:
    """(column names in declared order, primary-key column names in key order)."""
    rows = connection.execute(f'PRAGMA table_info("{_quote(table)}")', can_cache=False).fetchall()
    columns = [row[1] for row in rows]
    keyed = sorted((row[5], row[1]) for row in rows if row[5])
    return columns, [name for _, name in keyed]


def is_rowid_alias_table(connection: apsw.Connection, table: str) -> bool:
    """Whether the table's primary key is its rowid (a single INTEGER PRIMARY KEY column).

    Only then is a rowid logical state; any other table's hidden rowid is allocated by each
    replica on its own and must never reach a reply.
    """
    rows = connection.execute(f"PRAGMA table_info({quote_identifier(table)})", can_cache=False).fetchall()
    keyed = [row for row in rows if row[5]]
    if len(keyed) != 1 or (keyed[0][2] or "").upper() != "INTEGER":
        return False
    listed = connection.execute(f"PRAGMA table_list({quote_identifier(table)})", can_cache=False).fetchall()
    return not (listed and listed[0][4])  # column 4: WITHOUT ROWID


def tables_without_primary_key(connection: apsw.Connection) -> list[str]:
    return [table for table in user_tables(connection) if not table_columns(connection, table)[1]]


def column_affinity(declared_type: str) -> str:
    """SQLite's type affinity of a declared column type (its rules, in their order)."""
    declared = (declared_type or "").upper()
    if "INT" in declared:
        return "INTEGER"
    if "CHAR" in declared or "CLOB" in declared or "TEXT" in declared:
        return "TEXT"
    if not declared or "BLOB" in declared:
        return "BLOB"
    if "REAL" in declared or "FLOA" in declared or "DOUB" in declared:
        return "REAL"
    return "NUMERIC"


def ambiguous_keys(connection: apsw.Connection) -> list[str]:
    """Why a user table's primary key could hold two keys that SQLite finds equal but stores
    differently; empty when none can.

    SQLite's session changesets cannot describe an UPDATE between such keys (it records an
    UPDATE carrying the key, or an UPDATE and an INSERT of one row), so neither undo nor the
    Merkle deltas could follow it.  That happens with a collation other than BINARY ('p' and
    'P' under NOCASE) and with a column without type affinity (1 and 1.0).
    """
    problems = []
    for table in user_tables(connection):
        info = connection.execute(f"PRAGMA table_info({quote_identifier(table)})", can_cache=False).fetchall()
        keyed = {row[1]: row[2] for row in info if row[5]}
        collations = {}
        for index in connection.execute(f"PRAGMA index_list({quote_identifier(table)})", can_cache=False).fetchall():
            if index[3] == "pk":  # the primary key's own index (none for an INTEGER PRIMARY KEY)
                for column in connection.execute(f"PRAGMA index_xinfo({quote_identifier(index[1])})",
                                                 can_cache=False).fetchall():
                    if column[5] and column[2] in keyed:  # a key column, with its collation
                        collations[column[2]] = column[4]
        for column, declared in keyed.items():
            collation = collations.get(column) or "BINARY"
            if collation.upper() != "BINARY":
                problems.append(f"table {table}: primary-key column {column} uses collation {collation}; evedb "
                                "needs BINARY key columns (keys equal under it but stored differently cannot be "
                                "told apart in SQLite's changesets)")
            elif column_affinity(declared) == "BLOB":
                problems.append(f"table {table}: primary-key column {column} has no type affinity; declare it "
                                "INTEGER, TEXT, REAL or NUMERIC (without one, 1 and 1.0 are different keys that "
                                "SQLite finds equal, which its changesets cannot tell apart)")
    return problems


def schema_rows(connection: apsw.Connection) -> list[tuple]:
    """The user schema, canonically ordered: what the state root hashes as 'the schema'."""
    return connection.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_evedb\\_%' ESCAPE '\\' "
        "ORDER BY type, name",
        can_cache=False,
    ).fetchall()


def schema_version(connection: apsw.Connection) -> int:
    return connection.execute("PRAGMA schema_version", can_cache=False).fetchall()[0][0]


def _quote(identifier: str) -> str:
    return identifier.replace('"', '""')


def quote_identifier(identifier: str) -> str:
    return f'"{_quote(identifier)}"'
