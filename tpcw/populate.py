"""Load a TPC-W database (tpcw.md section 2) through evedb's DB-API.

    from tpcw.populate import populate
    report = populate("shop.db", items=1000, ebs=1, seed=12345, progress=print)
    report = populate("evedb://127.0.0.1:7480,127.0.0.1:7481", items=10_000, ebs=10)

Scale (section 2.1): NUM_ITEMS in {1K, 10K, 100K, 1M, 10M}; customers = 2880 x EBs;
addresses = 2 x customers; authors = items / 4; orders = 0.9 x customers, each with
U[1,5] order lines and one cc_xacts row; 92 countries; carts empty.  `scale()` computes
the counts; `populate()` refuses anything else with a ValueError saying why.

Determinism: one `random.Random` per table, seeded from (seed, table name), and a fixed
`now` (DEFAULT_NOW unless given) for every date: the same arguments give the same rows, on
any machine, so the same state root.  Rows are generated in id order.

Column rules follow section 2.4 (UW TPCW_Populate) with these choices:
- A_LNAME and I_TITLE (section 2.5, option b): a DigSyl token, so the RBE's search keys hit.
  A_LNAME = DigSyl(a_id mod (items/10 + 1), 7) + a-string(0, 6) and
  I_TITLE = DigSyl(i_id mod (items/5 + 1), 7) + a-string(0, 46): the RBE's author key
  DigSyl(NURand(A, 0, items/10), 7) and title key DigSyl(NURand(A, 0, items/5), 7) are
  prefixes of about 2.5 authors' names / 5 titles;
- C_DISCOUNT is a fraction 0.00..0.50 (as the UW loader; procedures use it as a fraction);
- n-strings are stored as TEXT (no lost leading zeros, no overflow);
- strings come from `StringPool` (uniform characters; faster than one draw per character).

Speed: rows go in multi-row INSERT statements (`INSERT ... VALUES (...), (...), ...`), a few
thousand rows per atomic script (`conn.transaction()`), one script per round trip; the
indexes are created after the load, then the TPC-W tables are ANALYZEd (evedb accepts ANALYZE
from clients), all in one script: evedb re-hashes the whole database after every script that
changes the schema.
"""

from __future__ import annotations

import datetime
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import evedb

from .random_helpers import (
    BACKINGS,
    CARD_TYPES,
    COUNTRIES,
    DIGITS,
    ITEM_SCALES,
    ORDER_STATUSES,
    SHIP_TYPES,
    SUBJECTS,
    StringPool,
    digsyl,
    uniform_int,
)

__all__ = ["DEFAULT_NOW", "DEFAULT_SEED", "TABLES", "Scale", "PopulateReport", "scale",
           "schema_sql", "schema_statements", "populate"]

DEFAULT_SEED = 12345  # Eve's loader seed
DEFAULT_NOW = datetime.datetime(2024, 1, 1, 12, 0, 0)  # the load's "now" (UTC); never the clock
TABLES = ("country", "address", "customer", "author", "item", "orders", "order_line",
          "cc_xacts", "shopping_cart", "shopping_cart_line")

# Ids made by db.new_id() at run time are >= 2**24 (batch seq >= 1); loaded ids stay below.
_ID_LIMIT = 1 << 24
# Rows per INSERT statement: multi-row statements spread evedb's per-statement cost; 32 rows
# of at most 22 columns stay under even the old 999-parameter limit, and keep the one parse
# (sqlglot, in evedb's access analysis) of each distinct statement text cheap.
_ROWS_PER_STATEMENT = 32
_SCRIPT_BYTES = 8 << 20         # keep a script well under the client frame limit (16 MiB)


# --- schema --------------------------------------------------------------------------------

def schema_sql() -> str:
    """The text of tpcw/schema.sql (package data)."""
    # By file path, not importlib.resources: an editable install made before tpcw/ had an
    # __init__.py maps tpcw as a namespace package, which resources cannot read from.
    return (Path(__file__).parent / "schema.sql").read_text(encoding="utf-8")


