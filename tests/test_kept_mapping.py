"""The C clock VFS keeps a reader's memory mapping across other connections' commits
(evedb/_clock.c, "Memory-mapped reads that survive"): the reader then touches its pages again
without page faults, and still reads exactly what a fresh connection reads, whatever the
other connection did to the file (commits, checkpoints, growth, a VACUUM that shrinks it)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import pytest

from evedb import storage

pytest.importorskip("evedb._clock", reason="the C clock VFS was not built here")

KEEP_ENV = "EVEDB_KEEP_MMAP"


def _faults_rereading_after_commits(path: str, rounds: int = 8) -> int:
    """Minor page faults of a reader scanning the whole table after each commit elsewhere."""
    options = storage.StorageOptions(mmap_mb=256)
    reader, writer = storage.open_connection(path, options), storage.open_connection(path, options)
    try:
        scan = "SELECT count(*), sum(length(v)) FROM t"
        expected = reader.execute(scan).fetchall()
        faults = 0
        for round_number in range(rounds):
            writer.execute("UPDATE poke SET n = n + 1 WHERE id = 1")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            assert reader.execute(scan).fetchall() == expected
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return faults
    finally:
        reader.close()
        writer.close()


def _make_table(path: str, rows: int = 4000) -> None:
    setup = storage.open_connection(path)
    with setup:
        setup.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
        setup.execute("CREATE TABLE poke(id INTEGER PRIMARY KEY, n INT)")
        setup.execute("INSERT INTO poke VALUES (1, 0)")
        setup.executemany("INSERT INTO t VALUES (?, ?)", [(k, f"{k:08d}" * 120) for k in range(rows)])
    setup.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # every page in the mapped file
    setup.close()


@pytest.mark.skipif(sys.platform != "linux", reason="counts minor faults as Linux reports them")
def test_a_reader_keeps_its_mapping_across_another_connections_commits(tmp_path, monkeypatch):
    # ~1,000 pages: SQLite's own unmap would make the reader fault them in again (the kernel
    # maps up to 16 pages per fault), every round.
    path = str(tmp_path / "faults.db")
    _make_table(path)
    # The C VFS reads the setting at each open.
    monkeypatch.setenv(KEEP_ENV, "0")
    dropped = _faults_rereading_after_commits(path)
    monkeypatch.setenv(KEEP_ENV, "1")
    kept = _faults_rereading_after_commits(path)
    assert dropped > 8 * 40, dropped
    assert kept < dropped / 3, (kept, dropped)


def _mapped_bytes(path: str) -> int:
    """The longest mapping of `path` in this process (Linux /proc/self/maps)."""
    target = os.path.realpath(path)
    lengths = [0]
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[-1] == target:
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                lengths.append(end - start)
    return max(lengths)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the mappings from /proc/self/maps")
def test_a_reader_maps_the_file_again_once_it_has_grown(tmp_path):
    # A mapping kept past growth would still read correctly (pages beyond it are read()), but
    # every read past its end would then cost a system call: growth must let the unmap through.
    path = str(tmp_path / "grow.db")
    _make_table(path, rows=1000)
    options = storage.StorageOptions(mmap_mb=256)
    reader, writer = storage.open_connection(path, options), storage.open_connection(path, options)
    scan = "SELECT count(*), sum(length(v)) FROM t"
    reader.execute(scan).fetchall()
    writer.execute("UPDATE poke SET n = n + 1 WHERE id = 1")
    reader.execute(scan).fetchall()  # kept: the file's size has not changed
    with writer:
        writer.executemany("INSERT INTO t VALUES (?, ?)", [(k, "y" * 900) for k in range(1000, 5000)])
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    writer.close()  # its own mapping would cover the file too
    assert reader.execute(scan).fetchall()[0][0] == 5000
    assert _mapped_bytes(path) >= os.path.getsize(path) > 4 * 1000 * 900
    reader.close()


READER_SCENARIO = textwrap.dedent("""
    import os, sys
    from evedb import storage
    path = sys.argv[1]
    options = storage.StorageOptions(mmap_mb=256)
    reader = storage.open_connection(path, options)
    writer = storage.open_connection(path, options)
    scan = "SELECT k, v FROM t ORDER BY k"

    def check(step):
        fresh = storage.open_connection(path, options)
        try:
            want = fresh.execute(scan).fetchall()
        finally:
            fresh.close()
        got = reader.execute(scan).fetchall()
        assert got == want, step
        print(f"{step}|{len(got)}|{os.path.getsize(path)}", flush=True)

    check("start")
    writer.execute("UPDATE t SET v = 'changed' WHERE k % 7 = 0")
    check("commit in the WAL")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    check("checkpointed into the file")
    with writer:
        writer.executemany("INSERT INTO t VALUES (?, ?)", [(k, 'x' * 900) for k in range(4000, 9000)])
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    check("file grew")
    writer.execute("DELETE FROM t WHERE k >= 1000")
    writer.execute("VACUUM")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    check("file shrank")
    writer.execute("UPDATE t SET v = 'again' WHERE k < 10")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    check("same size, new bytes")
    size = os.path.getsize(path)
    # Truncated and grown back to the very same size while the reader is idle: the case
    # SQLite's unmap guards against; a shared mapping shows the new bytes.
    with open(path, "r+b") as raw:
        data = raw.read()
        raw.truncate(4096)
        raw.flush()
        raw.seek(4096)
        raw.write(data[4096:])
    assert os.path.getsize(path) == size
    writer.execute("UPDATE t SET v = 'regrown' WHERE k = 3")
    check("truncated and regrown")
""")


@pytest.mark.parametrize("keep", ["1", "0"])
def test_a_reader_with_a_kept_mapping_reads_what_a_fresh_connection_reads(tmp_path, keep):
    """In a child process: reading past the end of a shrunk file through a stale mapping
    would kill it with SIGBUS, which this test reports instead of dying with it."""
    path = str(tmp_path / "scenario.db")
    _make_table(path)
    environment = dict(os.environ, **{KEEP_ENV: keep})
    done = subprocess.run([sys.executable, "-c", READER_SCENARIO, path], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    steps = {step: (int(rows), int(size)) for step, rows, size in
             (line.split("|") for line in done.stdout.splitlines())}
    assert len(steps) == 7
    # The scenario did what it says to the file under the reader's mapping.
    assert steps["file grew"][1] > steps["checkpointed into the file"][1]
    assert steps["file shrank"] == (1000, steps["file shrank"][1])
    assert steps["file shrank"][1] < steps["checkpointed into the file"][1]
