"""Frames on a TCP stream: a 4-byte big-endian length, then a msgpack payload.

Owns the framing, the size limit, the HMAC on peer links and the versioned handshake.

- Every frame is at most `max_frame_bytes`; a longer length prefix is refused before any of
  the payload is read (nothing is allocated for it) and the connection is closed.
- Peer frames carry HMAC-SHA256(secret, payload) in front of the payload; a frame whose MAC
  does not verify is refused and the link closed.  Client frames carry no MAC (TLS and user
  authentication come with the hardening work).
- The first frame of a connection is `["hello", PROTOCOL_VERSION, kind, name]` with kind
  "client", "peer" or "admin"; the server answers `["welcome", ...]` or `["error", ...]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import struct

from ..codec import CodecError, pack, unpack

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
MAC_BYTES = 32
_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A frame that breaks the rules: too long, truncated, undecodable or badly signed."""


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
    payload = sign(secret, pack(value))
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
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_frame_bytes}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("connection closed in the middle of a frame") from None


# --- Blocking side, for the client driver -------------------------------------------------


def send_frame_blocking(sock: socket.socket, value, secret: bytes | None = None) -> None:
    sock.sendall(encode_frame(value, secret))


def read_frame_blocking(sock: socket.socket, max_frame_bytes: int, secret: bytes | None = None):
    header = _receive_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > max_frame_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_frame_bytes}")
    data = _receive_exactly(sock, length)
    if data is None:
        raise FrameError("connection closed in the middle of a frame")
    try:
        return unpack(verify(secret, data))
    except CodecError as error:
        raise FrameError(str(error)) from None


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


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]"), int(port)
