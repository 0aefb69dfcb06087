"""TLS for the node's port (clients and peer) and for the client driver.

Owns the SSL contexts and the rule that tells a TLS connection from a plaintext one.

How it works:
- `serve --tls-cert F --tls-key F` makes the node require TLS on its one port, for clients and
  for the peer alike, and dial its peer over TLS.  With `--tls-ca F` the peer link is mutual:
  each node checks the other's certificate against that CA (and its host name against the
  certificate), and a peer hello over a connection without a verified certificate naming the
  host of `--peer` is refused (a client may hold a certificate from the same CA).
  Clients may present a certificate (it is then verified) but need not: they authenticate
  with a password or token (`--auth-file`).
- The node peeks at the first byte of each connection before choosing a side: a TLS
  ClientHello starts with the handshake record type 0x16, while an evedb frame starts with the
  high byte of its length, which is 0 for any frame under 16 MiB.  So a plaintext client at a
  TLS node gets a readable error frame instead of a handshake failure, and a TLS client at a
  plaintext node gets a log line on the node that names the mistake.

Rules kept: TLS 1.2 at least; certificate and key files are loaded at start, and a file that
cannot be loaded stops the node with a message naming the option.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

TLS_HANDSHAKE_RECORD = 0x16


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    ca: str | None = None


def looks_like_tls(first_byte: int) -> bool:
    return first_byte == TLS_HANDSHAKE_RECORD


def certificate_names_host(certificate: dict, host: str) -> bool:
    """True if a verified peer certificate (`getpeercert()`) names `host` in its subjectAltName
    (an IP address, or a DNS name, `*.` matching one label).  Checked on the peer hello: a
    client holding a certificate from the same CA must not pose as the peer node."""
    try:
        wanted_ip = ipaddress.ip_address(host)
    except ValueError:
        wanted_ip = None
    for kind, value in certificate.get("subjectAltName", ()):
        if kind == "IP Address" and wanted_ip is not None:
            try:
                if ipaddress.ip_address(value.strip()) == wanted_ip:
                    return True
            except ValueError:
                continue
        elif kind == "DNS" and wanted_ip is None:
            name, wanted = value.lower().rstrip("."), host.lower().rstrip(".")
            if name == wanted or (name.startswith("*.") and wanted.partition(".")[2] == name[2:]):
                return True
    return False


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None, what: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the {what} certificate {cert!r} and key {key!r}: {error}") from None


def _load_ca(context: ssl.SSLContext, ca: str, what: str) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the {what} CA file {ca!r}: {error}") from None


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """The node's side of every accepted connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, files.cert, files.key, "--tls-cert/--tls-key")
    if files.ca:
        _load_ca(context, files.ca, "--tls-ca")
        # Optional: clients need no certificate; a peer's is required after the hello.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_dial_context(files: TLSFiles) -> ssl.SSLContext:
    """The node's side of the link it dials to its peer: verifies the peer's certificate (with
    --tls-ca, else the system's trust store) and presents its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.ca:
        _load_ca(context, files.ca, "--tls-ca")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    _load_chain(context, files.cert, files.key, "--tls-cert/--tls-key")
    return context


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """The driver's context: verifies the node against `ca` (else the system's trust store)."""
    if key is not None and cert is None:
        raise ValueError("tls_key was given without tls_cert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        _load_ca(context, ca, "tls_ca")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert:
        _load_chain(context, cert, key, "client (tls_cert/tls_key)")
    return context
