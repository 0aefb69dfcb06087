"""PEP 249 (DB-API 2.0) compliance of evedb's driver (`evedb/dbapi.py`), point by point.

Sections follow PEP 249, then evedb's own transaction rules:

1. module interface: globals, `connect`, the exception hierarchy
2. type objects and constructors
3. Connection objects: cursor, commit, rollback, close, context manager, autocommit
4. Cursor objects: execute (every parameter style), executemany, fetch*, description,
   rowcount, lastrowid, arraysize, callproc, close, iteration, setinputsizes/setoutputsize
5. errors: each leaves the database unchanged and the connection working
6. one-shot transactions in manual-commit mode (the driver's module docstring and README
   "Transactions are one-shot"): queued writes, commit/rollback of the queue, what raises
   NotSupportedError, `conn.transaction()`
7. several threads, each with its own connection
8. `conn.state_root()`

Almost every test uses the embedded engine with `workers=1` (everything inline in this
process); two use `workers=2` (worker processes).  Every connection is closed by the
`connect` fixture, because an open embedded database holds a lock on its file.

Some tests first documented driver bugs (as strict xfails); they now pin the fixes.
"""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evedb
from evedb import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

SCHEMA = (
    "CREATE TABLE item ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0))"
)
SEED = [(1, "apple", 10), (2, "banana", 20), (3, "cherry", 30)]
ALL_ITEMS = "SELECT id, name, qty FROM item ORDER BY id"


# --- procedures (registered at import; the workers=1 engine runs them in this process) -----


@evedb.procedure
def dbapi_restock(db, item_id, amount):
    db.execute("UPDATE item SET qty = qty + ? WHERE id = ?", (amount, item_id))
    return db.execute("SELECT id, qty FROM item WHERE id = ?", (item_id,))


@evedb.procedure
def dbapi_restock_then_fail(db, item_id, amount):
    db.execute("UPDATE item SET qty = qty + ? WHERE id = ?", (amount, item_id))
    db.execute("INSERT INTO item (id, name, qty) VALUES (?, 'ghost', 1)", (item_id + 100,))
    raise RuntimeError("restock refused")


@evedb.procedure
def dbapi_squares(db, n):
    return [(i, i * i) for i in range(n)]


@evedb.procedure
def dbapi_answer(db):
    return 42


@evedb.procedure
def dbapi_nothing(db):
    return None


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "dbapi.db")


@pytest.fixture
def connect(db_path):
    """`connect(**options)` opens a connection to the test's database; all are closed after."""
    opened = []
    lock = threading.Lock()

    def _connect(path=None, **options):
        options.setdefault("workers", 1)
        connection = evedb.connect(path or db_path, **options)
        with lock:
            opened.append(connection)
        return connection

    yield _connect
    for connection in reversed(opened):
        connection.close()


@pytest.fixture
def conn(connect):
    """A manual-commit connection to a database holding `item` with the SEED rows."""
    connection = connect()
    create_items(connection)
    return connection


@pytest.fixture
def auto(conn):
    """The same connection in autocommit mode."""
    conn.autocommit = True
    return conn


@pytest.fixture
def other(conn, connect):
    """A second connection to the same database, to see what has really been committed."""
    return connect()


def create_items(connection) -> None:
    cursor = connection.cursor()
    cursor.execute(SCHEMA)
    cursor.executemany("INSERT INTO item (id, name, qty) VALUES (?, ?, ?)", SEED)
    connection.commit()
    cursor.close()


def fetch(connection, sql=ALL_ITEMS, parameters=None) -> list:
    cursor = connection.cursor()
    cursor.execute(sql, parameters)
    rows = cursor.fetchall()
    cursor.close()
    return rows


def snapshot(connection):
    """What the database holds, two ways: its Merkle state root and the item rows."""
    return connection.state_root(), fetch(connection)


def assert_unchanged_and_working(connection, before) -> None:
    """The database is as `before` says, and the connection still reads and writes."""
    assert snapshot(connection) == before
    cursor = connection.cursor()
    cursor.execute("INSERT INTO item (id, name, qty) VALUES (99, 'probe', 1)")
    connection.commit()
    assert cursor.rowcount == 1
    assert fetch(connection, "SELECT name FROM item WHERE id = 99") == [("probe",)]


# =============================================================================================
# 1. Module interface
# =============================================================================================


def test_apilevel():
    assert evedb.apilevel == "2.0"


def test_threadsafety():
    assert evedb.threadsafety in (0, 1, 2, 3)


def test_paramstyle():
    assert evedb.paramstyle == "qmark"


def test_connect_returns_a_connection(connect):
    connection = connect()
    assert isinstance(connection, evedb.Connection)
    assert not connection.closed


@pytest.mark.parametrize("database", [":memory:", ""])
def test_connect_refuses_a_database_without_a_file(database):
    with pytest.raises(OperationalError, match="file"):
        evedb.connect(database, workers=1)


def test_connect_to_a_network_address_nobody_serves_fails_clearly_at_first_use():
    connection = evedb.connect("evedb://127.0.0.1:1,127.0.0.1:2", autocommit=True, timeout=0.3)
    with pytest.raises(OperationalError, match="no evedb node answered"):
        connection.execute("SELECT 1")
    connection.close()


def test_connect_rejects_a_malformed_dsn():
    with pytest.raises(InterfaceError, match="HOST:PORT"):
        evedb.connect("evedb://nocolon")


@pytest.mark.parametrize(
    "name, base",
    [
        ("Warning", Exception),
        ("Error", Exception),
        ("InterfaceError", evedb.Error),
        ("DatabaseError", evedb.Error),
        ("DataError", evedb.DatabaseError),
        ("OperationalError", evedb.DatabaseError),
        ("IntegrityError", evedb.DatabaseError),
        ("InternalError", evedb.DatabaseError),
        ("ProgrammingError", evedb.DatabaseError),
        ("NotSupportedError", evedb.DatabaseError),
    ],
)
def test_exception_hierarchy(name, base):
    cls = getattr(evedb, name)
    assert cls.__bases__ == (base,)
    assert issubclass(cls, Exception)


def test_warning_is_not_an_error_and_not_the_builtin_warning():
    assert not issubclass(evedb.Warning, evedb.Error)
    assert not issubclass(evedb.Error, evedb.Warning)
    assert evedb.Warning is not Warning
    assert not issubclass(evedb.Warning, Warning)


EXCEPTION_NAMES = [
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
]


@pytest.mark.parametrize("name", EXCEPTION_NAMES)
def test_exceptions_are_connection_attributes(conn, name):
    assert getattr(conn, name) is getattr(evedb, name)
    assert getattr(evedb.Connection, name) is getattr(evedb, name)


# =============================================================================================
# 2. Type objects and constructors
# =============================================================================================

