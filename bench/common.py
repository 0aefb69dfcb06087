"""Shared helpers for evedb's benchmarks: timing, interleaving, reporting, data and workloads.

Every benchmark compares things side by side in one run: `interleave` alternates the variants
round by round (A B, then B A, ...) so that drift on a shared machine hits them alike;
`median_ratio` reports medians over rounds and the ratio of the medians, `paired_ratio` the
median of the per-round ratios; `CpuControl` (pure-Python work in 2 processes vs 1) records
how many cores were really free, since the machine is shared.

Data is populated deterministically (`random.Random(seed)`) with bulk inserts on a plain
apsw connection opened the way evedb opens its own (`storage.open_connection`, WAL,
synchronous=NORMAL) plus evedb's internal tables; `copy_database` then gives each side of a
comparison its own file with identical contents.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import apsw

from evedb import storage
from evedb.messages import Batch, Request

OUT_DIR = Path(__file__).resolve().parent / "out"


# --------------------------------------------------------------------------- reporting


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--quick", action="store_true", help="a short run (< 60 s)")
    arguments.add_argument("--seed", type=int, default=7, help="seed of data and workload")
    return arguments


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_ratio(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(median of a, median of b, median(a) / median(b))."""
    median_a, median_b = median(a), median(b)
    return median_a, median_b, (median_a / median_b if median_b else float("nan"))


def format_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), separator] + [line(row) for row in cells])


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def source_note() -> dict:
    """Which evedb was measured: the commit and the files changed since (the tree may be dirty)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    changed = git("status", "--porcelain", "--", "evedb")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "evedb_changes": changed.splitlines() if changed else []}


def machine_note() -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apswversion(),
        "platform": platform.platform(),
    }


def write_json(name: str, payload: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "command": "python -m bench." + name + "".join(" " + a for a in sys.argv[1:]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_note(),
        "source": source_note(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    progress(f"wrote {path}")
    return path


# --------------------------------------------------------------------------- timing


def interleave(rounds: int, variants: dict[str, Callable[[], float]], label: str = "",
               reports: int = 10) -> dict[str, list[float]]:
    """Run every variant once per round, alternating the order each round.

    Each variant returns its own measurement for the round (a rate or a time per operation).
    Short rounds, many of them, make the comparison robust on a noisy machine: both variants
    of a round see nearly the same machine.  Progress goes to stderr `reports` times.
    """
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    every = max(1, rounds // reports)
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(variants[name]())
        if (round_number + 1) % every == 0 or round_number + 1 == rounds:
            summary = "  ".join(f"{name}={median(results[name]):.4g}" for name in names)
            progress(f"  {label} round {round_number + 1}/{rounds}: medians so far {summary}")
    return results


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i]: the ratio within a round, robust to drift."""
    return median([x / y for x, y in zip(a, b)])


def per_call_us(function: Callable[[int], None], count: int) -> float:
    """Microseconds per call of `function(i)` for i in range(count)."""
    started = time.perf_counter()
    for i in range(count):
        function(i)
    return (time.perf_counter() - started) / count * 1e6


def profile_top(function: Callable[[], object], limit: int = 12, sort: str = "tottime") -> str:
    """cProfile of one call of `function`: the top `limit` entries, as text."""
    profiler = cProfile.Profile()
    profiler.runcall(function)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(sort).print_stats(limit)
    return text.getvalue()


def calls_for(function: Callable[[int], None], seconds: float) -> int:
    """How many calls of `function(i)` take about `seconds` (it is called while finding out)."""
    count = 1
    while True:
        started = time.perf_counter()
        for i in range(count):
            function(i)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 4 or count >= 1 << 20:
            return max(1, int(count * seconds / max(elapsed, 1e-9)))
        count *= 4


# --------------------------------------------------------------------------- CPU control


def _spin(count: int) -> int:
    total = 0
    for i in range(count):
        total += i
    return total


def _control_worker(connection) -> None:
    while True:
        count = connection.recv()
        if count is None:
            return
        _spin(count)
        connection.send(True)


class CpuControl:
    """Pure-Python CPU work in 2 processes vs 1: how many free cores the machine had.

    Two persistent spawned processes run a fixed loop; `measure()` times it on one of them,
    then on both at once, and returns the speedup (2 * work / wall time of both) / (work /
    wall time of one): about 2.0 with two idle cores, about 1.0 with one.
    """

    def __init__(self, loop_count: int = 1_000_000):
        context = multiprocessing.get_context("spawn")
        self.loop_count = loop_count
        self._pipes = []
        self._processes = []
        for _ in range(2):
            mine, theirs = context.Pipe()
            process = context.Process(target=_control_worker, args=(theirs,), daemon=True)
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)
        self._run(self._pipes)  # warm up both

    def _run(self, pipes) -> float:
        started = time.perf_counter()
        for pipe in pipes:
            pipe.send(self.loop_count)
        for pipe in pipes:
            pipe.recv()
        return time.perf_counter() - started

    def measure(self) -> float:
        one = self._run(self._pipes[:1])
        two = self._run(self._pipes)
        return 2 * one / two

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.send(None)
        for process in self._processes:
            process.join(timeout=5)


