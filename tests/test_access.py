"""Access analysis: the SQL fixture file, focused unit tests of caching and the API, and a
property test that every row SQLite really changes lies within the analysis."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest
from hypothesis import given, settings, strategies as st

from evedb.access import EXCLUSIVE, Access, Catalog, analyze

FIXTURE = Path(__file__).parent / "fixtures" / "access.sql"
RESULT_FIELDS = ("reads", "writes", "keys", "exclusive", "read_only")


@dataclass
class Case:
    name: str
    sql_lines: list[str] = field(default_factory=list)
    params: object = None
    use_catalog: bool = True
    expected: dict[str, str] = field(default_factory=dict)

    @property
    def sql(self) -> str:
        return "\n".join(self.sql_lines).strip()


def parse_fixture(text: str) -> tuple[str, list[Case]]:
    """Split the fixture into its schema text and its cases."""
    schema_match = re.search(r"^-- schema\n(.*?)^-- end schema\n", text, re.S | re.M)
    assert schema_match, "fixture needs a '-- schema' ... '-- end schema' block"
    schema = schema_match.group(1)
    cases: list[Case] = []
    current: Case | None = None
    for line in text[schema_match.end():].splitlines():
        directive = re.match(r"^-- (case|params|catalog|reads|writes|keys|exclusive|read_only):\s*(.*)$", line)
        if directive is None:
            if current is not None and not current.expected:
                current.sql_lines.append(line)
            continue
        name, value = directive.groups()
        if name == "case":
            current = Case(value.strip())
            cases.append(current)
        elif current is None:
            raise AssertionError(f"directive outside a case: {line}")
        elif name == "params":
            current.params = json.loads(value)
        elif name == "catalog":
            current.use_catalog = value.strip() != "none"
        else:
            current.expected[name] = value.strip()
    return schema, cases


def parse_names(text: str) -> frozenset[str]:
    return frozenset() if text == "-" else frozenset(text.split())


def parse_keys(text: str) -> frozenset[tuple[str, tuple]]:
    if text == "-":
        return frozenset()
    keys = set()
    for table, values in re.findall(r"(\w+)\(([^()]*)\)", text):
        keys.add((table, ast.literal_eval(f"({values},)")))
    return frozenset(keys)


def parse_flag(text: str) -> bool:
    assert text in ("yes", "no"), text
    return text == "yes"


SCHEMA, CASES = parse_fixture(FIXTURE.read_text())


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_sql(SCHEMA)


def test_fixture_is_well_formed():
    assert len(CASES) >= 45
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for case in CASES:
        assert case.sql, case.name
        assert set(case.expected) == set(RESULT_FIELDS), case.name


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fixture_case(case: Case, catalog: Catalog):
    access = analyze(case.sql, case.params, catalog if case.use_catalog else None)
    expected = case.expected
    assert access.reads == parse_names(expected["reads"])
    assert access.writes == parse_names(expected["writes"])
    assert access.keys == parse_keys(expected["keys"])
    assert access.exclusive == parse_flag(expected["exclusive"])
    assert access.read_only == parse_flag(expected["read_only"])


# --------------------------------------------------------------------------- unit tests


DDL = """
CREATE TABLE item(i_id INTEGER PRIMARY KEY, i_title TEXT, i_stock INT);
CREATE TABLE order_line(ol_o_id INT, ol_id INT, ol_qty INT, PRIMARY KEY (ol_id, ol_o_id));
"""


def test_cached_analysis_returns_the_same_object():
    catalog = Catalog.from_sql(DDL)
    sql = "SELECT * FROM item WHERE i_id = 3"
    first = analyze(sql, None, catalog)
    assert analyze(sql, None, catalog) is first
    assert analyze(sql, None, catalog) == Access(
        frozenset({"item"}), frozenset(), frozenset({("item", (3,))}), False, True)


def test_cached_shape_binds_new_parameter_values():
    catalog = Catalog.from_sql(DDL)
    sql = "UPDATE item SET i_stock = ? WHERE i_id = ?"
    assert analyze(sql, (1, 5), catalog).keys == {("item", (5,))}
    assert analyze(sql, [1, 6], catalog).keys == {("item", (6,))}
    assert analyze(sql, None, catalog).keys == frozenset()


def test_key_order_follows_the_declared_primary_key():
    catalog = Catalog.from_sql(DDL)
    assert catalog.primary_key("order_line") == ("ol_id", "ol_o_id")
    access = analyze("SELECT * FROM order_line WHERE ol_o_id = 1 AND ol_id = 2", None, catalog)
    assert access.keys == {("order_line", (2, 1))}


def test_refresh_after_ddl_changes_version_and_reads_new_table():
    catalog = Catalog.from_sql(DDL)
    version = catalog.version
    assert catalog.primary_key("stock") is None
    unknown = analyze("SELECT * FROM stock WHERE s_id = 1", None, catalog)
    assert unknown.keys == frozenset()
    catalog.connection.execute("CREATE TABLE stock(s_id INTEGER PRIMARY KEY, s_qty INT)")
    catalog.refresh()
    assert catalog.version != version
    assert catalog.primary_key("stock") == ("s_id",)
    assert catalog.is_rowid_alias("stock")
    assert analyze("SELECT * FROM stock WHERE s_id = 1", None, catalog).keys == {("stock", (1,))}


def test_schema_change_is_picked_up_without_explicit_refresh():
    catalog = Catalog.from_sql(DDL)
    sql = "SELECT * FROM later WHERE l_id = 2"
    assert analyze(sql, None, catalog).keys == frozenset()
    catalog.connection.execute("CREATE TABLE later(l_id INTEGER PRIMARY KEY)")
    assert analyze(sql, None, catalog).keys == {("later", (2,))}


def test_catalog_queries():
    catalog = Catalog.from_sql(DDL + "CREATE TABLE t(a INT PRIMARY KEY); CREATE VIEW v AS SELECT * FROM item;")
    assert catalog.primary_key("ITEM") == ("i_id",)
    assert catalog.is_rowid_alias("item")
    assert not catalog.is_rowid_alias("t")       # INT, not INTEGER: no rowid alias
    assert not catalog.is_rowid_alias("order_line")
    assert catalog.primary_key("v") is None
    assert catalog.primary_key("missing") is None
    assert catalog.tables_touched("SELECT * FROM v", None) == (frozenset({"item"}), frozenset())
    assert catalog.tables_touched("SELECT * FROM missing", None) is None


def test_from_connection_restores_the_authorizer():
    connection = apsw.Connection(":memory:")
    connection.execute("CREATE TABLE item(i_id INTEGER PRIMARY KEY)")

    def deny_nothing(*_arguments):
        return apsw.SQLITE_OK

    connection.authorizer = deny_nothing
    catalog = Catalog.from_connection(connection)
    access = analyze("DELETE FROM item WHERE i_id = 1", None, catalog)
    assert access.keys == {("item", (1,))}
    assert connection.authorizer is deny_nothing


def test_parameter_count_mismatch_is_table_level_not_an_error():
    catalog = Catalog.from_sql(DDL)
    sql = "SELECT * FROM order_line WHERE ol_o_id = ? AND ol_id = ?"
    assert analyze(sql, [1], catalog).keys == frozenset()
    assert analyze(sql, [1, 2, 3], catalog).keys == {("order_line", (2, 1))}
    assert analyze(sql, {"x": 1}, catalog).keys == frozenset()
    assert analyze(sql, "12", catalog).keys == frozenset()
    assert analyze(sql, [[1], 2], catalog).keys == frozenset()   # unhashable value
    assert analyze(sql, [1], catalog).reads == {"order_line"}


def test_analyze_without_catalog():
    access = analyze("UPDATE Main.Item SET i_stock = 1 WHERE i_id = 5")
    assert access == Access(frozenset({"item"}), frozenset({"item"}), frozenset(), False, False)
    assert analyze("DROP TABLE item") == EXCLUSIVE
    assert analyze("INSERT INTO audit VALUES (1)").writes == {"audit"}


def test_union_semantics():
    keyed = analyze("SELECT * FROM item WHERE i_id = 1", None, Catalog.from_sql(DDL))
    other_key = Access(frozenset({"item"}), frozenset({"item"}), frozenset({("item", (2,))}), False, False)
    table_level = Access(frozenset({"item"}), frozenset(), frozenset(), False, True)

    both = Access.union([keyed, other_key])
    assert both.keys == {("item", (1,)), ("item", (2,))}
    assert both.reads == {"item"} and both.writes == {"item"}
    assert not both.read_only and not both.exclusive

    widened = Access.union([keyed, other_key, table_level])
    assert widened.keys == frozenset()
    assert widened.reads == {"item"}

    assert Access.union([keyed, table_level]).read_only
    assert Access.union([keyed, EXCLUSIVE]).exclusive
    empty = Access.union([])
    assert empty.read_only and not empty.exclusive and empty.keys == frozenset()


def test_union_keeps_keys_of_other_tables():
    first = Access(frozenset({"a"}), frozenset(), frozenset({("a", (1,))}), False, True)
    second = Access(frozenset({"b"}), frozenset({"b"}), frozenset(), False, False)
    assert Access.union([first, second]).keys == {("a", (1,))}


def test_observation_leaves_no_statement_behind():
    catalog = Catalog.from_sql(DDL)
    analyze("DELETE FROM item WHERE i_id = 1", None, catalog)
    # Nothing was executed: the row count is untouched and no transaction is open.
    catalog.connection.execute("INSERT INTO item VALUES (1, 'a', 1)")
    analyze("DELETE FROM item WHERE i_id = 2", None, catalog)
    assert catalog.connection.execute("SELECT count(*) FROM item").fetchone()[0] == 1
    assert catalog.connection.in_transaction is False


# --------------------------------------------------------------------------- soundness against SQLite


SOUNDNESS_DDL = """
CREATE TABLE item(i_id INTEGER PRIMARY KEY, i_title TEXT, i_stock INT, i_cost REAL);
CREATE TABLE audit(a_id INTEGER PRIMARY KEY, a_item INT, a_note TEXT);
CREATE TABLE emp(e_id INTEGER PRIMARY KEY, e_mgr INT REFERENCES emp(e_id) ON DELETE CASCADE);
CREATE TRIGGER item_stock_audit AFTER UPDATE OF i_stock ON item
BEGIN INSERT INTO audit(a_item, a_note) VALUES (new.i_id, 'stock'); END;
"""

# Statement templates and how many parameters each takes.
SOUNDNESS_TEMPLATES = [
    ("UPDATE item SET i_stock = ? WHERE i_id = ?", 2),
    ("UPDATE item SET i_cost = 1 WHERE i_id IN (?, ?)", 2),
    ("UPDATE item SET i_cost = (SELECT i_cost FROM item WHERE i_id = ?) WHERE i_id = ?", 2),
    ("UPDATE item SET i_stock = i_stock + 1 WHERE i_id = ? AND i_stock > ?", 2),
    ("UPDATE item SET i_title = 'x' WHERE rowid = ?", 1),
    ("DELETE FROM audit WHERE a_id = ?", 1),
    ("DELETE FROM audit WHERE a_id = ? OR a_item = ?", 2),
    ("INSERT OR REPLACE INTO audit VALUES (?, 1, 'x')", 1),
    ("INSERT INTO audit VALUES (?, 1, 'x') ON CONFLICT DO UPDATE SET a_note = 'y'", 1),
    ("INSERT OR IGNORE INTO audit(a_item, a_id) VALUES (1, ?), (2, ?)", 2),
    ("REPLACE INTO item(i_id, i_title) VALUES (?, 'r')", 1),
    ("DELETE FROM emp WHERE e_id = ?", 1),
    ("UPDATE emp SET e_mgr = NULL WHERE e_id = ?", 1),
]


def soundness_database() -> apsw.Connection:
    connection = apsw.Connection(":memory:")
    connection.execute("PRAGMA foreign_keys=ON").fetchall()
    connection.execute(SOUNDNESS_DDL)
    for number in range(1, 13):
        connection.execute("INSERT INTO item VALUES (?, 't', ?, 2.0)", (number, number % 4))
        connection.execute("INSERT INTO audit VALUES (?, ?, 'n')", (number, number))
        connection.execute("INSERT INTO emp VALUES (?, ?)", (number, number // 2 or None))
    return connection


SOUNDNESS_CATALOG = Catalog.from_sql(SOUNDNESS_DDL)
key_values = st.one_of(st.integers(min_value=0, max_value=14),
                       st.integers(min_value=0, max_value=14).map(str))


@settings(max_examples=150, deadline=None)
@given(template=st.sampled_from(SOUNDNESS_TEMPLATES), data=st.data())
def test_changed_rows_are_within_the_analysis(template, data):
    """Every row SQLite changes lies in `writes`, and within `keys` when its table has keys."""
    sql, parameter_count = template
    params = tuple(data.draw(key_values) for _ in range(parameter_count))
    access = analyze(sql, params, SOUNDNESS_CATALOG)
    connection = soundness_database()
    changed: list[tuple[str, int]] = []
    connection.set_update_hook(lambda _kind, _database, table, rowid: changed.append((table, rowid)))
    connection.execute(sql, params)
    keyed_tables = {table for table, _ in access.keys}
    for table, rowid in changed:
        assert table in access.writes, (sql, params, table)
        if table in keyed_tables:
            assert (table, (rowid,)) in access.keys, (sql, params, table, rowid)


def test_a_very_long_text_is_not_parsed_and_runs_alone():
    # Parsing cost grows with the text and runs on the engine thread: past the cap the
    # statement is exclusive (always safe) instead of analysed.
    from evedb.access import ANALYSIS_MAX_CHARS

    rows = ",".join(f"({i}, 'value {i}')" for i in range(ANALYSIS_MAX_CHARS // 10))
    long_insert = f"INSERT INTO t(a, b) VALUES {rows}"
    assert len(long_insert) > ANALYSIS_MAX_CHARS
    access = analyze(long_insert)
    assert access.exclusive and not access.read_only
    short_insert = "INSERT INTO t(a, b) VALUES (1, 'x')"
    assert not analyze(short_insert).exclusive
