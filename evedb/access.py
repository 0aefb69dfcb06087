"""Access analysis: which tables and rows one SQL statement reads and writes.

The mixer (DESIGN.md section 3) packs a batch into parallel batches by comparing these
sets, so this module owns the answer to "what may this statement touch?".  A wrong answer
costs a rollback, never correctness, but an answer that is too small costs one every time,
so every rule below errs towards touching more.

Rules kept here:
- reads are every table referenced (CTE names excluded), writes the target of
  INSERT/UPDATE/DELETE/REPLACE; UPDATE, DELETE and an upsert's DO UPDATE also read their
  target.  Names are lower-case, "main." is stripped, any other schema makes the statement
  exclusive.  sqlite_* internal tables never appear.
- with a catalog, the statement is also prepared (never run) on the catalog's connection
  under an observing authorizer; what SQLite reports widens the sets.  That is how views
  resolve to base tables, trigger writes appear and foreign-key cascades and checks appear.
- keys: a table gets row keys only when every reference to it in the statement is pinned by
  top-level AND-conjuncts `pk = value` / `pk IN (values)` covering its whole primary key
  (or, for INSERT ... VALUES, explicit rowid-alias values in every row).  A table reached
  any other way (unpinned reference, view, trigger, foreign-key action, INSERT that lets
  SQLite pick the rowid, write to a table with a secondary UNIQUE index, UPDATE of the key)
  is table-level and gets no keys at all: the mixer treats a table with keys as row-level
  for exactly those keys.
- exclusive: DDL, PRAGMA, transaction control, ATTACH/DETACH, VACUUM, ANALYZE, REINDEX,
  several statements in one text, unparseable text and anything else not understood.
- pure: no threads, sockets, clocks or randomness.  The only outside state is the catalog's
  apsw connection, read for its schema.

How it works: the text is tokenized once (sqlglot's tokenizer, which skips strings, comments
and quoted identifiers); the leading keyword decides the exclusive kinds; parameters (`?`,
`?NNN`, `:x`, `@x`, `$x`) are renamed to sqlglot-friendly named placeholders numbered the way
SQLite numbers them; `REPLACE INTO` becomes `INSERT OR REPLACE INTO` and `UPDATE OR x` loses
its conflict clause, both of which sqlglot cannot parse.  The parse tree and the authorizer's
report are reduced to a `_Shape`: the table sets plus, per keyed table, which literal or
parameter pins each key column.  Shapes are cached per SQL text in the catalog (dropped
whenever SQLite's schema cookie changes) or in a module cache when there is no catalog, so a
repeated statement costs one dict lookup, a schema-cookie read and binding its parameters.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import apsw
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType


@dataclass(frozen=True, slots=True)
class Access:
    """What one statement (or script) may touch.

    A table in `reads` or `writes` that no key names is accessed table-level: it conflicts
    with every row of that table.  A table named by some key is accessed only at those keys.
    """

    reads: frozenset[str]
    writes: frozenset[str]
    keys: frozenset[tuple[str, tuple]]
    exclusive: bool
    read_only: bool

    @staticmethod
    def union(accesses: Iterable["Access"]) -> "Access":
        """The access of a script made of these statements.

        Keys survive for a table only when no member touches that table table-level; a
        single table-level touch widens the table for the whole script.
        """
        members = list(accesses)
        reads: set[str] = set()
        writes: set[str] = set()
        keys: set[tuple[str, tuple]] = set()
        table_level: set[str] = set()
        for member in members:
            reads |= member.reads
            writes |= member.writes
            keys |= member.keys
            keyed = {table for table, _ in member.keys}
            table_level |= (member.reads | member.writes) - keyed
        return Access(
            reads=frozenset(reads),
            writes=frozenset(writes),
            keys=frozenset(key for key in keys if key[0] not in table_level),
            exclusive=any(member.exclusive for member in members),
            read_only=all(member.read_only for member in members),
        )


EMPTY: frozenset = frozenset()
EXCLUSIVE = Access(EMPTY, EMPTY, EMPTY, exclusive=True, read_only=False)
# A statement that can change nothing but must still run alone (read-only PRAGMA, EXPLAIN of DDL).
_EXCLUSIVE_READ_ONLY = Access(EMPTY, EMPTY, EMPTY, exclusive=True, read_only=True)

# Pragmas that only report; anything else may change the connection or the file.
READ_ONLY_PRAGMAS = frozenset({
    "application_id", "collation_list", "compile_options", "database_list", "encoding",
    "foreign_key_check", "foreign_key_list", "foreign_keys", "freelist_count",
    "function_list", "index_info", "index_list", "index_xinfo", "integrity_check",
    "module_list", "page_count", "page_size", "pragma_list", "quick_check",
    "schema_version", "table_info", "table_list", "table_xinfo", "user_version",
})

# Statement-leading keywords sqlglot is asked to parse; every other leading keyword
# (CREATE, DROP, ALTER, BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE, ATTACH, DETACH,
# VACUUM, ANALYZE, REINDEX, ...) makes the statement exclusive without parsing.
_PARSED_KEYWORDS = frozenset({"SELECT", "VALUES", "WITH", "INSERT", "UPDATE", "DELETE"})

_PREPARED_KEYWORDS = _PARSED_KEYWORDS | {"REPLACE"}

_ROWID_NAMES = ("rowid", "oid", "_rowid_")
# More keys than this for one table (IN lists multiply) is treated as the whole table.
_KEY_LIMIT = 4096
_PLACEHOLDER_PREFIX = "_evedb_parameter_"
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_REAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_SHAPE_CACHE_LIMIT = 8192
# Longer texts are not parsed: they run alone (exclusive, never read-only), which is always
# safe.  Parsing grows with the text (~10 µs a character: a 12.8 KB INSERT took 0.12-0.57 s),
# and it runs on a node's engine thread, so a client sending long literal-laden statements
# could otherwise stall every batch.  Bulk data belongs in parameters.
ANALYSIS_MAX_CHARS = 16384


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class _TableInfo:
    columns: tuple[str, ...]            # insertable columns in declared order
    all_columns: frozenset[str]         # every column name, hidden ones too
    affinity: dict[str, str]            # column -> INTEGER/TEXT/BLOB/REAL/NUMERIC
    primary_key: tuple[str, ...]
    rowid_alias: bool
    unique_columns: frozenset[str]      # columns of secondary UNIQUE indexes
    unique_on_expression: bool          # a secondary UNIQUE index over an expression


@dataclass(frozen=True, slots=True)
class _Observed:
    """What the authorizer saw while SQLite prepared a statement."""

    reads: frozenset[str]
    writes: frozenset[str]
    indirect: frozenset[str]    # reached through a view or a trigger body: table-level
    foreign_schema: bool        # temp or attached database: exclusive


class Catalog:
    """The schema facts access analysis needs, read from an apsw connection.

    The connection must be internal (never a client's): its authorizer is swapped while a
    statement is prepared for observation.  Foreign-key cascades are only observed when the
    connection enforces foreign keys, as `from_sql` arranges.
    """

    _tables: dict[str, _TableInfo]
    _views: frozenset[str]
    _triggers: dict[str, tuple[str, frozenset[str] | None]]
    _foreign_key_reach: dict[str, frozenset[str]]

    def __init__(self, connection: apsw.Connection) -> None:
        self.connection = connection
        self._schema_version = -1
        self._shapes: dict[str, _Shape] = {}
        self._observations: dict[str, _Observed | None] = {}
        self._checked = threading.local()  # .active: this thread's caller vouches for the version
        self.refresh()

    @classmethod
    def from_sql(cls, ddl_text: str) -> "Catalog":
        """A catalog over a private in-memory database built from `ddl_text`."""
        connection = apsw.Connection(":memory:")
        # Each PRAGMA on its own: apsw stops a multi-statement execute at the first row.
        connection.execute("PRAGMA foreign_keys=ON").fetchall()
        for _ in connection.execute(ddl_text):
            pass
        return cls(connection)

    @classmethod
    def from_connection(cls, conn: apsw.Connection) -> "Catalog":
        return cls(conn)

    # -- schema version ---------------------------------------------------------------

    def _read_schema_version(self) -> int:
        try:
            return self.connection.execute("PRAGMA schema_version").fetchone()[0]
        except apsw.Error:
            # Busy or locked: keep what we know; the next call reads again.
            return self._schema_version

    @property
    def version(self) -> int:
        """SQLite's schema cookie; reading it picks up schema changes made meanwhile."""
        current = self._read_schema_version()
        if current != self._schema_version:
            self.refresh()
        return self._schema_version

    def _current_shapes(self) -> dict[str, "_Shape"]:
        """The shape cache valid for the schema as it is now."""
        if not getattr(self._checked, "active", False) and self._read_schema_version() != self._schema_version:
            self.refresh()
        return self._shapes

    @contextmanager
    def version_checked(self):
        """Analyses on this thread, inside, trust the schema version read once on entry.

        For a caller that analyses many statements while nothing can change the schema (the
        engine planning a batch: DDL only runs after planning): one PRAGMA instead of one per
        statement.  Other threads keep checking for themselves.
        """
        outer = getattr(self._checked, "active", False)
        try:
            self._current_shapes()
        except apsw.Error:
            # Could not read the schema now (busy, I/O): each analysis checks for itself, as
            # without this, and one that still fails makes only its request exclusive.
            yield self
            return
        self._checked.active = True
        try:
            yield self
        finally:
            self._checked.active = outer

    def refresh(self) -> None:
        """Re-read the schema; every cached analysis made against the old one is dropped."""
        connection = self.connection
        self._schema_version = self._read_schema_version()
        rows = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema "
            "WHERE type IN ('table', 'view', 'trigger')").fetchall()
        tables: dict[str, _TableInfo] = {}
        views: set[str] = set()
        triggers: dict[str, tuple[str, frozenset[str] | None]] = {}
        foreign_key_parents: dict[str, set[str]] = {}
        for kind, name, table_name, sql in rows:
            lowered = name.lower()
            if kind == "view":
                views.add(lowered)
            elif kind == "trigger":
                triggers[lowered] = (table_name.lower(), _trigger_references(sql or ""))
            elif not lowered.startswith("sqlite_"):
                tables[lowered] = self._read_table(name)
                foreign_key_parents[lowered] = {
                    row[2].lower() for row in
                    connection.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,))}
        self._tables = tables
        self._views = frozenset(views)
        self._triggers = triggers
        self._foreign_key_reach = _foreign_key_reach(foreign_key_parents)
        self._shapes = {}
        self._observations = {}

    def _read_table(self, name: str) -> _TableInfo:
        connection = self.connection
        columns: list[str] = []
        all_columns: set[str] = set()
        affinity: dict[str, str] = {}
        key_columns: list[tuple[int, str]] = []
        declared_types: dict[str, str] = {}
        for _cid, column, declared, _notnull, _default, pk, hidden in connection.execute(
                "SELECT * FROM pragma_table_xinfo(?)", (name,)):
            column = column.lower()
            all_columns.add(column)
            if hidden == 0:
                columns.append(column)
            declared_types[column] = (declared or "").upper()
            affinity[column] = _affinity(declared or "")
            if pk:
                key_columns.append((pk, column))
        primary_key = tuple(column for _, column in sorted(key_columns))
        without_rowid = any(
            row[0] for row in connection.execute(
                "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,)))
        unique_columns: set[str] = set()
        unique_on_expression = False
        has_primary_key_index = False
        for _seq, index_name, unique, origin, _partial in connection.execute(
                "SELECT * FROM pragma_index_list(?)", (name,)):
            if origin == "pk":
                has_primary_key_index = True
                continue
            if not unique:
                continue
            for row in connection.execute("SELECT name FROM pragma_index_info(?)", (index_name,)):
                if row[0] is None:
                    unique_on_expression = True
                else:
                    unique_columns.add(row[0].lower())
        # Only "INTEGER PRIMARY KEY" on a rowid table aliases the rowid; SQLite builds a
        # separate pk index for the DESC quirk, which is what has_primary_key_index catches.
        rowid_alias = (len(primary_key) == 1 and not without_rowid and not has_primary_key_index
                       and declared_types.get(primary_key[0]) == "INTEGER")
        if rowid_alias:
            affinity[primary_key[0]] = "INTEGER"
        return _TableInfo(tuple(columns), frozenset(all_columns), affinity, primary_key,
                          rowid_alias, frozenset(unique_columns), unique_on_expression)

    # -- public queries ---------------------------------------------------------------

    def primary_key(self, table: str) -> tuple[str, ...] | None:
        info = self._tables.get(table.lower())
        return None if info is None else info.primary_key

    def is_rowid_alias(self, table: str) -> bool:
        info = self._tables.get(table.lower())
        return info is not None and info.rowid_alias

    def tables_touched(self, sql: str, params=None) -> tuple[frozenset[str], frozenset[str]] | None:
        """Authorizer-observed (reads, writes), or None when the statement does not prepare.

        Parameter values never change which tables a statement touches, so dummy NULLs of
        the statement's own shape are bound and `params` is accepted only for symmetry.
        """
        self._current_shapes()
        try:
            tokens = _tokenize(sql)
        except SqlglotError:
            return None
        statements = _statements(tokens)
        # Only DML and queries are prepared: some PRAGMAs take effect while being prepared.
        if len(statements) != 1 or statements[0][0].text.upper() not in _PREPARED_KEYWORDS:
            return None
        parameters, _ = _parameter_spans(tokens)
        observed = self._observe(sql[:statements[0][-1].end + 1], _parameter_count(parameters))
        return None if observed is None else (observed.reads, observed.writes)

    # -- observation ------------------------------------------------------------------

    def _observe(self, sql: str, parameter_count: int) -> _Observed | None:
        cached = self._observations.get(sql, False)
        if cached is not False:
            return cached
        observed = self._prepare_observed(sql, parameter_count)
        if len(self._observations) >= _SHAPE_CACHE_LIMIT:
            del self._observations[next(iter(self._observations))]
        self._observations[sql] = observed
        return observed

    def _prepare_observed(self, sql: str, parameter_count: int) -> _Observed | None:
        tables, views, triggers = self._tables, self._views, self._triggers
        reads: set[str] = set()
        writes: set[str] = set()
        indirect: set[str] = set()
        foreign = False
        read_code = apsw.SQLITE_READ
        write_codes = (apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE)

        def observe(operation, first, _second, database, trigger_or_view):
            # Only observe: returning anything but OK would change what SQLite compiles.
            nonlocal foreign
            if first is None or (operation != read_code and operation not in write_codes):
                return apsw.SQLITE_OK
            table = first.lower()
            if table.startswith("sqlite_"):
                return apsw.SQLITE_OK
            if database is not None and database.lower() != "main":
                foreign = True
                return apsw.SQLITE_OK
            # A view's own columns and eponymous virtual tables (json_each, pragma_*) are
            # no storage of ours; the view's base tables are reported separately.
            if table in views or table not in tables:
                return apsw.SQLITE_OK
            (reads if operation == read_code else writes).add(table)
            if trigger_or_view is not None:
                context = trigger_or_view.lower()
                trigger = triggers.get(context)
                if context in views:
                    indirect.add(table)
                elif trigger is not None:
                    subject, referenced = trigger
                    # A trigger's NEW./OLD. columns are reported as reads of its subject
                    # table; only a real reference to it in the body touches other rows.
                    if table != subject or referenced is None or table in referenced:
                        indirect.add(table)
                # Otherwise the context is a CTE, whose body the parse tree already pinned.
            return apsw.SQLITE_OK

        connection = self.connection
        previous = connection.authorizer
        connection.authorizer = observe
        cursor = connection.cursor()
        try:
            # EXPLAIN prepares the statement without running it; can_cache=False keeps this
            # observer-authorized statement out of the connection's statement cache.
            cursor.execute("EXPLAIN " + sql, (None,) * parameter_count, can_cache=False)
        except (apsw.Error, TypeError, ValueError, KeyError):
            return None
        finally:
            connection.authorizer = previous
            cursor.close(True)  # force: text after the statement (a comment) is not run
        return _Observed(frozenset(reads), frozenset(writes), frozenset(indirect), foreign)


def _affinity(declared: str) -> str:
    """SQLite's column affinity rules (datatype3.html section 3.1)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


def _trigger_references(sql: str) -> frozenset[str] | None:
    """Every name a trigger mentions outside its ON clause and NEW./OLD. columns.

    Over-approximate on purpose: a name counted here that is not really a table reference
    only makes a table table-level.  None when the text does not tokenize (be pessimistic).
    """
    try:
        tokens = _tokenize(sql)
    except SqlglotError:
        return None
    names: set[str] = set()
    # The subject after the first ON ("ON item" or "ON main.item") is not a reference.
    on_index = next((index for index, token in enumerate(tokens)
                     if token.token_type == TokenType.ON), None)
    skipped: set[int] = set()
    if on_index is not None:
        skipped = {on_index + 1}
        if on_index + 2 < len(tokens) and tokens[on_index + 2].token_type == TokenType.DOT:
            skipped |= {on_index + 2, on_index + 3}
    for index, token in enumerate(tokens):
        if index in skipped or token.token_type in (TokenType.STRING, TokenType.NUMBER, TokenType.DOT):
            continue
        if index > 0 and tokens[index - 1].token_type == TokenType.DOT:
            continue    # NEW.column, OLD.column, table.column
        names.add(token.text.lower())
    return frozenset(names)


def _foreign_key_reach(parents: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    """For each table, the tables a write to it may touch through foreign keys.

    That is its parents (checked on insert and update) and every descendant (cascaded or
    checked on delete and update).  A table reaches itself through a cycle (self-reference).
    """
    children: dict[str, set[str]] = {}
    for child, its_parents in parents.items():
        for parent in its_parents:
            children.setdefault(parent, set()).add(child)
    reach: dict[str, frozenset[str]] = {}
    for table in parents:
        descendants: set[str] = set()
        pending = list(children.get(table, ()))
        while pending:
            child = pending.pop()
            if child not in descendants:
                descendants.add(child)
                pending.extend(children.get(child, ()))
        found = descendants | parents[table]
        if found:
            reach[table] = frozenset(found)
    return reach


# --------------------------------------------------------------------------- tokens and parameters


def _tokenize(sql: str) -> list[Token]:
    return sqlglot.tokenize(sql, read="sqlite")


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """Split on `;` tokens, dropping empty statements."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if current:
                statements.append(current)
            current = []
        else:
            current.append(token)
    if current:
        statements.append(current)
    return statements


@dataclass(frozen=True, slots=True)
class _Parameter:
    number: int             # SQLite's 1-based parameter index
    name: str | None        # with its prefix (":x", "@x", "$x"); None for ? and ?NNN


def _adjacent(first: Token, second: Token) -> bool:
    return second.start == first.end + 1


def _parameter_spans(tokens: list[Token]) -> tuple[dict[int, _Parameter], list[tuple[int, int, int]]]:
    """Number parameters as SQLite does and locate their text.

    Returns (number -> parameter, [(start, end, number)]) with inclusive character spans.
    SQLite's rule: `?NNN` is NNN, `?` is one past the largest number so far, and a name is
    numbered like `?` the first time it appears and keeps that number afterwards.
    """
    by_number: dict[int, _Parameter] = {}
    by_name: dict[str, int] = {}
    spans: list[tuple[int, int, int]] = []
    largest = 0
    index = 0
    count = len(tokens)
    while index < count:
        token = tokens[index]
        kind = token.token_type
        following = tokens[index + 1] if index + 1 < count else None
        name: str | None = None
        number: int | None = None
        end = token.end
        if kind == TokenType.PLACEHOLDER and token.text == "?":
            if (following is not None and following.token_type == TokenType.NUMBER
                    and _adjacent(token, following) and following.text.isdigit()):
                number = int(following.text)
                end = following.end
                index += 1
            else:
                number = largest + 1
        elif kind in (TokenType.COLON, TokenType.PARAMETER) and following is not None \
                and _adjacent(token, following) and re.fullmatch(r"[\w$]+", following.text):
            name = token.text + following.text
            end = following.end
            index += 1
        elif kind == TokenType.VAR and token.text.startswith("$") and len(token.text) > 1:
            name = token.text
        if name is not None:
            number = by_name.get(name)
            if number is None:
                number = largest + 1
                by_name[name] = number
        if number is not None:
            largest = max(largest, number)
            by_number.setdefault(number, _Parameter(number, name))
            spans.append((token.start, end, number))
        index += 1
    return by_number, spans


def _parameter_count(parameters: dict[int, _Parameter]) -> int:
    return max(parameters, default=0)


def _rewrite(sql: str, replacements: list[tuple[int, int, str]]) -> str:
    """Replace inclusive character spans (sorted, disjoint) with new text."""
    pieces: list[str] = []
    position = 0
    for start, end, text in replacements:
        pieces.append(sql[position:start])
        pieces.append(text)
        position = end + 1
    pieces.append(sql[position:])
    return "".join(pieces)


# --------------------------------------------------------------------------- shapes


# A value source pins one key column: a literal known now, or a parameter bound per call.
_LITERAL = 0
_PARAMETER = 1


@dataclass(frozen=True, slots=True)
class _TablePlan:
    """How to compute one table's keys from the parameters.

    `rows` holds one entry per pinned reference (or inserted row): per key column, the
    alternatives (several for IN); the keys are the cross product of the alternatives.
    """

    table: str
    affinities: tuple[str, ...]
    rows: tuple[tuple[tuple[tuple[int, Any], ...], ...], ...]


@dataclass(frozen=True, slots=True)
class _Shape:
    """Everything about a statement that does not depend on its parameter values."""

    access: Access | None               # the answer itself when no key needs a parameter
    reads: frozenset[str]
    writes: frozenset[str]
    static_keys: frozenset[tuple[str, tuple]]
    plans: tuple[_TablePlan, ...]       # tables whose keys need parameter values
    parameters: dict[int, _Parameter]
    read_only: bool

    def bind(self, params) -> Access:
        keys = set(self.static_keys)
        for plan in self.plans:
            table_keys = _bind_plan(plan, params, self.parameters)
            if table_keys is not None:
                keys.update(table_keys)
        return Access(self.reads, self.writes, frozenset(keys), False, self.read_only)


def _fixed(access: Access) -> _Shape:
    return _Shape(access, access.reads, access.writes, access.keys, (), {}, access.read_only)


_EXCLUSIVE_SHAPE = _fixed(EXCLUSIVE)
_EXCLUSIVE_READ_ONLY_SHAPE = _fixed(_EXCLUSIVE_READ_ONLY)
_MISSING = object()


def _parameter_value(params, parameter: _Parameter):
    kind = type(params)
    if kind is tuple or kind is list:       # the common case first: no ABC checks
        index = parameter.number - 1
        return params[index] if index < len(params) else _MISSING
    if params is None or isinstance(params, (str, bytes)):
        return _MISSING
    if isinstance(params, Mapping):
        name = parameter.name
        if name is None:
            return _MISSING
        # apsw looks names up without their prefix; accept the prefixed spelling too.
        value = params.get(name[1:], _MISSING)
        return params.get(name, _MISSING) if value is _MISSING else value
    try:
        return params[parameter.number - 1]
    except (IndexError, TypeError, KeyError):
        return _MISSING


def _bind_plan(plan: _TablePlan, params, parameters: dict[int, _Parameter]) -> set | None:
    """The keys of one table, or None (table-level) when a needed value is unavailable."""
    keys: set[tuple[str, tuple]] = set()
    table = plan.table
    affinities = plan.affinities
    for row in plan.rows:
        columns: list[list[Any]] = []
        several = False
        for affinity, alternatives in zip(affinities, row):
            values = []
            for source_kind, source in alternatives:
                if source_kind == _LITERAL:
                    values.append(source)
                    continue
                value = _normalize(_parameter_value(params, parameters[source]), affinity)
                if value is _MISSING:
                    return None
                values.append(value)
            several = several or len(values) != 1
            columns.append(values)
        if several:
            count = 1
            for values in columns:
                count *= len(values)
            if count + len(keys) > _KEY_LIMIT:
                return None
            for combination in itertools.product(*columns):
                keys.add((table, combination))
        else:
            keys.add((table, tuple(values[0] for values in columns)))
    return keys if len(keys) <= _KEY_LIMIT else None


def _normalize(value, affinity: str):
    """Map a key value to the one SQLite stores, so `'7'`, `7` and `7.0` name one row."""
    kind = type(value)
    if kind is int and affinity != "TEXT":      # the common case first
        return value
    if value is _MISSING or value is None:
        return _MISSING
    if kind is bool:
        value = int(value)
    if affinity in ("INTEGER", "NUMERIC", "REAL"):
        if isinstance(value, str):
            text = value.strip()
            if _INTEGER_TEXT.fullmatch(text):
                return int(text)
            if _REAL_TEXT.fullmatch(text):
                number = float(text)
                return int(number) if number.is_integer() else number
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif affinity == "TEXT" and isinstance(value, int):
        return str(value)
    if not isinstance(value, (int, float, str, bytes)):
        return _MISSING     # lists and the like cannot be bound anyway
    return value


# --------------------------------------------------------------------------- derivation


def _derive(sql: str, catalog: Catalog | None) -> _Shape:
    """Analyze one text from scratch (the uncached path)."""
    if len(sql) > ANALYSIS_MAX_CHARS:
        return _EXCLUSIVE_SHAPE
    try:
        tokens = _tokenize(sql)
        statements = _statements(tokens)
        if len(statements) != 1:
            return _EXCLUSIVE_SHAPE
        first = statements[0][0]
        keyword = first.text.upper()
        if keyword == "REPLACE":
            # sqlglot swallows the rest of a leading REPLACE as an opaque command.
            sql = sql[:first.start] + "INSERT OR REPLACE" + sql[first.end + 1:]
            tokens = _tokenize(sql)
            statements = _statements(tokens)
            if len(statements) != 1:
                return _EXCLUSIVE_SHAPE
            keyword = "INSERT"
        if keyword == "PRAGMA":
            return _pragma_shape(statements[0])
        if keyword == "EXPLAIN":
            return _explain_shape(sql[first.end + 1:], catalog)
        if keyword not in _PARSED_KEYWORDS:
            return _EXCLUSIVE_SHAPE
        parameters, spans = _parameter_spans(tokens)
        replacements = [(start, end, f":{_PLACEHOLDER_PREFIX}{number}")
                        for start, end, number in spans]
        replacements.extend(_conflict_clause_spans(tokens))
        replacements.sort()
        # Cut after the statement's last token: sqlglot reads a comment after the final
        # `;` as a second, empty statement.
        statement_text = sql[:statements[0][-1].end + 1]
        tree = sqlglot.parse_one(_rewrite(statement_text, replacements), read="sqlite")
    except SqlglotError:
        return _EXCLUSIVE_SHAPE
    if not isinstance(tree, (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete)):
        return _EXCLUSIVE_SHAPE
    return _Analysis(tree, catalog, statement_text, parameters).shape()


def _conflict_clause_spans(tokens: list[Token]) -> list[tuple[int, int, str]]:
    """Blank out `OR <action>` after UPDATE, which sqlglot cannot parse.

    The conflict action never changes the tables touched: REPLACE only deletes rows that
    collide on a UNIQUE index, and writes to tables with one are table-level anyway.
    """
    spans = []
    for index in range(len(tokens) - 2):
        if (tokens[index].token_type == TokenType.UPDATE
                and tokens[index + 1].token_type == TokenType.OR):
            spans.append((tokens[index + 1].start, tokens[index + 2].end, " "))
    return spans


def _pragma_shape(tokens: list[Token]) -> _Shape:
    # PRAGMA [schema.]name [= value | (argument)]
    name = ""
    if len(tokens) >= 4 and tokens[2].token_type == TokenType.DOT:
        name = tokens[3].text.lower()
    elif len(tokens) >= 2:
        name = tokens[1].text.lower()
    assigns = any(token.token_type == TokenType.EQ for token in tokens)
    if name in READ_ONLY_PRAGMAS and not assigns:
        return _EXCLUSIVE_READ_ONLY_SHAPE
    return _EXCLUSIVE_SHAPE


def _explain_shape(inner_sql: str, catalog: Catalog | None) -> _Shape:
    """EXPLAIN compiles without running: read-only, touching at most what the inner reads."""
    tokens = _tokenize(inner_sql)
    if len(tokens) >= 2 and tokens[0].text.upper() == "QUERY" and tokens[1].text.upper() == "PLAN":
        inner_sql = inner_sql[tokens[1].end + 1:]
        tokens = _tokenize(inner_sql)
    if len(_statements(tokens)) != 1:
        return _EXCLUSIVE_SHAPE
    inner = _derive(inner_sql, catalog)
    if inner.access is not None and inner.access.exclusive:
        return _EXCLUSIVE_READ_ONLY_SHAPE
    return _fixed(Access(inner.reads | inner.writes, EMPTY, EMPTY, False, True))


class _Analysis:
    """One parse tree reduced to a _Shape."""

    def __init__(self, tree: exp.Expression, catalog: Catalog | None, sql: str,
                 parameters: dict[int, _Parameter]) -> None:
        self.tree = tree
        self.catalog = catalog
        self.sql = sql
        self.parameters = parameters
        self.exclusive = False
        self.reads: set[str] = set()
        self.writes: set[str] = set()
        self.table_level: set[str] = set()
        # table -> list of pinned rows (per key column: alternatives of value sources)
        self.pinned: dict[str, list[tuple[tuple[tuple[int, Any], ...], ...]]] = {}

    # -- helpers ----------------------------------------------------------------------

    def _info(self, table: str) -> _TableInfo | None:
        return None if self.catalog is None else self.catalog._tables.get(table)

    def _value(self, node: exp.Expression, affinity: str) -> tuple[int, Any] | None:
        """A value source for a pinning expression, or None if it is not a plain value."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Placeholder):
            name = node.name
            if name.startswith(_PLACEHOLDER_PREFIX):
                return (_PARAMETER, int(name[len(_PLACEHOLDER_PREFIX):]))
            return None
        negative = False
        if isinstance(node, exp.Neg):
            negative, node = True, node.this
        if not isinstance(node, exp.Literal):
            return None
        if node.is_string:
            if negative:
                return None
            value: Any = node.this
        else:
            text = node.this
            try:
                value = int(text) if _INTEGER_TEXT.fullmatch(text) else float(text)
            except ValueError:
                return None
            if negative:
                value = -value
        value = _normalize(value, affinity)
        return None if value is _MISSING else (_LITERAL, value)

    def _key_column(self, name: str, info: _TableInfo) -> str | None:
        """The key column a column name denotes, counting rowid spellings for an alias."""
        if name in info.primary_key:
            return name
        if info.rowid_alias and name in _ROWID_NAMES and name not in info.all_columns:
            return info.primary_key[0]
        return None

    # -- table references -------------------------------------------------------------

    def shape(self) -> _Shape:
        tree = self.tree
        cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        target: exp.Table | None = None
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete)):
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if not isinstance(target, exp.Table) or not isinstance(target.this, exp.Identifier):
                return _EXCLUSIVE_SHAPE

        references: list[tuple[exp.Table, str]] = []
        scope_sources: dict[int, list[exp.Expression]] = {}
        for node in tree.walk():
            if isinstance(node, exp.Subquery) and isinstance(node.parent, (exp.From, exp.Join)):
                scope = _scope_of(node)
                if scope is not None:
                    scope_sources.setdefault(id(scope), []).append(node)
                continue
            if not isinstance(node, exp.Table) or node.arg_key == "indexed":
                continue
            if node is not target and isinstance(node.parent, (exp.From, exp.Join)):
                scope = _scope_of(node)
                if scope is not None:
                    scope_sources.setdefault(id(scope), []).append(node)
            if not isinstance(node.this, exp.Identifier):
                continue    # a table-valued function such as json_each(...)
            schema = node.catalog or node.db     # "main.t.c" misparses; be strict either way
            if node.catalog or (schema and schema.lower() != "main"):
                self.exclusive = True
                continue
            name = node.name.lower()
            if not schema and name in cte_names and node is not target:
                continue
            if name.startswith("sqlite_"):
                continue
            references.append((node, name))
        if self.exclusive:
            return _EXCLUSIVE_SHAPE
        if target is not None:
            scope_sources.setdefault(id(tree), []).insert(0, target)

        for node, name in references:
            if node is target:
                self._target(tree, node, name, scope_sources.get(id(tree), [node]))
            else:
                self.reads.add(name)
                scope = _scope_of(node)
                if scope is None:
                    self.table_level.add(name)
                else:
                    self._pin_reference(node, name, scope, scope_sources.get(id(scope), [node]))
        return self._finish()

    def _target(self, tree: exp.Expression, node: exp.Table, name: str,
                sources: list[exp.Expression]) -> None:
        self.writes.add(name)
        if isinstance(tree, exp.Insert):
            conflict = tree.args.get("conflict")
            if conflict is not None and "UPDATE" in str(conflict.args.get("action", "")).upper():
                self.reads.add(name)
            self._pin_insert(tree, name)
            return
        self.reads.add(name)
        if isinstance(tree, exp.Update) and not self._update_keeps_keys(tree, name):
            self.table_level.add(name)
            return
        self._pin_reference(node, name, tree, sources)

    def _update_keeps_keys(self, tree: exp.Update, name: str) -> bool:
        """False when the UPDATE moves a row's key or may collide on a secondary UNIQUE."""
        info = self._info(name)
        if info is None:
            return False
        for assignment in tree.expressions:
            column = assignment.this if isinstance(assignment, exp.EQ) else None
            if not isinstance(column, exp.Column):
                return False
            column_name = column.name.lower()
            if self._key_column(column_name, info) is not None or column_name in _ROWID_NAMES:
                return False
            if info.unique_on_expression or column_name in info.unique_columns:
                return False
        return True

    def _pin_insert(self, tree: exp.Insert, name: str) -> None:
        """INSERT ... VALUES with explicit rowid-alias values in every row pins those rows."""
        info = self._info(name)
        values = tree.expression
        # Without an explicit rowid SQLite picks one, and the pick depends on execution
        # order; a secondary UNIQUE index makes success depend on other rows.
        if (info is None or not info.rowid_alias or info.unique_columns
                or info.unique_on_expression or not isinstance(values, exp.Values)):
            self.table_level.add(name)
            return
        conflict = tree.args.get("conflict")
        if conflict is not None:
            for assignment in conflict.expressions or ():
                column = assignment.this if isinstance(assignment, exp.EQ) else None
                if not isinstance(column, exp.Column) or (
                        self._key_column(column.name.lower(), info) is not None
                        or column.name.lower() in _ROWID_NAMES):
                    self.table_level.add(name)
                    return
        if isinstance(tree.this, exp.Schema):
            columns = [identifier.name.lower() for identifier in tree.this.expressions]
        else:
            columns = list(info.columns)
        position = next((index for index, column in enumerate(columns)
                         if self._key_column(column, info) is not None), None)
        if position is None:
            self.table_level.add(name)
            return
        rows = []
        for row in values.expressions:
            items = row.expressions if isinstance(row, exp.Tuple) else [row]
            source = self._value(items[position], "INTEGER") if len(items) == len(columns) else None
            if source is None:
                self.table_level.add(name)
                return
            rows.append(((source,),))
        self.pinned.setdefault(name, []).extend(rows)

    def _pin_reference(self, node: exp.Table, name: str, scope: exp.Expression,
                       sources: list[exp.Expression]) -> None:
        """Pin one reference by the top-level AND-conjuncts of its scope's WHERE."""
        info = self._info(name)
        where = scope.args.get("where")
        # A reference outside its scope's FROM (none known in SQLite) cannot be resolved.
        outside = not any(source is node for source in sources)
        if info is None or not info.primary_key or where is None or outside:
            self.table_level.add(name)
            return
        alias = node.alias_or_name.lower()
        found: dict[str, tuple[tuple[int, Any], ...]] = {}
        for conjunct in _conjuncts(where.this):
            if isinstance(conjunct, exp.EQ):
                pairs = [(conjunct.this, [conjunct.expression]),
                         (conjunct.expression, [conjunct.this])]
            elif isinstance(conjunct, exp.In) and not conjunct.args.get("query") \
                    and not conjunct.args.get("unnest") and not conjunct.args.get("field"):
                pairs = [(conjunct.this, conjunct.expressions)]
            else:
                continue
            for column, candidates in pairs:
                while isinstance(column, exp.Paren):
                    column = column.this
                if not isinstance(column, exp.Column) or not isinstance(column.this, exp.Identifier):
                    continue
                key_column = self._key_column(column.name.lower(), info)
                if key_column is None or key_column in found:
                    continue
                if not self._resolves_to(column, node, alias, sources):
                    continue
                affinity = info.affinity.get(key_column, "BLOB")
                alternatives = [self._value(candidate, affinity) for candidate in candidates]
                if alternatives and all(source is not None for source in alternatives):
                    # Any one conjunct bounds the rows from above; the first is enough.
                    found[key_column] = tuple(alternatives)
        if len(found) < len(info.primary_key):
            self.table_level.add(name)
            return
        self.pinned.setdefault(name, []).append(
            tuple(found[column] for column in info.primary_key))

    def _resolves_to(self, column: exp.Column, node: exp.Table, alias: str,
                     sources: list[exp.Expression]) -> bool:
        qualifier = column.table
        if qualifier:
            return qualifier.lower() == alias
        if len(sources) == 1:
            return sources[0] is node
        # Several sources: the column is ours only if no other source could have it.
        name = column.name.lower()
        for source in sources:
            if source is node:
                continue
            if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
                return False
            other = self._info(source.name.lower())
            if other is None or name in other.all_columns or name in _ROWID_NAMES:
                return False
        return True

    # -- result -----------------------------------------------------------------------

    def _finish(self) -> _Shape:
        catalog = self.catalog
        reads, writes = set(self.reads), set(self.writes)
        table_level = set(self.table_level)
        read_only = not isinstance(self.tree, (exp.Insert, exp.Update, exp.Delete))
        parameters = self.parameters
        if catalog is not None:
            observed = catalog._observe(self.sql, _parameter_count(parameters))
            if observed is not None:
                if observed.foreign_schema:
                    return _EXCLUSIVE_SHAPE
                reads = (reads | observed.reads) - catalog._views
                writes = (writes | observed.writes) - catalog._views
                table_level |= observed.indirect
            for written in list(self.writes):
                table_level |= catalog._foreign_key_reach.get(written, EMPTY)
        touched = reads | writes
        static_keys: set[tuple[str, tuple]] = set()
        plans: list[_TablePlan] = []
        for table, rows in self.pinned.items():
            if table in table_level or table not in touched:
                continue
            info = self._info(table)
            if info is None:
                continue
            affinities = tuple(info.affinity.get(column, "BLOB") for column in info.primary_key)
            plan = _TablePlan(table, affinities, tuple(rows))
            if all(kind == _LITERAL for row in rows for column in row for kind, _ in column):
                keys = _bind_plan(plan, None, parameters)
                if keys:
                    static_keys |= keys
            else:
                plans.append(plan)
        reads_frozen, writes_frozen = frozenset(reads), frozenset(writes)
        keys_frozen = frozenset(static_keys)
        access = None
        if not plans:
            access = Access(reads_frozen, writes_frozen, keys_frozen, False, read_only)
        return _Shape(access, reads_frozen, writes_frozen, keys_frozen, tuple(plans),
                      parameters, read_only)


def _scope_of(node: exp.Expression) -> exp.Expression | None:
    """The SELECT, UPDATE or DELETE whose FROM (or target) holds this reference."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, (exp.Select, exp.Update, exp.Delete)):
            return parent
        if isinstance(parent, exp.Insert):
            return None     # the INSERT target itself has no WHERE to pin it
        parent = parent.parent
    return None


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


# --------------------------------------------------------------------------- entry point


_shapes_without_catalog: dict[str, _Shape] = {}


def analyze(sql: str, params=None, catalog: Catalog | None = None) -> Access:
    """The access of one SQL text with its parameters (a sequence, a mapping or None)."""
    if catalog is None:
        shapes = _shapes_without_catalog
    else:
        shapes = catalog._current_shapes()
    shape = shapes.get(sql)
    if shape is None:
        shape = _derive(sql, catalog)
        if len(shapes) >= _SHAPE_CACHE_LIMIT:
            del shapes[next(iter(shapes))]
        shapes[sql] = shape
    access = shape.access
    if access is not None:
        return access
    return shape.bind(params)
