"""Frames on a TCP stream: a 4-byte big-endian length, then a msgpack payload.

Owns the framing, the size limit, the HMAC on peer links and the versioned handshake.

- Every frame is at most `max_frame_bytes`; a longer length prefix is refused before any of
  the payload is read (nothing is allocated for it) and the connection is closed.
- Peer frames carry HMAC-SHA256(secret, payload) in front of the payload; a frame whose MAC
  does not verify is refused and the link closed.  Client frames carry no MAC: clients
  authenticate in their hello, and TLS (see `tls`) protects the stream.
- The first frame of a connection is a hello, at most `max_hello_bytes`:
  `["hello", PROTOCOL_VERSION, "client"|"admin", name]`, optionally with a fifth element
  `{"user": U, "password": P}` (credentials for `--auth-file`), or the peer's signed
  `["hello", PROTOCOL_VERSION, "peer", name, replication]`.  `parse_hello` validates every
  element's type; the node answers `["welcome", ...]` or `["error", kind, message]` with one of
  the refusal kinds below, and closes the connection after an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import struct
from dataclasses import dataclass

from ..codec import CodecError, pack, unpack

# 2: a batch executes reads first (engine.execution_order) and a statement's plan ignores its
# bound values (storage, QPSG); a node of version 1 would compute other replies, tokens and
# sequential re-executions for the same batch, so the pair must not form across versions.
PROTOCOL_VERSION = 2
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
MAC_BYTES = 32
_LENGTH = struct.Struct(">I")
HELLO_KINDS = ("client", "admin", "peer")

# The kinds of ["error", kind, message] a node answers a hello with.  The driver turns a
# refusal into OperationalError at once (retrying would not help), except InterfaceError
# (a malformed hello: the driver's own bug).
REFUSAL_KINDS = ("AuthenticationFailed", "TooManyConnections", "TLSRequired", "ReplicationMismatch",
                 "InterfaceError")


class FrameError(Exception):
    """A frame that breaks the rules: too long, truncated, undecodable or badly signed."""


class FrameTooLarge(FrameError):
    """A length prefix over the limit; raised before any of the payload is read."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit}")
        self.length = length
        self.limit = limit


def sign(secret: bytes | None, payload: bytes) -> bytes:
    if secret is None:
        return payload
    return hmac.new(secret, payload, hashlib.sha256).digest() + payload


def verify(secret: bytes | None, data: bytes) -> bytes:
    if secret is None:
        return data
    if len(data) < MAC_BYTES:
        raise FrameError("frame too short to carry its MAC")
    mac, payload = data[:MAC_BYTES], data[MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise FrameError("frame MAC does not verify: wrong secret or tampered frame")
    return payload


def encode_frame(value, secret: bytes | None = None) -> bytes:
    return encode_packed_frame(pack(value), secret)


def encode_packed_frame(packed: bytes, secret: bytes | None = None) -> bytes:
    """A frame around a value already packed (a reply whose bytes the engine kept)."""
    payload = sign(secret, packed)
    return _LENGTH.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_frame_bytes: int, secret: bytes | None = None):
    """The next decoded frame, None at a clean end of stream; FrameError on a bad frame."""
    data = await read_raw_frame(reader, max_frame_bytes)
    if data is None:
        return None
    return decode_frame(data, secret)


def decode_frame(data: bytes, secret: bytes | None = None):
    try:
        return unpack(verify(secret, data))
    except CodecError as error:
        raise FrameError(str(error)) from None


