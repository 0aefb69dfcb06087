"""Replication benchmark: throughput and latency of a primary-backup pair, side by side with
the same pair run sequentially and with the primary alone.

    python -m bench.pair_bench [--quick] [--duration S] [--clients N] [--rounds R]

Modes, measured in one run, alternating round by round (A B C, then C B A, ...), each on
its own data directory loaded once (kv: 10,000 rows through the DB-API driver) and restarted
for each round, so an idle configuration never runs beside a measured one:
- `pair`: `evedb serve` primary + backup, default workers (one per core);
- `pair-sequential`: primary + backup with `--workers 1` (traditional SMR: one executor each);
- `unreplicated`: the primary alone, `--peer-timeout-ms 500` on the primary.  A node goes on
  alone only once it has heard its peer since it started (evedb/replica.py, `_heard_peer`), so
  the backup is started (empty after the first round: it joins by state transfer), syncs and
  is killed (SIGKILL); the measurement starts once the primary reports its backup `down`.  Alone, the primary executes every batch sequentially,
  on its own process (nothing would catch a wrong parallel execution).

Workloads: `mixed` (50% `UPDATE kv SET v = ? WHERE k = ?`, 50% `SELECT v FROM kv WHERE k = ?`,
uniform keys) and `write` (updates only).  Then the pair's null-request throughput:
`Request.call(client_id, request_id, "evedb_null", (client_number,))` (bench/null_procedures.py,
rules bench/null_rules.toml), which does no SQL of its own but goes through batching, the mixer,
a worker transaction with the reply-cache write, the Merkle update, the token exchange and the
reply.

Load generator: closed-loop clients on raw frames (4-byte length + msgpack, the wire protocol
of evedb/runtime/transport.py), many per asyncio loop, each with its own client id and growing
request ids and one request outstanding.  Each client is an `asyncio.Protocol`: a reply's
`data_received` records the latency and writes the next request at once (no coroutine, no
future per request).  The generator runs in this process (`--generator inline`) or in one
spawned process (`--generator process`); the default run measures both on the pair and says
which disturbs less.  Requests completed inside the window count; the warm-up before the window
and the drain after it do not.

After each measured run, once the load has stopped: `node_status` of both nodes until they
report the same `committed_seq`, then their `state_root` must be equal.

The nodes run from a snapshot of evedb/, cli/, mixer_rules/ and bench/ taken at the start
(`--no-snapshot`: from the working tree), so edits made to the tree meanwhile do not reach a
run halfway.

Before each run, bench/common.py's CPU control (the same loop in 1 then 2 processes) says how
much of 2 cores the VM really gave at that moment (about 2.0: both at full speed).

CPU: at the edges of each window the generator reads /proc for the primary, its workers, the
backup, its workers and itself, so the table can say where the 2 cores went, and /proc/stat for
the whole machine: "cores other" is what anything else on the machine (another job sharing it)
took during the window.  Before each run the bench waits (at most `--quiet-wait` s) until the
machine is nearly idle.

Output: a table on stdout, progress on stderr, JSON in bench/out/pair_bench.json
(bench/out/pair_bench_quick.json for `--quick`).

Profiling, instead of the measurements:
- `--profile-node mixed|write|null`: the primary of a `pair` runs under cProfile, every thread
  of the node process (event loop and engine thread) with a CPU-time clock, for its whole life
  (start-up and data load included); the totals per source file and the top entries go to
  stdout and bench/out/pair_bench_profile.json, the stats to bench/out/pair_bench_primary_*.prof.
  cProfile slows a node about threefold: read shares, not absolute times.
- `--profile-engine write|null`: one replica's ExecutionEngine (--workers 1) in this process,
  batches of 64: µs per request without the profiler, then the profile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import msgpack

import evedb
from evedb import codec
from evedb.client import node_status
from evedb.messages import Request
from evedb.runtime.launch import Pair
from evedb.runtime.transport import PROTOCOL_VERSION

from . import common

ROOT = Path(__file__).resolve().parent.parent
NULL_MODULE = "bench.null_procedures"
NULL_RULES = Path(__file__).resolve().parent / "null_rules.toml"
KV_ROWS = 10_000
SELECT = "SELECT v FROM kv WHERE k = ?"
UPDATE = "UPDATE kv SET v = ? WHERE k = ?"
WRITE_SHARE = {"mixed": 0.5, "write": 1.0}
MODES = ("pair", "pair-sequential", "unreplicated")
WORKLOADS = ("mixed", "write")
MODE_WORKERS = {"pair": None, "pair-sequential": 1, "unreplicated": None}
UNREPLICATED_PEER_TIMEOUT_MS = 500
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def cpu_sample(watch: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in watch.items()}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs; /proc/stat, idle and iowait excluded)."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


# --------------------------------------------------------------------------- the load generator


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def request_plain(kind: str, client_id: str, request_id: int, client_number: int, rng: random.Random,
                  write_share: float) -> tuple[str, list]:
    """('r' | 'w' | 'n', the plain request), as `codec.request_to_plain` writes it."""
    if kind == "null":
        return "n", [client_id, request_id, 2, [], "evedb_null", [client_number]]
    if kind == "null_table":
        return "n", [client_id, request_id, 2, [], "evedb_null_table", [client_number]]
    key = rng.randint(1, KV_ROWS)
    if rng.random() < write_share:
        return "w", [client_id, request_id, 0, [[UPDATE, [f"v{request_id}-{client_number}", key]]], None, []]
    return "r", [client_id, request_id, 0, [[SELECT, [key]]], None, []]


def _check_plain_encoding() -> None:
    """The hand-built requests must be exactly what the codec makes of evedb's messages."""
    for kind, share in (("mixed", 0.0), ("mixed", 1.0), ("null", 0.0), ("null_table", 0.0)):
        tag, plain = request_plain(kind, "c", 7, 3, random.Random(1), share)
        if tag == "n":
            expected = Request.call("c", 7, plain[4], (3,))
        else:
            sql, params = plain[3][0]
            expected = Request.statement("c", 7, sql, tuple(params))
        if codec.request_to_plain(expected) != plain:
            raise AssertionError(f"hand-built request {plain} != codec's {codec.request_to_plain(expected)}")
        codec.request_from_plain(msgpack.unpackb(msgpack.packb(plain, use_bin_type=True), raw=False))


