"""evedb's PEP 249 (DB-API 2.0) driver.

Transactions are one-shot (DESIGN.md section 1): the server gets each transaction whole,
never a transaction held open across round trips.  What that means for this driver:

When a request leaves the client
- autocommit mode (`conn.autocommit = True`): every `execute`, `executemany` (all parameter
  sets as one atomic script) and `callproc` is its own transaction, sent at once.
- manual-commit mode (the PEP 249 default):
  * a statement that can change nothing (SELECT, a schema PRAGMA) is sent at once, provided
    no write is pending;
  * a statement that may write (INSERT, UPDATE, DELETE, DDL, ...) is queued; `commit()` sends
    every queued statement as one atomic script, and then each cursor holds its statement's
    result (rowcount, lastrowid, RETURNING rows).  If any statement fails, none is applied
    and `commit()` raises the error.  `rollback()` (and `close()`) drops the queue.
  * `callproc` runs the procedure as its own transaction at once.
- `with conn.transaction() as tx: tx.execute(...)` sends the block's statements as one atomic
  script when the block ends; the cursors `tx.execute` returned hold the results afterwards.

What raises NotSupportedError (never a partial commit): reading a queued write's result before
`commit()`; a read, a procedure call or `conn.transaction()` while writes are queued (each
would need the queued writes to be visible inside an open transaction).  The message says
what to do instead.
"""

from __future__ import annotations

import datetime
import functools
import re
import time
from typing import Iterable, Sequence

from . import errors
from .access import analyze
from .errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)
from .messages import Reply, Request, Statement, StatementResult

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"  # named parameters (:name, @name, $name) are accepted too

# --- Type objects and constructors ---------------------------------------------------------


class DBAPITypeObject:
    """Compares equal to every SQLite declared type whose affinity it stands for."""

    def __init__(self, name: str, *fragments: str):
        self.name = name
        self._fragments = fragments

    def __eq__(self, other) -> bool:
        if isinstance(other, DBAPITypeObject):
            return other is self
        if not isinstance(other, str):
            return False
        declared = other.upper()
        return any(fragment in declared for fragment in self._fragments)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<evedb type {self.name}>"


STRING = DBAPITypeObject("STRING", "CHAR", "CLOB", "TEXT")
BINARY = DBAPITypeObject("BINARY", "BLOB")
NUMBER = DBAPITypeObject("NUMBER", "INT", "REAL", "FLOA", "DOUB", "NUM", "DEC", "BOOL")
DATETIME = DBAPITypeObject("DATETIME", "DATE", "TIME")
ROWID = DBAPITypeObject("ROWID", "ROWID")

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 names
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802
    return Timestamp(*time.localtime(ticks)[:6])


def Binary(value) -> bytes:  # noqa: N802
    return bytes(value)


# --- Parameters ----------------------------------------------------------------------------

