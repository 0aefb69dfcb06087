"""The node's listening port: accepting connections, choosing TLS or plaintext, capping sockets.

Owns everything between `accept()` and a pair of asyncio streams handed to the node.

How it works: the listener accepts on a plain socket, waits (at most the hello timeout) for
the connection's first byte and peeks at it without consuming it (see `tls`): 0x16 is a TLS
ClientHello, anything else an evedb frame.  Then it wraps the socket in asyncio streams, with
the TLS handshake on the node's context when TLS is on.  A mismatch never reaches the node:
- a plaintext client at a TLS node gets an `["error", "TLSRequired", ...]` frame;
- a TLS client at a plaintext node gets its connection closed (it sees a handshake failure);
- a failed handshake (an untrusted certificate, a timeout) is one log line;
each counted in `tls_failures`.

Rules kept: every accepted socket is closed exactly once and counted in `open_connections`
until then (the fuzz test checks the count returns to its baseline); more than twice
`max_connections` sockets at once (room for the peer and for clients that will be refused
with a frame) are closed at accept with a rate-limited log line; nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

from .limits import LimitCounters, Limits
from .tls import looks_like_tls
from .transport import encode_frame, parse_address

log = logging.getLogger("evedb.node")

_PEER_ROOM = 4  # sockets beyond the client caps, so the peer link always gets in
_LOG_INTERVAL_S = 10.0


class Listener:
    def __init__(self, listen: str, handle, *, limits: Limits, counters: LimitCounters,
                 tls_context: ssl.SSLContext | None, name: str):
        self.listen = listen
        self.handle = handle  # async handle(reader, writer)
        self.limits = limits
        self.counters = counters
        self.tls_context = tls_context
        self.name = name
        self.open_connections = 0
        self._socket: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._connection_tasks: set[asyncio.Task] = set()
        self._last_log: dict[str, float] = {}

    async def start(self) -> None:
        host, port = parse_address(self.listen)
        self._socket = socket.create_server((host, port), backlog=512)
        self._socket.setblocking(False)
        self._accept_task = asyncio.create_task(self._accept_forever())

    def close(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
        for task in list(self._connection_tasks):
            task.cancel()
        if self._socket is not None:
            self._socket.close()

    def _log_limited(self, key: str, text: str, *args) -> None:
        """A warning at most every _LOG_INTERVAL_S per key: a flood is one line, not a flood."""
        now = time.monotonic()
        if now - self._last_log.get(key, -_LOG_INTERVAL_S) >= _LOG_INTERVAL_S:
            self._last_log[key] = now
            log.warning("%s: " + text, self.name, *args)

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        hard_cap = 2 * self.limits.max_connections + _PEER_ROOM
        while True:
            try:
                sock, address = await loop.sock_accept(self._socket)
            except OSError as error:  # out of file descriptors: wait for some to close
                self._log_limited("accept", "accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            if self.open_connections >= hard_cap:
                self.counters.connections_refused += 1
                self._log_limited("cap", "%d sockets open (2 x --max-connections + %d): closing new ones at once",
                                  self.open_connections, _PEER_ROOM)
                sock.close()
                continue
            self.open_connections += 1
            task = asyncio.create_task(self._start_connection(sock, address))
            self._connection_tasks.add(task)
            task.add_done_callback(self._connection_tasks.discard)

    async def _start_connection(self, sock: socket.socket, address) -> None:
        who = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        # Once a transport owns the socket, only the transport may close it: closing the file
        # descriptor under it lets a new connection reuse the number while the loop still has
        # it registered (found by the mutual-TLS test).
        owned_by_transport = False
        try:
            sock.setblocking(False)
            first = await self._peek_first_byte(sock)
            if first is None:
                return  # closed, or silent past the hello timeout, before sending anything
            tls = looks_like_tls(first)
            if tls and self.tls_context is None:
                self.counters.tls_failures += 1
                log.warning("%s: %s started a TLS handshake, but this node serves plaintext "
                            "(start it with --tls-cert/--tls-key, or connect with evedb://)", self.name, who)
                self._discard_input(sock)
                return
            if not tls and self.tls_context is not None:
                self.counters.tls_failures += 1
                log.warning("%s: %s connected without TLS, but this node requires TLS", self.name, who)
                message = ("this node requires TLS: connect with evedb+tls://HOST:PORT "
                           "(and ?ca=FILE or tls_ca= if its certificate is not in the system trust store)")
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_sendall(sock, encode_frame(["error", "TLSRequired", message])), 5)
                self._discard_input(sock)
                return
            owned_by_transport = True  # from here on, even if the handshake fails
            try:
                reader, writer = await self._streams(sock, tls)
            except (ssl.SSLError, OSError, asyncio.TimeoutError) as error:
                self.counters.tls_failures += 1
                log.warning("%s: TLS handshake with %s failed: %s", self.name, who,
                            getattr(error, "reason", None) or error or type(error).__name__)
                return
            try:
                await self.handle(reader, writer)
            finally:
                writer.close()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            self.open_connections -= 1
            if not owned_by_transport:
                sock.close()

    async def _peek_first_byte(self, sock: socket.socket) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.hello_timeout_s
        while True:
            try:
                data = sock.recv(1, socket.MSG_PEEK)
                return data[0] if data else None
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return None
            readable = loop.create_future()
            loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return None
            finally:
                loop.remove_reader(sock.fileno())

    @staticmethod
    def _discard_input(sock: socket.socket) -> None:
        """Read what the client already sent, so closing sends FIN rather than a reset that
        could destroy the error frame before the client reads it."""
        try:
            for _ in range(16):  # a client that keeps sending is not waited for
                if not sock.recv(1 << 16):
                    return
        except OSError:
            pass

    async def _streams(self, sock: socket.socket, tls: bool):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        if tls:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self.tls_context, ssl_handshake_timeout=self.limits.hello_timeout_s)
        else:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