async def read_raw_frame(reader: asyncio.StreamReader, max_frame_bytes: int) -> bytes | None:
    """The next frame's payload bytes, undecoded; None at a clean end of stream."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise FrameError("connection closed in the middle of a frame header") from None
        return None
    (length,) = _LENGTH.unpack(header)
    if length > max_frame_bytes:
        raise FrameTooLarge(length, max_frame_bytes)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("connection closed in the middle of a frame") from None


async def discard_bytes(reader: asyncio.StreamReader, count: int) -> None:
    """Read and drop `count` bytes (an oversized frame's payload) without holding them."""
    while count > 0:
        chunk = await reader.read(min(count, 1 << 16))
        if not chunk:
            return
        count -= len(chunk)


# --- Blocking side, for the client driver -------------------------------------------------


def send_frame_blocking(sock: socket.socket, value, secret: bytes | None = None) -> None:
    sock.sendall(encode_frame(value, secret))


def read_frame_blocking(sock: socket.socket, max_frame_bytes: int, secret: bytes | None = None):
    """One frame, reading exactly its bytes (nothing after it is consumed)."""
    header = _receive_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > max_frame_bytes:
        raise FrameTooLarge(length, max_frame_bytes)
    data = _receive_exactly(sock, length)
    if data is None:
        raise FrameError("connection closed in the middle of a frame")
    return decode_frame(data, secret)


def _receive_exactly(sock: socket.socket, count: int) -> bytes | None:
    chunks, received = [], 0
    while received < count:
        chunk = sock.recv(min(count - received, 1 << 20))
        if not chunk:
            if received:
                raise FrameError("connection closed in the middle of a frame")
            return None
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


class BlockingFrameReader:
    """Frames from a blocking socket, in as few `recv` calls as the data allows.

    A reply usually arrives whole in one segment, so the first `recv` asks for up to
    `_RECV_BYTES` and a frame it holds entirely is decoded at once: one system call per frame
    (two before, length then payload, each preceded by a poll when the socket has a timeout).
    Bytes read past a frame's end are kept for the next one, so a reader belongs to one
    connection; drop it with the connection.
    """

    _RECV_BYTES = 1 << 16

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def read(self, sock: socket.socket, max_frame_bytes: int, secret: bytes | None = None):
        """The next decoded frame, None at a clean end of stream; FrameError on a bad frame."""
        buffer = self._buffer
        if not buffer:
            chunk = sock.recv(self._RECV_BYTES)
            if not chunk:
                return None
            if len(chunk) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(chunk)
                if len(chunk) == _LENGTH.size + length and length <= max_frame_bytes:
                    return decode_frame(chunk[_LENGTH.size:], secret)  # the common case
            buffer += chunk
        while len(buffer) < _LENGTH.size:
            self._fill(sock, self._RECV_BYTES)
        (length,) = _LENGTH.unpack_from(buffer)
        if length > max_frame_bytes:
            raise FrameTooLarge(length, max_frame_bytes)
        end = _LENGTH.size + length
        while len(buffer) < end:
            self._fill(sock, min(max(end - len(buffer), self._RECV_BYTES), 1 << 20))
        data = bytes(buffer[_LENGTH.size:end])
        del buffer[:end]
        return decode_frame(data, secret)

    def _fill(self, sock: socket.socket, count: int) -> None:
        chunk = sock.recv(count)
        if not chunk:
            raise FrameError("connection closed in the middle of a frame")
        self._buffer += chunk


@dataclass(frozen=True)
class Hello:
    kind: str  # "client", "admin" or "peer"
    name: str
    replication: str | None = None  # a peer's replication mode
    user: str | None = None  # a client's credentials, if it sent any
    password: str | None = None


def parse_hello(frame, replication_modes: tuple[str, ...]) -> Hello:
    """Validate a decoded hello frame; FrameError says what is wrong with it."""
    if not (isinstance(frame, list) and len(frame) in (4, 5) and frame[0] == "hello"):
        raise FrameError("the first frame must be a hello: ['hello', version, kind, name, ...]")
    _, version, kind, name, *rest = frame
    if type(version) is not int:
        raise FrameError("the hello's protocol version must be an integer")
    if version != PROTOCOL_VERSION:
        raise FrameError(f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})")
    if kind not in HELLO_KINDS:
        raise FrameError(f"unknown connection kind {kind!r} (expected one of {', '.join(HELLO_KINDS)})")
    if not isinstance(name, str) or len(name) > 256:
        raise FrameError("the hello's name must be a string of at most 256 characters")
    if kind == "peer":
        replication = rest[0] if rest else "eve"  # a hello without it: an eve node
        if replication not in replication_modes:
            raise FrameError(f"unknown replication mode {replication!r}")
        return Hello(kind, name, replication=replication)
    if not rest:
        return Hello(kind, name)
    credentials = rest[0]
    if not (isinstance(credentials, dict) and set(credentials) == {"user", "password"}
            and all(isinstance(value, str) for value in credentials.values())):
        raise FrameError("hello credentials must be {'user': str, 'password': str}")
    return Hello(kind, name, user=credentials["user"], password=credentials["password"])


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]"), int(port)
