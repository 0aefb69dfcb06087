"""TPC-W database side: helpers, population, procedures and their mixer rules.

1. random helpers: DigSyl, NURand and its A constants, a-/n-strings, the string pool, GLOB keys
2. population (tpcw/populate.py) at items=1000, ebs=1: the section 2.1 counts, column rules,
   indexes, determinism (same seed -> same state root), refusals
3. every procedure through evedb's callproc on a small hand-made database, with exact results
4. every procedure runs on the populated database through evedb
5. mixer_rules/tpcw.toml: a rule for every procedure, read-only ones without writes, and in
   "debug mode" (each procedure called directly on a plain apsw connection, with a recording
   authorizer and a session) the tables SQLite saw are exactly the rule's sets and the rows
   written to keyed tables are the ones the rule's keys name; the procedures are
   deterministic given (timestamp, seed, seq, position)

Connections use the embedded engine with workers=1; every one is closed (an open embedded
database holds a lock on its file).
"""

from __future__ import annotations

import datetime
import os
import random
import shutil

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evedb
from evedb.procedures import ProcedureCursor
from mixer_rules import load_rules
from tpcw import procedures as P
from tpcw.populate import DEFAULT_NOW, TABLES, populate, scale, schema_statements
from tpcw.random_helpers import (
    A_STRING_CHARS,
    COUNTRIES,
    ITEM_SCALES,
    SUBJECTS,
    StringPool,
    a_string,
    digsyl,
    prefix_range,
    n_string,
    nurand,
    nurand_a_customers,
    nurand_a_items,
    uniform_int,
)

PROCEDURE_MODULES = ("tpcw.procedures",)


def connect(path):
    return evedb.connect(str(path), workers=1, procedures=PROCEDURE_MODULES, rules="tpcw",
                         autocommit=True)


def copy_database(source, target) -> str:
    """Copy a closed evedb database file (and a WAL left behind, if any)."""
    for suffix in ("", "-wal"):
        if os.path.exists(f"{source}{suffix}"):
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return str(target)


def call(conn, name, *args):
    cursor = conn.cursor()
    cursor.callproc(name, args)
    return cursor.fetchall() if cursor.description else []


def columns_of(conn, name, *args):
    cursor = conn.cursor()
    cursor.callproc(name, args)
    return [d[0] for d in cursor.description]


# --- 1. random helpers ---------------------------------------------------------------------

def test_digsyl():
    assert digsyl(1234) == "OGALRIRE"
    assert digsyl(0) == "BA"
    assert digsyl(7) == "UL"
    assert digsyl(5678901) == "SEATULINNGBAOG"
    assert digsyl(5, 3) == "BABASE"          # left-padded with BA to n digits
    assert digsyl(12345, 3) == "RIRESE"      # the n low-order digits
    assert digsyl(0, 7) == "BA" * 7
    assert len({digsyl(i) for i in range(1, 3000)}) == 2999  # user names are unique
    for bad in (-1, 1.5, "7", True):
        with pytest.raises(ValueError):
            digsyl(bad)


def test_nurand_constants():
    assert [nurand_a_customers(n) for n in (1, 2880, 9_999, 10_000, 39_999, 40_000, 159_999,
                                            160_000, 639_999, 640_000, 2_559_999, 2_560_000)] == [
        1023, 1023, 1023, 4095, 4095, 16383, 16383, 65535, 65535, 262143, 262143, 1048575]
    assert nurand_a_customers(163_839_999) == 16777215
    assert nurand_a_customers(163_840_000) == 67108863
    assert {n: nurand_a_items(n) for n in ITEM_SCALES} == {
        1_000: 63, 10_000: 511, 100_000: 4095, 1_000_000: 32767, 10_000_000: 524287}
    with pytest.raises(ValueError):
        nurand_a_items(5_000)


def test_nurand_range_and_skew():
    rng = random.Random(1)
    draws = [nurand(rng, 1023, 1, 2880) for _ in range(20_000)]
    assert min(draws) >= 1 and max(draws) <= 2880
    assert len(set(draws)) > 2000
    # Non-uniform: the most frequent values are drawn far more often than 20000/2880 ~ 7.
    counts = sorted((draws.count(v) for v in set(draws)), reverse=True)
    assert counts[0] > 3 * 20_000 / 2880
    # Same seed, same draws.
    rng2 = random.Random(1)
    assert [nurand(rng2, 1023, 1, 2880) for _ in range(100)] == draws[:100]
    rng3 = random.Random(2)
    assert all(0 <= nurand(rng3, 63, 0, 100) <= 100 for _ in range(1000))


def test_strings():
    rng = random.Random(3)
    assert len(A_STRING_CHARS) == 79 and len(set(A_STRING_CHARS)) == 79
    for _ in range(200):
        s = a_string(rng, 5, 9)
        assert 5 <= len(s) <= 9 and set(s) <= set(A_STRING_CHARS)
        d = n_string(rng, 9, 16)
        assert 9 <= len(d) <= 16 and d.isdigit()
    assert len(a_string(rng, 13)) == 13
    pool = StringPool(random.Random(4), size=1000)
    lengths = set()
    for _ in range(2000):
        s = pool.take(0, 6)
        lengths.add(len(s))
        assert set(s) <= set(A_STRING_CHARS)
    assert lengths == set(range(7))
    assert len(pool.take(13)) == 13
    draw = uniform_int(random.Random(5))
    assert {draw(1, 5) for _ in range(500)} == {1, 2, 3, 4, 5}
    assert StringPool(random.Random(9)).take(10, 20) == StringPool(random.Random(9)).take(10, 20)