TYPE_OBJECTS = {
    "STRING": evedb.STRING,
    "BINARY": evedb.BINARY,
    "NUMBER": evedb.NUMBER,
    "DATETIME": evedb.DATETIME,
    "ROWID": evedb.ROWID,
}

# (column, declared type, the one type object that must compare equal to it)
DECLARED_TYPES = [
    ("c_integer", "INTEGER", "NUMBER"),
    ("c_int", "INT", "NUMBER"),
    ("c_bigint", "BIGINT", "NUMBER"),
    ("c_real", "REAL", "NUMBER"),
    ("c_double", "DOUBLE PRECISION", "NUMBER"),
    ("c_float", "FLOAT", "NUMBER"),
    ("c_numeric", "NUMERIC", "NUMBER"),
    ("c_decimal", "DECIMAL(10,2)", "NUMBER"),
    ("c_boolean", "BOOLEAN", "NUMBER"),
    ("c_text", "TEXT", "STRING"),
    ("c_lower_text", "text", "STRING"),
    ("c_mixed_case", "VarChar(5)", "STRING"),
    ("c_varchar", "VARCHAR(20)", "STRING"),
    ("c_character", "CHARACTER(10)", "STRING"),
    ("c_clob", "CLOB", "STRING"),
    ("c_blob", "BLOB", "BINARY"),
    ("c_date", "DATE", "DATETIME"),
    ("c_datetime", "DATETIME", "DATETIME"),
    ("c_timestamp", "TIMESTAMP", "DATETIME"),
    ("c_time", "TIME", "DATETIME"),
    ("c_rowid", "ROWID", "ROWID"),
]


@pytest.fixture(scope="module")
def typed_description(tmp_path_factory):
    """cursor.description of a zero-row SELECT over a table with every declared type above."""
    path = str(tmp_path_factory.mktemp("types") / "types.db")
    connection = evedb.connect(path, workers=1, autocommit=True)
    try:
        columns = ", ".join(f"{name} {declared}" for name, declared, _ in DECLARED_TYPES)
        cursor = connection.cursor()
        cursor.execute(f"CREATE TABLE typed (id INTEGER PRIMARY KEY, {columns})")
        names = ", ".join(name for name, _, _ in DECLARED_TYPES)
        cursor.execute(f"SELECT {names}, length('x') + 1 AS expr FROM typed")
        assert cursor.fetchall() == []
        return {column[0]: column[1] for column in cursor.description}
    finally:
        connection.close()


@pytest.mark.parametrize("column, declared, expected", DECLARED_TYPES)
def test_type_objects_match_description_type_codes(typed_description, column, declared, expected):
    type_code = typed_description[column]
    # the type code is SQLite's declared type (SQLite itself upper-cases its standard names)
    assert type_code.upper() == declared.upper()
    for name, type_object in TYPE_OBJECTS.items():
        matches = name == expected
        assert (type_object == type_code) is matches, name
        assert (type_code == type_object) is matches, name  # the reflected comparison too
        assert (type_object != type_code) is not matches, name


def test_type_codes_keep_the_declared_spelling(typed_description):
    assert typed_description["c_mixed_case"] == "VarChar(5)"
    assert typed_description["c_decimal"] == "DECIMAL(10,2)"


def test_expression_columns_have_no_type_code(typed_description):
    assert typed_description["expr"] is None
    for type_object in TYPE_OBJECTS.values():
        assert type_object != None  # noqa: E711 - exercising __eq__ against None


def test_type_objects_are_distinct():
    for name, type_object in TYPE_OBJECTS.items():
        assert type_object == type_object
        for other_name, other_object in TYPE_OBJECTS.items():
            if other_name != name:
                assert type_object != other_object


def test_date_time_timestamp_constructors():
    assert evedb.Date(2024, 2, 29) == datetime.date(2024, 2, 29)
    assert evedb.Time(13, 45, 7) == datetime.time(13, 45, 7)
    assert evedb.Timestamp(2024, 2, 29, 13, 45, 7) == datetime.datetime(2024, 2, 29, 13, 45, 7)


def test_from_ticks_constructors():
    ticks = 1_700_000_000.75
    local = time.localtime(ticks)
    assert evedb.DateFromTicks(ticks) == datetime.date.fromtimestamp(ticks)
    assert evedb.TimeFromTicks(ticks) == datetime.time(local.tm_hour, local.tm_min, local.tm_sec)
    assert evedb.TimestampFromTicks(ticks) == datetime.datetime.fromtimestamp(ticks).replace(microsecond=0)


@pytest.mark.parametrize("source", [bytes(range(256)), bytearray(range(256)), memoryview(bytes(range(256)))])
def test_binary_constructor(source):
    value = evedb.Binary(source)
    assert isinstance(value, bytes)
    assert value == bytes(range(256))


def test_dates_bind_as_iso_strings_and_binary_round_trips(auto):
    cursor = auto.cursor()
    cursor.execute("CREATE TABLE value (id INTEGER PRIMARY KEY, d DATE, t TIME, ts TIMESTAMP, b BLOB)")
    blob = evedb.Binary(bytes(range(256)) + b"\x00\x00")
    cursor.execute(
        "INSERT INTO value (id, d, t, ts, b) VALUES (?, ?, ?, ?, ?)",
        (
            1,
            evedb.Date(2024, 2, 29),
            evedb.Time(13, 45, 7),
            evedb.Timestamp(2024, 2, 29, 13, 45, 7),
            blob,
        ),
    )
    cursor.execute("INSERT INTO value (id, b) VALUES (?, ?)", (2, bytearray(b"\x01\x02")))
    cursor.execute("SELECT d, t, ts, b FROM value ORDER BY id")
    assert cursor.fetchall() == [
        ("2024-02-29", "13:45:07", "2024-02-29 13:45:07", blob),
        (None, None, None, b"\x01\x02"),
    ]


SQL_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    st.binary(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(SQL_VALUES, min_size=1, max_size=4))
def test_parameters_round_trip_exactly(auto, values):
    placeholders = ", ".join("?" for _ in values)
    cursor = auto.cursor()
    cursor.execute(f"SELECT {placeholders}", values)
    assert cursor.fetchall() == [tuple(values)]


def test_integer_out_of_range_is_a_data_error(auto):
    before = snapshot(auto)
    with pytest.raises(DataError):
        auto.cursor().execute("UPDATE item SET qty = ? WHERE id = 1", (2**64,))
    assert_unchanged_and_working(auto, before)


# =============================================================================================
# 3. Connection objects
# =============================================================================================


def test_cursor_returns_a_new_cursor_of_this_connection(conn):
    first, second = conn.cursor(), conn.cursor()
    assert isinstance(first, evedb.Cursor)
    assert first is not second
    assert first.connection is conn


