"""The `serve` options of TLS, authentication and limits, turned into NodeConfig fields.

Owns only the checking of those options together (what `cli/main.py` passes through), so a
wrong combination or an unreadable file stops `serve` with one message naming the option,
before the node opens its port.
"""

from __future__ import annotations

from .auth import Authenticator
from .limits import Limits
from .tls import TLSFiles, peer_dial_context, server_context

# serve option name -> Limits field
LIMIT_OPTIONS = {
    "max_connections": "max_connections",
    "max_inflight": "max_inflight_per_client",
    "max_frame_bytes": "max_frame_bytes",
    "max_statement_bytes": "max_statement_bytes",
    "max_result_bytes": "max_result_bytes",
    "max_output_buffer_bytes": "max_output_buffer_bytes",
}


def node_settings(*, tls_cert=None, tls_key=None, tls_ca=None, auth_file=None, **limit_options) -> dict:
    """NodeConfig keyword arguments (limits, tls, auth_file); ValueError names the bad option."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if tls_ca is not None and tls_cert is None:
        raise ValueError("--tls-ca needs --tls-cert and --tls-key (it makes the peer link mutual TLS)")
    tls = TLSFiles(tls_cert, tls_key, tls_ca) if tls_cert else None
    if tls is not None:
        server_context(tls)  # load the files now: a bad one is reported before the node starts
        peer_dial_context(tls)
    if auth_file is not None:
        try:
            Authenticator.from_file(auth_file)
        except OSError as error:
            raise ValueError(f"--auth-file: {error}") from None
    unknown = set(limit_options) - set(LIMIT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown limit options: {sorted(unknown)}")
    values = {LIMIT_OPTIONS[name]: value for name, value in limit_options.items() if value is not None}
    try:
        limits = Limits(**values)
    except ValueError as error:
        message = str(error)
        for option, field_name in LIMIT_OPTIONS.items():  # speak in serve's option names
            message = message.replace(field_name, "--" + option.replace("_", "-"))
        raise ValueError(message) from None
    return {"limits": limits, "tls": tls, "auth_file": auth_file}