def test_prefix_range():
    assert prefix_range("ABC") == ("ABC", "ABD")
    assert prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert prefix_range("\ud7ff") == ("\ud7ff", "\ue000")
    assert prefix_range("") == ("", b"")
    connection = apsw.Connection(":memory:")
    for text, key, hit in (("Alpha Book", "Alpha", True), ("alpha", "Alpha", False),
                           ("a*b?c[d and more", "a*b?c[d", True), ("axbyc[d", "a*b?c[d", False),
                           ("BABAOG", "BABAOG", True), ("BABAO", "BABAOG", False), ("BABAOH", "BABAOG", False),
                           ("anything", "", True), ("", "", True)):
        got = connection.execute("SELECT ? >= ? AND ? < ?", (text, prefix_range(key)[0], text,
                                                              prefix_range(key)[1])).fetchall()[0][0]
        assert bool(got) is hit, (text, key)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=6), st.text(max_size=4))
def test_prefix_range_is_exactly_starts_with(text, key):
    low, high = prefix_range(key)
    connection = apsw.Connection(":memory:")
    inside = connection.execute("SELECT ? >= ? AND ? < ?", (text, low, text, high)).fetchall()[0][0]
    assert bool(inside) is text.startswith(key)


def test_fixed_lists():
    assert len(SUBJECTS) == 24 and len(set(SUBJECTS)) == 24
    assert len(COUNTRIES) == 92
    assert COUNTRIES[0] == (1, "United States", 1.0, "Dollars")
    assert COUNTRIES[91] == (92, "Zambia", 2447.7, "Kwacha")


# --- 2. population -------------------------------------------------------------------------

def test_scale_rules():
    sc = scale(1000, 1)
    assert (sc.customers, sc.addresses, sc.authors, sc.orders, sc.countries) == (2880, 5760, 250, 2592, 92)
    sc = scale(10_000, 20)
    assert (sc.customers, sc.addresses, sc.authors, sc.orders) == (57_600, 115_200, 2_500, 51_840)
    sc = scale(1_000, 5)
    assert (sc.customers, sc.addresses, sc.orders) == (14_400, 28_800, 12_960)
    for items, ebs in ((1500, 1), (100, 1), (0, 1), (1000, 0), (1000, -1), (1000, 1.5), ("1000", 1),
                       (1000, 3000)):
        with pytest.raises(ValueError):
            scale(items, ebs)