_PARAMETER_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/"""
    r"""|(\?\d*)|([:@$][A-Za-z_][A-Za-z0-9_]*)""",
    re.S,
)


@functools.lru_cache(maxsize=4096)
def parameter_shape(sql: str) -> tuple[int, frozenset[str]]:
    """(number of positional parameters, names of named parameters) of a statement."""
    highest, names = 0, set()
    for match in _PARAMETER_TOKENS.finditer(sql):
        question, named = match.group(1), match.group(2)
        if question is not None:
            # SQLite numbers a bare ? one past the largest number assigned so far.
            highest = max(highest, int(question[1:])) if len(question) > 1 else highest + 1
        elif named is not None:
            names.add(named[1:])
    return highest, frozenset(names)


_WIRE_TYPES = frozenset({int, float, str, bytes, type(None)})


def _adapt(value):
    if value is None or isinstance(value, (int, float, str, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    raise ProgrammingError(f"cannot bind a value of type {type(value).__name__}: use None, int, float, str or bytes")


def normalize_parameters(sql: str, parameters):
    """Check parameters against the statement and convert them to wire values."""
    count, names = parameter_shape(sql)
    if parameters is None:
        parameters = ()
    kind = type(parameters)
    if (kind is tuple or kind is list) and not names and len(parameters) == count:
        # The common case, without the Sequence ABC check (a few µs per statement).
        return tuple(value if type(value) in _WIRE_TYPES else _adapt(value) for value in parameters)
    if isinstance(parameters, dict):
        values = {}
        for key, value in parameters.items():
            values[str(key).lstrip(":@$")] = _adapt(value)
        missing = sorted(names - set(values))
        if missing:
            raise ProgrammingError(f"missing value for named parameter :{missing[0]}")
        if count:
            raise ProgrammingError("the statement uses positional parameters (?) but got a mapping")
        return values
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Sequence):
        raise ProgrammingError("parameters must be a sequence (for ?) or a mapping (for :name)")
    if names:
        raise ProgrammingError("the statement uses named parameters but got a sequence")
    if len(parameters) != count:
        raise ProgrammingError(
            f"the statement has {count} parameter(s) but {len(parameters)} value(s) were supplied"
        )
    return tuple(_adapt(value) for value in parameters)


def _read_only(sql: str) -> bool:
    return analyze(sql).read_only


# --- Cursor --------------------------------------------------------------------------------


class Cursor:
    """A PEP 249 cursor over results that arrive whole (evedb replies carry every row)."""

    def __init__(self, connection: "Connection"):
        self.connection = connection
        self.arraysize = 1
        self._closed = False
        self._set_result(None)

    # --- results ---

    def _set_result(self, result: StatementResult | None, *, queued: bool = False) -> None:
        self._result = result
        self._position = 0
        self._queued = queued

    @property
    def description(self):
        self._check_open()
        if self._result is None or not self._result.columns:
            return None
        return tuple(
            (column.name, column.decltype, None, None, None, None, None) for column in self._result.columns
        )

    @property
    def rowcount(self) -> int:
        return -1 if self._result is None else self._result.rowcount

    @property
    def lastrowid(self):
        return None if self._result is None else self._result.lastrowid

    # --- execution ---

    def execute(self, operation: str, parameters=None) -> "Cursor":
        self._check_open()
        if not isinstance(operation, str):
            raise ProgrammingError("the operation must be a string of SQL")
        values = normalize_parameters(operation, parameters)
        self.connection._execute_statement(self, Statement(operation, values))
        return self

    def executemany(self, operation: str, seq_of_parameters: Iterable) -> "Cursor":
        self._check_open()
        if not isinstance(operation, str):
            raise ProgrammingError("the operation must be a string of SQL")
        if _read_only(operation):
            raise ProgrammingError("executemany() is for statements that change data; use execute() for queries")
        statements = [Statement(operation, normalize_parameters(operation, p)) for p in seq_of_parameters]
        self.connection._execute_many(self, statements)
        return self

    def callproc(self, procname: str, parameters: Sequence = ()) -> Sequence:
        self._check_open()
        if not isinstance(procname, str):
            raise ProgrammingError("the procedure name must be a string")
        arguments = tuple(_adapt(value) for value in (parameters or ()))
        self.connection._call_procedure(self, procname, arguments)
        return parameters

    def setinputsizes(self, sizes) -> None:  # PEP 249: may do nothing
        self._check_open()

    def setoutputsize(self, size, column=None) -> None:  # PEP 249: may do nothing
        self._check_open()

    # --- fetching ---

    def _rows(self):
        self._check_open()
        if self._queued:
            raise NotSupportedError(
                "this statement is queued until commit(): reading its result now would need an "
                "interactive transaction; call conn.commit() first, or use autocommit"
            )
        if self._result is None:
            raise ProgrammingError("no result set to fetch from: call execute() first")
        if not self._result.columns:
            raise ProgrammingError("the last statement produced no result set")
        return self._result.rows

    def fetchone(self):
        rows = self._rows()
        if self._position >= len(rows):
            return None
        row = rows[self._position]
        self._position += 1
        return row

    def fetchmany(self, size: int | None = None) -> list:
        rows = self._rows()
        size = self.arraysize if size is None else size
        if size < 0:
            raise ProgrammingError("fetchmany() size must not be negative")
        chunk = rows[self._position:self._position + size]
        self._position += len(chunk)
        return list(chunk)

    def fetchall(self) -> list:
        rows = self._rows()
        chunk = rows[self._position:]
        self._position = len(rows)
        return list(chunk)

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    # --- lifetime ---

    def close(self) -> None:
        self._closed = True
        self._set_result(None)

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check_open()

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- Transaction block ---------------------------------------------------------------------


class Transaction:
    """Statements collected by `with conn.transaction() as tx:` and sent as one atomic script."""

    def __init__(self, connection: "Connection"):
        self._connection = connection
        self._statements: list[Statement] = []
        self._cursors: list[Cursor] = []
        self.results: list[StatementResult] = []
        self._done = False

    def execute(self, operation: str, parameters=None) -> Cursor:
        if self._done:
            raise InterfaceError("the transaction block has ended")
        values = normalize_parameters(operation, parameters)
        cursor = self._connection.cursor()
        cursor._set_result(None, queued=True)
        self._statements.append(Statement(operation, values))
        self._cursors.append(cursor)
        return cursor

    def executemany(self, operation: str, seq_of_parameters: Iterable) -> list[Cursor]:
        return [self.execute(operation, parameters) for parameters in seq_of_parameters]

    def _clear(self) -> None:
        for cursor in self._cursors:
            cursor._set_result(None)

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._done = True
        if exc_type is not None or not self._statements:
            self._clear()
            return
        if self._connection.closed:
            self._clear()
            raise InterfaceError("the connection was closed inside the transaction block: nothing was sent")
        try:
            reply = self._connection._send_script(self._statements)
        except Error:
            self._clear()
            raise
        self.results = list(reply.results)
        for cursor, result in zip(self._cursors, reply.results):
            cursor._set_result(result)


# --- Connection ----------------------------------------------------------------------------


class Connection:
    """A PEP 249 connection to an embedded database or (later) a replicated pair."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(self, transport, *, autocommit: bool = False, client_id: str | None = None):
        self._transport = transport
        self._client_id = client_id or transport.new_client_id()
        self._next_request_id = 1
        self._autocommit = bool(autocommit)
        # (statement, cursor, executemany call id or None), in execution order.
        self._pending: list[tuple[Statement, Cursor, int | None]] = []
        self._many_calls = 0
        self._closed = False

    # --- PEP 249 ---

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        self._check_open()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            reply = self._send_script([statement for statement, _, _ in pending])
        except Error:
            for _, cursor, _ in pending:
                cursor._set_result(None)
            raise
        # A cursor holds its last execute's result; an executemany reports its total rowcount.
        last: dict[int, tuple[Cursor, list[StatementResult]]] = {}
        for (_, cursor, many_id), result in zip(pending, reply.results):
            entry = last.get(id(cursor))
            if entry is None or entry[2] != many_id or many_id is None:
                last[id(cursor)] = (cursor, [result], many_id)
            else:
                entry[1].append(result)
        for cursor, results, many_id in last.values():
            if many_id is None:
                cursor._set_result(results[0])
            else:
                total = sum(max(result.rowcount, 0) for result in results)
                cursor._set_result(StatementResult(rowcount=total, lastrowid=results[-1].lastrowid))

    def rollback(self) -> None:
        self._check_open()
        for _, cursor, _ in self._pending:
            cursor._set_result(None)
        self._pending = []

    def close(self) -> None:
        if self._closed:
            return
        self._pending = []
        self._closed = True
        self._transport.release()

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check_open()
        if value and self._pending:
            self.commit()  # as sqlite3 does: switching autocommit on commits what is pending
        self._autocommit = bool(value)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # As sqlite3: commit on success, roll back on error; the connection stays open.
        if self._closed:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # --- evedb extensions ---

    def execute(self, operation: str, parameters=None) -> Cursor:
        return self.cursor().execute(operation, parameters)

    def transaction(self) -> Transaction:
        self._check_open()
        self._refuse_if_pending("conn.transaction()")
        return Transaction(self)

    def state_root(self) -> str:
        self._check_open()
        return self._transport.state_root()

    def stats(self) -> dict:
        self._check_open()
        return self._transport.stats()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- internals used by Cursor and Transaction ---

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def _refuse_if_pending(self, what: str) -> None:
        if self._pending:
            raise NotSupportedError(
                f"{what} cannot run while {len(self._pending)} statement(s) wait for commit(): it would "
                "need an interactive transaction; call commit() or rollback() first"
            )

    def _request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def _send(self, request: Request) -> Reply:
        reply = self._transport.execute(request)
        if reply.error is not None:
            raise errors.exception_from(reply.error)
        return reply

    def _send_script(self, statements: list[Statement]) -> Reply:
        return self._send(Request.script(self._client_id, self._request_id(), statements))

    def _execute_statement(self, cursor: Cursor, statement: Statement) -> None:
        if self._autocommit:
            reply = self._send(Request.statement(self._client_id, self._request_id(), statement.sql, statement.params))
            cursor._set_result(reply.results[0])
        elif _read_only(statement.sql):
            self._refuse_if_pending("a query")
            reply = self._send(Request.statement(self._client_id, self._request_id(), statement.sql, statement.params))
            cursor._set_result(reply.results[0])
        else:
            self._pending.append((statement, cursor, None))
            cursor._set_result(None, queued=True)

    def _execute_many(self, cursor: Cursor, statements: list[Statement]) -> None:
        if not statements:
            cursor._set_result(StatementResult(rowcount=0))
            return
        if self._autocommit:
            reply = self._send_script(statements)
            total = sum(max(result.rowcount, 0) for result in reply.results)
            cursor._set_result(StatementResult(rowcount=total, lastrowid=reply.results[-1].lastrowid))
        else:
            self._many_calls += 1
            for statement in statements:
                self._pending.append((statement, cursor, self._many_calls))
            cursor._set_result(None, queued=True)

    def _call_procedure(self, cursor: Cursor, name: str, arguments: tuple) -> None:
        self._refuse_if_pending(f"callproc({name!r})")
        reply = self._send(Request.call(self._client_id, self._request_id(), name, arguments))
        cursor._set_result(reply.results[0])