class _Client(asyncio.Protocol):
    """One closed-loop client: one request outstanding, the next sent from data_received."""

    def __init__(self, load: "_Load", number: int):
        self.load = load
        self.number = number
        self.client_id = f"bench-{load.run_id}-{number}"
        self.request_id = 0
        self.rng = random.Random(load.seed * 1_000_003 + number)
        self.transport = None
        self.buffer = bytearray()
        self.welcomed = load.loop.create_future()
        self.sent_at = 0.0
        self.tag = ""
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.load.frame(["hello", PROTOCOL_VERSION, "client", self.client_id]))

    def connection_lost(self, exc) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"client {self.number}: connection lost: {exc}"))
        elif self.busy or not self.load.stopping:
            self.load.lost += 1
            self.busy = False
            self.load.check_drained()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if not buffer and len(data) >= 4 and int.from_bytes(data[:4], "big") == len(data) - 4:
            self.frame_received(data[4:])  # the usual case: exactly one frame
            return
        buffer += data
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + length:
                break
            payload = bytes(buffer[4:4 + length])
            del buffer[:4 + length]
            self.frame_received(payload)

    def frame_received(self, payload: bytes) -> None:
        now = time.perf_counter()
        message = msgpack.unpackb(payload, raw=False)
        if not self.welcomed.done():
            if message[0] == "welcome":
                self.welcomed.set_result(True)
            else:
                self.welcomed.set_exception(ConnectionError(f"refused: {message}"))
            return
        self.busy = False
        load = self.load
        if message[0] != "reply" or message[1][3] is not None:
            load.errors += 1
            if load.first_error is None:
                load.first_error = repr(message[1][3] if message[0] == "reply" else message)
        elif load.window_start <= now < load.window_end:
            load.latencies[self.tag].append(now - self.sent_at)
        if load.stopping:
            load.check_drained()
        else:
            self.send()

    def send(self) -> None:
        self.request_id += 1
        load = self.load
        self.tag, plain = request_plain(load.kind, self.client_id, self.request_id, self.number, self.rng,
                                        load.write_share)
        self.busy = True
        self.sent_at = time.perf_counter()
        self.transport.write(load.frame(["request", plain]))


class _Load:
    def __init__(self, spec: dict):
        self.spec = spec
        self.kind = spec["kind"]
        self.write_share = spec.get("write_share", 0.0)
        self.seed = spec.get("seed", 7)
        self.run_id = uuid.uuid4().hex[:10]
        self.loop = asyncio.get_running_loop()
        self._packer = msgpack.Packer(use_bin_type=True)
        self.latencies: dict[str, list[float]] = {"r": [], "w": [], "n": []}
        self.errors = 0
        self.lost = 0
        self.first_error = None
        self.stopping = False
        self.window_start = float("inf")
        self.window_end = float("inf")
        self.clients: list[_Client] = []
        self.drained = self.loop.create_future()

    def frame(self, value) -> bytes:
        payload = self._packer.pack(value)
        return len(payload).to_bytes(4, "big") + payload

    def check_drained(self) -> None:
        if self.stopping and not self.drained.done() and not any(c.busy for c in self.clients):
            self.drained.set_result(True)

    async def _status(self, address: str) -> dict | None:
        try:
            return await self.loop.run_in_executor(None, node_status, address, 5.0)
        except Exception:
            return None

    async def run(self) -> dict:
        spec = self.spec
        host, port = spec["address"].rsplit(":", 1)
        for number in range(spec["clients"]):
            _, client = await self.loop.create_connection(lambda n=number: _Client(self, n), host, int(port))
            self.clients.append(client)
        await asyncio.gather(*(client.welcomed for client in self.clients))
        watch = spec.get("watch", {})
        started = time.perf_counter()
        self.window_start = started + spec["warmup_s"]
        self.window_end = self.window_start + spec["duration_s"]
        for client in self.clients:
            client.send()
        await asyncio.sleep(max(0.0, self.window_start - time.perf_counter()))
        cpu_before = cpu_sample(watch)
        machine_before = machine_busy_seconds()
        self_before = time.process_time()
        wall_before = time.perf_counter()
        status_before = await self._status(spec["address"])
        await asyncio.sleep(max(0.0, self.window_end - time.perf_counter()))
        cpu_after = cpu_sample(watch)
        machine_after = machine_busy_seconds()
        self_after = time.process_time()
        wall_after = time.perf_counter()
        self.stopping = True
        status_after = await self._status(spec["address"])
        self.check_drained()
        try:
            await asyncio.wait_for(asyncio.shield(self.drained), 30)
            drained = True
        except asyncio.TimeoutError:
            drained = False
        for client in self.clients:
            client.transport.close()
        await asyncio.sleep(0)
        return self.summary(cpu_before, cpu_after, self_after - self_before, wall_after - wall_before,
                            machine_after - machine_before, status_before, status_after, drained)

    def summary(self, cpu_before, cpu_after, self_cpu, cpu_wall, machine_busy, status_before, status_after,
                drained) -> dict:
        duration = self.spec["duration_s"]
        every = sorted(self.latencies["r"] + self.latencies["w"] + self.latencies["n"])
        count = len(every)
        result = {
            "kind": self.kind,
            "clients": self.spec["clients"],
            "duration_s": duration,
            "requests": count,
            "throughput": count / duration,
            "p50_ms": _percentile(every, 0.50) * 1000,
            "p99_ms": _percentile(every, 0.99) * 1000,
            "mean_ms": (sum(every) / count * 1000) if count else float("nan"),
            "errors": self.errors,
            "first_error": self.first_error,
            "lost_connections": self.lost,
            "drained": drained,
        }
        for tag, name in (("r", "read"), ("w", "write")):
            values = sorted(self.latencies[tag])
            if values and len(values) != count:
                result[f"{name}_requests"] = len(values)
                result[f"{name}_p50_ms"] = _percentile(values, 0.50) * 1000
                result[f"{name}_p99_ms"] = _percentile(values, 0.99) * 1000
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        cpu["generator"] = self_cpu
        result["cpu_seconds"] = cpu
        result["cpu_wall_s"] = cpu_wall
        # Cores in use during the window: by the measured processes (nodes, workers, generator)
        # and by everything else on the machine (another job sharing it shows up here).
        ours = sum(cpu.values())
        result["cores_ours"] = ours / cpu_wall
        result["cores_other"] = max(0.0, machine_busy - ours) / cpu_wall
        if count:
            result["cpu_us_per_request"] = {name: seconds / count * 1e6 for name, seconds in cpu.items()}
            result["node_cpu_us_per_request"] = sum(
                seconds for name, seconds in cpu.items() if name != "generator") / count * 1e6
        if status_before and status_after:
            batches = status_after["batches"] - status_before["batches"]
            result["batches"] = batches
            result["parallel_batches"] = status_after["parallel_batches"] - status_before["parallel_batches"]
            writes = len(self.latencies["w"]) + len(self.latencies["n"])
            result["writes_per_batch"] = writes / batches if batches else float("nan")
            result["parallel_batches_per_batch"] = result["parallel_batches"] / batches if batches else float("nan")
        return result