def test_schema_file():
    tables, indexes = schema_statements()
    assert len(tables) == 10 and len(indexes) == 15
    connection = apsw.Connection(":memory:")
    for statement in tables + indexes:
        connection.execute(statement)
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == set(TABLES)
    pk = {table: [r[1] for r in sorted(connection.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5]) if r[5]]
          for table in TABLES}
    assert pk["order_line"] == ["ol_o_id", "ol_id"]
    assert pk["shopping_cart_line"] == ["scl_sc_id", "scl_i_id"]
    assert all(pk[t] for t in TABLES)


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A database populated at items=1000, ebs=1 (closed), and the report."""
    path = str(tmp_path_factory.mktemp("tpcw") / "populated.db")
    calls = []
    report = populate(path, items=1000, ebs=1, seed=7, progress=lambda d, t: calls.append((d, t)))
    return path, report, calls


def test_population_counts(populated):
    path, report, calls = populated
    conn = connect(path)
    try:
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        assert counts == report.rows
        sc = scale(1000, 1)
        assert {t: counts[t] for t in TABLES if t != "order_line"} == {
            "country": 92, "address": 2 * 2880, "customer": 2880, "author": 250, "item": 1000,
            "orders": sc.orders, "cc_xacts": sc.orders, "shopping_cart": 0, "shopping_cart_line": 0}
        # 1..5 lines per order, numbered from 1; about 3 on average.
        per_order = conn.execute(
            "SELECT COUNT(*), MIN(ol_id), MAX(ol_id) FROM order_line GROUP BY ol_o_id").fetchall()
        assert len(per_order) == sc.orders
        assert all(1 <= n <= 5 and lo == 1 and hi == n for n, lo, hi in per_order)
        assert 2.8 < counts["order_line"] / sc.orders < 3.2
        # Progress: monotonic, ending at the exact total.
        assert calls[-1] == (report.total_rows, report.total_rows)
        assert all(a[0] < b[0] for a, b in zip(calls, calls[1:]))
        assert report.total_rows == sum(counts.values())
    finally:
        conn.close()


def test_population_columns(populated):
    path, _, _ = populated
    conn = connect(path)
    q = lambda sql, *p: conn.execute(sql, p).fetchall()  # noqa: E731
    try:
        # Ids dense from 1.
        for table, key in (("customer", "c_id"), ("address", "addr_id"), ("author", "a_id"),
                           ("item", "i_id"), ("orders", "o_id"), ("cc_xacts", "cx_o_id"), ("country", "co_id")):
            n, lo, hi = q(f"SELECT COUNT(*), MIN({key}), MAX({key}) FROM {table}")[0]
            assert (lo, hi) == (1, n), table
        # Customers: DigSyl user names, lower-case passwords, fractional discounts, addresses.
        for c_id, uname, passwd in q("SELECT c_id, c_uname, c_passwd FROM customer"):
            assert uname == digsyl(c_id) and passwd == uname.lower()
        assert q("SELECT MIN(c_discount) >= 0, MAX(c_discount) <= 0.5, MIN(c_addr_id) >= 1, "
                 "MAX(c_addr_id) <= 5760, MIN(length(c_data)) >= 100, MAX(length(c_data)) <= 500 "
                 "FROM customer") == [(1, 1, 1, 1, 1, 1)]
        assert q("SELECT COUNT(*) FROM customer WHERE c_email NOT LIKE c_uname || '@%.com'") == [(0,)]
        assert q("SELECT COUNT(*) FROM customer WHERE c_since > c_last_login OR c_last_login > ?",
                 DEFAULT_NOW.date().isoformat()) == [(0,)]
        # Authors: every one has a book; items 1..250 are by author i.
        assert q("SELECT COUNT(*) FROM author WHERE a_id NOT IN (SELECT i_a_id FROM item)") == [(0,)]
        assert q("SELECT COUNT(*) FROM item WHERE i_id <= 250 AND i_a_id != i_id") == [(0,)]
        # Items: subjects, five distinct related items, prices, stock, search tokens.
        subjects = {s for (s,) in q("SELECT DISTINCT i_subject FROM item")}
        assert subjects <= set(SUBJECTS) and len(subjects) > 20
        for row in q("SELECT i_related1, i_related2, i_related3, i_related4, i_related5 FROM item"):
            assert len(set(row)) == 5 and all(1 <= r <= 1000 for r in row)
        assert q("SELECT COUNT(*) FROM item WHERE i_cost > i_srp OR i_cost < i_srp / 2 - 0.01 "
                 "OR i_stock NOT BETWEEN 10 AND 30 OR i_avail <= i_pub_date") == [(0,)]
        assert q("SELECT i_thumbnail, i_image FROM item WHERE i_id = 123") == [
            ("img23/thumb_123.gif", "img23/image_123.gif")]
        assert all(title.startswith(digsyl(i_id % 201, 7)) and 14 <= len(title) <= 60
                   for i_id, title in q("SELECT i_id, i_title FROM item"))
        assert all(lname.startswith(digsyl(a_id % 101, 7))
                   for a_id, lname in q("SELECT a_id, a_lname FROM author"))
        # Orders: dates within 60 days before now, totals, one cc_xacts each with the total.
        now = DEFAULT_NOW
        lo = (now - datetime.timedelta(days=60)).strftime("%Y-%m-%d %H:%M:%S")
        assert q("SELECT MIN(o_date) >= ?, MAX(o_date) < ? FROM orders", lo, now.strftime("%Y-%m-%d %H:%M:%S")) == [(1, 1)]
        assert q("SELECT COUNT(*) FROM orders JOIN cc_xacts ON cx_o_id = o_id "
                 "WHERE cx_xact_amt != o_total OR cx_xact_date != o_ship_date") == [(0,)]
        assert q("SELECT COUNT(*) FROM orders WHERE abs(o_tax - 0.0825 * o_sub_total) > 0.006") == [(0,)]
        lines = dict(q("SELECT ol_o_id, COUNT(*) FROM order_line GROUP BY ol_o_id"))
        for o_id, sub, tax, total in q("SELECT o_id, o_sub_total, o_tax, o_total FROM orders"):
            assert abs(total - (sub + tax + 3 + lines[o_id])) < 0.006
        # Indexes: the 13 UW ones and the 2 suggested; statistics from ANALYZE.
        indexes = {n for (n,) in q("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        assert {"author_a_lname", "item_i_title", "customer_c_uname", "orders_o_c_id", "scl_i_id",
                "item_subject_pub_date_title", "orders_c_id_date_id"} <= indexes
        assert len([n for n in indexes if not n.startswith("_evedb")]) == 15
        assert q("SELECT COUNT(*) > 0 FROM sqlite_stat1") == [(1,)]
    finally:
        conn.close()


def test_population_is_deterministic(populated, tmp_path):
    path, _, _ = populated
    conn = connect(path)
    root = conn.state_root()
    conn.close()
    again = str(tmp_path / "again.db")
    populate(again, items=1000, ebs=1, seed=7, batch_rows=1500)  # other script sizes: same rows
    other = str(tmp_path / "other.db")
    populate(other, items=1000, ebs=1, seed=8)
    roots = []
    for p in (again, other):
        c = connect(p)
        roots.append(c.state_root())
        c.close()
    assert roots[0] == root
    assert roots[1] != root


def test_populate_refusals(populated, tmp_path):
    path, _, _ = populated
    with pytest.raises(evedb.ProgrammingError, match="already has TPC-W tables"):
        populate(path, items=1000, ebs=1)
    with pytest.raises(ValueError, match="items must be one of"):
        populate(str(tmp_path / "x.db"), items=2000, ebs=1)
    with pytest.raises(ValueError, match="batch_rows"):
        populate(str(tmp_path / "y.db"), items=1000, ebs=1, batch_rows=0)


# --- 3. procedures on a small hand-made database --------------------------------------------

SMALL_COUNTRIES = [(1, "United States", 1.0, "Dollars"), (2, "Canada", 1.46712, "Dollars"),
                   (3, "Japan", 121.907, "Yen")]
SMALL_ADDRESSES = [(1, "1 Main St", "Apt 1", "Springfield", "IL", "62701", 1),
                   (2, "2 Oak Ave", "", "Toronto", "ON", "M5H", 2),
                   (3, "3 Sakura", "", "Tokyo", "TK", "100", 3),
                   (4, "4 Elm St", "", "Springfield", "IL", "62702", 1)]
# c_id, fname, lname, addr_id, discount
SMALL_CUSTOMERS = [(1, "Ann", "Alpha", 1, 0.10), (2, "Bob", "Beta", 2, 0.0), (3, "Cy", "Gamma", 3, 0.5)]
SMALL_AUTHORS = [(1, "Jane", "SMITH"), (2, "John", "SMITHERS"), (3, "Kim", "JONES")]
# i_id, title, a_id, pub_date, subject, related, cost, stock
SMALL_ITEMS = [
    (1, "Alpha Book", 1, "2000-01-01", "ARTS", (2, 3, 4, 5, 6), 10.00, 20),
    (2, "Beta Book", 2, "2001-01-01", "ARTS", (1, 3, 4, 5, 6), 20.00, 10),
    (3, "Gamma Book", 3, "2001-01-01", "ARTS", (1, 2, 4, 5, 6), 30.00, 15),
    (4, "alpha lower", 1, "1999-05-05", "ARTS", (1, 2, 3, 5, 6), 5.00, 30),
    (5, "Delta Book", 2, "2002-02-02", "HOME", (1, 2, 3, 4, 6), 8.00, 12),
    (6, "Epsilon", 3, "1990-01-01", "HOME", (1, 2, 3, 4, 5), 12.50, 25),
    (7, "Zeta", 1, "1995-01-01", "TRAVEL", (8, 1, 2, 3, 4), 7.25, 11),
    (8, "Eta", 2, "1996-01-01", "TRAVEL", (7, 1, 2, 3, 4), 3.00, 40),
]
# o_id, c_id, o_date, bill/ship address, lines [(i_id, qty)]
SMALL_ORDERS = [
    (1, 1, "2023-12-01 10:00:00", 1, [(1, 2), (2, 1)]),
    (2, 2, "2023-12-02 10:00:00", 2, [(2, 3), (3, 1)]),
    (3, 1, "2023-12-03 10:00:00", 1, [(3, 4), (5, 1)]),
    (4, 3, "2023-12-03 10:00:00", 3, [(1, 2)]),
    (5, 3, "2023-12-03 10:00:00", 3, []),          # same date as 4: the larger o_id is latest
]


def build_small(path: str) -> str:
    tables, indexes = schema_statements()
    conn = evedb.connect(path, workers=1, autocommit=True)
    try:
        with conn.transaction() as tx:
            for statement in tables + indexes:
                tx.execute(statement)
        with conn.transaction() as tx:
            tx.executemany("INSERT INTO country VALUES (?, ?, ?, ?)", SMALL_COUNTRIES)
            tx.executemany("INSERT INTO address VALUES (?, ?, ?, ?, ?, ?, ?)", SMALL_ADDRESSES)
            for c_id, fname, lname, addr_id, discount in SMALL_CUSTOMERS:
                tx.execute(
                    "INSERT INTO customer VALUES (?, ?, ?, ?, ?, ?, '555-0100', ?, '2023-01-01', "
                    "'2023-06-01', '2023-06-01 00:00:00', '2023-06-01 02:00:00', ?, 0.0, 0.0, "
                    "'1970-01-01', 'data')",
                    (c_id, digsyl(c_id), digsyl(c_id).lower(), fname, lname, addr_id,
                     f"{digsyl(c_id)}@example.com", discount))
            tx.executemany("INSERT INTO author VALUES (?, ?, ?, 'M', '1950-01-01', 'bio')", SMALL_AUTHORS)
            for i_id, title, a_id, pub, subject, related, cost, stock in SMALL_ITEMS:
                tx.execute(
                    "INSERT INTO item VALUES (?, ?, ?, ?, 'Pub', ?, 'desc', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "'2003-01-01', ?, 'ISBN', 100, 'PAPERBACK', '1x2x3')",
                    (i_id, title, a_id, pub, subject, *related, f"t{i_id}.gif", f"i{i_id}.gif",
                     cost * 1.25, cost, stock))
            for o_id, c_id, o_date, addr_id, lines in SMALL_ORDERS:
                tx.execute("INSERT INTO orders VALUES (?, ?, ?, 10.0, 0.83, 13.83, 'AIR', ?, ?, ?, 'SHIPPED')",
                           (o_id, c_id, o_date, o_date[:10], addr_id, addr_id))
                for ol_id, (i_id, qty) in enumerate(lines, 1):
                    tx.execute("INSERT INTO order_line VALUES (?, ?, ?, ?, 0.0, 'c')", (ol_id, o_id, i_id, qty))
                tx.execute("INSERT INTO cc_xacts VALUES (?, 'VISA', '4111', 'N', '2025-01-01', 'A', 13.83, ?, 1)",
                           (o_id, o_date[:10]))
    finally:
        conn.close()
    return path


@pytest.fixture(scope="module")
def small_template(tmp_path_factory):
    return build_small(str(tmp_path_factory.mktemp("small") / "small.db"))


@pytest.fixture
def small(small_template, tmp_path):
    conn = connect(copy_database(small_template, tmp_path / "small.db"))
    yield conn
    conn.close()


def _utc_today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def test_browse_procedures(small):
    assert call(small, "tpcw_home", 1) == [("Ann", "Alpha")]
    assert call(small, "tpcw_home", None) == []
    assert columns_of(small, "tpcw_home", None) == ["c_fname", "c_lname"]
    assert call(small, "tpcw_home", 99) == []
    assert call(small, "tpcw_promo", 1) == [(i, f"t{i}.gif") for i in (2, 3, 4, 5, 6)]
    assert call(small, "tpcw_promo", 7) == [(i, f"t{i}.gif") for i in (1, 2, 3, 4, 8)]
    # Newest first; equal dates by title, then id.
    assert [r[0] for r in call(small, "tpcw_new_products", "ARTS")] == [2, 3, 1, 4]
    assert call(small, "tpcw_new_products", "HOME")[0] == (5, "Delta Book", "John", "SMITHERS")
    assert call(small, "tpcw_new_products", "NOSUCH") == []
    # Best sellers: quantity over the recent orders; the tie (items 1 and 2, 4 each) by id.
    assert call(small, "tpcw_best_sellers", "ARTS") == [
        (3, "Gamma Book", "Kim", "JONES", 5), (1, "Alpha Book", "Jane", "SMITH", 4),
        (2, "Beta Book", "John", "SMITHERS", 4)]
    assert call(small, "tpcw_best_sellers", "TRAVEL") == []
    detail = dict(zip(columns_of(small, "tpcw_product_detail", 3), call(small, "tpcw_product_detail", 3)[0]))
    assert (detail["i_id"], detail["i_title"], detail["a_fname"], detail["a_lname"], detail["i_cost"],
            detail["i_stock"], detail["i_related1"]) == (3, "Gamma Book", "Kim", "JONES", 30.0, 15, 1)
    assert call(small, "tpcw_product_detail", 99) == []
    assert call(small, "tpcw_admin_request", 3) == call(small, "tpcw_product_detail", 3)
    # Searches: by title then id; title/author keys are case-sensitive prefixes.
    assert [r[0] for r in call(small, "tpcw_search_subject", "ARTS")] == [1, 2, 3, 4]
    assert call(small, "tpcw_search_title", "Alpha") == [(1, "Alpha Book", "Jane", "SMITH")]
    assert call(small, "tpcw_search_title", "alpha") == [(4, "alpha lower", "Jane", "SMITH")]
    assert call(small, "tpcw_search_title", "Alpha*") == []
    assert [r[0] for r in call(small, "tpcw_search_author", "SMITH")] == [1, 2, 5, 8, 7, 4]
    assert [r[0] for r in call(small, "tpcw_search_author", "SMITHE")] == [2, 5, 8]
    assert call(small, "tpcw_search_author", "smith") == []
    assert call(small, "tpcw_customer_registration", 2) == [("AL",)]
    assert call(small, "tpcw_customer_registration", None) == []


def test_cart_procedures(small):
    started = _utc_today()
    (sc_id,), = call(small, "tpcw_cart_create", 7)
    assert sc_id % 10 == 7 and sc_id >= 1 << 24
    (other,), = call(small, "tpcw_cart_create", 7)
    assert other != sc_id and other % 10 == 7
    (random_partition,), = call(small, "tpcw_cart_create", None)
    assert random_partition not in (sc_id, other)
    line = lambda i, q: (i, SMALL_ITEMS[i - 1][1], q, SMALL_ITEMS[i - 1][6], SMALL_ITEMS[i - 1][6] * 1.25, "PAPERBACK")  # noqa: E731
    assert columns_of(small, "tpcw_cart_refresh", other, 2) == list(P._CART_COLUMNS)
    assert call(small, "tpcw_cart_add", sc_id, 1, None) == [line(1, 1)]
    assert call(small, "tpcw_cart_add", sc_id, 1, None) == [line(1, 2)]
    assert call(small, "tpcw_cart_add", sc_id, 3, None) == [line(1, 2), line(3, 1)]
    assert call(small, "tpcw_cart_update", sc_id, "1:5,3:0", None) == [line(1, 5)]
    assert call(small, "tpcw_cart_update", sc_id, "1:2,4:9", None) == [line(1, 2)]  # 4 not in cart
    # Emptied: the related item of the random item goes in (item 7's related1 is 8).
    assert call(small, "tpcw_cart_update", sc_id, "1:0", 7) == [line(8, 1)]
    assert call(small, "tpcw_cart_refresh", sc_id, 1) == [line(8, 1)]
    # A fresh cart viewed without adding: a random item's related item, from db.random.
    filled = call(small, "tpcw_cart_refresh", random_partition, None)
    assert len(filled) == 1 and filled[0][2] == 1
    times = dict(small.execute("SELECT sc_id, sc_time FROM shopping_cart").fetchall())
    assert set(times) == {sc_id, other, random_partition}
    assert started <= times[sc_id][:10] <= _utc_today()
    with pytest.raises(evedb.ProgrammingError):
        call(small, "tpcw_cart_update", sc_id, "1-2", None)
    with pytest.raises(evedb.ProgrammingError):
        call(small, "tpcw_cart_add", None, 1, None)
    assert call(small, "tpcw_cart_refresh", sc_id, 1) == [line(8, 1)]  # failures changed nothing


def _cart(conn, partition, *items):
    (sc_id,), = call(conn, "tpcw_cart_create", partition)
    for i_id, qty in items:
        for _ in range(qty):
            call(conn, "tpcw_cart_add", sc_id, i_id, None)
    return sc_id


def test_buy_request_and_confirm(small):
    sc_id = _cart(small, 1, (1, 2), (2, 1))  # 2 x 10.00 + 1 x 20.00 = 40.00 gross
    login_before = small.execute("SELECT c_login FROM customer WHERE c_id = 1").fetchone()[0]
    assert call(small, "tpcw_buy_request", 1, "wrong", sc_id) == []
    assert call(small, "tpcw_buy_request", 99, "x", sc_id) == []
    assert small.execute("SELECT c_login FROM customer WHERE c_id = 1").fetchone()[0] == login_before
    # Discount 10 %: sub 36.00, tax 2.97, shipping 3 + 3 items, total 44.97.
    assert call(small, "tpcw_buy_request", 1, "og", sc_id) == [
        (1, "OG", "og", "Ann", "Alpha", 0.1, 2, 36.0, 2.97, 6.0, 44.97)]
    assert columns_of(small, "tpcw_buy_request", 1, "og", sc_id)[-4:] == [
        "sc_sub_total", "sc_tax", "sc_ship_cost", "sc_total"]
    login, expiration = small.execute("SELECT c_login, c_expiration FROM customer WHERE c_id = 1").fetchone()
    assert login != login_before and login[:10] <= _utc_today()
    assert (datetime.datetime.fromisoformat(expiration) - datetime.datetime.fromisoformat(login)
            == datetime.timedelta(hours=2))

    [(o_id, lines, sub, tax, ship, total)] = call(
        small, "tpcw_buy_confirm", sc_id, 1, "VISA", "4111111111111111", "Ann Alpha", "2026-01-01", "AIR")
    assert (lines, sub, tax, ship, total) == (2, 36.0, 2.97, 6.0, 44.97) and o_id >= 1 << 24
    order = small.execute("SELECT o_c_id, o_sub_total, o_tax, o_total, o_ship_type, o_bill_addr_id, "
                          "o_ship_addr_id, o_status, o_date, o_ship_date FROM orders WHERE o_id = ?", (o_id,)).fetchone()
    assert order[:8] == (1, 36.0, 2.97, 44.97, "AIR", 1, 1, "PENDING")
    ship_days = (datetime.date.fromisoformat(order[9]) - datetime.date.fromisoformat(order[8][:10])).days
    assert 1 <= ship_days <= 7
    assert small.execute("SELECT ol_id, ol_i_id, ol_qty, ol_discount FROM order_line WHERE ol_o_id = ? "
                         "ORDER BY ol_id", (o_id,)).fetchall() == [(1, 1, 2, 0.1), (2, 2, 1, 0.1)]
    # Stock: 20 - 2 = 18; 10 - 1 = 9 < 10, so restocked by 21 to 30.
    assert small.execute("SELECT i_id, i_stock FROM item WHERE i_id IN (1, 2) ORDER BY i_id").fetchall() == [
        (1, 18), (2, 30)]
    assert small.execute("SELECT cx_type, cx_num, cx_name, cx_expire, cx_auth_id, cx_xact_amt, cx_co_id "
                         "FROM cc_xacts WHERE cx_o_id = ?", (o_id,)).fetchone() == (
        "VISA", "4111111111111111", "Ann Alpha", "2026-01-01", None, 44.97, 1)
    assert small.execute("SELECT COUNT(*) FROM shopping_cart_line WHERE scl_sc_id = ?", (sc_id,)).fetchone() == (0,)
    assert small.execute("SELECT COUNT(*) FROM shopping_cart WHERE sc_id = ?", (sc_id,)).fetchone() == (1,)
    assert call(small, "tpcw_buy_confirm", sc_id, 99, "VISA", "1", "N", "2026-01-01", "AIR") == []
    with pytest.raises(evedb.ProgrammingError, match="c_id must be an integer"):
        call(small, "tpcw_buy_confirm", sc_id, "1", "VISA", "1", "N", "2026-01-01", "AIR")

    # Order Display: the new order is the latest; its header and its lines.
    rows = call(small, "tpcw_order_display", "OG", "og")
    names = columns_of(small, "tpcw_order_display", "OG", "og")
    assert [r[0] for r in rows] == [o_id, o_id]
    first = dict(zip(names, rows[0]))
    assert (first["c_fname"], first["o_total"], first["cx_type"], first["bill_country"], first["ship_country"],
            first["bill_street1"], first["ol_id"], first["ol_i_id"], first["i_title"], first["ol_qty"]) == (
        "Ann", 44.97, "VISA", "United States", "United States", "1 Main St", 1, 1, "Alpha Book", 2)
    assert call(small, "tpcw_order_display", "OG", "bad") == []


def test_order_display_loaded_orders(small):
    rows = call(small, "tpcw_order_display", "AL", "al")
    names = columns_of(small, "tpcw_order_display", "AL", "al")
    assert [(r[0], r[names.index("ol_id")], r[names.index("ol_i_id")]) for r in rows] == [(2, 1, 2), (2, 2, 3)]
    assert rows[0][names.index("bill_country")] == "Canada"
    # Customer 3: orders 4 and 5 share a date; 5 (no lines) is the latest: one row, NULL line.
    [row] = call(small, "tpcw_order_display", "RI", "ri")
    assert row[0] == 5 and row[names.index("ol_id")] is None
    assert call(small, "tpcw_order_display", "NOSUCH", "x") == []


def test_new_customer_and_new_address(small):
    sc_id = _cart(small, 4, (6, 1))  # 12.50
    [row] = call(small, "tpcw_buy_request_new", sc_id, "Nia", "New", "2 Oak Ave", "", "Toronto", "ON",
                 "M5H", "Canada", "555-0199", "nia@example.com", "1980-02-03", "likes books")
    c_id, uname, passwd, fname, lname, discount, lines, sub, tax, ship, total = row
    assert c_id >= 1 << 24 and uname == digsyl(c_id) and passwd == uname.lower()
    assert (fname, lname, lines) == ("Nia", "New", 1) and 0 <= discount <= 0.5
    assert sub == round(12.5 * (1 - discount), 2) and ship == 4.0
    customer = small.execute("SELECT c_uname, c_addr_id, c_discount, c_birthdate, c_since FROM customer "
                             "WHERE c_id = ?", (c_id,)).fetchone()
    assert customer[:4] == (uname, 2, discount, "1980-02-03")  # the identical address 2 reused
    assert small.execute("SELECT COUNT(*) FROM address").fetchone() == (4,)
    assert call(small, "tpcw_customer_registration", c_id) == [(uname,)]
    # The new customer logs in (Buy Request) and buys, shipping to a new address in Japan.
    assert call(small, "tpcw_buy_request", c_id, passwd, sc_id)[0][0] == c_id
    [(o_id, *_)] = call(small, "tpcw_buy_confirm", sc_id, c_id, "AMEX", "3782", "Nia New", "2027-01-01",
                        "SHIP", "9 Far Rd", "", "Osaka", "OS", "530", "Japan")
    ship_addr = small.execute("SELECT o_ship_addr_id, o_bill_addr_id FROM orders WHERE o_id = ?", (o_id,)).fetchone()
    assert ship_addr[1] == 2 and ship_addr[0] >= 1 << 24
    assert small.execute("SELECT addr_city, addr_co_id FROM address WHERE addr_id = ?", (ship_addr[0],)).fetchone() == (
        "Osaka", 3)
    assert small.execute("SELECT cx_co_id FROM cc_xacts WHERE cx_o_id = ?", (o_id,)).fetchone() == (3,)
    [display] = call(small, "tpcw_order_display", uname, passwd)
    names = columns_of(small, "tpcw_order_display", uname, passwd)
    assert (display[0], display[names.index("ship_country")], display[names.index("bill_country")]) == (
        o_id, "Japan", "Canada")
    with pytest.raises(evedb.ProgrammingError, match="unknown country"):
        call(small, "tpcw_buy_request_new", sc_id, "A", "B", "s", "", "c", "st", "z", "Atlantis",
             "1", "e", "1980-01-01", "d")


def test_admin_confirm(small):
    today = _utc_today()
    [row] = call(small, "tpcw_admin_confirm", 2, 99.5, "new/i2.gif", "new/t2.gif")
    names = columns_of(small, "tpcw_admin_request", 2)
    got = dict(zip(names, row))
    assert (got["i_cost"], got["i_image"], got["i_thumbnail"]) == (99.5, "new/i2.gif", "new/t2.gif")
    assert today <= got["i_pub_date"] <= _utc_today()
    # Bought by customers 1 and 2 (who bought item 2): item 3 x5, item 1 x2, item 5 x1; then
    # padded with the ids after the last one found.
    assert [got[f"i_related{k}"] for k in range(1, 6)] == [3, 1, 5, 6, 7]
    # Nobody bought item 7: all five padded, wrapping and skipping the item itself.
    [row] = call(small, "tpcw_admin_confirm", 7, 1.0, "a", "b")
    assert row[names.index("i_related1"):names.index("i_related5") + 1] == (8, 1, 2, 3, 4)
    assert call(small, "tpcw_admin_confirm", 99, 1.0, "a", "b") == []


# --- 4. every procedure on the populated database -----------------------------------------

def test_best_sellers_equals_the_reference_query(populated, tmp_path):
    """The rewritten T8 gives the reference form's rows, in its order, for every subject, also
    after orders placed through the procedures."""
    path, _, _ = populated
    conn = connect(copy_database(path, tmp_path / "bs.db"))
    try:
        for customer in (5, 6, 7):
            sc_id = _cart(conn, customer, (10 + customer, 3), (300 + customer, 2))
            call(conn, "tpcw_buy_confirm", sc_id, customer, "VISA", "1", "N", "2026-01-01", "AIR")
        plain = apsw.Connection(str(tmp_path / "bs.db"))  # the same file, plain SQLite
        nonempty = 0
        for subject in SUBJECTS:
            expected = plain.execute(P.BEST_SELLERS_REFERENCE_SQL,
                                     (P.RECENT_ORDERS, subject, P.SEARCH_LIMIT)).fetchall()
            assert call(conn, "tpcw_best_sellers", subject) == expected, subject
            nonempty += bool(expected)
        assert nonempty == len(SUBJECTS)
    finally:
        conn.close()


def test_procedures_on_populated_database(populated, tmp_path):
    path, _, _ = populated
    conn = connect(copy_database(path, tmp_path / "run.db"))
    try:
        for subject in SUBJECTS[:3]:
            assert 0 < len(call(conn, "tpcw_new_products", subject)) <= 50
            assert 0 < len(call(conn, "tpcw_best_sellers", subject)) <= 50
            assert 0 < len(call(conn, "tpcw_search_subject", subject)) <= 50
        # RBE-style search keys hit (DigSyl tokens at load).
        assert call(conn, "tpcw_search_title", digsyl(17, 7))
        assert call(conn, "tpcw_search_author", digsyl(17, 7))
        assert call(conn, "tpcw_home", 5)[0][0] and len(call(conn, "tpcw_promo", 5)) == 5
        assert call(conn, "tpcw_product_detail", 5)[0][0] == 5
        assert call(conn, "tpcw_customer_registration", 5) == [(digsyl(5),)]
        sc_id = _cart(conn, 3, (10, 2), (20, 1))
        assert len(call(conn, "tpcw_cart_refresh", sc_id, None)) == 2
        assert call(conn, "tpcw_buy_request", 5, digsyl(5).lower(), sc_id)[0][6] == 2
        [(o_id, lines, *_)] = call(conn, "tpcw_buy_confirm", sc_id, 5, "VISA", "1", "N", "2026-01-01", "AIR")
        assert lines == 2
        assert call(conn, "tpcw_order_display", digsyl(5), digsyl(5).lower())[0][0] == o_id
        assert call(conn, "tpcw_admin_confirm", 10, 5.0, "i", "t")[0][0] == 10
    finally:
        conn.close()


# --- 5. mixer rules ------------------------------------------------------------------------

def test_every_procedure_has_a_rule():
    rules = load_rules("tpcw")
    registered = {name for name in dir(P) if name.startswith("tpcw_") and callable(getattr(P, name))}
    assert registered == set(P.PROCEDURE_NAMES)
    assert set(rules.procedures) == registered
    read_only = {"tpcw_home", "tpcw_promo", "tpcw_new_products", "tpcw_best_sellers",
                 "tpcw_product_detail", "tpcw_search_subject", "tpcw_search_title",
                 "tpcw_search_author", "tpcw_customer_registration", "tpcw_order_display",
                 "tpcw_admin_request"}
    assert {name for name, rule in rules.procedures.items() if rule.read_only} == read_only
    tables = set(TABLES)
    for name, rule in rules.procedures.items():
        assert (rule.reads | rule.writes) <= tables, name
    # Carts by partition: a cart created in partition 3 and calls on it share one key.
    access = rules.access("tpcw_cart_create", (3,))
    assert ("shopping_cart", ("%10", 3)) in access.keys
    assert rules.access("tpcw_cart_add", (123, 5, None)).keys == {
        ("shopping_cart", ("%10", 3)), ("shopping_cart_line", ("%10", 3))}
    assert rules.access("tpcw_cart_create", (None,)).keys == frozenset()  # random: table-level


class RecordingDB:
    """The `db` a procedure gets, on a plain apsw connection, recording what SQLite saw."""

    def __init__(self, connection, timestamp_ms, seed, seq, position):
        self.connection = connection
        self.timestamp_ms = timestamp_ms
        self.random = random.Random((seed << 32) ^ position ^ 0x5EED)
        self.seq = seq
        self.position = position
        self._ids = 0
        self.reads: set[str] = set()
        self.writes: set[str] = set()

    def new_id(self) -> int:
        self._ids += 1
        return (self.seq << 24) | (self.position << 8) | self._ids

    def authorizer(self, action, first, second, database, trigger):
        if action == apsw.SQLITE_READ and first:
            self.reads.add(first.lower())
        elif action in (apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE) and first:
            self.writes.add(first.lower())
        return apsw.SQLITE_OK

    def execute(self, sql, params=None) -> ProcedureCursor:
        cursor = self.connection.cursor()
        columns = []

        def trace(_cursor, _sql, _bindings):
            columns.extend(name for name, _ in _cursor.get_description())
            return True

        cursor.exec_trace = trace
        rows = [tuple(r) for r in cursor.execute(sql, params or (), can_cache=False).fetchall()]
        changes = self.connection.changes()
        return ProcedureCursor(tuple(columns), rows, changes, self.connection.last_insert_rowid())


# Keyed tables and the column holding the key the rule's argument names.
_KEY_COLUMNS = {"shopping_cart": 0, "shopping_cart_line": 0, "customer": 0}


class DebugRunner:
    """Calls procedures directly, as a worker would, one transaction each, and checks them."""

    def __init__(self, path, seed=1):
        self.connection = apsw.Connection(path)
        self.seed = seed
        self.seq = 1000
        self.rules = load_rules("tpcw")
        self.seen: dict[str, tuple[set, set]] = {}
        self.results = []

    def __call__(self, name, *args):
        self.seq += 1
        db = RecordingDB(self.connection, 1_700_000_000_000 + self.seq * 1000, self.seed, self.seq, 3)
        self.connection.authorizer = db.authorizer
        session = apsw.Session(self.connection, "main")
        session.attach()
        self.connection.execute("BEGIN")
        try:
            result = getattr(P, name)(db, *args)
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        finally:
            self.connection.authorizer = None
        changeset = session.changeset()
        session.close()
        rule = self.rules.procedures[name]
        assert db.reads <= rule.reads, (name, db.reads - rule.reads)
        assert db.writes <= rule.writes, (name, db.writes - rule.writes)
        reads, writes = self.seen.setdefault(name, (set(), set()))
        reads |= db.reads
        writes |= db.writes
        # Rows written to keyed tables: only those the rule's keys name.
        keys = self.rules.access(name, args).keys
        for change in apsw.Changeset.iter(changeset):
            table = change.name
            if any(t == table for t, _ in keys):
                row = change.new if change.op == "INSERT" else change.old
                value = row[_KEY_COLUMNS[table]]
                assert any(t == table and (key == (value,) or (key[0] == "%10" and value % 10 == key[1]))
                           for t, key in keys), (name, table, value, keys)
        rows = result.rows if isinstance(result, ProcedureCursor) else result
        self.results.append((name, args, [tuple(r) for r in rows]))
        return rows

    def dump(self):
        return {t: self.connection.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}

    def close(self):
        self.connection.close()


def _exercise(run: DebugRunner) -> None:
    """Every procedure, along every path that touches a different set of tables."""
    run("tpcw_home", 5)
    run("tpcw_home", None)
    run("tpcw_promo", 5)
    run("tpcw_new_products", "ARTS")
    run("tpcw_best_sellers", "ARTS")
    run("tpcw_product_detail", 5)
    run("tpcw_search_subject", "HOME")
    run("tpcw_search_title", digsyl(3, 7))
    run("tpcw_search_author", digsyl(3, 7))
    [(sc_id,)] = run("tpcw_cart_create", 6)
    [(sc_other,)] = run("tpcw_cart_create", None)
    run("tpcw_cart_refresh", sc_id, None)                # empty: random item from db.random
    run("tpcw_cart_add", sc_id, 11, None)
    run("tpcw_cart_add", sc_id, 11, None)
    run("tpcw_cart_add", sc_id, 12, None)
    run("tpcw_cart_update", sc_id, "11:4,12:0", None)
    run("tpcw_cart_refresh", sc_id, 7)
    run("tpcw_cart_add", sc_other, 13, None)
    run("tpcw_customer_registration", 5)
    run("tpcw_customer_registration", None)
    run("tpcw_buy_request", 5, "bad", sc_id)
    run("tpcw_buy_request", 5, digsyl(5).lower(), sc_id)
    run("tpcw_buy_confirm", sc_id, 5, "VISA", "4111", "N", "2026-01-01", "AIR")
    [new] = run("tpcw_buy_request_new", sc_other, "F", "L", "1 New St", "", "Town", "ST", "12345",
                "Canada", "555", "f@l.com", "1990-01-01", "data")
    run("tpcw_buy_request_new", sc_other, "G", "M", "1 New St", "", "Town", "ST", "12345",
        "Canada", "555", "g@m.com", "1991-01-01", "data")  # reuses the address
    run("tpcw_buy_confirm", sc_other, new[0], "AMEX", "3782", "F L", "2027-01-01", "SHIP",
        "2 Other St", "", "City", "ST", "54321", "Japan")
    run("tpcw_buy_confirm", sc_id, 999_999, "VISA", "1", "N", "2026-01-01", "AIR")  # no customer
    run("tpcw_order_display", digsyl(5), digsyl(5).lower())
    run("tpcw_order_display", digsyl(5), "bad")
    run("tpcw_admin_request", 5)
    run("tpcw_admin_confirm", 5, 12.5, "img/i.gif", "img/t.gif")
    run("tpcw_admin_confirm", 999_999, 12.5, "img/i.gif", "img/t.gif")


def test_rules_match_what_sqlite_sees(populated, tmp_path):
    """Debug mode: the authorizer's tables are within each rule, and the rules are tight."""
    path, _, _ = populated
    run = DebugRunner(copy_database(path, tmp_path / "debug.db"))
    try:
        _exercise(run)
    finally:
        run.close()
    assert set(run.seen) == set(P.PROCEDURE_NAMES)
    for name, (reads, writes) in run.seen.items():
        rule = run.rules.procedures[name]
        assert (reads, writes) == (set(rule.reads), set(rule.writes)), name


