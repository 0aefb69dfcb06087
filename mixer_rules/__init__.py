"""Mixer rules: per-application read/write sets of server-side procedures, loaded from TOML.

What it owns (DESIGN.md section 3, "Mixer rules"): access analysis cannot look inside a Python
procedure, so an application declares, per procedure, the tables it reads and writes and
optionally which arguments pick the rows it touches.  This package turns such a file into
`MixerRules`, and a call `(procedure, args)` into the `Access` the mixer groups by.  The rule
files are data and live beside this module (`<name>.toml`); see README.md here.

Format::

    # mixer_rules/example.toml
    [procedures.transfer]
    reads = ["account"]                  # tables read (case-insensitive); default []
    writes = ["account"]                 # tables written; default []; none = read-only
    # optional key rules: each maps procedure arguments to a key of one table
    keys = [ { table = "account", arg = 0 }, { table = "account", arg = 1 } ]

    [procedures.add_to_cart]
    reads = ["shopping_cart", "shopping_cart_line", "item"]
    writes = ["shopping_cart", "shopping_cart_line"]
    keys = [ { table = "shopping_cart", arg = 0, modulo = 10 } ]

A key rule `{ table, arg }` gives the row key `(table, (args[arg],))`; `arg` may also be a
list of positions, giving the compound key `(table, (args[a], args[b], ...))`.  With
`modulo = m` (a single position only, m >= 1) it gives the partition key
`(table, ("%m", args[arg] % m))`: the call touches some rows of partition `args[arg] % m`.
When a procedure has key rules for a table, its access to that table is row-level for exactly
those keys; tables without key rules are accessed whole.  Rules with and without a modulo may
be mixed, but a row key and a partition key of one table always conflict (evedb.mixer).

Rules kept here:
- a procedure without a rule is exclusive: it runs alone (reads/writes unknown);
- `access()` never raises on client input: an argument position the call does not have, an
  argument that is no SQL scalar, or a non-integer where a modulo needs one makes that
  table's access table-level (the safe widening) instead of failing;
- a malformed file raises `MixerRulesError` naming the file, the procedure and the fault;
  nothing malformed is silently ignored (unknown keys included), because a typo in a rule
  would otherwise quietly cost parallelism or correctness of the hint;
- table names are lower-cased, as access analysis reports them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from evedb.access import Access

__all__ = ["MixerRulesError", "KeyRule", "ProcedureRule", "MixerRules", "load_rules",
           "available_rules"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PROCEDURE_FIELDS = frozenset({"reads", "writes", "keys"})
_KEY_FIELDS = frozenset({"table", "arg", "modulo"})
# SQL values (DESIGN.md: the five SQLite storage classes); anything else in a key could be
# unhashable or compare oddly, so such an argument widens the access instead.
_SCALARS = (type(None), int, float, str, bytes)


class MixerRulesError(ValueError):
    """A rule file (or dict) that cannot be used as written."""


@dataclass(frozen=True, slots=True)
class KeyRule:
    """One key rule: `args` positions give a key of `table`; `modulo` makes it a partition key."""

    table: str
    args: tuple[int, ...]
    modulo: int | None = None

    def key(self, call_args: Sequence[Any]) -> tuple | None:
        """The key for a call, or None if the call's arguments cannot give one."""
        values = []
        for pos in self.args:
            if pos >= len(call_args):
                return None
            value = call_args[pos]
            if not isinstance(value, _SCALARS) or value != value:  # value != value: NaN
                return None
            values.append(value)
        if self.modulo is None:
            return tuple(values)
        (value,) = values
        if type(value) is not int:  # bool is an int subclass but no sensible partition id
            return None
        return (f"%{self.modulo}", value % self.modulo)


@dataclass(frozen=True, slots=True)
class ProcedureRule:
    """The declared access of one procedure."""

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    key_rules: tuple[KeyRule, ...] = ()

    @property
    def read_only(self) -> bool:
        return not self.writes