def schema_statements() -> tuple[list[str], list[str]]:
    """(CREATE TABLE statements, CREATE INDEX statements) of schema.sql, in file order."""
    tables, indexes, current = [], [], []
    for line in schema_sql().splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped and not current:
            continue
        current.append(stripped)
        if stripped.endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            current = []
            if statement.upper().startswith("CREATE TABLE"):
                tables.append(statement)
            elif statement.upper().startswith("CREATE INDEX"):
                indexes.append(statement)
            else:
                raise ValueError(f"unexpected statement in schema.sql: {statement[:60]!r}")
    return tables, indexes


# --- scale ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    items: int
    ebs: int
    customers: int
    addresses: int
    authors: int
    orders: int
    countries: int = len(COUNTRIES)

    def fixed_rows(self) -> dict[str, int]:
        """Row counts of every table but order_line (U[1,5] per order, 3 on average)."""
        return {"country": self.countries, "address": self.addresses, "customer": self.customers,
                "author": self.authors, "item": self.items, "orders": self.orders,
                "cc_xacts": self.orders, "shopping_cart": 0, "shopping_cart_line": 0}


def scale(items: int, ebs: int) -> Scale:
    """The section 2.1 table sizes; ValueError for an illegal NUM_ITEMS or NUM_EBS."""
    if isinstance(items, bool) or not isinstance(items, int) or items not in ITEM_SCALES:
        raise ValueError(f"items must be one of {', '.join(f'{n:,}' for n in sorted(ITEM_SCALES))} "
                         f"(TPC-W's NUM_ITEMS), got {items!r}")
    if isinstance(ebs, bool) or not isinstance(ebs, int) or ebs < 1:
        raise ValueError(f"ebs (NUM_EBS) must be a positive integer, got {ebs!r}")
    customers = 2880 * ebs
    if 2 * customers >= _ID_LIMIT:
        raise ValueError(f"ebs={ebs} is too large: {2 * customers:,} addresses would reach the ids "
                         f"db.new_id() hands out at run time (>= 2**24); use ebs <= "
                         f"{(_ID_LIMIT - 1) // (2 * 2880)}")
    return Scale(items=items, ebs=ebs, customers=customers, addresses=2 * customers,
                 authors=items // 4, orders=customers * 9 // 10)


# --- row generators ------------------------------------------------------------------------

class _Dates:
    """Date and timestamp strings relative to the fixed `now`."""

    def __init__(self, now: datetime.datetime):
        self.now = now
        self.today = now.date()
        self._today_ordinal = self.today.toordinal()
        self._days: dict[int, str] = {}

    def day(self, offset: int) -> str:
        """today + offset days, 'YYYY-MM-DD'."""
        text = self._days.get(offset)
        if text is None:
            text = self._days[offset] = datetime.date.fromordinal(self._today_ordinal + offset).isoformat()
        return text

    def stamp(self, delta: datetime.timedelta = datetime.timedelta()) -> str:
        return (self.now + delta).strftime("%Y-%m-%d %H:%M:%S")


def _rng(seed: int, table: str) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: the same on every machine and run.
    return random.Random(f"tpcw:{seed}:{table}")


def _chooser(rng: random.Random):
    random = rng.random

    def choice(options: tuple):
        return options[int(random() * len(options))]

    return choice


def _random_day(randint, first_year: int, last_year: int) -> tuple[int, int, int]:
    year = randint(first_year, last_year)
    month = randint(0, 11)
    day = randint(1, (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month])
    return year, month + 1, day


def _countries(_scale, _seed, _dates) -> Iterator[tuple]:
    yield from COUNTRIES


def _addresses(sc: Scale, seed: int, _dates) -> Iterator[tuple]:
    rng = _rng(seed, "address")
    pool = StringPool(rng)
    take, randint = pool.take, uniform_int(rng)
    for addr_id in range(1, sc.addresses + 1):
        yield (addr_id, take(15, 40), take(15, 40), take(4, 30), take(2, 20), take(5, 10),
               randint(1, len(COUNTRIES)))


def _customers(sc: Scale, seed: int, dates: _Dates) -> Iterator[tuple]:
    rng = _rng(seed, "customer")
    pool = StringPool(rng)
    digits = StringPool(rng, DIGITS, 1 << 12)
    take, phone, randint = pool.take, digits.take, uniform_int(rng)
    login = dates.stamp()
    expiration = dates.stamp(datetime.timedelta(hours=2))
    for c_id in range(1, sc.customers + 1):
        uname = digsyl(c_id)
        since = -randint(1, 730)
        last_login = min(since + randint(0, 60), 0)
        year, month, day = _random_day(randint, 1880, 2000)
        yield (c_id, uname, uname.lower(), take(8, 15), take(8, 15),
               randint(1, sc.addresses), phone(9, 16), f"{uname}@{take(2, 9)}.com",
               dates.day(since), dates.day(last_login), login, expiration,
               randint(0, 50) / 100, 0.0, randint(0, 99999) / 100,
               f"{year:04d}-{month:02d}-{day:02d}", take(100, 500))


def _authors(sc: Scale, seed: int, _dates) -> Iterator[tuple]:
    rng = _rng(seed, "author")
    pool = StringPool(rng)
    take, randint = pool.take, uniform_int(rng)
    keys = sc.items // 10 + 1  # the RBE's author keys: DigSyl(NURand(A, 0, items/10), 7)
    for a_id in range(1, sc.authors + 1):
        year, month, day = _random_day(randint, 1800, 1990)
        yield (a_id, take(3, 20), digsyl(a_id % keys, 7) + take(0, 6), take(1, 20),
               f"{year:04d}-{month:02d}-{day:02d}", take(125, 500))


def _items(sc: Scale, seed: int, _dates) -> Iterator[tuple]:
    rng = _rng(seed, "item")
    pool = StringPool(rng)
    take, randint, choice = pool.take, uniform_int(rng), _chooser(rng)
    keys = sc.items // 5 + 1  # the RBE's title keys: DigSyl(NURand(A, 0, items/5), 7)
    for i_id in range(1, sc.items + 1):
        a_id = i_id if i_id <= sc.authors else randint(1, sc.authors)
        pub_date = datetime.date(*_random_day(randint, 1930, 2000))
        related = []
        while len(related) < 5:  # five distinct items (the item itself allowed, as UW)
            candidate = randint(1, sc.items)
            if candidate not in related:
                related.append(candidate)
        srp = randint(100, 99999) / 100
        cost = round(srp - (randint(0, 50) / 100) * srp, 2)
        avail = pub_date + datetime.timedelta(days=randint(1, 30))
        dimensions = f"{randint(1, 9999) / 100:.2f}x{randint(1, 9999) / 100:.2f}x{randint(1, 9999) / 100:.2f}"
        yield (i_id, digsyl(i_id % keys, 7) + take(0, 46), a_id, pub_date.isoformat(), take(14, 60),
               choice(SUBJECTS), take(100, 500), *related,
               f"img{i_id % 100}/thumb_{i_id}.gif", f"img{i_id % 100}/image_{i_id}.gif",
               srp, cost, avail.isoformat(), randint(10, 30), take(13), randint(20, 9999),
               choice(BACKINGS), dimensions)


def _line_counts(sc: Scale, seed: int) -> list[int]:
    """U[1,5] lines per order, drawn up front so the total row count is known exactly."""
    randint = uniform_int(_rng(seed, "order_line_count"))
    return [randint(1, 5) for _ in range(sc.orders)]


def _orders(sc: Scale, seed: int, dates: _Dates, line_counts: list[int]) -> Iterator[tuple[str, tuple]]:
    """(table, row) for orders, their order lines and their cc_xacts row, order by order."""
    rng = _rng(seed, "orders")
    pool = StringPool(rng)
    digits = StringPool(rng, DIGITS, 1 << 12)
    take, randint, choice = pool.take, uniform_int(rng), _chooser(rng)
    order_stamps = {days: dates.stamp(-datetime.timedelta(days=days)) for days in range(1, 61)}
    for o_id, lines in enumerate(line_counts, 1):
        days_ago = randint(1, 60)
        sub_total = randint(1000, 999999) / 100
        tax = round(0.0825 * sub_total, 2)
        total = round(sub_total + tax + 3.00 + lines, 2)
        ship_date = dates.day(-days_ago + randint(0, 7))
        yield "orders", (o_id, randint(1, sc.customers), order_stamps[days_ago], sub_total, tax, total,
                         choice(SHIP_TYPES), ship_date, randint(1, sc.addresses),
                         randint(1, sc.addresses), choice(ORDER_STATUSES))
        for ol_id in range(1, lines + 1):
            yield "order_line", (ol_id, o_id, randint(1, sc.items), randint(1, 300),
                                 randint(0, 30) / 100, take(20, 100))
        yield "cc_xacts", (o_id, choice(CARD_TYPES), digits.take(16), take(14, 30),
                           dates.day(randint(10, 730)), take(15), total, ship_date,
                           randint(1, len(COUNTRIES)))


_COLUMNS = {
    "country": ("co_id", "co_name", "co_exchange", "co_currency"),
    "address": ("addr_id", "addr_street1", "addr_street2", "addr_city", "addr_state", "addr_zip",
                "addr_co_id"),
    "customer": ("c_id", "c_uname", "c_passwd", "c_fname", "c_lname", "c_addr_id", "c_phone",
                 "c_email", "c_since", "c_last_login", "c_login", "c_expiration", "c_discount",
                 "c_balance", "c_ytd_pmt", "c_birthdate", "c_data"),
    "author": ("a_id", "a_fname", "a_lname", "a_mname", "a_dob", "a_bio"),
    "item": ("i_id", "i_title", "i_a_id", "i_pub_date", "i_publisher", "i_subject", "i_desc",
             "i_related1", "i_related2", "i_related3", "i_related4", "i_related5", "i_thumbnail",
             "i_image", "i_srp", "i_cost", "i_avail", "i_stock", "i_isbn", "i_page", "i_backing",
             "i_dimensions"),
    "orders": ("o_id", "o_c_id", "o_date", "o_sub_total", "o_tax", "o_total", "o_ship_type",
               "o_ship_date", "o_bill_addr_id", "o_ship_addr_id", "o_status"),
    "order_line": ("ol_id", "ol_o_id", "ol_i_id", "ol_qty", "ol_discount", "ol_comments"),
    "cc_xacts": ("cx_o_id", "cx_type", "cx_num", "cx_name", "cx_expire", "cx_auth_id",
                 "cx_xact_amt", "cx_xact_date", "cx_co_id"),
}
# Rough bytes per row on the wire, to keep one script under _SCRIPT_BYTES.
_ROW_BYTES = {"country": 60, "address": 120, "customer": 420, "author": 400, "item": 520,
              "orders": 110, "order_line": 90, "cc_xacts": 110}


# --- loading -------------------------------------------------------------------------------

@dataclass
class PopulateReport:
    scale: Scale
    seed: int
    rows: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0      # generating and inserting rows
    index_seconds: float = 0.0     # CREATE INDEX and ANALYZE
    analyzed: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        """Rows per second of the load (tables and rows; indexes excluded)."""
        return self.total_rows / self.load_seconds if self.load_seconds else 0.0


class _Loader:
    """Buffers rows per table; each flush is one atomic script of multi-row INSERTs."""

    def __init__(self, conn, batch_rows: int, total: int, progress):
        self.conn = conn
        self.batch_rows = batch_rows
        self.total = total
        self.progress = progress
        self.done = 0
        self.rows: dict[str, int] = {}
        self._buffers: dict[str, list[tuple]] = {}
        self._pending = 0
        self._bytes = 0
        self._sql: dict[tuple[str, int], str] = {}

    def add(self, table: str, row: tuple) -> None:
        buffer = self._buffers.get(table)
        if buffer is None:
            buffer = self._buffers[table] = []
        buffer.append(row)
        self._pending += 1
        self._bytes += _ROW_BYTES[table]
        if self._pending >= self.batch_rows or self._bytes >= _SCRIPT_BYTES:
            self.flush()

    def _insert_sql(self, table: str, count: int) -> str:
        sql = self._sql.get((table, count))
        if sql is None:
            columns = _COLUMNS[table]
            one = "(" + ", ".join("?" * len(columns)) + ")"
            sql = self._sql[(table, count)] = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * count))
        return sql

    def flush(self, final: bool = False) -> None:
        """Send the buffered rows as one script.

        Only whole statements of `_ROWS_PER_STATEMENT` rows go out, the rest waits for the next
        flush (or goes row by row when `final`): every distinct statement text costs evedb a
        parse, so the load uses two texts per table.
        """
        sending: list[tuple[str, str, list]] = []
        for table, rows in self._buffers.items():
            size = _ROWS_PER_STATEMENT
            whole = len(rows) - len(rows) % size
            for start in range(0, whole, size):
                chunk = rows[start:start + size]
                sending.append((table, self._insert_sql(table, size), [v for row in chunk for v in row]))
            if final:
                sending.extend((table, self._insert_sql(table, 1), list(row)) for row in rows[whole:])
                del rows[:]
            else:
                del rows[:whole]
        if not sending:
            return
        with self.conn.transaction() as tx:
            for _, sql, values in sending:
                tx.execute(sql, values)
        sent = 0
        for table, sql, values in sending:
            count = len(values) // len(_COLUMNS[table])
            self.rows[table] = self.rows.get(table, 0) + count
            sent += count
        self.done += sent
        self._pending -= sent
        self._bytes = sum(_ROW_BYTES[t] * len(rows) for t, rows in self._buffers.items())
        if self.progress is not None:
            self.progress(self.done, self.total)