def run_load(spec: dict) -> dict:
    """Run one load (a fresh event loop); what the generator process calls."""

    async def main():
        return await _Load(spec).run()

    return asyncio.run(main())


def _generator_ready() -> int:
    return os.getpid()


class Generator:
    """Where the load runs: this process, or one spawned process kept for the whole bench."""

    def __init__(self, where: str):
        self.where = where
        self._pool = None
        self.pid = os.getpid()
        if where == "process":
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self.pid = self._pool.submit(_generator_ready).result()

    def run(self, spec: dict) -> dict:
        result = self._pool.submit(run_load, spec).result() if self._pool else run_load(spec)
        result["generator"] = self.where
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


# --------------------------------------------------------------------------- servers

# Where the nodes import evedb from: the working tree, or a snapshot of it (see snapshot_source).
SOURCE = {"root": ROOT}


def snapshot_source(scratch: Path, attempts: int = 5) -> Path:
    """Copy evedb/, cli/, mixer_rules/ and bench/ to `scratch`, for the nodes to run from.

    The working tree may change while the bench runs (other work on evedb): the nodes of one run
    then all run the same code, the code as it was at the start, which the JSON's `source`
    describes.  A copy taken in the middle of an edit is retried once the tree imports cleanly.
    """
    target = scratch / "src"
    for attempt in range(attempts):
        shutil.rmtree(target, ignore_errors=True)
        for name in ("evedb", "cli", "mixer_rules", "bench"):
            shutil.copytree(ROOT / name, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "out", "*.prof"))
        check = subprocess.run(
            [sys.executable, "-c", "import evedb.runtime.node, evedb.executor, cli.main, mixer_rules, "
             + NULL_MODULE],
            cwd=target, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
        if check.returncode == 0:
            return target
        common.progress(f"snapshot of the source does not import (attempt {attempt + 1}):"
                        f" {check.stderr.strip().splitlines()[-1:]}")
        time.sleep(2)
    raise RuntimeError("no importable snapshot of the source")



def free_port_pair() -> int:
    """A port P with P and P + 1 free, below the kernel's ephemeral range.

    A port from the ephemeral range (what binding port 0 gives) may be handed to an outgoing
    connection later in the run (a client, or a node dialling its dead peer, which can even
    connect to itself), and the node restarted on it then fails with "address already in use".
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            ephemeral_low = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    low, high = 10_000, max(10_002, ephemeral_low - 2)
    for _ in range(500):
        port = rng.randrange(low, high)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


class ProfiledPair(Pair):
    """A Pair whose primary runs under this module's cProfile wrapper (every thread)."""

    def __init__(self, *args, profile_out: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.profile_out = profile_out

    def command(self, name: str) -> list[str]:
        command = super().command(name)
        if name != "primary":
            return command
        assert command[1:3] == ["-m", "cli.main"]
        return [command[0], "-m", "bench.pair_bench", "--serve-profiled", self.profile_out, "--", *command[3:]]


class Setup:
    """One configuration: a data directory (loaded once) and the flags its nodes start with."""

    def __init__(self, name: str, directory: Path, *, workers: int | None, backup: bool,
                 extra_args: tuple[str, ...] = (), primary_args: tuple[str, ...] = (),
                 load_kv: bool = True, profile_out: str | None = None):
        self.name = name
        self.backup = backup
        self.primary_args = tuple(primary_args)
        self.load_kv = load_kv
        self.loaded = False
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE["root"]), environment.get("PYTHONPATH")]))
        arguments = dict(workers=workers, extra_args=extra_args, env=environment)
        if profile_out:
            self.pair = ProfiledPair(str(directory), free_port_pair(), profile_out=profile_out, **arguments)
        else:
            self.pair = Pair(str(directory), free_port_pair(), **arguments)
        self.flags = list(self.pair.command("primary")[3:]) + list(self.primary_args)
        self.workers = None
        self.start_failures: list[str] = []

    @property
    def address(self) -> str:
        return self.pair.address("primary")

    def start(self, attempts: int = 2) -> float:
        """Start the nodes (both, and for `unreplicated` then kill the backup); load kv once.

        A start that fails is reported (logs kept in bench/out), counted in `start_failures`
        and tried once more.
        """
        for attempt in range(attempts):
            try:
                return self._start()
            except Exception as error:
                self._show_logs()
                self.pair.stop()  # never leave a node running behind a failed start
                self.start_failures.append(f"{type(error).__name__}: {error}")
                if attempt + 1 == attempts:
                    raise
                common.progress(f"  {self.name}: start failed ({error}); trying again")
        raise AssertionError("unreachable")

    def _start(self) -> float:
        started = time.perf_counter()
        self.pair.processes.clear()
        if not self.backup and self.loaded:
            # The backup of `unreplicated` was SIGKILLed last time: it starts empty and joins by
            # state transfer, rather than restarting from whatever state the kill left.
            shutil.rmtree(Path(self.pair.data_dir) / "backup", ignore_errors=True)
        self.pair.start("primary", self.primary_args)
        self.pair.start("backup")
        self.pair.wait_ready(120)
        if self.load_kv and not self.loaded:
            self._load()
            self.loaded = True
        if not self.backup:
            # A node goes on alone only once it has heard its peer in this life (evedb/replica.py,
            # `_heard_peer`): so the backup starts, syncs, and is killed; the measurement starts
            # once the primary has declared it down (after --peer-timeout-ms).
            self.pair.kill("backup")
            deadline = time.monotonic() + 60
            while True:
                try:
                    status = node_status(self.address, timeout=2)
                    if status["role"] == "primary" and status["peer_state"] == "down":
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: the primary never declared its killed backup down")
                time.sleep(0.05)
        self.workers = node_status(self.address)["workers"]
        return time.perf_counter() - started

    def _show_logs(self, lines: int = 30) -> None:
        """The tail of both nodes' logs on stderr; the whole logs kept in bench/out."""
        common.OUT_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("primary", "backup"):
            path = Path(self.pair.log_dir) / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace")
                kept = common.OUT_DIR / f"pair_bench_failed_{self.name.replace(' ', '_')}_{name}.log"
                kept.write_text(text)
                tail = text.splitlines()[-lines:]
                common.progress(f"--- {self.name}: last lines of {path} (all of it in {kept}):\n"
                                + "\n".join(tail))

    def _load(self) -> None:
        rng = random.Random(11)
        connection = evedb.connect("evedb://" + self.address, autocommit=True, timeout=120)
        cursor = connection.cursor()
        cursor.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
        cursor.executemany("INSERT INTO kv VALUES (?, ?)",
                           [(k, "".join(rng.choice("abcdefghij") for _ in range(16))) for k in range(1, KV_ROWS + 1)])
        count = cursor.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        connection.close()
        if count != KV_ROWS:
            raise RuntimeError(f"{self.name}: loaded {count} rows, not {KV_ROWS}")

    def watch(self) -> dict[str, list[int]]:
        watch = {}
        for name in ("primary", "backup"):
            process = self.pair.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            watch[name] = [process.pid]
            watch[f"{name}_workers"] = child_pids(process.pid)
        return watch

    def check_roots(self, timeout: float = 15.0) -> dict:
        """After the load: both nodes at the same committed_seq, then the same state_root."""
        started = time.perf_counter()
        primary = node_status(self.address)
        if not self.backup:
            return {"checked": False, "note": "no backup", "committed_seq": primary["committed_seq"],
                    "primary_root": primary["state_root"], "peer_state": primary["peer_state"]}
        deadline = time.monotonic() + timeout
        while True:
            primary = node_status(self.address)
            backup = node_status(self.pair.address("backup"))
            same_seq = primary["committed_seq"] == backup["committed_seq"]
            if (same_seq and primary["state_root"] == backup["state_root"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return {
            "checked": True,
            "equal": same_seq and primary["state_root"] == backup["state_root"],
            "committed_seq": [primary["committed_seq"], backup["committed_seq"]],
            "state_root": [primary["state_root"], backup["state_root"]],
            "peer_state": primary["peer_state"],
            "divergences": primary["divergences"],
            "rollbacks": [primary["rollbacks"], backup["rollbacks"]],
            "view": [primary["view"], backup["view"]],
            "settle_s": round(time.perf_counter() - started, 3),
        }

    def stop(self) -> None:
        self.pair.stop()
        for name, process in self.pair.processes.items():
            if process.returncode not in (0, None, -signal.SIGTERM) and (self.backup or name != "backup"):
                common.progress(f"  warning: {self.name} {name} exited with {process.returncode}"
                                f" (log: {self.pair.log_dir}/{name}.log)")


# --------------------------------------------------------------------------- measuring


QUIET = {"max_wait_s": 60.0, "threshold_cores": 0.25}
# bench/common.py's CpuControl (the same loop in 1 then 2 processes: about 2.0 when both vCPUs
# give full speed at once), measured just before each run; None: not measured.
CONTROL: dict = {"control": None}


def cpu_speed_ms() -> float:
    """One core's speed now: ms for a fixed pure-Python loop (best of 3; lower is faster)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        common._spin(300_000)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def wait_quiet(max_wait: float, threshold: float, sample: float = 0.5) -> tuple[float, float]:
    """Wait (at most max_wait s) until the machine is nearly idle: another job sharing the 2 CPUs
    would take them from the nodes.  Returns (seconds waited, busy cores in the last sample)."""
    started = time.perf_counter()
    while True:
        before = machine_busy_seconds()
        time.sleep(sample)
        busy = (machine_busy_seconds() - before) / sample
        waited = time.perf_counter() - started
        if busy <= threshold or waited >= max_wait:
            return waited, busy


def measure(generator: Generator, setup: Setup, kind: str, clients: int, warmup: float, duration: float,
            seed: int, label: str) -> dict:
    waited, busy = wait_quiet(QUIET["max_wait_s"], QUIET["threshold_cores"])
    if waited > 1.0:
        common.progress(f"  (waited {waited:.0f} s for a quiet machine: {busy:.2f} cores busy before {label.strip()})")
    control = CONTROL["control"].measure() if CONTROL["control"] is not None else float("nan")
    speed = cpu_speed_ms()
    spec = {"address": setup.address, "kind": kind, "clients": clients, "warmup_s": warmup,
            "duration_s": duration, "seed": seed, "write_share": WRITE_SHARE.get(kind, 0.0),
            "watch": setup.watch()}
    result = generator.run(spec)
    result["cpu_control"] = control
    result["speed_ms"] = speed
    result["quiet_wait_s"] = waited
    result["busy_cores_before"] = busy
    result["roots"] = setup.check_roots()
    result["mode"] = setup.name
    roots = result["roots"]
    check = ("roots equal" if roots.get("equal") else "ROOTS DIFFER") if roots["checked"] else "no backup"
    common.progress(f"  {label}: {result['throughput']:,.0f} req/s  p50 {result['p50_ms']:.2f} ms"
                    f"  p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  {check}"
                    f" (seq {roots['committed_seq']})  cores: ours {result['cores_ours']:.2f},"
                    f" others {result['cores_other']:.2f}; CPU control {control:.2f}, speed probe {speed:.1f} ms")
    if result["errors"]:
        common.progress(f"    first error: {result['first_error']}")
    return result


def modes_comparison(args, scratch: Path, generator: Generator) -> dict:
    setups = {
        mode: Setup(mode, scratch / mode, workers=MODE_WORKERS[mode], backup=mode != "unreplicated",
                    # Only the primary: a backup with a 500 ms timeout may take over while the
                    # machine is loaded, before it is killed.
                    primary_args=(("--peer-timeout-ms", str(UNREPLICATED_PEER_TIMEOUT_MS))
                                  if mode == "unreplicated" else ()))
        for mode in MODES
    }
    runs: dict[str, dict[str, list[dict]]] = {mode: {w: [] for w in WORKLOADS} for mode in MODES}
    for round_number in range(args.rounds):
        order = list(MODES) if round_number % 2 == 0 else list(MODES)[::-1]
        workloads = list(WORKLOADS) if round_number % 2 == 0 else list(WORKLOADS)[::-1]
        for mode in order:
            setup = setups[mode]
            startup = setup.start()
            common.progress(f"round {round_number + 1}/{args.rounds} {mode}: up in {startup:.1f} s"
                            f" (workers {setup.workers})")
            try:
                for workload in workloads:
                    result = measure(generator, setup, workload, args.clients, args.warmup, args.duration,
                                     args.seed + round_number, f"{mode:15s} {workload:5s}")
                    result["round"] = round_number
                    runs[mode][workload].append(result)
            finally:
                setup.stop()
    return {"runs": runs, "flags": {mode: setups[mode].flags for mode in MODES},
            "workers": {mode: setups[mode].workers for mode in MODES},
            "start_failures": {mode: setups[mode].start_failures for mode in MODES}}


NULL_CONFIGS = {
    # name -> (workers, extra serve flags, procedure kind)
    "pair default flags": (None, (), "null"),
    "pair --max-batch 512 --pipeline 8": (None, ("--max-batch", "512", "--pipeline", "8"), "null"),
    "pair-sequential --max-batch 512 --pipeline 8": (1, ("--max-batch", "512", "--pipeline", "8"), "null"),
    "pair, table-level rule": (None, ("--max-batch", "512", "--pipeline", "8"), "null_table"),
}


def null_throughput(args, scratch: Path, generator: Generator) -> list[dict]:
    if args.quick:
        plan = [("pair --max-batch 512 --pipeline 8", args.null_clients[-1])]
    else:
        plan = [("pair default flags", args.null_clients[-1])]
        plan += [("pair --max-batch 512 --pipeline 8", clients) for clients in args.null_clients]
        plan += [("pair-sequential --max-batch 512 --pipeline 8", args.null_clients[-1]),
                 ("pair, table-level rule", args.null_clients[-1])]
    results = []
    setups: dict[str, Setup] = {}
    for index, (config, clients) in enumerate(plan):
        workers, extra, kind = NULL_CONFIGS[config]
        setup = setups.get(config)
        if setup is None:
            setup = setups[config] = Setup(
                f"null {config}", scratch / f"null{index}", workers=workers, backup=True, load_kv=False,
                extra_args=("--procedures", NULL_MODULE, "--rules", str(NULL_RULES), *extra))
        startup = setup.start()
        common.progress(f"null: {config} (workers {setup.workers}), {clients} clients: up in {startup:.1f} s")
        try:
            result = measure(generator, setup, kind, clients, args.warmup, args.null_duration, args.seed,
                             f"null {config}, {clients} clients")
        finally:
            setup.stop()
        result["config"] = config
        result["flags"] = setup.flags
        result["workers"] = setup.workers
        results.append(result)
    return results


def generator_comparison(args, scratch: Path) -> dict:
    """The pair (mixed workload) driven by the generator in this process vs in a spawned one."""
    setup = Setup("pair (generator check)", scratch / "generator", workers=None, backup=True)
    generators = {"inline": Generator("inline"), "process": Generator("process")}
    results: dict[str, list[dict]] = {name: [] for name in generators}
    setup.start()
    try:
        for round_number in range(args.generator_rounds):
            order = list(generators) if round_number % 2 == 0 else list(generators)[::-1]
            for name in order:
                results[name].append(measure(generators[name], setup, "mixed", args.clients, args.warmup,
                                             args.generator_duration, args.seed + round_number,
                                             f"generator {name:7s} mixed"))
    finally:
        setup.stop()
        generators["process"].close()
    return {"runs": results}


# --------------------------------------------------------------------------- reporting


def _median_of(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if r.get(key) is not None and r[key] == r[key]]
    return common.median(values) if values else float("nan")


def _cpu_split(results: list[dict]) -> str:
    """Median CPU µs per request, per process group: p=primary pw=its workers b=backup bw g=generator."""
    short = {"primary": "p", "primary_workers": "pw", "backup": "b", "backup_workers": "bw", "generator": "g"}
    parts = []
    for name, label in short.items():
        values = [r["cpu_us_per_request"][name] for r in results if name in r.get("cpu_us_per_request", {})]
        if values:
            parts.append(f"{label} {common.median(values):.0f}")
    return " ".join(parts)


def _roots_note(results: list[dict]) -> str:
    checked = [r["roots"] for r in results if r["roots"]["checked"]]
    if not checked:
        return "n/a (no backup)"
    equal = sum(1 for roots in checked if roots["equal"])
    return f"{equal}/{len(checked)} equal"


def report(args, comparison: dict, nulls: list[dict], generators: dict | None) -> dict:
    runs = comparison["runs"]
    rows = []
    summary: dict = {"modes": {}, "efficiency": {}, "pair_vs_sequential": {}}
    for mode in MODES:
        for workload in WORKLOADS:
            results = runs[mode][workload]
            entry = {
                "throughput": _median_of(results, "throughput"),
                "throughput_rounds": [round(r["throughput"], 1) for r in results],
                "p50_ms": _median_of(results, "p50_ms"),
                "p99_ms": _median_of(results, "p99_ms"),
                "write_p50_ms": _median_of(results, "write_p50_ms"),
                "read_p50_ms": _median_of(results, "read_p50_ms"),
                "writes_per_batch": _median_of(results, "writes_per_batch"),
                "parallel_batches_per_batch": _median_of(results, "parallel_batches_per_batch"),
                "errors": sum(r["errors"] for r in results),
                "roots": _roots_note(results),
                "cpu_us_per_request": _cpu_split(results),
                "node_cpu_us_per_request": _median_of(results, "node_cpu_us_per_request"),
                "cores_ours": _median_of(results, "cores_ours"),
                "cores_other": _median_of(results, "cores_other"),
            }
            summary["modes"].setdefault(mode, {})[workload] = entry
            rows.append([mode, workload, entry["throughput"], entry["p50_ms"], entry["p99_ms"],
                         entry["read_p50_ms"], entry["write_p50_ms"],
                         entry["writes_per_batch"], entry["errors"], entry["roots"],
                         entry["node_cpu_us_per_request"], entry["cpu_us_per_request"],
                         f"{entry['cores_ours']:.2f} / {entry['cores_other']:.2f}"])
    for workload in WORKLOADS:
        pair = [r["throughput"] for r in runs["pair"][workload]]
        sequential = [r["throughput"] for r in runs["pair-sequential"][workload]]
        alone = [r["throughput"] for r in runs["unreplicated"][workload]]
        efficiency = common.median(pair) / (common.median(alone) / 2)
        per_round = [p / (a / 2) for p, a in zip(pair, alone)]
        cost_pair = _median_of(runs["pair"][workload], "node_cpu_us_per_request")
        cost_alone = _median_of(runs["unreplicated"][workload], "node_cpu_us_per_request")
        summary["efficiency"][workload] = {
            # What the efficiency would be if both modes kept the 2 cores busy: robust to other
            # jobs on the machine, blind to idle time (latency-bound pipelines).
            "by_cpu_cost": 2 * cost_alone / cost_pair,
            "of_medians": efficiency,
            "per_round": per_round,
            "median_per_round": common.median(per_round),
            "goal": 0.85,
            "met": efficiency >= 0.85,
        }
        per_round = [p / s for p, s in zip(pair, sequential)]
        summary["pair_vs_sequential"][workload] = {
            "of_medians": common.median(pair) / common.median(sequential),
            "per_round": per_round,
            "median_per_round": common.median(per_round),
        }
    headers = ["mode", "workload", "req/s", "p50 ms", "p99 ms", "read p50", "write p50", "writes/batch",
               "errors", "roots", "node CPU µs/req", "CPU µs/req (p pw b bw g)", "cores ours / other"]
    table = common.format_table(headers, rows)
    lines = [
        f"clients {args.clients}, {args.rounds} round(s) of {args.duration:g} s per mode and workload"
        f" (medians of rounds); workers: {comparison['workers']}",
        "",
        table,
        "",
    ]
    lines += [
        "CPU µs/req: CPU seconds in the window per request completed, of the primary node process (p),",
        "its worker processes (pw), the backup (b), its workers (bw) and the load generator (g);",
        "node CPU µs/req = p + pw + b + bw (medians over rounds).",
        "cores ours / other: CPUs kept busy during the window by those processes / by anything else",
        "on the machine (/proc/stat); medians over rounds.",
        "The unreplicated primary runs every batch sequentially on its own process (alone, nothing",
        "verifies a parallel execution: evedb/replica.py `_pump`), so its workers stay idle.",
        "",
    ]
    controls = [r["cpu_control"] for mode in MODES for workload in WORKLOADS for r in runs[mode][workload]
                if r.get("cpu_control") == r.get("cpu_control")]
    if controls:
        summary["cpu_control"] = {mode: _median_of([r for w in WORKLOADS for r in runs[mode][w]], "cpu_control")
                                  for mode in MODES}
        lines += [
            "CPU control before each run (common.CpuControl: ~2.0 = both vCPUs at full speed at once,"
            f" ~1.0 = one): median {common.median(controls):.2f}, range {min(controls):.2f}-{max(controls):.2f};"
            " per mode " + ", ".join(f"{mode} {value:.2f}" for mode, value in summary["cpu_control"].items()),
        ]
        speeds = [r["speed_ms"] for mode in MODES for workload in WORKLOADS for r in runs[mode][workload]]
        summary["speed_ms"] = {mode: _median_of([r for w in WORKLOADS for r in runs[mode][w]], "speed_ms")
                               for mode in MODES}
        lines += [
            f"speed probe before each run (ms for a fixed loop on one core, lower is faster): median"
            f" {common.median(speeds):.1f}, range {min(speeds):.1f}-{max(speeds):.1f}; per mode "
            + ", ".join(f"{mode} {value:.1f}" for mode, value in summary["speed_ms"].items()),
            "",
        ]
    failures = {mode: found for mode, found in comparison.get("start_failures", {}).items() if found}
    if failures:
        lines += [f"start failures (each retried once; logs in bench/out/pair_bench_failed_*): {failures}", ""]
    summary["start_failures"] = failures
    for workload in WORKLOADS:
        eff = summary["efficiency"][workload]
        ratio = summary["pair_vs_sequential"][workload]
        lines.append(
            f"{workload}: pair efficiency = pair / (unreplicated / 2) = {eff['of_medians']:.2f}"
            f" (goal >= 0.85: {'met' if eff['met'] else 'NOT met'}; per round "
            f"{', '.join(f'{v:.2f}' for v in eff['per_round'])}, their median {eff['median_per_round']:.2f});"
            f" by CPU cost, 2 x node CPU/req unreplicated / pair = {eff['by_cpu_cost']:.2f};"
            f" pair / pair-sequential = {ratio['of_medians']:.2f} (per round "
            f"{', '.join(f'{v:.2f}' for v in ratio['per_round'])})")
    if nulls:
        null_rows = []
        for result in nulls:
            null_rows.append([result["config"], result["clients"], result["throughput"], result["p50_ms"],
                              result["p99_ms"], result.get("writes_per_batch", float("nan")),
                              result.get("parallel_batches_per_batch", float("nan")), result["errors"],
                              _roots_note([result]), _cpu_split([result]),
                              f"{result['cores_ours']:.2f} / {result['cores_other']:.2f}"])
        best = max(nulls, key=lambda r: r["throughput"])
        summary["null"] = {
            "best_throughput": best["throughput"],
            "best_config": best["config"],
            "best_clients": best["clients"],
            "best_flags": best["flags"],
            "goal": 20_000,
            "met": best["throughput"] >= 20_000,
        }
        lines += [
            "",
            f"null requests (evedb_null, {args.null_duration:g} s each):",
            "",
            common.format_table(["server config", "clients", "req/s", "p50 ms", "p99 ms", "req/batch",
                                 "par.batches/batch", "errors", "roots", "CPU µs/req (p pw b bw g)",
                                 "cores ours / other"], null_rows),
            "",
            f"best null throughput: {best['throughput']:,.0f} req/s ({best['config']}, {best['clients']} clients);"
            f" goal >= 20,000: {'met' if best['throughput'] >= 20_000 else 'NOT met'}",
        ]
    if generators:
        inline = [r["throughput"] for r in generators["runs"]["inline"]]
        process = [r["throughput"] for r in generators["runs"]["process"]]
        summary["generator"] = {
            "inline": common.median(inline),
            "process": common.median(process),
            "process_over_inline": common.median(process) / common.median(inline),
            "per_round": [p / i for p, i in zip(process, inline)],
            "generator_cpu_us_per_request": {
                name: common.median([r["cpu_us_per_request"]["generator"] for r in generators["runs"][name]])
                for name in ("inline", "process")
            },
        }
        g = summary["generator"]
        lines += [
            "",
            f"load generator placement (pair, mixed, {args.generator_rounds} round(s) of"
            f" {args.generator_duration:g} s): in this process {g['inline']:,.0f} req/s,"
            f" in a spawned process {g['process']:,.0f} req/s (process / inline = {g['process_over_inline']:.3f});"
            f" generator CPU {g['generator_cpu_us_per_request']['inline']:.0f} vs"
            f" {g['generator_cpu_us_per_request']['process']:.0f} µs/request",
        ]
    text = "\n".join(lines)
    print(text)
    summary["text"] = text
    return summary


# --------------------------------------------------------------------------- profiling a node


def serve_profiled(out: str, argv: list[str]) -> None:
    """Run `evedb serve ARGV` under cProfile in every thread; dump the stats to OUT on exit.

    Each thread's profiler counts that thread's CPU time (`time.thread_time`), so waiting (for
    the GIL, a socket, a worker's answer) costs nothing and the entries add up to CPU spent.
    """
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profiler(*_):
        # threading.setprofile's hook runs at a new thread's first event; enabling a profiler
        # there replaces the hook for that thread.
        profiler = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profiler)
        profiler.enable()

    threading.setprofile(start_thread_profiler)
    main_profiler = cProfile.Profile(time.thread_time)
    profiles.append(main_profiler)
    from cli.main import main

    main_profiler.enable()
    try:
        main.main(args=argv, prog_name="evedb", standalone_mode=False)
    finally:
        main_profiler.disable()
        for profiler in profiles:
            profiler.disable()
        stats = pstats.Stats(profiles[0])
        for profiler in profiles[1:]:
            try:
                stats.add(profiler)
            except TypeError:
                pass  # a profiler that never ran
        stats.dump_stats(out)


def profile_node(args, scratch: Path, generator: Generator) -> dict:
    """The pair's primary under cProfile while the chosen workload runs."""
    out = str(scratch / "primary.prof")
    kind = args.profile_node
    null = kind.startswith("null")
    extra = ("--procedures", NULL_MODULE, "--rules", str(NULL_RULES), "--max-batch", "512", "--pipeline", "8") \
        if null else ()
    clients = args.null_clients[-1] if null else args.clients
    setup = Setup("profiled pair", scratch / "profiled", workers=None, backup=True, extra_args=extra,
                  load_kv=not null, profile_out=out)
    setup.start()
    try:
        result = measure(generator, setup, kind, clients, args.warmup, args.duration, args.seed,
                         f"profiled pair {kind}")
    finally:
        setup.stop()
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    kept = common.OUT_DIR / f"pair_bench_primary_{kind}.prof"
    shutil.copyfile(out, kept)
    common.progress(f"profile of the primary kept in {kept}")
    text = io.StringIO()
    stats = pstats.Stats(out, stream=text)
    text.write(_by_module(stats) + "\n")
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    print(text.getvalue())
    return {"result": result, "profile": text.getvalue()}


def _by_module(stats: pstats.Stats, limit: int = 20, what: str = "the primary node process") -> str:
    """CPU (own time) summed per source file: evedb modules, stdlib modules, C methods."""
    totals: dict[str, float] = {}
    for (filename, _, name), (_, _, own, _, _) in stats.stats.items():
        if filename == "~":
            key = name
        elif "site-packages/" in filename:
            key = "site-packages/" + filename.split("site-packages/")[1].split("/")[0]
        elif any(f"/{package}/" in filename for package in ("evedb", "cli", "bench", "mixer_rules")):
            start = max(filename.rfind(f"/{package}/") for package in ("evedb", "cli", "bench", "mixer_rules"))
            key = filename[start + 1:]
        else:
            key = "stdlib " + os.path.basename(filename)
        totals[key] = totals.get(key, 0.0) + own
    whole = sum(totals.values()) or 1.0
    rows = sorted(totals.items(), key=lambda item: -item[1])[:limit]
    lines = [f"CPU of {what} by source (own time, {whole:.2f} s in all):"]
    lines += [f"  {seconds:7.3f} s {seconds / whole * 100:5.1f}%  {key}" for key, seconds in rows]
    return "\n".join(lines)


def profile_engine(args, scratch: Path) -> dict:
    """One replica's execution of batches in this process (ExecutionEngine, --workers 1, no
    network): what a batch of null calls or point updates costs to execute, hash and commit."""
    from evedb import storage
    from evedb.engine import ExecutionEngine
    from evedb.messages import Batch
    from mixer_rules import load_rules

    path = scratch / "engine.db"
    connection = storage.open_connection(str(path))
    storage.ensure_internal_tables(connection)
    connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    with connection:
        connection.executemany("INSERT INTO kv VALUES (?, ?)", [(k, "abcdefghijabcdef") for k in range(1, KV_ROWS + 1)])
    connection.close()
    engine = ExecutionEngine(str(path), workers=1, options=storage.StorageOptions(reply_cache=True),
                             procedure_modules=[NULL_MODULE], rules=load_rules(str(NULL_RULES)))
    rng = random.Random(args.seed)
    kind = args.profile_engine
    size = 64
    state = {"seq": 0}

    def run(count: int) -> None:
        for _ in range(count):
            state["seq"] += 1
            seq = state["seq"]
            if kind == "null":
                requests = [Request.call(f"c{i}", seq, "evedb_null", (i,)) for i in range(size)]
            else:
                requests = [Request.statement(f"c{i}", seq, UPDATE, (f"v{seq}", rng.randint(1, KV_ROWS)))
                            for i in range(size)]
            engine.execute(Batch(seq, 0, 1_700_000_000_000 + seq, seq * 7919, tuple(requests)))
            engine.commit(seq)

    run(20)
    started = time.perf_counter()
    run(200)
    per_request_us = (time.perf_counter() - started) / (200 * size) * 1e6
    profiler = cProfile.Profile()
    profiler.runcall(run, 200)
    engine.close()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    text.write(f"engine, {kind}, batches of {size}: {per_request_us:.1f} µs per request "
               "(execute + token + commit, one replica, no profiler)\n")
    text.write(_by_module(stats, what="this process (one replica's engine)") + "\n")
    stats.strip_dirs().sort_stats("tottime").print_stats(20)
    print(text.getvalue())
    return {"kind": kind, "batch": size, "us_per_request": per_request_us, "profile": text.getvalue()}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-profiled"]:
        serve_profiled(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return
    arguments = common.parser(__doc__.split("\n\n")[0])
    arguments.add_argument("--duration", type=float, default=None, help="seconds per measured run")
    arguments.add_argument("--clients", type=int, default=64, help="closed-loop clients (kv workloads)")
    arguments.add_argument("--rounds", type=int, default=None, help="rounds of the three modes")
    arguments.add_argument("--warmup", type=float, default=None, help="seconds of load before each window")
    arguments.add_argument("--null-clients", type=int, nargs="+", default=None,
                           help="client counts for the null-request runs")
    arguments.add_argument("--generator", choices=("inline", "process"), default="inline",
                           help="where the load generator runs for the measurements")
    arguments.add_argument("--no-null", action="store_true", help="skip the null-request runs")
    arguments.add_argument("--no-snapshot", action="store_true",
                           help="run the nodes from the working tree, not from a snapshot taken at the start")
    arguments.add_argument("--quiet-wait", type=float, default=None,
                           help="seconds to wait, at most, before each run for the machine to be idle"
                                " (default 60, --quick 5)")
    arguments.add_argument("--no-generator-check", action="store_true", help="skip the generator placement check")
    arguments.add_argument("--profile-node", choices=("mixed", "write", "null"), default=None,
                           help="only: profile the pair's primary under this workload")
    arguments.add_argument("--profile-engine", choices=("write", "null"), default=None,
                           help="only: profile one replica's engine executing batches of 64, in process")
    args = arguments.parse_args(argv)
    if args.quick:
        args.duration = args.duration or 4.0
        args.rounds = args.rounds or 1
        args.warmup = 0.5 if args.warmup is None else args.warmup
        args.null_clients = args.null_clients or [256]
        args.null_duration = args.duration
        args.generator_rounds = 0
    else:
        args.duration = args.duration or 6.0
        args.rounds = args.rounds or 5
        args.warmup = 1.0 if args.warmup is None else args.warmup
        args.null_clients = args.null_clients or [64, 256]
        args.null_duration = args.duration
        args.generator_rounds = 2
        args.generator_duration = min(args.duration, 5.0)
    QUIET["max_wait_s"] = args.quiet_wait if args.quiet_wait is not None else (5.0 if args.quick else 60.0)
    if args.no_generator_check:
        args.generator_rounds = 0
    _check_plain_encoding()
    started = time.perf_counter()
    if not (args.profile_node or args.profile_engine):
        CONTROL["control"] = common.CpuControl()
    generator = Generator(args.generator)
    payload: dict = {"arguments": {k: v for k, v in vars(args).items()}}
    try:
        with common.scratch_directory() as scratch:
            if not args.no_snapshot:
                payload["source_at_snapshot"] = common.source_note()
                SOURCE["root"] = snapshot_source(scratch)
                # `python -m cli.main` puts the current directory first on sys.path.
                os.chdir(SOURCE["root"])
                common.progress(f"nodes run from a snapshot of the source in {SOURCE['root']}")
            if args.profile_engine:
                payload["profile"] = profile_engine(args, scratch)
                common.write_json("pair_bench_engine_profile", payload)
                return
            if args.profile_node:
                payload["profile"] = profile_node(args, scratch, generator)
                common.write_json("pair_bench_profile", payload)
                return
            generators = generator_comparison(args, scratch) if args.generator_rounds else None
            comparison = modes_comparison(args, scratch, generator)
            nulls = [] if args.no_null else null_throughput(args, scratch, generator)
            payload["summary"] = report(args, comparison, nulls, generators)
            payload["modes"] = comparison
            payload["null"] = nulls
            payload["generator_check"] = generators
    finally:
        os.chdir(ROOT)
        generator.close()
        if CONTROL["control"] is not None:
            CONTROL["control"].close()
    payload["elapsed_s"] = time.perf_counter() - started
    common.progress(f"done in {payload['elapsed_s']:.0f} s")
    if args.quick:
        # A quick run never replaces the default run's result.
        path = common.write_json("pair_bench_quick", payload)
        document = json.loads(path.read_text())
        document["command"] = "python -m bench.pair_bench" + "".join(" " + a for a in sys.argv[1:])
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    else:
        common.write_json("pair_bench", payload)


if __name__ == "__main__":
    main()