def control_readings(count: int = 3) -> list[float]:
    """A few `CpuControl` readings: how many cores were free around a single-core benchmark."""
    control = CpuControl()
    try:
        return [control.measure() for _ in range(count)]
    finally:
        control.close()


def control_line(readings: Sequence[float]) -> str:
    values = ", ".join(f"{value:.2f}" for value in readings)
    return f"CPU control, 2 processes vs 1 (2.0 = two free cores): {values}"


# --------------------------------------------------------------------------- databases


@contextmanager
def scratch_directory():
    directory = tempfile.mkdtemp(prefix="evedb-bench-")
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def new_database(path: Path, ddl: Sequence[str]) -> apsw.Connection:
    connection = storage.open_connection(str(path))
    storage.ensure_internal_tables(connection)
    for statement in ddl:
        connection.execute(statement)
    return connection


def bulk_insert(connection: apsw.Connection, table: str, rows: Iterable[tuple]) -> None:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    marks = ", ".join("?" * len(first))
    with connection:
        connection.executemany(f"INSERT INTO {table} VALUES ({marks})", _chain(first, rows))


def _chain(first, rest):
    yield first
    yield from rest


def copy_database(source: Path, target: Path) -> Path:
    """A byte copy of a closed database (its WAL is checkpointed away on close)."""
    for suffix in ("-wal", "-shm"):
        if Path(str(source) + suffix).exists():
            raise RuntimeError(f"{source} still has a {suffix} file: close it first")
    shutil.copyfile(source, target)
    return target


# --------------------------------------------------------------------------- TPC-W-like data

SUBJECTS = (
    "ARTS", "BIOGRAPHIES", "BUSINESS", "CHILDREN", "COMPUTERS", "COOKING", "HEALTH", "HISTORY",
    "HOME", "HUMOR", "LITERATURE", "MYSTERY", "NON-FICTION", "PARENTING", "POLITICS",
    "REFERENCE", "RELIGION", "ROMANCE", "SELF-HELP", "SCIENCE-NATURE", "SCIENCE-FICTION",
    "SPORTS", "YOUTH", "TRAVEL",
)
STATUSES = ("PROCESSING", "SHIPPED", "PENDING", "DENIED")
SYLLABLES = ("BA", "OG", "AL", "RI", "RE", "SE", "ATI", "ALLY", "EN", "ING", "ON", "UL")

TPCW_DDL = (
    "CREATE TABLE author(a_id INTEGER PRIMARY KEY, a_fname TEXT, a_lname TEXT, a_mname TEXT,"
    " a_dob TEXT, a_bio TEXT)",
    "CREATE TABLE item(i_id INTEGER PRIMARY KEY, i_title TEXT, i_a_id INTEGER, i_pub_date TEXT,"
    " i_publisher TEXT, i_subject TEXT, i_desc TEXT, i_cost REAL, i_srp REAL, i_stock INTEGER,"
    " i_isbn TEXT)",
    "CREATE INDEX item_subject ON item(i_subject)",
    "CREATE INDEX item_author ON item(i_a_id)",
    "CREATE TABLE orders(o_id INTEGER PRIMARY KEY, o_c_id INTEGER, o_date TEXT, o_sub_total REAL,"
    " o_tax REAL, o_total REAL, o_ship_type TEXT, o_ship_date TEXT, o_status TEXT)",
    "CREATE INDEX orders_customer ON orders(o_c_id)",
    "CREATE TABLE order_line(ol_o_id INTEGER, ol_id INTEGER, ol_i_id INTEGER, ol_qty INTEGER,"
    " ol_discount REAL, ol_comments TEXT, PRIMARY KEY (ol_o_id, ol_id))",
    "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER, pad TEXT)",
)


class TpcwScale:
    def __init__(self, items: int = 10_000, orders: int = 30_000, kv: int = 10_000):
        self.items = items
        self.authors = items // 4
        self.orders = orders
        self.kv = kv


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))


def _date(rng: random.Random, low_year: int = 1990, high_year: int = 2003) -> str:
    return f"{rng.randint(low_year, high_year):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _text(rng: random.Random, low: int, high: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(low, high)))


