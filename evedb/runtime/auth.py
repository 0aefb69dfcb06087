"""Client authentication: the auth file (users and salted secret hashes) and its checks.

Owns the file format, hashing, verification and the helper behind `evedb auth add/remove`.

The file (`serve --auth-file F`) is text, one user per line, `#` starts a comment:

    alice:scrypt:16384:8:1:<salt hex>:<hash hex>

A user's secret is a password or a generated token; the node cannot tell them apart and
stores neither, only scrypt(secret, salt, n, r, p).

Rules kept:
- only salted hashes are stored; the file is written with mode 0600, atomically (a
  half-written file never replaces a good one);
- verification takes the same work and the same constant-time comparison whether the user
  exists or not, so timing does not tell which user names exist;
- a malformed file is refused at start with its line number, never half-loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1  # about 16 MiB and tens of ms per check
_SALT_BYTES, _HASH_BYTES = 16, 32
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Bounds on what a line may ask of the node, so a tampered file cannot make a check cost
# gigabytes or minutes.
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 32, 16
MAX_SECRET_BYTES = 1024


@dataclass(frozen=True)
class UserEntry:
    user: str
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def line(self) -> str:
        return f"{self.user}:scrypt:{self.n}:{self.r}:{self.p}:{self.salt.hex()}:{self.digest.hex()}"


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * (n + p + 2) + (1 << 20), dklen=_HASH_BYTES)


def check_user_name(user: str) -> None:
    if not _USER_NAME.match(user):
        raise ValueError(f"bad user name {user!r}: use 1-64 of letters, digits, '_', '.', '@', '-'")


def make_entry(user: str, secret: str) -> UserEntry:
    check_user_name(user)
    if not secret:
        raise ValueError("the password or token must not be empty")
    if len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise ValueError(f"the password or token must be at most {MAX_SECRET_BYTES} bytes")
    salt = os.urandom(_SALT_BYTES)
    return UserEntry(user, SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def parse_line(line: str, where: str) -> UserEntry:
    parts = line.split(":")
    if len(parts) != 7 or parts[1] != "scrypt":
        raise ValueError(f"{where}: expected USER:scrypt:N:R:P:SALT_HEX:HASH_HEX")
    user, _, n, r, p, salt, digest = parts
    try:
        check_user_name(user)
        entry = UserEntry(user, int(n), int(r), int(p), bytes.fromhex(salt), bytes.fromhex(digest))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if not (1 < entry.n <= _MAX_N and entry.n & (entry.n - 1) == 0 and 0 < entry.r <= _MAX_R and 0 < entry.p <= _MAX_P):
        raise ValueError(f"{where}: scrypt parameters out of range (N a power of two up to {_MAX_N}, "
                         f"r up to {_MAX_R}, p up to {_MAX_P})")
    if not entry.salt or len(entry.digest) != _HASH_BYTES:
        raise ValueError(f"{where}: empty salt or a hash that is not {_HASH_BYTES} bytes")
    return entry


def read_entries(path: str) -> dict[str, UserEntry]:
    entries: dict[str, UserEntry] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            entry = parse_line(line, f"{path} line {number}")
            if entry.user in entries:
                raise ValueError(f"{path} line {number}: user {entry.user!r} appears twice")
            entries[entry.user] = entry
    return entries


def write_entries(path: str, entries: dict[str, UserEntry]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".auth-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("# evedb auth file: USER:scrypt:N:R:P:SALT_HEX:HASH_HEX (edit with `evedb auth`)\n")
            for user in sorted(entries):
                out.write(entries[user].line() + "\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def add_user(path: str, user: str, secret: str) -> None:
    """Add USER to the auth file (created if missing), replacing an entry of the same name."""
    entries = read_entries(path) if os.path.exists(path) else {}
    entries[user] = make_entry(user, secret)
    write_entries(path, entries)


def remove_user(path: str, user: str) -> bool:
    entries = read_entries(path)
    if entries.pop(user, None) is None:
        return False
    write_entries(path, entries)
    return True


class Authenticator:
    """Checks (user, secret) pairs against a loaded auth file."""

    def __init__(self, entries: dict[str, UserEntry]):
        self.entries = entries
        # Unknown users are checked against this entry, so they cost the same as known ones.
        self._decoy = UserEntry("", SCRYPT_N, SCRYPT_R, SCRYPT_P, os.urandom(_SALT_BYTES), os.urandom(_HASH_BYTES))

    @classmethod
    def from_file(cls, path: str) -> "Authenticator":
        entries = read_entries(path)
        if not entries:
            raise ValueError(f"{path}: no users (add one with `evedb auth add {path} USER`)")
        return cls(entries)

    def verify(self, user, secret) -> bool:
        """True if `secret` is `user`'s; any wrong type or size is simply False."""
        if not isinstance(user, str) or not isinstance(secret, str) or len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
            return False
        entry = self.entries.get(user)
        known = entry is not None
        entry = entry or self._decoy
        digest = _scrypt(secret, entry.salt, entry.n, entry.r, entry.p)
        return hmac.compare_digest(digest, entry.digest) and known
