"""The network side of the DB-API driver: requests to a replicated pair over TCP.

`RemoteTransport` offers the same small surface as the embedded database (`execute`,
`new_client_id`, `state_root`, `stats`, `release`), so `dbapi.Connection` works unchanged.

Rules kept:
- a request is retried with the SAME (client id, request id) until a reply arrives or the
  timeout passes: across a dropped connection, a `NotPrimary` answer or a failover.  The
  pair's reply cache answers a retry of a request that already ran; nothing runs twice;
- a `NotPrimary` answer names the primary; the transport goes there next, else to the other
  address;
- when no node answers within the timeout, `OperationalError` says which addresses were tried;
- a node that refuses the connection itself (wrong credentials, TLS required, too many
  connections) or a TLS handshake that fails raises `OperationalError` at once with the node's
  reason: retrying would not help, and nothing was sent.

DSN: `evedb://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]`, or `evedb+tls://...` for TLS with
optional query parameters `?ca=FILE` (the CA that signed the nodes' certificates; default: the
system's trust store), `cert=FILE&key=FILE` (a client certificate).  USER and PASSWORD are
percent-decoded.  The same settings may be given as keyword arguments (`user`, `password`,
`tls`, `tls_ca`, `tls_cert`, `tls_key`), which win over the DSN.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote

from . import codec
from .errors import DataError, InterfaceError, OperationalError
from .messages import Reply, Request
from .runtime.tls import client_context
from .runtime.transport import (
    PROTOCOL_VERSION,
    BlockingFrameReader,
    FrameError,
    parse_address,
    read_frame_blocking,
    send_frame_blocking,
)

DSN_PREFIX = "evedb://"
TLS_DSN_PREFIX = "evedb+tls://"
DSN_PREFIXES = (DSN_PREFIX, TLS_DSN_PREFIX)
_PRIMARY_NAMED = re.compile(r"the primary is (\S+)")
_RETRY_PAUSE_S = 0.05
_QUERY_KEYS = {"ca": "tls_ca", "cert": "tls_cert", "key": "tls_key"}
# Error kinds a node may put in an ["error", kind, message] frame, and the class raised here.
_ERROR_FRAME_CLASSES = {"DataError": DataError, "InterfaceError": InterfaceError}


@dataclass(frozen=True)
class ConnectOptions:
    """Everything a DSN (and the keyword arguments of `connect`) says about reaching a pair."""

    addresses: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def with_overrides(self, **overrides) -> "ConnectOptions":
        given = {name: value for name, value in overrides.items() if value is not None}
        options = replace(self, **given)
        if options.tls_ca or options.tls_cert or options.tls_key:
            options = replace(options, tls=True)
        if options.password is not None and options.user is None:
            raise InterfaceError("a password was given without a user name")
        return options


def parse_dsn_options(dsn: str) -> ConnectOptions:
    prefix = next((prefix for prefix in DSN_PREFIXES if dsn.startswith(prefix)), None)
    if prefix is None:
        raise InterfaceError(f"not an evedb DSN: {dsn!r} (expected evedb://[user:password@]host:port[,host:port] "
                             "or evedb+tls://...)")
    rest, _, query = dsn[len(prefix):].partition("?")
    userinfo, at, hosts = rest.rpartition("@")
    user = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user)
        password = unquote(raw_password) if colon else None
        if not user:
            raise InterfaceError("the DSN has an '@' but no user name before it")
    addresses = [part.strip() for part in hosts.split(",") if part.strip()]
    if not addresses:
        raise InterfaceError("the DSN names no node")
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as error:
            raise InterfaceError(str(error)) from None
    settings = {}
    if query:
        try:
            parsed = parse_qs(query, strict_parsing=True)
        except ValueError as error:
            raise InterfaceError(f"bad DSN query {query!r}: {error}") from None
        for key, values in parsed.items():
            if key not in _QUERY_KEYS:
                raise InterfaceError(f"unknown DSN parameter {key!r} (known: {', '.join(_QUERY_KEYS)})")
            if len(values) != 1:
                raise InterfaceError(f"DSN parameter {key!r} given more than once")
            settings[_QUERY_KEYS[key]] = values[0]
        if prefix != TLS_DSN_PREFIX:
            raise InterfaceError("TLS parameters (ca, cert, key) need an evedb+tls:// DSN")
    return ConnectOptions(tuple(addresses), user, password, prefix == TLS_DSN_PREFIX, **settings)


def parse_dsn(dsn: str) -> list[str]:
    """The node addresses a DSN names."""
    return list(parse_dsn_options(dsn).addresses)


class RemoteTransport:
    def __init__(self, dsn: str, *, timeout: float = 10.0, max_frame_bytes: int = 64 * 1024 * 1024,
                 user: str | None = None, password: str | None = None, tls: bool | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None):
        self.options = parse_dsn_options(dsn).with_overrides(
            user=user, password=password, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        self.addresses = list(self.options.addresses)
        self.timeout = timeout
        self.max_frame_bytes = max_frame_bytes
        self._tls_context = None
        if self.options.tls:
            try:
                self._tls_context = client_context(self.options.tls_ca, self.options.tls_cert, self.options.tls_key)
            except ValueError as error:
                raise InterfaceError(str(error)) from None
        self._current = 0
        self._socket: socket.socket | None = None
        self._frames = BlockingFrameReader()  # the connection's reader (it may hold bytes read ahead)

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
        try:
            sock.settimeout(remaining)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_handshake(sock, host, address)
            send_frame_blocking(sock, self._hello())
            welcome = read_frame_blocking(sock, self.max_frame_bytes)
        except ssl.SSLError as error:
            sock.close()
            raise OperationalError(f"TLS: {address} ended the connection ({error.reason or error}): "
                                   "it may not accept this client's certificate (tls_cert)") from None
        except BaseException:
            sock.close()
            raise
        if welcome is None:
            sock.close()
            if self.options.tls_cert:
                # Under TLS 1.3 a node checks the client's certificate after the client's side
                # of the handshake is done: a refusal shows here, as the connection closing.
                raise OperationalError(f"TLS: {address} closed the connection after the handshake: it does not "
                                       "accept this client's certificate (tls_cert/tls_key)")
            raise ConnectionError(f"{address} closed the connection during the hello")
        if not (isinstance(welcome, list) and welcome and welcome[0] == "welcome"):
            sock.close()
            if isinstance(welcome, list) and len(welcome) == 3 and welcome[0] == "error":
                error_class = InterfaceError if welcome[1] == "InterfaceError" else OperationalError
                raise error_class(f"{address} refused the connection ({welcome[1]}): {welcome[2]}")
            raise InterfaceError(f"{address} answered the hello with {str(welcome)[:200]}")
        self._socket = sock
        self._frames = BlockingFrameReader()
        return sock

    def _hello(self) -> list:
        hello = ["hello", PROTOCOL_VERSION, "client", "evedb-python"]
        if self.options.user is not None:
            hello.append({"user": self.options.user, "password": self.options.password or ""})
        return hello

    def _tls_handshake(self, sock: socket.socket, host: str, address: str) -> socket.socket:
        """Wrap in TLS; a handshake that fails is a configuration problem: raise at once."""
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as error:
            raise OperationalError(
                f"TLS: the certificate of {address} is not trusted ({error.verify_message}): give the CA that "
                "signed it with tls_ca=FILE or evedb+tls://...?ca=FILE") from None
        except ssl.SSLError as error:
            raise OperationalError(
                f"TLS handshake with {address} failed ({error.reason or error}): is that node serving TLS? "
                "(evedb+tls:// is for nodes started with --tls-cert/--tls-key, evedb:// for plaintext ones)") from None

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
        answer = self._frames.read(sock, self.max_frame_bytes)
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
                error_class = _ERROR_FRAME_CLASSES.get(answer[1] if len(answer) == 3 else None, InterfaceError)
                raise error_class(f"the server refused the request: {answer[-1]}")
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
                if not (isinstance(answer, list) and len(answer) == 2 and answer[0] == "status"):
                    raise InterfaceError(f"the node answered a status request with {str(answer)[:200]}")
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


def node_status(address: str, timeout: float = 5.0, **options) -> dict:
    """The status of one node (not the pair): what `evedb status HOST:PORT` prints.

    `address` is HOST:PORT or a one-node DSN (for credentials and TLS); `options` are
    RemoteTransport's keyword arguments (user, password, tls, tls_ca, ...)."""
    dsn = address if address.startswith(DSN_PREFIXES) else DSN_PREFIX + address
    transport = RemoteTransport(dsn, timeout=timeout, **options)
    try:
        return transport.status()
    finally:
        transport.release()