def _existing_tables(conn) -> list[str]:
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    present = {name.lower() for (name,) in names}
    return [table for table in TABLES if table in present]


def populate(
    dsn_or_path: str,
    items: int,
    ebs: int,
    *,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int, int], None] | None = None,
    batch_rows: int = 4000,
    now: datetime.datetime = DEFAULT_NOW,
    workers: int = 1,
    drop_existing: bool = False,
    analyze: bool = True,
) -> PopulateReport:
    """Create the TPC-W tables in a fresh database and load them; returns a PopulateReport.

    dsn_or_path: an embedded database file, or "evedb://host:port,..." for a running pair.
    progress: called as progress(rows_done, rows_total) after every script.
    batch_rows: rows per atomic script (one round trip).
    workers: worker processes of an embedded engine (ignored for evedb://).
    drop_existing: drop TPC-W tables already there instead of refusing.
    analyze: run ANALYZE after creating the indexes.
    """
    sc = scale(items, ebs)
    dsn_or_path = os.fspath(dsn_or_path)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    seed = int(seed)
    dates = _Dates(now)
    line_counts = _line_counts(sc, seed)
    fixed = sc.fixed_rows()
    total = sum(fixed.values()) + sum(line_counts)
    report = PopulateReport(scale=sc, seed=seed)

    if dsn_or_path.startswith("evedb://"):
        conn = evedb.connect(dsn_or_path, autocommit=True, client_id=f"tpcw-populate-{seed}")
    else:
        conn = evedb.connect(dsn_or_path, workers=workers, autocommit=True)
    try:
        existing = _existing_tables(conn)
        if existing:
            if not drop_existing:
                raise evedb.ProgrammingError(
                    f"{dsn_or_path} already has TPC-W tables ({', '.join(existing)}): populate a "
                    "fresh database, or pass drop_existing=True (--drop) to replace them")
            with conn.transaction() as tx:  # one script: one re-hash of the database
                for table in existing:
                    tx.execute(f"DROP TABLE {table}")
        # Each script that changes the schema makes evedb re-hash the whole database, so all
        # tables are created by one script, and all indexes (and ANALYZE) by another.
        tables_ddl, indexes_ddl = schema_statements()
        with conn.transaction() as tx:
            for statement in tables_ddl:
                tx.execute(statement)

        started = time.perf_counter()
        loader = _Loader(conn, batch_rows, total, progress)
        for table, rows in (("country", _countries(sc, seed, dates)),
                            ("address", _addresses(sc, seed, dates)),
                            ("customer", _customers(sc, seed, dates)),
                            ("author", _authors(sc, seed, dates)),
                            ("item", _items(sc, seed, dates))):
            add = loader.add
            for row in rows:
                add(table, row)
            loader.flush(final=True)  # one table per script until the orders
        add = loader.add
        for table, row in _orders(sc, seed, dates, line_counts):
            add(table, row)
        loader.flush(final=True)
        report.load_seconds = time.perf_counter() - started
        report.rows = {table: loader.rows.get(table, 0) for table in TABLES}

        started = time.perf_counter()
        with conn.transaction() as tx:
            for statement in indexes_ddl:
                tx.execute(statement)
            if analyze:
                # Table by table, not a bare ANALYZE: that would also analyze evedb's own
                # tables, whose sqlite_stat1 rows may already exist, and evedb cannot hash an
                # UPDATE of sqlite_stat1 (a table without a primary key): the batch fails.
                for table in TABLES:
                    tx.execute(f"ANALYZE {table}")
        report.analyzed = analyze
        report.index_seconds = time.perf_counter() - started
    finally:
        conn.close()
    return report
