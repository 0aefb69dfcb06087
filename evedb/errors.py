"""One exception tree for evedb: PEP 249's hierarchy, and the single table mapping apsw onto it.

Errors cross process and network boundaries as `ErrorInfo(kind, message)`; `kind` is the name
of one of the classes below, so the client re-raises exactly the class the server chose.
Rules kept here:
- every apsw error maps through `APSW_TO_DBAPI` and nowhere else;
- an unknown kind arriving from a peer becomes `DatabaseError`, never a crash.
"""

from __future__ import annotations

import apsw

from .messages import ErrorInfo


class Warning(Exception):  # noqa: A001 - the name is fixed by PEP 249
    """Important warnings (PEP 249)."""


class Error(Exception):
    """Base of every evedb error (PEP 249)."""


class InterfaceError(Error):
    """Misuse of the driver itself: a closed cursor, fetching before execute."""


class DatabaseError(Error):
    """Errors related to the database."""


class DataError(DatabaseError):
    """Problems with the processed data: value out of range, too big."""


class OperationalError(DatabaseError):
    """Errors outside the programmer's control: no node answers, disk full, locked."""


class IntegrityError(DatabaseError):
    """Relational integrity violated: a constraint failed."""


class InternalError(DatabaseError):
    """evedb's own invariants broke; a bug to report."""


class ProgrammingError(DatabaseError):
    """Bad SQL, wrong parameter count, a forbidden statement or table."""


class NotSupportedError(DatabaseError):
    """A feature evedb does not offer, such as an interactive transaction."""


class NotPrimary(OperationalError):
    """The node asked is not the primary; `primary` names the one to ask, if known."""

    def __init__(self, message: str, primary: str | None = None):
        super().__init__(message)
        self.primary = primary


# The one table from apsw's exceptions to PEP 249's.  Order matters: the first base class
# that matches wins, so specific classes come before their parents.
APSW_TO_DBAPI: tuple[tuple[type[BaseException], type[Error]], ...] = (
    (apsw.ConstraintError, IntegrityError),
    (apsw.AuthError, ProgrammingError),
    (apsw.SQLError, ProgrammingError),
    (apsw.BindingsError, ProgrammingError),
    (apsw.ExecutionCompleteError, InterfaceError),
    (apsw.MismatchError, IntegrityError),
    (apsw.TooBigError, DataError),
    (apsw.RangeError, ProgrammingError),
    (apsw.BusyError, OperationalError),
    (apsw.LockedError, OperationalError),
    (apsw.FullError, OperationalError),
    (apsw.IOError, OperationalError),
    (apsw.CantOpenError, OperationalError),
    (apsw.ReadOnlyError, OperationalError),
    (apsw.CorruptError, InternalError),
    (apsw.SchemaChangeError, OperationalError),
    (apsw.InterruptError, OperationalError),
    (apsw.Error, DatabaseError),
    (OverflowError, DataError),
    (TypeError, ProgrammingError),
    (ValueError, ProgrammingError),
)

_BY_NAME: dict[str, type[Error]] = {
    cls.__name__: cls
    for cls in (
        Error,
        InterfaceError,
        DatabaseError,
        DataError,
        OperationalError,
        IntegrityError,
        InternalError,
        ProgrammingError,
        NotSupportedError,
        NotPrimary,
    )
}


def dbapi_class_for(exc: BaseException) -> type[Error]:
    """The PEP 249 class an exception from SQLite (or from our own checks) is reported as."""
    if isinstance(exc, Error):
        return type(exc)
    for source, target in APSW_TO_DBAPI:
        if isinstance(exc, source):
            return target
    return DatabaseError


def error_info(exc: BaseException) -> ErrorInfo:
    """Encode an exception for a reply: class name and a one-line message."""
    message = str(exc) or type(exc).__name__
    # apsw prefixes messages with its own class name ("ConstraintError: UNIQUE ..."); the class
    # travels separately, so drop the prefix rather than show it twice.
    prefix = type(exc).__name__ + ": "
    if message.startswith(prefix):
        message = message[len(prefix):]
    return ErrorInfo(dbapi_class_for(exc).__name__, message)


def exception_from(info: ErrorInfo) -> Error:
    """Rebuild the exception a reply carries; unknown kinds become DatabaseError."""
    return _BY_NAME.get(info.kind, DatabaseError)(info.message)
