"""The network side of the DB-API driver: requests to a replicated pair over TCP.

`RemoteTransport` offers the same small surface as the embedded database (`execute`,
`new_client_id`, `state_root`, `stats`, `release`), so `dbapi.Connection` works unchanged.

Rules kept:
- a request is retried with the SAME (client id, request id) until a reply arrives or the
  timeout passes: across a dropped connection, a `NotPrimary` answer or a failover.  The
  pair's reply cache answers a retry of a request that already ran; nothing runs twice;
- a `NotPrimary` answer names the primary; the transport goes there next, else to the other
  address;
- when no node answers within the timeout, `OperationalError` says which addresses were tried.
"""

from __future__ import annotations

import re
import socket
import time
import uuid

from . import codec
from .errors import InterfaceError, OperationalError
from .messages import Reply, Request
from .runtime.transport import (
    PROTOCOL_VERSION,
    FrameError,
    parse_address,
    read_frame_blocking,
    send_frame_blocking,
)

DSN_PREFIX = "evedb://"
_PRIMARY_NAMED = re.compile(r"the primary is (\S+)")
_RETRY_PAUSE_S = 0.05


def parse_dsn(dsn: str) -> list[str]:
    if not dsn.startswith(DSN_PREFIX):
        raise InterfaceError(f"not an evedb DSN: {dsn!r} (expected evedb://host:port[,host:port])")
    addresses = [part.strip() for part in dsn[len(DSN_PREFIX):].split(",") if part.strip()]
    if not addresses:
        raise InterfaceError("the DSN names no node")
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as error:
            raise InterfaceError(str(error)) from None
    return addresses


class RemoteTransport:
    def __init__(self, dsn: str, *, timeout: float = 10.0, max_frame_bytes: int = 64 * 1024 * 1024):
        self.addresses = parse_dsn(dsn)
        self.timeout = timeout
        self.max_frame_bytes = max_frame_bytes
        self._current = 0
        self._socket: socket.socket | None = None

    def new_client_id(self) -> str:
        return f"client-{uuid.uuid4().hex}"

    # --- connections ---

    def _connect(self, deadline: float) -> socket.socket:
        if self._socket is not None:
            return self._socket
        address = self.addresses[self._current]
        host, port = parse_address(address)
        remaining = max(0.05, deadline - time.monotonic())
        sock = socket.create_connection((host, port), timeout=min(remaining, 2.0))
        sock.settimeout(remaining)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            send_frame_blocking(sock, ["hello", PROTOCOL_VERSION, "client", "evedb-python"])
            welcome = read_frame_blocking(sock, self.max_frame_bytes)
        except (OSError, FrameError):
            sock.close()
            raise
        if not welcome or welcome[0] != "welcome":
            sock.close()
            raise OperationalError(f"{address} refused the connection: {welcome}")
        self._socket = sock
        return sock

    def _drop(self, move_to: str | None = None) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None
        if move_to is not None and move_to in self.addresses:
            self._current = self.addresses.index(move_to)
        else:
            self._current = (self._current + 1) % len(self.addresses)

    def _round_trip(self, frame, deadline: float):
        sock = self._connect(deadline)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        send_frame_blocking(sock, frame)
        answer = read_frame_blocking(sock, self.max_frame_bytes)
        if answer is None:
            raise ConnectionError("the node closed the connection")
        return answer

    # --- requests ---

    def execute(self, request: Request) -> Reply:
        deadline = time.monotonic() + self.timeout
        plain = ["request", codec.request_to_plain(request)]
        last_problem = "no attempt"
        while time.monotonic() < deadline:
            try:
                answer = self._round_trip(plain, deadline)
            except (OSError, FrameError, ConnectionError) as error:
                last_problem = f"{self.addresses[self._current]}: {error}"
                self._drop()
                time.sleep(_RETRY_PAUSE_S)
                continue
            if answer[0] == "error":
                raise InterfaceError(f"the server refused the request: {answer[-1]}")
            reply = codec.reply_from_plain(answer[1])
            if reply.error is not None and reply.error.kind == "NotPrimary":
                last_problem = f"{self.addresses[self._current]}: {reply.error.message}"
                named = _PRIMARY_NAMED.search(reply.error.message)
                self._drop(named.group(1) if named else None)
                time.sleep(_RETRY_PAUSE_S)
                continue
            return reply
        raise OperationalError(
            f"no evedb node answered within {self.timeout:g}s (tried {', '.join(self.addresses)}; "
            f"last: {last_problem})"
        )

    def status(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                answer = self._round_trip(["status"], deadline)
                return answer[1]
            except (OSError, FrameError, ConnectionError) as error:
                self._drop()
                if time.monotonic() >= deadline:
                    raise OperationalError(f"no evedb node answered within {self.timeout:g}s: {error}") from None
                time.sleep(_RETRY_PAUSE_S)

    def state_root(self) -> str:
        return self.status()["state_root"]

    def stats(self) -> dict:
        return self.status()

    def release(self) -> None:
        self._drop()


def node_status(address: str, timeout: float = 5.0) -> dict:
    """The status of one node (not the pair): what `evedb status HOST:PORT` prints."""
    transport = RemoteTransport(DSN_PREFIX + address, timeout=timeout)
    try:
        return transport.status()
    finally:
        transport.release()
