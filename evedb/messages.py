"""The values that travel along evedb's data path, one frozen dataclass per arrow.

DESIGN.md section 2 draws the path:

    Request -> Batch -> ParallelBatch -> Executed -> Token -> Reply

Every producer and consumer of one of these names can be found by grepping for it.  The
classes hold only plain data (ints, strings, bytes, floats, None, tuples), so the codec can
encode them without special cases and a hash over their encoding is canonical.

Rules kept here:
- no behaviour beyond small derived properties; the protocol lives in the modules that use them;
- SQL values are the five SQLite storage classes: None, int, float, str, bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class RequestKind(str, enum.Enum):
    """The three shapes of a one-shot transaction (DESIGN.md section 1)."""

    STATEMENT = "statement"
    SCRIPT = "script"
    PROCEDURE = "procedure"


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its parameters: a tuple for `?`, a dict for `:name`."""

    sql: str
    params: tuple[Any, ...] | dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A client's transaction.  (client_id, request_id) identifies it for exactly-once replies."""

    client_id: str
    request_id: int
    kind: RequestKind
    statements: tuple[Statement, ...] = ()
    procedure: str | None = None
    args: tuple[Any, ...] = ()

    @classmethod
    def statement(cls, client_id: str, request_id: int, sql: str, params=None) -> "Request":
        return cls(client_id, request_id, RequestKind.STATEMENT, (Statement(sql, params),))

    @classmethod
    def script(cls, client_id: str, request_id: int, statements) -> "Request":
        return cls(client_id, request_id, RequestKind.SCRIPT, tuple(statements))

    @classmethod
    def call(cls, client_id: str, request_id: int, procedure: str, args=()) -> "Request":
        return cls(client_id, request_id, RequestKind.PROCEDURE, (), procedure, tuple(args))


@dataclass(frozen=True, slots=True)
class Column:
    """A result column as PEP 249's description needs it: the name and SQLite's declared type."""

    name: str
    decltype: str | None = None


@dataclass(frozen=True, slots=True)
class StatementResult:
    """What one statement produced.  rowcount is rows returned for queries, changed for DML."""

    columns: tuple[Column, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    rowcount: int = -1
    lastrowid: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as it travels: the PEP 249 class name (see errors.py) and a message for people."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of one request: every statement's result, or the error that aborted it all."""

    client_id: str
    request_id: int
    results: tuple[StatementResult, ...] = ()
    error: ErrorInfo | None = None
    # The reply's canonical bytes (codec.encode_reply) when it arrived as bytes from a worker
    # process: the token's reply hash and the client's frame reuse them instead of encoding
    # the reply again.  Derived from the fields above, so never part of equality.
    encoded: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Batch:
    """The replication unit: requests in order, with the time and seed every replica uses."""

    seq: int
    view: int
    timestamp_ms: int
    seed: int
    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class ParallelBatch:
    """Positions (indices into Batch.requests) that may run at the same time, in batch order."""

    seq: int
    index: int
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Executed:
    """What executing a batch produced on one replica.

    replies are in batch order.  page_deltas maps (table, page) to the additive change of that
    page's hash (see merkle.py).  changesets are the SQLite session changesets, in the order
    they were committed, that a passive backup or a state transfer can apply.
    """

    seq: int
    replies: tuple[Reply, ...]
    page_deltas: dict[tuple[str, int], int] = field(default_factory=dict)
    changesets: tuple[bytes, ...] = ()
    schema_changed: bool = False
    parallel_batches: int = 0


# --- Between the primary and its backup ------------------------------------------------------
# Every peer message carries the sender's view; a node that sees a higher view steps down.


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent first on a peer link, and whenever a node (re)starts talking to its peer."""

    view: int
    node_id: str
    role: str
    committed_seq: int


@dataclass(frozen=True, slots=True)
class Execute:
    """Primary -> backup: execute this batch.  A higher attempt for a seq the backup already
    ran means: roll back to before seq and re-execute (sequentially when `sequential`)."""

    view: int
    batch: Batch
    attempt: int
    sequential: bool = False


@dataclass(frozen=True, slots=True)
class Apply:
    """Primary -> backup, passive replication only: apply what executing this batch changed.

    `changesets` are the primary's SQLite session changesets of the batch, in commit order;
    `state_root` is the primary's root after the batch (the backup reports its own root in a
    TokenReport, and the primary compares the two); `token` is the primary's token of the
    batch (kept for the catch-up log should the backup take over); `parent_root` is the
    primary's root right before the batch: the changesets apply only to that state, so a
    backup holding another one (batches of an earlier life of the primary) refuses them.
    `schema_changed`: the batch changed the schema, which changesets do not carry: the backup
    executes it instead."""

    view: int
    batch: Batch
    attempt: int
    changesets: tuple[bytes, ...]
    state_root: bytes
    token: bytes = b""
    parent_root: bytes = b""
    schema_changed: bool = False


@dataclass(frozen=True, slots=True)
class TokenReport:
    """Backup -> primary: the token of my execution of (seq, attempt); in passive replication,
    my state root after applying (seq, attempt)."""

    view: int
    seq: int
    attempt: int
    token: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Primary -> backup: every batch up to seq is verified and final."""

    view: int
    seq: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness, and the sender's view of the pair (commits are also learnt from it)."""

    view: int
    role: str
    committed_seq: int
    peer_synced: bool = True


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Backup -> primary: I hold every batch up to committed_seq; bring me up to date."""

    view: int
    committed_seq: int


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Primary -> backup: committed batches with their tokens, in seq order."""

    view: int
    entries: tuple[tuple[Batch, bytes], ...]
    primary_committed_seq: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Backup -> primary: I executed and committed everything up to committed_seq."""

    view: int
    committed_seq: int


@dataclass(frozen=True, slots=True)
class NeedState:
    """Either way: the backup must take the primary's state by transfer (log too short, or
    tokens still differ after sequential re-execution)."""

    view: int
    seq: int


@dataclass(frozen=True, slots=True)
class StateRequest:
    """Backup -> primary: my page hashes; send me the pages that differ."""

    view: int
    committed_seq: int
    schema_hash: bytes
    pages: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...]


@dataclass(frozen=True, slots=True)
class StateData:
    """Primary -> backup: one part of a state transfer.  `schema` (the primary's schema SQL) is
    set when the schemas differ; `pages` holds (table, page, rows) for each differing page;
    the last part has `final` set with the primary's committed seq and state root."""

    view: int
    committed_seq: int
    schema: tuple[tuple[str, str, str, str | None], ...] | None
    pages: tuple[tuple[str, int, tuple[tuple, ...]], ...]
    final: bool
    state_root: bytes
