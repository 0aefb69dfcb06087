"""Starting nodes: one in this process (`serve`), or a local pair as two processes (`Pair`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

from . import eventloop
from .node import Node, NodeConfig


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P such that P and P + 1 are both free on `host` right now (for a local pair).

    Chosen below Linux's ephemeral range (32768 and up): a port the kernel hands out for
    outgoing connections may be taken by one (a node dialling its peer) when a node restarts.
    """
    import random
    import socket

    generator = random.Random()
    for _ in range(200):
        port = generator.randrange(20000, 32000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind((host, port))
                second.bind((host, port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no two consecutive free ports on {host}")


def serve(config: NodeConfig) -> None:
    """Run one node until SIGINT or SIGTERM."""

    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, node.stop)
        await node.run_until_stopped()

    eventloop.run(main())


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


class Pair:
    """A primary on `port` and a backup on `port + 1`, on loopback, as two `evedb serve`
    processes sharing a generated secret.  Used by `evedb pair`, the demo, tests and benches."""

    def __init__(self, data_dir: str, port: int, *, workers: int | None = None, host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = (), log_dir: str | None = None, env: dict | None = None,
                 standalone: bool = False, replication: str | None = None, tls=None,
                 auth_file: str | None = None, credentials: tuple[str, str] | None = None):
        self.data_dir = data_dir
        self.host = host
        self.ports = (port, port + 1)
        self.workers = workers
        self.extra_args = tuple(extra_args)
        self.log_dir = log_dir or data_dir
        self.env = env
        # Standalone: only the primary runs, with no peer (the unreplicated baseline).
        self.standalone = standalone
        # "eve" or "passive" (`serve --replication`); None: the serve default (eve).
        self.replication = replication
        # Hardening: `tls` is a runtime.tls.TLSFiles for both nodes (its CA, if any, is also what
        # clients here trust); `credentials` (user, password) are used by `dsn` and `wait_ready`
        # when the nodes run with `auth_file`.
        self.tls = tls
        self.auth_file = auth_file
        self.credentials = credentials
        os.makedirs(data_dir, exist_ok=True)
        self.secret_file = os.path.join(data_dir, "pair.secret")
        if not os.path.exists(self.secret_file):
            with open(self.secret_file, "wb") as handle:
                handle.write(os.urandom(32).hex().encode())
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def dsn(self) -> str:
        ports = self.ports[:1] if self.standalone else self.ports
        return self._dsn([f"{self.host}:{port}" for port in ports])

    def node_dsn(self, name: str) -> str:
        """A DSN for one node (with this pair's TLS and credentials), e.g. for node_status."""
        return self._dsn([self.address(name)])

    def _dsn(self, addresses: list[str]) -> str:
        from urllib.parse import quote

        scheme = "evedb+tls://" if self.tls is not None else "evedb://"
        user = ""
        if self.credentials is not None:
            user = f"{quote(self.credentials[0], safe='')}:{quote(self.credentials[1], safe='')}@"
        query = f"?ca={quote(self.tls.ca)}" if self.tls is not None and self.tls.ca else ""
        return scheme + user + ",".join(addresses) + query

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[0] if name == 'primary' else self.ports[1]}"

    def command(self, name: str) -> list[str]:
        me, other = (self.ports[0], self.ports[1]) if name == "primary" else (self.ports[1], self.ports[0])
        command = [
            sys.executable, "-m", "cli.main", "serve",
            "--role", name,
            "--data", os.path.join(self.data_dir, name),
            "--listen", f"{self.host}:{me}",
            "--secret-file", self.secret_file,
            "--verbose",
        ]
        if not self.standalone:
            command += ["--peer", f"{self.host}:{other}"]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        if self.replication is not None:
            command += ["--replication", self.replication]
        if self.tls is not None:
            command += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key]
            if self.tls.ca:
                command += ["--tls-ca", self.tls.ca]
        if self.auth_file is not None:
            command += ["--auth-file", self.auth_file]
        return command + list(self.extra_args)

    def start(self, name: str, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        environment = dict(os.environ if self.env is None else self.env)
        process = subprocess.Popen(self.command(name) + list(extra_args), stdout=log, stderr=subprocess.STDOUT,
                                   env=environment)
        self.processes[name] = process
        return process

    def start_all(self) -> None:
        self.start("primary")
        if not self.standalone:
            self.start("backup")

    def kill(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until one node is primary and the other its synced backup, whichever is which: after
        a failover the node started as backup is the primary (standalone: until it answers)."""
        from ..client import node_status

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if self.standalone:
                    last = node_status(self.node_dsn("primary"), timeout=2)
                    if last["role"] == "primary":
                        return
                else:
                    last = sorted((status["role"], status["peer_state"]) for status in (
                        node_status(self.node_dsn(name), timeout=2) for name in ("primary", "backup")))
                    if last == [("backup", "synced"), ("primary", "synced")]:
                        return
            except Exception as error:  # not up yet
                last = error
            time.sleep(0.1)
        raise TimeoutError(f"the pair did not become ready in {timeout}s (last status: {last})")

    def __enter__(self) -> "Pair":
        self.start_all()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
