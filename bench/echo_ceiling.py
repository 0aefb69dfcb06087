"""The ceiling of the kv read loop on this machine: the same clients against a server that
does nothing.

    python -m bench.echo_ceiling [--clients 16] [--client-processes 2] [--seconds 4] [--rounds 3]

The clients are kv bench r100 clients: closed loop, each with its own DB-API connection
(`evedb.connect`, autocommit), `SELECT v FROM kv WHERE k = ?` on a random key, spread over
`--client-processes` processes of threads, as `evedb bench kv` spreads them.  The server
speaks evedb's framing and hello, decodes each request and answers it at once with one
100-byte row, on uvloop and on asyncio's own loop (alternated, `--rounds` times each): no
SQL, no batching, no replication.  What it reaches bounds what any evedb node can serve to
these clients on this machine, and shows how much of a node's time per request is its own
work rather than the sockets and the clients.  JSON to bench/results/echo_ceiling.json
(or `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import struct
import threading
import time

import evedb
from evedb import codec
from evedb.messages import Column, Reply, StatementResult
from evedb.runtime.launch import free_port_pair
from evedb.runtime.transport import PROTOCOL_VERSION, encode_frame, encode_packed_frame

from . import common

_LENGTH = struct.Struct(">I")
_ROW = StatementResult((Column("v", "TEXT"),), (("x" * 100,),), 1, None)


class _Answering(asyncio.Protocol):
    """Answers a hello with a welcome and every request with the canned row."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + length:
                return
            frame = codec.unpack(bytes(buffer[_LENGTH.size:_LENGTH.size + length]))
            del buffer[:_LENGTH.size + length]
            if frame[0] == "hello":
                self.transport.write(encode_frame(["welcome", PROTOCOL_VERSION, "echo", "primary"]))
            else:
                client_id, request_id = frame[1][0], frame[1][1]
                reply = Reply(client_id, request_id, (_ROW,))
                self.transport.write(encode_packed_frame(codec.reply_message(reply)))


def _serve(port: int, loop_kind: str, ready) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Answering, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _client_process(dsn: str, threads: int, seconds: float, seed: int, results) -> None:
    counts = [0] * threads
    start = threading.Barrier(threads)

    def client(number: int) -> None:
        generator = random.Random(seed * 1000 + number)
        connection = evedb.connect(dsn, autocommit=True, timeout=10)
        cursor = connection.cursor()
        start.wait()
        stop = time.monotonic() + seconds
        done = 0
        while time.monotonic() < stop:
            cursor.execute("SELECT v FROM kv WHERE k = ?", (generator.randrange(10_000),))
            cursor.fetchall()
            done += 1
        counts[number] = done
        connection.close()

    workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
    started = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((sum(counts), time.process_time() - started))


def measure(loop_kind: str, clients: int, processes: int, seconds: float, seed: int) -> dict:
    port = free_port_pair()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=_serve, args=(port, loop_kind, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo server did not start")
        results = context.Queue()
        shares = [clients // processes + (1 if index < clients % processes else 0) for index in range(processes)]
        children = [context.Process(target=_client_process,
                                    args=(f"evedb://127.0.0.1:{port}", share, seconds, seed + index, results))
                    for index, share in enumerate(shares) if share]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=seconds + 60) for _ in children]
        for child in children:
            child.join()
    finally:
        server.terminate()
        server.join()
    operations = sum(count for count, _ in outcomes)
    client_cpu = sum(cpu for _, cpu in outcomes)
    return {"loop": loop_kind, "ops_per_s": operations / seconds,
            "client_cpu_us_per_op": 1e6 * client_cpu / operations if operations else None}


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--clients", type=int, default=16)
    arguments.add_argument("--client-processes", type=int, default=2)
    arguments.add_argument("--seconds", type=float, default=4.0)
    arguments.add_argument("--rounds", type=int, default=3)
    arguments.add_argument("--seed", type=int, default=7)
    arguments.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "echo_ceiling.json"))
    options = arguments.parse_args()
    control = common.control_readings(3)
    runs: dict[str, list[dict]] = {"uvloop": [], "asyncio": []}
    for round_number in range(options.rounds):
        order = ("uvloop", "asyncio") if round_number % 2 == 0 else ("asyncio", "uvloop")
        for loop_kind in order:
            outcome = measure(loop_kind, options.clients, options.client_processes, options.seconds, options.seed)
            runs[loop_kind].append(outcome)
            common.progress(f"round {round_number + 1}/{options.rounds} {loop_kind:8s} "
                            f"{outcome['ops_per_s']:9.0f} ops/s, client CPU {outcome['client_cpu_us_per_op']:.1f} us/op")
    summary = {kind: {"median_ops_per_s": statistics.median(run["ops_per_s"] for run in kinds),
                      "median_client_cpu_us_per_op": statistics.median(run["client_cpu_us_per_op"] for run in kinds)}
               for kind, kinds in runs.items()}
    print(f"echo ceiling, {options.clients} DB-API clients in {options.client_processes} processes, "
          f"{options.seconds:g} s x {options.rounds} rounds (free cores before: {control}):")
    for kind, figures in summary.items():
        print(f"  {kind:8s} server: {figures['median_ops_per_s']:9.0f} ops/s (median), "
              f"client CPU {figures['median_client_cpu_us_per_op']:.1f} us/op")
    os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
    with open(options.json, "w") as handle:
        json.dump({"benchmark": "echo_ceiling", "settings": vars(options), "control_readings": control,
                   "runs": runs, "summary": summary}, handle, indent=2)
    print(f"JSON: {options.json}")


if __name__ == "__main__":
    main()