def test_procedures_are_deterministic(populated, tmp_path):
    """Same batch time, seed, seq and position: same results and same state, twice over."""
    path, _, _ = populated
    dumps, results = [], []
    for copy in ("one.db", "two.db"):
        run = DebugRunner(copy_database(path, tmp_path / copy), seed=42)
        try:
            _exercise(run)
            dumps.append(run.dump())
            results.append(run.results)
        finally:
            run.close()
    assert results[0] == results[1]
    assert dumps[0] == dumps[1]
    assert dumps[0]["orders"] != []


def test_cli_populate(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    target = str(tmp_path / "cli.db")
    result = CliRunner().invoke(main, ["tpcw", "populate", target, "--items", "1000", "--ebs", "1",
                                       "--seed", "3", "--no-analyze"])
    assert result.exit_code == 0, result.output
    assert "customer" in result.output and "rows/s" in result.output
    result = CliRunner().invoke(main, ["tpcw", "populate", target, "--items", "1000", "--ebs", "1"])
    assert result.exit_code != 0 and "already has TPC-W tables" in result.output
    result = CliRunner().invoke(main, ["tpcw", "populate", str(tmp_path / "z.db"), "--items", "999", "--ebs", "1"])
    assert result.exit_code != 0 and "items must be one of" in result.output
