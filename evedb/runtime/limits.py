"""Limits on what one client may cost a node, and the counters that show them at work.

Owns the limit values (`Limits`, set with `serve --max-...`), a per-connection in-flight gate
and the refusal counters reported by `status`.

Rules kept:
- nothing a client sends or fails to read grows without bound on the node: frames, statements
  and results have a size limit, requests in flight per connection a count limit (back-pressure:
  the node stops reading that socket, it never queues), and each connection's output buffer a
  byte limit (a client that does not read its replies is disconnected, never waited for);
- every refusal is a clear error to that client (or, for a stalled reader that cannot be told
  anything, a log line) and leaves every other client alone;
- the peer link is never counted against client limits: a flood of clients cannot unpair the
  nodes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields

log = logging.getLogger("evedb.node")

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # Client connections that completed their hello; the next one gets a TooManyConnections
    # error frame.  Sockets still in their hello are capped at the same number again.
    max_connections: int = 256
    # Requests of one connection whose replies have not been written yet; past it the node
    # stops reading that socket until a reply goes out (TCP then pushes back on the client).
    max_inflight_per_client: int = 32
    # One client frame (a request); a longer length prefix is refused before any payload is read.
    max_frame_bytes: int = 16 * MIB
    # The SQL text of one statement (UTF-8 bytes).  Every statement is parsed by sqlglot for
    # access analysis, at tens of microseconds per token: 64 KiB is already seconds of work.
    # Bulk data belongs in parameters (`executemany`), which this does not count.
    max_statement_bytes: int = 64 * 1024
    # One encoded reply; a larger one becomes an error reply for that request.
    max_result_bytes: int = 16 * MIB
    # Bytes written to one connection that the client has not read yet; past it the client is
    # disconnected.  At least max_result_bytes, so one legal reply always fits.
    max_output_buffer_bytes: int = 64 * MIB
    # The first frame (hello) of any connection: small, and it must arrive within the timeout.
    max_hello_bytes: int = 64 * 1024
    hello_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"{field.name} must be positive, not {getattr(self, field.name)}")
        if self.max_output_buffer_bytes < self.max_result_bytes:
            raise ValueError(
                f"max_output_buffer_bytes ({self.max_output_buffer_bytes}) must be at least max_result_bytes "
                f"({self.max_result_bytes}), or a legal reply would disconnect its client")


@dataclass
class LimitCounters:
    """How often each limit or check refused something, since the node started."""

    connections_refused: int = 0
    authentication_failures: int = 0
    tls_failures: int = 0
    inflight_pauses: int = 0
    statements_refused: int = 0
    results_refused: int = 0
    slow_clients_dropped: int = 0
    malformed_frames: int = 0

    def as_dict(self) -> dict:
        return {field.name: getattr(self, field.name) for field in fields(self)}


class InflightGate:
    """Counts one connection's requests awaiting a reply; `wait_for_room` blocks the reading of
    that connection, and only that one, while the count is at the limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self._room = asyncio.Event()
        self._room.set()

    def take(self) -> None:
        self.count += 1
        if self.count >= self.limit:
            self._room.clear()

    def give(self) -> None:
        self.count = max(0, self.count - 1)
        if self.count < self.limit:
            self._room.set()

    async def wait_for_room(self) -> bool:
        """Returns True if it had to wait (the connection was paused)."""
        if self._room.is_set():
            return False
        await self._room.wait()
        return True


class BoundedWriter:
    """One client connection's output: writes never wait on the client, and a client whose
    unread replies pass `max_output_buffer_bytes` is disconnected (batching and every other
    client go on; its requests stay in the replicated reply cache for a retry)."""

    def __init__(self, writer: asyncio.StreamWriter, limits: Limits, counters: LimitCounters, name: str):
        self.writer = writer
        self.limits = limits
        self.counters = counters
        self.name = name
        self.gate = InflightGate(limits.max_inflight_per_client)

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        unread = self.writer.transport.get_write_buffer_size()
        if unread > self.limits.max_output_buffer_bytes:
            self.counters.slow_clients_dropped += 1
            peer = self.writer.get_extra_info("peername")
            log.warning("%s: disconnecting client %s: %d bytes of replies unread (over --max-output-buffer-bytes "
                        "%d); a client must read its replies", self.name, peer, unread,
                        self.limits.max_output_buffer_bytes)
            self.writer.transport.abort()