@dataclass(frozen=True, slots=True)
class MixerRules:
    """The rules of one application: procedure name -> ProcedureRule."""

    procedures: Mapping[str, ProcedureRule] = field(default_factory=dict)
    source: str = "<dict>"
    # The Access of each procedure whose rule keys nothing: the same for every call, so built
    # once (the mixer asks for one per request of every batch).
    _fixed: Mapping[str, Access] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A read-only view: rules are shared by every request and must not drift.
        object.__setattr__(self, "procedures", MappingProxyType(dict(self.procedures)))
        object.__setattr__(self, "_fixed", {
            name: Access(reads=rule.reads, writes=rule.writes, keys=frozenset(), exclusive=False,
                         read_only=rule.read_only)
            for name, rule in self.procedures.items() if not rule.key_rules
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> MixerRules:
        """Validate parsed TOML (or an equivalent dict); `source` names it in errors."""
        if not isinstance(data, Mapping):
            raise MixerRulesError(f"{source}: expected a table at top level, "
                                  f"got {type(data).__name__}")
        unknown = sorted(set(data) - {"procedures"})
        if unknown:
            raise MixerRulesError(f"{source}: unknown top-level key(s) {unknown}; "
                                  f"only [procedures.<name>] tables are allowed")
        procs = data.get("procedures", {})
        if not isinstance(procs, Mapping):
            raise MixerRulesError(f"{source}: 'procedures' must be a table of procedure "
                                  f"tables, got {type(procs).__name__}")
        rules = {name: _parse_procedure(source, name, body) for name, body in procs.items()}
        return cls(rules, source)

    def access(self, procedure: str, args: Sequence[Any] = ()) -> Access:
        """The Access of a call; exclusive when the procedure has no rule."""
        fixed = self._fixed.get(procedure)
        if fixed is not None:
            return fixed
        rule = self.procedures.get(procedure)
        if rule is None:
            return Access(reads=frozenset(), writes=frozenset(), keys=frozenset(),
                          exclusive=True, read_only=False)
        if not isinstance(args, Sequence) or isinstance(args, (str, bytes)):
            args = ()  # client input of the wrong shape: widen every keyed table
        keys: set[tuple[str, tuple]] = set()
        whole: set[str] = set()  # tables some key rule could not key for this call
        for kr in rule.key_rules:
            key = kr.key(args)
            if key is None:
                whole.add(kr.table)
            else:
                keys.add((kr.table, key))
        if whole:
            # Any key naming a table makes the access to it row-level, so a table that one
            # rule could not key must carry no key at all to stay table-level.
            keys = {k for k in keys if k[0] not in whole}
        return Access(reads=rule.reads, writes=rule.writes, keys=frozenset(keys),
                      exclusive=False, read_only=rule.read_only)

    def __contains__(self, procedure: object) -> bool:
        return procedure in self.procedures


def _fail(source: str, name: str, what: str) -> MixerRulesError:
    return MixerRulesError(f"{source}: procedure {name!r}: {what}")


def _parse_tables(source: str, name: str, body: Mapping, field_name: str) -> frozenset[str]:
    value = body.get(field_name, [])
    if not isinstance(value, list):
        raise _fail(source, name, f"{field_name!r} must be a list of table names, "
                                  f"got {type(value).__name__}")
    tables = []
    for t in value:
        if not isinstance(t, str) or not t.strip():
            raise _fail(source, name, f"{field_name!r} must hold non-empty table name "
                                      f"strings, got {t!r}")
        tables.append(t.strip().lower())
    return frozenset(tables)


def _is_int(v: Any) -> bool:
    return type(v) is int  # TOML booleans arrive as bool, an int subclass: reject them


def _parse_key_rule(source: str, name: str, i: int, entry: Any,
                    tables: frozenset[str]) -> KeyRule:
    where = f"keys[{i}]"
    if not isinstance(entry, Mapping):
        raise _fail(source, name, f"{where} must be a table like "
                                  f"{{ table = \"t\", arg = 0 }}, got {entry!r}")
    unknown = sorted(set(entry) - _KEY_FIELDS)
    if unknown:
        raise _fail(source, name, f"{where}: unknown key(s) {unknown}; "
                                  f"allowed: table, arg, modulo")
    for required in ("table", "arg"):
        if required not in entry:
            raise _fail(source, name, f"{where}: missing {required!r}")
    table = entry["table"]
    if not isinstance(table, str) or not table.strip():
        raise _fail(source, name, f"{where}: 'table' must be a non-empty string, got {table!r}")
    table = table.strip().lower()
    if table not in tables:
        raise _fail(source, name, f"{where}: table {table!r} is in neither reads nor writes")
    arg = entry["arg"]
    if _is_int(arg):
        positions = (arg,)
    elif isinstance(arg, list) and arg and all(_is_int(a) for a in arg):
        positions = tuple(arg)
    else:
        raise _fail(source, name, f"{where}: 'arg' must be an argument position or a "
                                  f"non-empty list of positions, got {arg!r}")
    if any(p < 0 for p in positions):
        raise _fail(source, name, f"{where}: 'arg' positions must be >= 0, got {arg!r}")
    modulo = entry.get("modulo")
    if modulo is not None:
        if not _is_int(modulo):
            raise _fail(source, name, f"{where}: 'modulo' must be an integer, got {modulo!r}")
        if modulo < 1:
            raise _fail(source, name, f"{where}: 'modulo' must be >= 1, got {modulo}")
        if isinstance(arg, list):
            raise _fail(source, name, f"{where}: 'modulo' needs a single 'arg' position, "
                                      f"not a list {arg!r}")
    return KeyRule(table, positions, modulo)


def _parse_procedure(source: str, name: Any, body: Any) -> ProcedureRule:
    if not isinstance(name, str) or not name:
        raise MixerRulesError(f"{source}: procedure names must be non-empty strings, "
                              f"got {name!r}")
    if not isinstance(body, Mapping):
        raise _fail(source, name, f"must be a table (reads, writes, keys), "
                                  f"got {type(body).__name__}")
    unknown = sorted(set(body) - _PROCEDURE_FIELDS)
    if unknown:
        raise _fail(source, name, f"unknown key(s) {unknown}; allowed: reads, writes, keys")
    reads = _parse_tables(source, name, body, "reads")
    writes = _parse_tables(source, name, body, "writes")
    raw_keys = body.get("keys", [])
    if not isinstance(raw_keys, list):
        raise _fail(source, name, f"'keys' must be a list of key rules, "
                                  f"got {type(raw_keys).__name__}")
    key_rules = tuple(_parse_key_rule(source, name, i, e, reads | writes)
                      for i, e in enumerate(raw_keys))
    return ProcedureRule(reads, writes, key_rules)


def available_rules() -> list[str]:
    """Names of the rule files shipped in this package, sorted."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml") and p.is_file())


def load_rules(path_or_name: str | os.PathLike[str]) -> MixerRules:
    """Load a rule file by path, or a shipped one by bare application name ("example")."""
    if isinstance(path_or_name, str) and _NAME.fullmatch(path_or_name) \
            and not path_or_name.endswith(".toml"):
        resource = resources.files(__name__) / f"{path_or_name}.toml"
        if not resource.is_file():
            raise MixerRulesError(f"no mixer rules named {path_or_name!r}; shipped: "
                                  f"{', '.join(available_rules()) or 'none'} "
                                  f"(pass a path to load another file)")
        source = f"mixer_rules/{path_or_name}.toml"
        try:
            raw = resource.read_bytes()
        except OSError as e:
            raise MixerRulesError(f"{source}: cannot read: {e}") from e
    else:
        source = os.fspath(path_or_name)
        try:
            with open(source, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise MixerRulesError(f"{source}: cannot read: {e}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MixerRulesError(f"{source}: not UTF-8 text: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise MixerRulesError(f"{source}: invalid TOML: {e}") from e
    return MixerRules.from_dict(data, source)