def populate_tpcw(path: Path, seed: int, scale: TpcwScale = TpcwScale()) -> dict:
    """item, author, orders, order_line (1-6 lines per order) and kv, then ANALYZE.

    Returns the row counts.
    """
    rng = random.Random(seed)
    connection = new_database(path, TPCW_DDL)
    bulk_insert(connection, "author", (
        (a, _word(rng, 2), _word(rng, 3), _word(rng, 1), _date(rng, 1900, 1980), _text(rng, 20, 60))
        for a in range(1, scale.authors + 1)
    ))
    bulk_insert(connection, "item", (
        (i, _word(rng, 4), rng.randint(1, scale.authors), _date(rng), _word(rng, 3),
         rng.choice(SUBJECTS), _text(rng, 40, 120), round(rng.uniform(1, 100), 2),
         round(rng.uniform(1, 120), 2), rng.randint(10, 30), f"{rng.randrange(10**12):013d}")
        for i in range(1, scale.items + 1)
    ))
    lines = []
    orders = []
    for o in range(1, scale.orders + 1):
        sub_total = round(rng.uniform(10, 500), 2)
        orders.append((o, rng.randint(1, 28_800), _date(rng, 2000, 2003), sub_total,
                       round(sub_total * 0.0825, 2), round(sub_total * 1.0825, 2),
                       rng.choice(("AIR", "UPS", "FEDEX", "SHIP", "COURIER", "MAIL")),
                       _date(rng, 2000, 2003), rng.choice(STATUSES)))
        for line in range(1, rng.randint(1, 6) + 1):
            lines.append((o, line, rng.randint(1, scale.items), rng.randint(1, 300),
                          round(rng.uniform(0, 0.3), 2), _text(rng, 20, 60)))
    bulk_insert(connection, "orders", orders)
    bulk_insert(connection, "order_line", lines)
    bulk_insert(connection, "kv", ((k, rng.randrange(10**6), _text(rng, 20, 40)) for k in range(1, scale.kv + 1)))
    # Statistics for the planner: without them SQLite drives best-sellers from item's subject
    # index and rescans the recent order lines per item (~250 ms instead of ~3 ms).
    connection.execute("ANALYZE")
    connection.close()
    return {"author": scale.authors, "item": scale.items, "orders": scale.orders,
            "order_line": len(lines), "kv": scale.kv}


SMALL_DDL = (
    "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER, pad TEXT)",
    "CREATE TABLE dept(id INTEGER PRIMARY KEY, name TEXT, region TEXT)",
    "CREATE TABLE emp(id INTEGER PRIMARY KEY, dept_id INTEGER, name TEXT, salary REAL)",
    "CREATE INDEX emp_dept ON emp(dept_id)",
)
REGIONS = ("north", "south", "east", "west")


def populate_small(path: Path, seed: int, kv_rows: int = 10_000) -> None:
    """kv (10k rows) and two small tables for a join: dept (20 rows), emp (400 rows)."""
    rng = random.Random(seed)
    connection = new_database(path, SMALL_DDL)
    bulk_insert(connection, "kv", ((k, rng.randrange(10**6), _text(rng, 20, 40)) for k in range(1, kv_rows + 1)))
    bulk_insert(connection, "dept", ((d, _word(rng, 2), REGIONS[d % 4]) for d in range(1, 21)))
    bulk_insert(connection, "emp", ((e, rng.randint(1, 20), _word(rng, 3), round(rng.uniform(30, 200), 1))
                                     for e in range(1, 401)))
    connection.execute("ANALYZE")
    connection.close()


CUSTOMER_DDL = (
    "CREATE TABLE customer(c_id INTEGER PRIMARY KEY, c_uname TEXT, c_passwd TEXT, c_fname TEXT,"
    " c_lname TEXT, c_phone TEXT, c_email TEXT, c_since TEXT, c_balance REAL)",
)
NARROW_DDL = ("CREATE TABLE narrow(id INTEGER PRIMARY KEY, value INTEGER)",)


def populate_customer(path: Path, rows: int, seed: int) -> None:
    """A TPC-W-like customer table: 9 columns, ~110 bytes per row."""
    rng = random.Random(seed)
    connection = new_database(path, CUSTOMER_DDL)
    bulk_insert(connection, "customer", (
        (c, f"user{c}", _word(rng, 3).lower(), _word(rng, 2), _word(rng, 3),
         f"{rng.randrange(10**10):010d}", f"user{c}@{_word(rng, 2).lower()}.com", _date(rng),
         round(rng.uniform(-100, 1000), 2))
        for c in range(1, rows + 1)
    ))
    connection.close()


