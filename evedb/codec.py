"""The only code that turns messages into bytes and back (msgpack).

Each message type has a hand-written, positional encoding: it is the hot path between the
coordinator and its workers and, later, on the wire, and it is canonical, so a hash over it
(the reply hash inside a token) is the same on every replica.

Rules kept:
- SQL values travel as themselves (None, int, float, str, bytes; `use_bin_type` keeps bytes
  apart from str);
- decoding validates shape and raises `CodecError` on anything malformed: input from a peer or
  a client is never trusted, never asserted.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgpack

from . import merkle
from .messages import (
    Batch,
    Column,
    ErrorInfo,
    Reply,
    Request,
    RequestKind,
    Statement,
    StatementResult,
)


class CodecError(ValueError):
    """Bytes that do not decode to a well-formed message."""


_KIND_CODES = {RequestKind.STATEMENT: 0, RequestKind.SCRIPT: 1, RequestKind.PROCEDURE: 2}
_KINDS_BY_CODE = {code: kind for kind, code in _KIND_CODES.items()}

_packer_options = dict(use_bin_type=True)
_unpacker_options = dict(raw=False, strict_map_key=False, use_list=True)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, **_packer_options)


def unpack(data: bytes, max_size: int | None = None) -> Any:
    if max_size is not None and len(data) > max_size:
        raise CodecError(f"payload of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        return msgpack.unpackb(data, **_unpacker_options)
    except Exception as error:  # msgpack raises several unrelated classes on bad input
        raise CodecError(f"undecodable payload: {error}") from None


# --- Request ------------------------------------------------------------------------------


def _params_out(params):
    if params is None or isinstance(params, dict):
        return params
    return list(params)


def _params_in(params):
    if params is None or isinstance(params, dict):
        return params
    if isinstance(params, list):
        return tuple(params)
    raise CodecError("statement parameters must be a list, a map or nil")


def request_to_plain(request: Request) -> list:
    return [
        request.client_id,
        request.request_id,
        _KIND_CODES[request.kind],
        [[statement.sql, _params_out(statement.params)] for statement in request.statements],
        request.procedure,
        list(request.args),
    ]


def request_from_plain(plain) -> Request:
    try:
        client_id, request_id, kind_code, statements, procedure, args = plain
        kind = _KINDS_BY_CODE[kind_code]
        if not isinstance(client_id, str) or not isinstance(request_id, int):
            raise CodecError("request ids must be a string and an integer")
        if procedure is not None and not isinstance(procedure, str):
            raise CodecError("procedure name must be a string")
        parsed = []
        for sql, params in statements:
            if not isinstance(sql, str):
                raise CodecError("SQL text must be a string")
            parsed.append(Statement(sql, _params_in(params)))
        return Request(client_id, request_id, kind, tuple(parsed), procedure, tuple(args))
    except CodecError:
        raise
    except (TypeError, ValueError, KeyError) as error:
        raise CodecError(f"malformed request: {error}") from None


# --- Reply --------------------------------------------------------------------------------


def reply_to_plain(reply: Reply) -> list:
    # Rows stay tuples: msgpack writes a tuple and a list as the same array, and copying every
    # row was most of what encoding a query's reply cost.
    return [
        reply.client_id,
        reply.request_id,
        [
            [
                [(column.name, column.decltype) for column in result.columns],
                result.rows,
                result.rowcount,
                result.lastrowid,
            ]
            for result in reply.results
        ],
        None if reply.error is None else [reply.error.kind, reply.error.message],
    ]


def reply_from_plain(plain, encoded: bytes | None = None) -> Reply:
    try:
        client_id, request_id, results, error = plain
        parsed = tuple(
            StatementResult(
                tuple(Column(name, decltype) for name, decltype in columns),
                rows if type(rows) is tuple else tuple(tuple(row) for row in rows),
                rowcount,
                lastrowid,
            )
            for columns, rows, rowcount, lastrowid in results
        )
        return Reply(client_id, request_id, parsed, None if error is None else ErrorInfo(*error), encoded)
    except (TypeError, ValueError) as error:
        raise CodecError(f"malformed reply: {error}") from None


def reply_from_bytes(encoded: bytes) -> Reply:
    """A reply from its canonical bytes (a worker's answer, the reply cache), which it keeps.
    Decoded with tuples for arrays, so rows need no conversion."""
    try:
        plain = msgpack.unpackb(encoded, raw=False, use_list=False)
    except Exception as error:  # msgpack raises several unrelated classes on bad input
        raise CodecError(f"undecodable reply: {error}") from None
    return reply_from_plain(plain, encoded)


class EncodedReply(Reply):
    """A reply kept as its canonical bytes until its results or error are read.

    A worker process answers with each reply's bytes.  The coordinator only needs those
    bytes (the token's reply hash, the client's frame) and the ids (which client to answer),
    so decoding every reply there (about 10 µs for fifty rows) was pure cost on the batch's
    critical path; a reader of `results` or `error` (the embedded API) decodes once, on first
    use.  Equal to, and hashed like, a `Reply` with the same fields.  Not for
    `dataclasses.replace`: build a `Reply` from its fields instead."""

    __slots__ = ("_decoded",)

    def __init__(self, client_id: str, request_id: int, encoded: bytes):
        object.__setattr__(self, "client_id", client_id)
        object.__setattr__(self, "request_id", request_id)
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "_decoded", None)

    def _fields(self) -> Reply:
        decoded = self._decoded
        if decoded is None:
            decoded = reply_from_bytes(self.encoded)
            object.__setattr__(self, "_decoded", decoded)
        return decoded

    @property
    def results(self) -> tuple[StatementResult, ...]:
        return self._fields().results

    @property
    def error(self) -> ErrorInfo | None:
        return self._fields().error

    def __eq__(self, other):
        if not isinstance(other, Reply):
            return NotImplemented
        return ((self.client_id, self.request_id, self.results, self.error)
                == (other.client_id, other.request_id, other.results, other.error))

    def __hash__(self):
        return hash((self.client_id, self.request_id, self.results, self.error))

    def __reduce__(self):
        return (EncodedReply, (self.client_id, self.request_id, self.encoded))


def encode_reply(reply: Reply) -> bytes:
    """The canonical bytes of a reply (kept on the reply when it came as bytes)."""
    if reply.encoded is not None:
        return reply.encoded
    if _native_encode_one is not None:
        try:
            return _native_encode_one(reply)
        except _NotEncodable:
            pass
    return pack(reply_to_plain(reply))


def with_encoding(reply: Reply) -> Reply:
    """`reply` carrying its canonical bytes (encoded now unless it has them already)."""
    if reply.encoded is not None:
        return reply
    return Reply(reply.client_id, reply.request_id, reply.results, reply.error, encode_reply(reply))


_REPLY_MESSAGE_HEAD = b"\x92" + pack("reply")


def reply_message(reply: Reply) -> bytes:
    """pack(["reply", reply_to_plain(reply)]), the frame a client receives, from the reply's
    bytes (an array is its header, then its items)."""
    return _REPLY_MESSAGE_HEAD + encode_reply(reply)


def encode_replies_python(replies: Sequence[Reply]) -> bytes:
    """The canonical bytes of a batch's replies in batch order, one msgpack array of every
    reply's encoding: what the token's reply hash covers.  (One pack call for the batch, not
    one per reply with a length before each: msgpack's arrays delimit themselves.)"""
    return pack([reply_to_plain(reply) for reply in replies])


def encode_replies(replies: Sequence[Reply]) -> bytes:
    """`encode_replies_python`, from the bytes replies kept, else in C when
    evedb/_tokenhash.c was built (the same bytes: an array is its header, then its items)."""
    if any(reply.encoded is not None for reply in replies):
        return _array_header(len(replies)) + b"".join(encode_reply(reply) for reply in replies)
    if _native_encode is not None:
        try:
            return _native_encode(replies)
        except _NotEncodable:
            pass
    return encode_replies_python(replies)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


# merkle.py decides whether the C code is used (built, and EVEDB_TOKEN_HASH not "python").
_native_encode, _native_encode_one, _NotEncodable = (
    (None, None, None) if merkle.native is None
    else (merkle.native.encode_replies, merkle.native.encode_reply, merkle.native.NotEncodable))


# --- Batch --------------------------------------------------------------------------------


def batch_to_plain(batch: Batch) -> list:
    return [
        batch.seq,
        batch.view,
        batch.timestamp_ms,
        batch.seed,
        [request_to_plain(request) for request in batch.requests],
    ]


def batch_from_plain(plain) -> Batch:
    try:
        seq, view, timestamp_ms, seed, requests = plain
        return Batch(seq, view, timestamp_ms, seed, tuple(request_from_plain(r) for r in requests))
    except CodecError:
        raise
    except (TypeError, ValueError) as error:
        raise CodecError(f"malformed batch: {error}") from None


# --- Peer messages ------------------------------------------------------------------------
# Each is encoded as [name, field, field, ...]; batches use the batch encoding above, and the
# few nested tuples are rebuilt on decode, so decode(encode(m)) == m.

from . import messages as _messages  # noqa: E402 - grouped with the code that needs it

_PEER_TYPES = {
    cls.__name__: cls
    for cls in (
        _messages.Hello,
        _messages.Execute,
        _messages.Apply,
        _messages.TokenReport,
        _messages.Commit,
        _messages.Heartbeat,
        _messages.SyncRequest,
        _messages.CatchUp,
        _messages.CaughtUp,
        _messages.NeedState,
        _messages.StateRequest,
        _messages.StateData,
    )
}


# Peer messages nest a few levels (StateData: 4).  msgpack decodes up to ~1000 levels, and
# rebuilding that recursively would overflow Python's stack (found by tests/test_fuzz.py).
_MAX_NESTING = 64


def _freeze(value, depth: int = 0):
    if isinstance(value, list):
        if depth >= _MAX_NESTING:
            raise CodecError(f"value nested deeper than {_MAX_NESTING} levels")
        return tuple(_freeze(item, depth + 1) for item in value)
    return value


def peer_to_plain(message) -> list:
    name = type(message).__name__
    if name not in _PEER_TYPES:
        raise CodecError(f"not a peer message: {name}")
    if isinstance(message, _messages.Execute):
        return [name, message.view, batch_to_plain(message.batch), message.attempt, message.sequential]
    if isinstance(message, _messages.Apply):
        return [name, message.view, batch_to_plain(message.batch), message.attempt, list(message.changesets),
                message.state_root, message.token, message.parent_root, message.schema_changed]
    if isinstance(message, _messages.CatchUp):
        entries = [[batch_to_plain(batch), token] for batch, token in message.entries]
        return [name, message.view, entries, message.primary_committed_seq]
    return [name, *(getattr(message, f) for f in message.__dataclass_fields__)]


def peer_from_plain(plain):
    try:
        name, *values = plain
        cls = _PEER_TYPES[name]
    except (TypeError, ValueError, KeyError):
        raise CodecError("unknown or malformed peer message") from None
    try:
        if cls is _messages.Execute:
            view, batch, attempt, sequential = values
            return cls(view, batch_from_plain(batch), attempt, sequential)
        if cls is _messages.Apply:
            view, batch, attempt, changesets, state_root, token, parent_root, schema_changed = values
            if not all(isinstance(changeset, bytes) for changeset in changesets):
                raise CodecError("Apply: changesets must be bytes")
            if not all(isinstance(value, bytes) for value in (state_root, token, parent_root)):
                raise CodecError("Apply: roots and token must be bytes")
            if not isinstance(view, int) or not isinstance(attempt, int):
                raise CodecError("Apply: view and attempt must be integers")
            return cls(view, batch_from_plain(batch), attempt, tuple(changesets), state_root, token, parent_root,
                       bool(schema_changed))
        if cls is _messages.CatchUp:
            view, entries, committed = values
            return cls(view, tuple((batch_from_plain(b), token) for b, token in entries), committed)
        fields = list(cls.__dataclass_fields__)
        if len(values) != len(fields):
            raise CodecError(f"{name} needs {len(fields)} fields, got {len(values)}")
        message = cls(*(_freeze(value) for value in values))
    except CodecError:
        raise
    except (TypeError, ValueError) as error:
        raise CodecError(f"malformed {name}: {error}") from None
    if not isinstance(getattr(message, "view", None), int):
        raise CodecError(f"{name}: view must be an integer")
    return message