def test_commit_without_pending_writes_changes_nothing(conn):
    before = snapshot(conn)
    conn.commit()
    conn.commit()
    assert snapshot(conn) == before


def test_commit_makes_writes_visible(conn, other):
    conn.cursor().execute("INSERT INTO item (id, name, qty) VALUES (4, 'date', 40)")
    assert fetch(other) == SEED
    conn.commit()
    assert fetch(other) == SEED + [(4, "date", 40)]


def test_rollback_discards_writes(conn, other):
    before = snapshot(other)
    cursor = conn.cursor()
    cursor.execute("DELETE FROM item")
    conn.rollback()
    conn.commit()
    assert snapshot(other) == before
    assert fetch(conn) == SEED


def test_rollback_without_pending_writes_is_harmless(conn):
    before = snapshot(conn)
    conn.rollback()
    assert snapshot(conn) == before


CLOSED_CONNECTION_OPERATIONS = {
    "cursor": lambda c: c.cursor(),
    "commit": lambda c: c.commit(),
    "rollback": lambda c: c.rollback(),
    "execute": lambda c: c.execute("SELECT 1"),
    "transaction": lambda c: c.transaction(),
    "state_root": lambda c: c.state_root(),
    "stats": lambda c: c.stats(),
    "set autocommit": lambda c: setattr(c, "autocommit", True),
}


@pytest.mark.parametrize("operation", CLOSED_CONNECTION_OPERATIONS.values(), ids=CLOSED_CONNECTION_OPERATIONS.keys())
def test_closed_connection_refuses_every_operation(conn, operation):
    conn.close()
    assert conn.closed
    with pytest.raises(InterfaceError):
        operation(conn)


def test_close_twice_is_allowed(conn):
    conn.close()
    conn.close()
    assert conn.closed