def populate_narrow(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    connection = new_database(path, NARROW_DDL)
    bulk_insert(connection, "narrow", ((i, rng.randrange(10**9)) for i in range(1, rows + 1)))
    connection.close()


# --------------------------------------------------------------------------- workloads

BEST_SELLERS = (
    "SELECT i_id, i_title, a_fname, a_lname, SUM(ol_qty) AS qty"
    " FROM order_line JOIN item ON ol_i_id = i_id JOIN author ON i_a_id = a_id"
    " WHERE ol_o_id > (SELECT MAX(o_id) - ? FROM orders) AND i_subject = ?"
    " GROUP BY i_id, i_title, a_fname, a_lname ORDER BY qty DESC, i_id LIMIT 50"
)
RECENT_ORDERS = 3333

# name -> (weight, SQL, parameter maker); the weights are shares of requests.
READ_MIX: dict[str, tuple[float, str, Callable]] = {
    "best_sellers": (0.20, BEST_SELLERS,
                     lambda rng, scale: (RECENT_ORDERS, rng.choice(SUBJECTS))),
    "new_products": (0.15,
                     "SELECT i_id, i_title, a_fname, a_lname FROM item JOIN author ON i_a_id = a_id"
                     " WHERE i_subject = ? ORDER BY i_pub_date DESC, i_title LIMIT 50",
                     lambda rng, scale: (rng.choice(SUBJECTS),)),
    "author_search": (0.10,
                      "SELECT i_id, i_title, a_fname, a_lname FROM author JOIN item ON i_a_id = a_id"
                      " WHERE a_lname LIKE ? ORDER BY i_title LIMIT 50",
                      lambda rng, scale: (rng.choice(SYLLABLES) + "%",)),
    "subject_totals": (0.05,
                       "SELECT i_subject, COUNT(*), AVG(i_cost), SUM(i_stock) FROM item GROUP BY i_subject",
                       lambda rng, scale: ()),
    "order_status": (0.05,
                     "SELECT o_status, COUNT(*), SUM(o_total) FROM orders WHERE o_date >= ?"
                     " GROUP BY o_status ORDER BY o_status",
                     lambda rng, scale: (_date(rng, 2000, 2003),)),
    "item_by_id": (0.25, "SELECT * FROM item WHERE i_id = ?",
                   lambda rng, scale: (rng.randint(1, scale.items),)),
    "order_display": (0.20,
                      "SELECT o_id, o_date, o_total, ol_id, ol_i_id, ol_qty, i_title"
                      " FROM orders JOIN order_line ON ol_o_id = o_id JOIN item ON ol_i_id = i_id"
                      " WHERE o_id = ?",
                      lambda rng, scale: (rng.randint(1, scale.orders),)),
}


def read_mix_request(rng: random.Random, scale: TpcwScale, request_id: int) -> Request:
    names = list(READ_MIX)
    name = rng.choices(names, weights=[READ_MIX[n][0] for n in names])[0]
    _, sql, make_params = READ_MIX[name]
    return Request.statement("bench", request_id, sql, make_params(rng, scale))


KV_SELECT = "SELECT v, pad FROM kv WHERE k = ?"
KV_UPDATE = "UPDATE kv SET v = v + 1 WHERE k = ?"


def kv_request_maker(write_share: float):
    def make(rng: random.Random, scale: TpcwScale, request_id: int) -> Request:
        sql = KV_UPDATE if rng.random() < write_share else KV_SELECT
        return Request.statement("bench", request_id, sql, (rng.randint(1, scale.kv),))
    return make


def make_batches(make_request, count: int, size: int, seed: int, scale: TpcwScale,
                 first_seq: int = 1) -> list[Batch]:
    """`count` batches of `size` requests from `make_request(rng, scale, request_id)`."""
    rng = random.Random(seed)
    batches = []
    request_id = 1
    for n in range(count):
        requests = []
        for _ in range(size):
            requests.append(make_request(rng, scale, request_id))
            request_id += 1
        seq = first_seq + n
        batches.append(Batch(seq, 0, 1_700_000_000_000 + seq, seq * 7919, tuple(requests)))
    return batches


def run_batches(engine, batches: Sequence[Batch]) -> float:
    """Execute (and commit) the batches on `engine`; returns the wall seconds."""
    started = time.perf_counter()
    for batch in batches:
        check_replies(engine.execute(batch, commit=True).replies)
    return time.perf_counter() - started


def check_replies(outcome_replies) -> None:
    failed = [reply for reply in outcome_replies if reply.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} request(s) failed, first: {failed[0].error}")
