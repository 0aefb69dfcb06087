"""What a reader pays when another connection's commit has emptied its page cache, per VFS.

SQLite drops a connection's whole page cache when another connection has committed since its
last read (evedb/DESIGN.md "Execution"); the parallel engine's workers meet that after every
batch that wrote.  This measures one TPC-W query on a populated database (tpcw/populate.py):
warm (run twice in a row, the second timed) and cold (timed right after a one-row UPDATE
committed by a second connection), for:

- `c-mmap`: evedb's connections as opened by default (the C clock VFS, memory-mapped reads,
  the mapping kept across other connections' commits: evedb/_clock.c);
- `c-mmap-dropped`: the same with `EVEDB_KEEP_MMAP=0`: the mapping dropped at each commit
  elsewhere, as SQLite does, so every page touched again costs a page fault;
- `c-nommap`: the same VFS with `mmap_mb=0`;
- `python`: the clock VFS written in Python (what evedb used before; `EVEDB_CLOCK_VFS=python`,
  run in a child process since the VFS is chosen once per process; it cannot map the file);
- `sqlite-default`: plain apsw on SQLite's own default VFS with the same mmap size.

The kinds alternate round by round; reported: medians over rounds of each round's median.
Queries: best sellers as evedb runs it (`tpcw.procedures.BEST_SELLERS_SQL`) and the reference
form (`BEST_SELLERS_REFERENCE_SQL`), one subject per call, subjects in turn.

Run: `python -m bench.page_cache [--items 10000 --ebs 10] [--rounds 4] [--calls 30]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import apsw

from evedb import storage
from tpcw import procedures
from tpcw.populate import populate
from tpcw.random_helpers import SUBJECTS

from . import common

KINDS = ("c-mmap", "c-mmap-dropped", "python", "sqlite-default", "c-nommap")
KEEP_MMAP_ENV = "EVEDB_KEEP_MMAP"  # read by the C clock VFS at each open
QUERIES = {"best_sellers": procedures.BEST_SELLERS_SQL, "best_sellers_reference": procedures.BEST_SELLERS_REFERENCE_SQL}
MMAP_MB = storage.StorageOptions().mmap_mb


def _open(path: str, kind: str) -> apsw.Connection:
    if kind == "sqlite-default":
        connection = apsw.Connection(path)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL",
                       f"cache_size=-{storage.StorageOptions().cache_mb * 1024}", f"mmap_size={MMAP_MB << 20}"):
            connection.execute(f"PRAGMA {pragma}").fetchall()
        return connection
    options = storage.StorageOptions(mmap_mb=0 if kind == "c-nommap" else MMAP_MB)
    if kind != "c-mmap-dropped":
        return storage.open_connection(path, options)
    before = os.environ.get(KEEP_MMAP_ENV)
    os.environ[KEEP_MMAP_ENV] = "0"
    try:
        return storage.open_connection(path, options)
    finally:
        if before is None:
            del os.environ[KEEP_MMAP_ENV]
        else:
            os.environ[KEEP_MMAP_ENV] = before


def measure_here(path: str, kind: str, calls: int) -> dict:
    """Median warm and cold milliseconds of each query, with connections of `kind`."""
    reader, writer = _open(path, kind), _open(path, kind)
    result = {"vfs": "default" if kind == "sqlite-default" else storage.clock_vfs_kind(),
              "mmap_size": reader.execute("PRAGMA mmap_size").fetchall()[0][0]}
    try:
        for name, sql in QUERIES.items():
            warm, cold = [], []
            for call in range(calls):
                arguments = (procedures.RECENT_ORDERS, SUBJECTS[call % len(SUBJECTS)], procedures.SEARCH_LIMIT)
                reader.execute(sql, arguments).fetchall()
                started = time.perf_counter()
                reader.execute(sql, arguments).fetchall()
                warm.append(time.perf_counter() - started)
                with writer:
                    writer.execute("UPDATE item SET i_stock = i_stock + 1 WHERE i_id = ?", (call + 1,))
                started = time.perf_counter()
                reader.execute(sql, arguments).fetchall()
                cold.append(time.perf_counter() - started)
            result[name] = {"warm_ms": statistics.median(warm) * 1e3, "cold_ms": statistics.median(cold) * 1e3}
    finally:
        reader.close()
        writer.close()
    return result


def measure(path: str, kind: str, calls: int) -> dict:
    if kind != "python":
        return measure_here(path, kind, calls)
    environment = dict(os.environ, **{storage.CLOCK_VFS_ENV: "python"})
    done = subprocess.run([sys.executable, "-m", "bench.page_cache", "--child", path, "--calls", str(calls)],
                          env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv=None) -> int:
    arguments = common.parser(__doc__.split("\n")[0])
    arguments.add_argument("--items", type=int, default=10_000)
    arguments.add_argument("--ebs", type=int, default=10)
    arguments.add_argument("--rounds", type=int, help="rounds, each kind once per round (default 4, 2 with --quick)")
    arguments.add_argument("--calls", type=int, default=30, help="calls per query per round")
    arguments.add_argument("--child", help=argparse.SUPPRESS)
    arguments = arguments.parse_args(argv)
    if arguments.child:
        print(json.dumps(measure_here(arguments.child, "python", arguments.calls)))
        return 0
    rounds = arguments.rounds or (2 if arguments.quick else 4)
    readings: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with common.scratch_directory() as directory:
        path = str(directory / "tpcw.db")
        common.progress(f"populating TPC-W: {arguments.items} items, {arguments.ebs} EBs ...")
        populate(path, arguments.items, arguments.ebs, seed=arguments.seed)
        for number in range(rounds):
            order = KINDS if number % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                readings[kind].append(measure(path, kind, arguments.calls))
            common.progress(f"  round {number + 1}/{rounds} done")
    rows, summary = [], {}
    for kind in KINDS:
        summary[kind] = {"vfs": readings[kind][0]["vfs"], "mmap_size": readings[kind][0]["mmap_size"]}
        for name in QUERIES:
            warm = statistics.median(r[name]["warm_ms"] for r in readings[kind])
            cold = statistics.median(r[name]["cold_ms"] for r in readings[kind])
            summary[kind][name] = {"warm_ms": warm, "cold_ms": cold}
            rows.append((kind, summary[kind]["vfs"], summary[kind]["mmap_size"] >> 20, name, warm, cold, cold - warm))
    print(common.format_table(
        ("connections", "clock VFS", "mmap MiB", "query", "warm ms", "after another's commit ms", "penalty ms"), rows))
    common.write_json("page_cache", {"items": arguments.items, "ebs": arguments.ebs, "rounds": rounds,
                                     "calls": arguments.calls, "kinds": summary, "readings": readings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