def test_cursors_of_a_closed_connection_are_unusable(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    conn.close()
    with pytest.raises(InterfaceError):
        cursor.fetchone()
    with pytest.raises(InterfaceError):
        cursor.execute("SELECT 1")
    with pytest.raises(InterfaceError):
        cursor.description


def test_closing_one_connection_leaves_others_working(conn, other):
    conn.close()
    assert fetch(other) == SEED


def test_close_releases_the_file_for_another_process(conn, db_path):
    probe = textwrap.dedent(
        f"""
        import evedb
        try:
            c = evedb.connect({db_path!r}, workers=1)
        except evedb.Error as error:
            print(type(error).__name__)
        else:
            print(c.cursor().execute("SELECT count(*) FROM item").fetchone()[0])
            c.close()
        """
    )

    def run_probe() -> str:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run_probe() == "OperationalError"  # still open here
    conn.close()
    assert run_probe() == str(len(SEED))


def test_context_manager_commits_on_success(conn, other):
    with conn as entered:
        assert entered is conn
        conn.cursor().execute("INSERT INTO item (id, name, qty) VALUES (4, 'date', 40)")
    assert not conn.closed
    assert fetch(other) == SEED + [(4, "date", 40)]
    assert fetch(conn) == SEED + [(4, "date", 40)]


def test_context_manager_rolls_back_on_exception(conn, other):
    before = snapshot(other)
    with pytest.raises(KeyError):
        with conn:
            conn.cursor().execute("DELETE FROM item")
            raise KeyError("abandon")
    assert not conn.closed
    conn.commit()  # nothing left to commit
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_autocommit_defaults_to_false(conn):
    assert conn.autocommit is False


def test_autocommit_can_be_chosen_at_connect(connect):
    assert connect(autocommit=True).autocommit is True


def test_autocommit_applies_each_write_at_once(auto, other):
    cursor = auto.cursor()
    cursor.execute("UPDATE item SET qty = 0 WHERE id = 1")
    assert cursor.rowcount == 1
    assert fetch(other, "SELECT qty FROM item WHERE id = 1") == [(0,)]


def test_switching_autocommit_on_commits_pending_writes(conn, other):
    cursor = conn.cursor()
    cursor.execute("INSERT INTO item (id, name, qty) VALUES (4, 'date', 40)")
    assert fetch(other) == SEED
    conn.autocommit = True
    assert conn.autocommit is True
    assert fetch(other) == SEED + [(4, "date", 40)]
    assert cursor.rowcount == 1 and cursor.lastrowid == 4


def test_switching_autocommit_off_queues_writes_again(auto, other):
    auto.autocommit = False
    auto.cursor().execute("DELETE FROM item WHERE id = 1")
    assert fetch(other) == SEED
    auto.rollback()
    assert fetch(other) == SEED


# =============================================================================================
# 4. Cursor objects
# =============================================================================================

# --- execute: parameter styles ---


def test_execute_qmark(conn):
    cursor = conn.cursor()
    assert cursor.execute("SELECT name FROM item WHERE id = ? OR qty = ? ORDER BY id", (1, 30)) is cursor
    assert cursor.fetchall() == [("apple",), ("cherry",)]


def test_execute_accepts_a_list_of_parameters(conn):
    assert fetch(conn, "SELECT name FROM item WHERE id = ?", [2]) == [("banana",)]


def test_execute_without_parameters(conn):
    assert fetch(conn, "SELECT count(*) FROM item") == [(3,)]
    assert fetch(conn, "SELECT count(*) FROM item", ()) == [(3,)]


@pytest.mark.parametrize("prefix", [":", "@", "$"])
def test_execute_named_parameters(conn, prefix):
    sql = f"SELECT name FROM item WHERE id = {prefix}low OR id = {prefix}high ORDER BY id"
    assert fetch(conn, sql, {"low": 1, "high": 3}) == [("apple",), ("cherry",)]


def test_named_parameter_keys_may_carry_their_prefix(conn):
    assert fetch(conn, "SELECT :a, @b", {":a": 1, "@b": 2}) == [(1, 2)]


def test_execute_numbered_parameters(conn):
    assert fetch(conn, "SELECT ?2, ?1, ?2", ("one", "two")) == [("two", "one", "two")]


def test_placeholders_inside_literals_and_comments_are_not_parameters(conn):
    sql = "SELECT '?', ':x', ? /* ? :y */ -- ?\n"
    assert fetch(conn, sql, (7,)) == [("?", ":x", 7)]


def test_bare_qmark_after_numbered_parameter(conn):
    assert fetch(conn, "SELECT ?2, ?", ("a", "b", "c")) == [("b", "c")]


def test_execute_write_then_read_in_autocommit(auto):
    cursor = auto.cursor()
    cursor.execute("INSERT INTO item (id, name, qty) VALUES (?, ?, ?)", (4, "date", 40))
    cursor.execute("SELECT name, qty FROM item WHERE id = ?", (4,))
    assert cursor.fetchone() == ("date", 40)


# --- executemany ---


def test_executemany_rowcount_is_the_total_after_commit(conn, other):
    cursor = conn.cursor()
    cursor.executemany("UPDATE item SET qty = qty + ? WHERE id <= ?", [(1, 1), (1, 2), (1, 3)])
    conn.commit()
    assert cursor.rowcount == 1 + 2 + 3
    assert fetch(other, "SELECT qty FROM item ORDER BY id") == [(13,), (22,), (31,)]


def test_executemany_in_autocommit(auto, other):
    cursor = auto.cursor()
    cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", [(4, "d"), (5, "e"), (6, "f")])
    assert cursor.rowcount == 3
    assert cursor.lastrowid == 6
    assert fetch(other, "SELECT id FROM item WHERE id > 3 ORDER BY id") == [(4,), (5,), (6,)]


def test_executemany_accepts_a_generator(auto):
    cursor = auto.cursor()
    cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", ((i, f"n{i}") for i in range(10, 15)))
    assert cursor.rowcount == 5


def test_executemany_with_named_parameters(auto):
    cursor = auto.cursor()
    cursor.executemany("UPDATE item SET qty = :qty WHERE id = :id", [{"id": 1, "qty": 5}, {"id": 2, "qty": 6}])
    assert cursor.rowcount == 2
    assert fetch(auto, "SELECT qty FROM item WHERE id < 3 ORDER BY id") == [(5,), (6,)]


def test_executemany_in_autocommit_is_atomic(auto, other):
    before = snapshot(other)
    cursor = auto.cursor()
    with pytest.raises(IntegrityError):
        cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", [(4, "d"), (5, "e"), (1, "dup"), (6, "f")])
    assert snapshot(other) == before
    assert_unchanged_and_working(auto, before)


def test_executemany_with_no_parameter_sets(auto):
    before = snapshot(auto)
    cursor = auto.cursor()
    cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", [])
    assert cursor.rowcount == 0
    assert snapshot(auto) == before


def test_executemany_refuses_queries(auto):
    with pytest.raises(ProgrammingError):
        auto.cursor().executemany("SELECT ?", [(1,), (2,)])


def test_executemany_checks_every_parameter_set_before_sending(conn, other):
    before = snapshot(other)
    cursor = conn.cursor()
    with pytest.raises(ProgrammingError):
        cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", [(4, "d"), (5,)])
    conn.commit()
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


# --- fetchone / fetchmany / fetchall ---


def test_fetchone(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchone() == SEED[0]
    assert cursor.fetchone() == SEED[1]
    assert cursor.fetchone() == SEED[2]
    assert cursor.fetchone() is None
    assert cursor.fetchone() is None


def test_fetchone_rows_are_sequences(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    row = cursor.fetchone()
    assert isinstance(row, tuple)
    assert row[1] == "apple"


def test_fetchmany_default_size_is_arraysize(conn):
    cursor = conn.cursor()
    assert cursor.arraysize == 1
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchmany() == [SEED[0]]
    cursor.arraysize = 2
    assert cursor.fetchmany() == SEED[1:3]
    assert cursor.fetchmany() == []


def test_fetchmany_explicit_size(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchmany(2) == SEED[:2]
    assert cursor.fetchmany(0) == []
    assert cursor.fetchmany(5) == SEED[2:]  # fewer left than asked for
    assert cursor.fetchmany(5) == []  # past the end


def test_fetchmany_refuses_a_negative_size(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    with pytest.raises(ProgrammingError):
        cursor.fetchmany(-1)
    assert cursor.fetchall() == SEED  # nothing consumed


def test_fetchall(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchall() == SEED
    assert cursor.fetchall() == []


def test_fetchall_returns_the_remaining_rows(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    cursor.fetchone()
    assert cursor.fetchall() == SEED[1:]


def test_fetch_from_an_empty_result(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT * FROM item WHERE id < 0")
    assert cursor.fetchone() is None
    assert cursor.fetchmany(3) == []
    assert cursor.fetchall() == []


def test_a_new_execute_replaces_the_result(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    cursor.fetchone()
    cursor.execute("SELECT name FROM item WHERE id = 3")
    assert cursor.fetchall() == [("cherry",)]


# --- description ---


def test_description_before_execute_is_none(conn):
    assert conn.cursor().description is None


def test_description_of_a_query(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT id, name AS label, qty * 2 AS double_qty FROM item")
    description = cursor.description
    assert len(description) == 3
    for column in description:
        assert len(column) == 7
        assert list(column[2:]) == [None] * 5
    assert [column[0] for column in description] == ["id", "label", "double_qty"]
    assert [column[1] for column in description] == ["INTEGER", "TEXT", None]
    assert description[0][1] == evedb.NUMBER
    assert description[1][1] == evedb.STRING


def test_description_is_set_for_a_query_returning_no_rows(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT id, name FROM item WHERE 0")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert cursor.fetchall() == []


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE item SET qty = qty WHERE id = 1",
        "DELETE FROM item WHERE id = 999",
        "INSERT INTO item (id, name) VALUES (7, 'g')",
        "CREATE TABLE extra (id INTEGER PRIMARY KEY)",
    ],
)
def test_description_of_a_non_query_is_none(auto, sql):
    cursor = auto.cursor()
    cursor.execute("SELECT 1")
    cursor.execute(sql)
    assert cursor.description is None


def test_description_of_returning(auto):
    cursor = auto.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (4, 'date') RETURNING id, name")
    assert [column[0] for column in cursor.description] == ["id", "name"]
    assert cursor.fetchall() == [(4, "date")]


# --- rowcount ---


def test_rowcount_before_execute(conn):
    assert conn.cursor().rowcount == -1


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("UPDATE item SET qty = qty + 1 WHERE id >= 2", 2),
        ("UPDATE item SET qty = 0 WHERE id > 100", 0),
        ("DELETE FROM item WHERE id = 1", 1),
        ("DELETE FROM item", 3),
        ("INSERT INTO item (id, name) VALUES (4, 'd'), (5, 'e')", 2),
        ("INSERT INTO item (id, name, qty) SELECT id + 10, name, qty FROM item", 3),
        ("REPLACE INTO item (id, name) VALUES (1, 'apricot')", 1),
    ],
)
def test_rowcount_of_dml(auto, sql, expected):
    cursor = auto.cursor()
    cursor.execute(sql)
    assert cursor.rowcount == expected


def test_rowcount_of_dml_in_manual_mode_after_commit(conn):
    cursor = conn.cursor()
    cursor.execute("UPDATE item SET qty = qty + 1 WHERE id >= 2")
    assert cursor.rowcount == -1  # queued: not known yet
    conn.commit()
    assert cursor.rowcount == 2


@pytest.mark.parametrize("where, expected", [("", 3), ("WHERE id = 2", 1), ("WHERE id < 0", 0)])
def test_rowcount_of_a_query_is_rows_returned(conn, where, expected):
    cursor = conn.cursor()
    cursor.execute(f"SELECT * FROM item {where}")
    assert cursor.rowcount == expected
    assert len(cursor.fetchall()) == expected


def test_rowcount_of_ddl(auto):
    cursor = auto.cursor()
    cursor.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY)")
    assert cursor.rowcount == -1


# --- lastrowid ---


def test_lastrowid_before_execute(conn):
    assert conn.cursor().lastrowid is None


def test_lastrowid_after_insert(auto):
    cursor = auto.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (40, 'explicit')")
    assert cursor.lastrowid == 40
    cursor.execute("INSERT INTO item (name) VALUES ('automatic')")
    assert cursor.lastrowid == 41
    assert fetch(auto, "SELECT name FROM item WHERE rowid = ?", (cursor.lastrowid,)) == [("automatic",)]


def test_lastrowid_is_none_for_a_table_whose_key_is_not_the_rowid(auto):
    # Such a table's hidden rowid is allocated by each replica on its own (it is not
    # replicated state), so evedb never reports it: PEP 249 allows None.
    cursor = auto.cursor()
    cursor.execute("CREATE TABLE tag (name TEXT PRIMARY KEY)")
    cursor.execute("INSERT INTO tag (name) VALUES ('a')")
    assert cursor.rowcount == 1
    assert cursor.lastrowid is None
    cursor.execute("CREATE TABLE flat (id INTEGER PRIMARY KEY, v) WITHOUT ROWID")
    cursor.execute("INSERT INTO flat VALUES (7, 'x')")
    assert cursor.lastrowid is None


@pytest.mark.parametrize(
    "sql",
    ["UPDATE item SET qty = 1 WHERE id = 1", "DELETE FROM item WHERE id = 1", "SELECT * FROM item"],
)
def test_lastrowid_is_none_after_other_statements(auto, sql):
    cursor = auto.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (4, 'd')")
    cursor.execute(sql)
    assert cursor.lastrowid is None


# --- arraysize ---


def test_arraysize_defaults_to_one_and_is_writable(conn):
    cursor = conn.cursor()
    assert cursor.arraysize == 1
    cursor.arraysize = 10
    assert cursor.arraysize == 10
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchmany() == SEED


# --- callproc ---


def test_callproc_returns_the_parameters(conn):
    parameters = (1, 5)
    assert conn.cursor().callproc("dbapi_restock", parameters) == parameters


def test_callproc_result_set_is_fetchable(conn, other):
    cursor = conn.cursor()
    cursor.callproc("dbapi_restock", (2, 5))
    assert [column[0] for column in cursor.description] == ["id", "qty"]
    assert cursor.fetchall() == [(2, 25)]
    # a procedure is its own transaction, committed at once even in manual-commit mode
    assert fetch(other, "SELECT qty FROM item WHERE id = 2") == [(25,)]


def test_callproc_rows_returned_as_a_list(conn):
    cursor = conn.cursor()
    cursor.callproc("dbapi_squares", (4,))
    assert [column[0] for column in cursor.description] == ["column1", "column2"]
    assert cursor.fetchall() == [(0, 0), (1, 1), (2, 4), (3, 9)]
    assert cursor.rowcount == 4


def test_callproc_single_value(conn):
    cursor = conn.cursor()
    cursor.callproc("dbapi_answer")
    assert cursor.fetchall() == [(42,)]


def test_callproc_without_result_set(conn):
    cursor = conn.cursor()
    cursor.callproc("dbapi_nothing")
    assert cursor.description is None
    with pytest.raises(ProgrammingError):
        cursor.fetchall()


def test_callproc_unknown_procedure(conn):
    before = snapshot(conn)
    with pytest.raises(ProgrammingError, match="no_such_procedure"):
        conn.cursor().callproc("no_such_procedure", (1,))
    assert_unchanged_and_working(conn, before)


def test_callproc_python_exception_rolls_back_the_procedure(conn, other):
    before = snapshot(other)
    with pytest.raises(ProgrammingError) as raised:
        conn.cursor().callproc("dbapi_restock_then_fail", (1, 5))
    message = str(raised.value)
    assert "dbapi_restock_then_fail" in message
    assert "RuntimeError" in message and "restock refused" in message
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_callproc_in_worker_processes(connect, tmp_path):
    """workers=2: the worker processes import this module by name to find the procedure."""
    connection = connect(str(tmp_path / "workers.db"), workers=2)
    create_items(connection)
    cursor = connection.cursor()
    assert cursor.callproc("dbapi_restock", (3, 7)) == (3, 7)
    assert cursor.fetchall() == [(3, 37)]
    with pytest.raises(ProgrammingError, match="restock refused"):
        cursor.callproc("dbapi_restock_then_fail", (3, 1))
    assert fetch(connection) == [(1, "apple", 10), (2, "banana", 20), (3, "cherry", 37)]


# --- close ---

CLOSED_CURSOR_OPERATIONS = {
    "execute": lambda c: c.execute("SELECT 1"),
    "executemany": lambda c: c.executemany("UPDATE item SET qty = ? WHERE id = 1", [(1,)]),
    "fetchone": lambda c: c.fetchone(),
    "fetchmany": lambda c: c.fetchmany(),
    "fetchall": lambda c: c.fetchall(),
    "callproc": lambda c: c.callproc("dbapi_answer"),
    "setinputsizes": lambda c: c.setinputsizes([None]),
    "setoutputsize": lambda c: c.setoutputsize(10),
    "description": lambda c: c.description,
    "next": lambda c: next(c),
}


@pytest.mark.parametrize("operation", CLOSED_CURSOR_OPERATIONS.values(), ids=CLOSED_CURSOR_OPERATIONS.keys())
def test_closed_cursor_refuses_every_operation(conn, operation):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    cursor.close()
    with pytest.raises(InterfaceError):
        operation(cursor)


def test_cursor_close_twice_and_other_cursors_unaffected(conn):
    first, second = conn.cursor(), conn.cursor()
    second.execute(ALL_ITEMS)
    first.close()
    first.close()
    assert second.fetchall() == SEED
    assert fetch(conn) == SEED


def test_cursor_as_context_manager_closes_it(conn):
    with conn.cursor() as cursor:
        cursor.execute(ALL_ITEMS)
        assert cursor.fetchone() == SEED[0]
    with pytest.raises(InterfaceError):
        cursor.fetchone()


# --- iteration ---


def test_cursor_iteration(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert iter(cursor) is cursor
    assert [row for row in cursor] == SEED
    with pytest.raises(StopIteration):
        next(cursor)


def test_cursor_iteration_continues_after_fetchone(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert next(cursor) == SEED[0]
    cursor.fetchone()
    assert list(cursor) == SEED[2:]


def test_iterating_a_non_query_raises(auto):
    cursor = auto.cursor()
    cursor.execute("UPDATE item SET qty = 1 WHERE id = 1")
    with pytest.raises(ProgrammingError):
        list(cursor)


# --- setinputsizes / setoutputsize ---


def test_setinputsizes_and_setoutputsize_do_nothing(conn):
    cursor = conn.cursor()
    assert cursor.setinputsizes([None, 10, evedb.STRING]) is None
    assert cursor.setoutputsize(100) is None
    assert cursor.setoutputsize(100, 0) is None
    cursor.execute("SELECT name, qty FROM item WHERE id = ?", (1,))
    assert cursor.fetchall() == [("apple", 10)]
    assert cursor.description[0][0] == "name"


# =============================================================================================
# 5. Errors: each leaves the database unchanged and the connection working
# =============================================================================================


@pytest.mark.parametrize("method", ["fetchone", "fetchmany", "fetchall"])
def test_fetch_before_execute(conn, method):
    with pytest.raises(ProgrammingError):
        getattr(conn.cursor(), method)()


@pytest.mark.parametrize("method", ["fetchone", "fetchmany", "fetchall"])
def test_fetch_after_a_non_query_in_autocommit(auto, method):
    before = snapshot(auto)
    cursor = auto.cursor()
    cursor.execute("UPDATE item SET qty = qty WHERE id = 1")
    with pytest.raises(ProgrammingError):
        getattr(cursor, method)()
    assert_unchanged_and_working(auto, before)


def test_fetch_after_a_committed_non_query(conn):
    cursor = conn.cursor()
    cursor.execute("UPDATE item SET qty = 11 WHERE id = 1")
    conn.commit()
    with pytest.raises(ProgrammingError):
        cursor.fetchall()


@pytest.mark.parametrize(
    "sql, parameters",
    [
        ("SELECT * FROM item WHERE id = ?", (1, 2)),
        ("SELECT * FROM item WHERE id = ? AND qty = ?", (1,)),
        ("SELECT * FROM item WHERE id = ?", ()),
        ("SELECT * FROM item WHERE id = ?", None),
        ("SELECT * FROM item", (1,)),
        ("INSERT INTO item (id, name) VALUES (?, ?)", (4,)),
        ("UPDATE item SET qty = ?2 WHERE id = ?1", (1,)),
    ],
)
def test_wrong_parameter_count_raises_at_execute(conn, other, sql, parameters):
    before = snapshot(other)
    with pytest.raises(ProgrammingError):
        conn.cursor().execute(sql, parameters)
    # raised before anything was queued: a query may run at once, and commit sends nothing
    assert_unchanged_and_working(conn, before)


@pytest.mark.parametrize(
    "sql, parameters",
    [
        ("SELECT * FROM item WHERE id = :id", (1,)),  # named statement, sequence given
        ("SELECT * FROM item WHERE id = ?", {"id": 1}),  # qmark statement, mapping given
        ("SELECT * FROM item WHERE id = :id", {"other": 1}),  # named value missing
        ("SELECT * FROM item WHERE id = ?", "1"),  # a string is not a parameter sequence
        ("SELECT * FROM item WHERE id = ?", 1),  # nor is a bare value
        ("UPDATE item SET qty = :qty WHERE id = :id", {"qty": 1}),
    ],
)
def test_parameter_shape_mismatch(conn, other, sql, parameters):
    before = snapshot(other)
    with pytest.raises(ProgrammingError):
        conn.cursor().execute(sql, parameters)
    assert_unchanged_and_working(conn, before)


@pytest.mark.parametrize(
    "value",
    [object(), decimal.Decimal("1.5"), [1, 2], {"a": 1}, 1 + 2j, {1, 2}],
    ids=["object", "Decimal", "list", "dict", "complex", "set"],
)
def test_unsupported_parameter_type(conn, other, value):
    before = snapshot(other)
    with pytest.raises(ProgrammingError):
        conn.cursor().execute("UPDATE item SET name = ? WHERE id = 1", (value,))
    assert_unchanged_and_working(conn, before)


@pytest.mark.parametrize(
    "sql",
    [
        "SELEC * FROM item",
        "SELECT * FROM no_such_table",
        "SELECT no_such_column FROM item",
        "UPDATE item SET no_such_column = 1",
        "INSERT INTO item VALUES (",
    ],
)
def test_invalid_sql_in_autocommit(auto, sql):
    before = snapshot(auto)
    with pytest.raises(ProgrammingError):
        auto.cursor().execute(sql)
    assert_unchanged_and_working(auto, before)


def test_invalid_query_in_manual_mode_raises_at_once(conn):
    before = snapshot(conn)
    with pytest.raises(ProgrammingError):
        conn.cursor().execute("SELECT no_such_column FROM item")
    assert_unchanged_and_working(conn, before)


@pytest.mark.parametrize("bad", ["UPDAT item SET qty = 1", "UPDATE item SET no_such_column = 1"])
def test_invalid_write_in_manual_mode_fails_by_commit_and_applies_nothing(conn, other, bad):
    """A write is queued; its error comes at execute() or, at the latest, from commit()."""
    before = snapshot(other)
    conn.cursor().execute("INSERT INTO item (id, name) VALUES (4, 'd')")
    with pytest.raises(ProgrammingError):
        conn.cursor().execute(bad)
        conn.commit()
    conn.rollback()
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO item (id, name) VALUES (1, 'duplicate key')",
        "INSERT INTO item (id, name) VALUES (4, NULL)",
        "UPDATE item SET qty = -1 WHERE id = 2",
    ],
    ids=["unique", "not-null", "check"],
)
def test_constraint_violation_in_autocommit(auto, sql):
    before = snapshot(auto)
    with pytest.raises(IntegrityError):
        auto.cursor().execute(sql)
    assert_unchanged_and_working(auto, before)


def test_constraint_violation_in_manual_mode_raises_at_commit(conn, other):
    before = snapshot(other)
    cursor = conn.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (1, 'duplicate key')")
    with pytest.raises(IntegrityError):
        conn.commit()
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_errors_are_catchable_as_database_error(auto):
    with pytest.raises(DatabaseError):
        auto.cursor().execute("INSERT INTO item (id, name) VALUES (1, 'duplicate key')")
    with pytest.raises(Error):
        auto.cursor().execute("SELEC 1")


def test_several_statements_in_one_execute(auto):
    before = snapshot(auto)
    with pytest.raises(ProgrammingError):
        auto.cursor().execute("UPDATE item SET qty = 0; DELETE FROM item")
    assert_unchanged_and_working(auto, before)


@pytest.mark.parametrize("operation", [None, 42, b"SELECT 1"])
def test_operation_must_be_a_string(conn, operation):
    with pytest.raises(ProgrammingError):
        conn.cursor().execute(operation)


def test_table_without_primary_key_is_refused(auto):
    before = snapshot(auto)
    with pytest.raises(ProgrammingError, match="PRIMARY KEY"):
        auto.cursor().execute("CREATE TABLE loose (x INTEGER)")
    assert fetch(auto, "SELECT name FROM sqlite_schema WHERE name = 'loose'") == []
    assert_unchanged_and_working(auto, before)


# =============================================================================================
# 6. One-shot transactions in manual-commit mode
# =============================================================================================


def test_reads_are_sent_at_once_when_nothing_is_queued(conn):
    cursor = conn.cursor()
    cursor.execute(ALL_ITEMS)
    assert cursor.fetchall() == SEED  # no commit() needed for a query


def test_queued_writes_are_invisible_until_commit(conn, other):
    cursor = conn.cursor()
    cursor.execute("INSERT INTO item (id, name, qty) VALUES (4, 'date', 40)")
    cursor2 = conn.cursor()
    cursor2.execute("UPDATE item SET qty = 0 WHERE id = 1")
    assert fetch(other) == SEED
    conn.commit()
    assert fetch(other) == [(1, "apple", 0), (2, "banana", 20), (3, "cherry", 30), (4, "date", 40)]


def test_results_are_readable_after_commit(conn):
    insert, update, returning = conn.cursor(), conn.cursor(), conn.cursor()
    insert.execute("INSERT INTO item (name, qty) VALUES ('date', 40)")
    update.execute("UPDATE item SET qty = qty * 2 WHERE qty >= 20")
    returning.execute("DELETE FROM item WHERE id = 1 RETURNING id, name")
    for cursor in (insert, update, returning):
        assert cursor.rowcount == -1 and cursor.lastrowid is None and cursor.description is None
    conn.commit()
    assert insert.rowcount == 1 and insert.lastrowid == 4
    assert update.rowcount == 3  # banana, cherry and the new date
    assert update.lastrowid is None
    assert [column[0] for column in returning.description] == ["id", "name"]
    assert returning.fetchall() == [(1, "apple")]
    assert returning.rowcount == 1


@pytest.mark.parametrize("method", ["fetchone", "fetchmany", "fetchall", "__next__"])
def test_fetching_a_queued_result_before_commit(conn, method):
    cursor = conn.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (4, 'date') RETURNING id")
    with pytest.raises(NotSupportedError, match="commit"):
        getattr(cursor, method)()
    conn.commit()
    assert cursor.fetchall() == [(4,)]


@pytest.mark.parametrize(
    "query",
    [
        lambda c: c.cursor().execute("SELECT count(*) FROM item"),
        lambda c: c.execute("SELECT 1"),
        lambda c: c.cursor().execute("PRAGMA table_info(item)"),
    ],
    ids=["cursor", "connection", "pragma"],
)
def test_query_while_writes_are_queued(conn, other, query):
    conn.cursor().execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    with pytest.raises(NotSupportedError, match="commit"):
        query(conn)
    assert fetch(other) == SEED  # the query did not commit the queue
    conn.commit()  # the queue is still whole
    assert fetch(other) == SEED + [(4, "date", 0)]


def test_commit_where_the_third_statement_fails_applies_nothing(conn, other):
    before = snapshot(other)
    cursors = [conn.cursor() for _ in range(4)]
    cursors[0].execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    cursors[1].execute("UPDATE item SET qty = 0")
    cursors[2].execute("INSERT INTO item (id, name) VALUES (2, 'duplicate key')")
    cursors[3].execute("DELETE FROM item WHERE id = 3")
    with pytest.raises(IntegrityError):
        conn.commit()
    assert snapshot(other) == before
    for cursor in cursors:  # no result, and no longer queued
        assert cursor.rowcount == -1
        with pytest.raises(ProgrammingError):
            cursor.fetchall()
    conn.commit()  # the queue is gone: nothing is re-sent
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_rollback_drops_the_queue(conn, other):
    before = snapshot(other)
    cursor = conn.cursor()
    cursor.execute("DELETE FROM item")
    cursor.execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    conn.rollback()
    assert cursor.rowcount == -1
    with pytest.raises(ProgrammingError):  # no result: the statement never ran
        cursor.fetchall()
    conn.commit()
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_close_drops_the_queue(conn, other):
    before = snapshot(other)
    conn.cursor().execute("DELETE FROM item")
    conn.close()
    assert snapshot(other) == before


def test_close_drops_the_queue_across_reopen(connect, db_path):
    connection = connect()
    create_items(connection)
    connection.cursor().execute("DELETE FROM item")
    connection.close()  # the last connection: the database itself closes
    assert fetch(connect()) == SEED


def test_callproc_while_writes_are_queued(conn, other):
    conn.cursor().execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    with pytest.raises(NotSupportedError, match="commit"):
        conn.cursor().callproc("dbapi_restock", (1, 5))
    assert fetch(other) == SEED
    conn.commit()
    assert fetch(other) == SEED + [(4, "date", 0)]


def test_executemany_in_manual_mode_is_queued(conn, other):
    cursor = conn.cursor()
    cursor.executemany("INSERT INTO item (id, name) VALUES (?, ?)", [(4, "d"), (5, "e")])
    assert cursor.rowcount == -1
    assert fetch(other) == SEED
    conn.commit()
    assert cursor.rowcount == 2
    assert cursor.lastrowid == 5
    assert len(fetch(other)) == 5


def test_cursor_executing_twice_before_commit_reports_the_last_rowcount(conn):
    cursor = conn.cursor()
    cursor.execute("UPDATE item SET qty = 1 WHERE id = 1")
    cursor.execute("UPDATE item SET qty = 2 WHERE id = 2")
    conn.commit()
    assert fetch(conn, "SELECT qty FROM item WHERE id < 3 ORDER BY id") == [(1,), (2,)]
    assert cursor.rowcount == 1


def test_cursor_executing_twice_before_commit_keeps_the_last_result_set(conn):
    cursor = conn.cursor()
    cursor.execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    cursor.execute("INSERT INTO item (id, name) VALUES (5, 'elder') RETURNING id, name")
    conn.commit()
    assert fetch(conn, "SELECT id FROM item WHERE id > 3 ORDER BY id") == [(4,), (5,)]
    assert cursor.fetchall() == [(5, "elder")]


# --- conn.transaction() ---


def test_transaction_applies_atomically_at_block_exit(conn, other):
    with conn.transaction() as tx:
        insert = tx.execute("INSERT INTO item (id, name, qty) VALUES (?, ?, ?)", (4, "date", 40))
        update = tx.execute("UPDATE item SET qty = qty - 1 WHERE id = :id", {"id": 1})
        count = tx.execute("SELECT count(*) FROM item")
        returning = tx.execute("DELETE FROM item WHERE id = 2 RETURNING name")
        with pytest.raises(NotSupportedError):  # results exist only after the block
            count.fetchall()
        assert fetch(other) == SEED  # nothing sent yet
    assert fetch(other) == [(1, "apple", 9), (3, "cherry", 30), (4, "date", 40)]
    assert insert.rowcount == 1 and insert.lastrowid == 4
    assert update.rowcount == 1
    assert count.fetchall() == [(4,)]  # the block's statements see the earlier ones
    assert returning.fetchall() == [("banana",)]


def test_transaction_executemany(conn, other):
    with conn.transaction() as tx:
        cursors = tx.executemany("UPDATE item SET qty = ? WHERE id = ?", [(0, 1), (0, 2), (0, 99)])
    assert [cursor.rowcount for cursor in cursors] == [1, 1, 0]
    assert fetch(other, "SELECT qty FROM item ORDER BY id") == [(0,), (0,), (30,)]


def test_transaction_exception_inside_the_block_sends_nothing(conn, other):
    before = snapshot(other)
    with pytest.raises(ZeroDivisionError):
        with conn.transaction() as tx:
            cursor = tx.execute("DELETE FROM item")
            1 / 0
    assert snapshot(other) == before
    with pytest.raises(ProgrammingError):  # the statement never ran: no result
        cursor.fetchall()
    assert_unchanged_and_working(conn, before)


def test_transaction_failing_statement_raises_at_exit_and_applies_nothing(conn, other):
    before = snapshot(other)
    with pytest.raises(IntegrityError):
        with conn.transaction() as tx:
            tx.execute("INSERT INTO item (id, name) VALUES (4, 'date')")
            tx.execute("UPDATE item SET qty = 0")
            tx.execute("INSERT INTO item (id, name) VALUES (1, 'duplicate key')")
            tx.execute("DELETE FROM item WHERE id = 3")
    assert snapshot(other) == before
    assert_unchanged_and_working(conn, before)


def test_transaction_failure_leaves_no_queued_cursors(conn):
    with pytest.raises(IntegrityError):
        with conn.transaction() as tx:
            cursor = tx.execute("INSERT INTO item (id, name) VALUES (1, 'duplicate key')")
    with pytest.raises(ProgrammingError):
        cursor.fetchall()


def test_transaction_while_writes_are_queued(conn, other):
    conn.cursor().execute("INSERT INTO item (id, name) VALUES (4, 'date')")
    with pytest.raises(NotSupportedError, match="commit"):
        conn.transaction()
    conn.commit()
    assert fetch(other) == SEED + [(4, "date", 0)]


def test_transaction_block_cannot_be_used_after_it_ends(conn):
    with conn.transaction() as tx:
        tx.execute("UPDATE item SET qty = 1 WHERE id = 1")
    with pytest.raises(InterfaceError):
        tx.execute("UPDATE item SET qty = 2 WHERE id = 1")
    assert fetch(conn, "SELECT qty FROM item WHERE id = 1") == [(1,)]


def test_empty_transaction_block_changes_nothing(conn):
    before = snapshot(conn)
    with conn.transaction():
        pass
    assert snapshot(conn) == before


def test_transaction_checks_parameters_at_once(conn, other):
    with pytest.raises(ProgrammingError):
        with conn.transaction() as tx:
            tx.execute("INSERT INTO item (id, name) VALUES (4, 'date')")
            tx.execute("UPDATE item SET qty = ? WHERE id = ?", (1,))
    assert fetch(other) == SEED


def test_transaction_on_a_connection_closed_inside_the_block(conn, other):
    with pytest.raises(InterfaceError):
        with conn.transaction() as tx:
            tx.execute("DELETE FROM item")
            conn.close()
    assert fetch(other) == SEED


# =============================================================================================
# 7. Threads: one connection per thread
# =============================================================================================


def test_threads_with_their_own_connections(connect, tmp_path):
    path = str(tmp_path / "threads.db")
    threads_count, increments = 4, 50
    setup = connect(path, workers=2, autocommit=True)
    cursor = setup.cursor()
    cursor.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    cursor.executemany("INSERT INTO counter (id, n) VALUES (?, 0)", [(i,) for i in range(threads_count)])
    failures: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def work(row_id: int) -> None:
        try:
            connection = connect(path, workers=2, autocommit=True)
            own = connection.cursor()
            start.wait(timeout=30)
            for _ in range(increments):
                own.execute("UPDATE counter SET n = n + 1 WHERE id = ?", (row_id,))
                assert own.rowcount == 1
            connection.close()
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert fetch(setup, "SELECT id, n FROM counter ORDER BY id") == [(i, increments) for i in range(threads_count)]
    stats = setup.stats()
    assert stats["workers"] == 2
    assert stats["requests"] >= threads_count * increments


# =============================================================================================
# 8. state_root
# =============================================================================================


def test_state_root_is_32_hex_characters(conn):
    root = conn.state_root()
    assert isinstance(root, str)
    assert len(root) == 32
    int(root, 16)
    assert root == root.lower()


def test_state_root_changes_with_writes_only(auto):
    root = auto.state_root()
    fetch(auto)
    assert auto.state_root() == root  # a read changes nothing
    auto.cursor().execute("UPDATE item SET qty = 0 WHERE id = 1")
    changed = auto.state_root()
    assert changed != root
    auto.cursor().execute("UPDATE item SET qty = 10 WHERE id = 1")
    assert auto.state_root() == root  # the same content has the same root


def test_state_root_is_equal_for_databases_built_alike(connect, tmp_path):
    statements = [
        (SCHEMA, None),
        ("INSERT INTO item (id, name, qty) VALUES (?, ?, ?)", (1, "apple", 10)),
        ("INSERT INTO item (id, name, qty) VALUES (?, ?, ?)", (2, "banana", 20)),
        ("UPDATE item SET qty = qty + 1 WHERE id = 2", None),
    ]
    roots = []
    for name in ("first.db", "second.db"):
        connection = connect(str(tmp_path / name), autocommit=True)
        for sql, parameters in statements:
            connection.cursor().execute(sql, parameters)
        roots.append(connection.state_root())
    assert roots[0] == roots[1]
    # a third database differing in one value has another root
    third = connect(str(tmp_path / "third.db"), autocommit=True)
    for sql, parameters in statements[:-1]:
        third.cursor().execute(sql, parameters)
    assert third.state_root() != roots[0]
