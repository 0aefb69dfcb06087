"""A fault campaign: a real pair under load, a seeded schedule of faults, then the checks.

Owns the run: two `evedb serve` processes on loopback with a `FaultProxy` on each peer link
(each node dials its peer through one) and one in front of each node for the clients; the
workload clients; the schedule's faults performed one at a time; the recovery measured after
each; the checks of `checker` once the pair has settled; the report.

Rules kept:
- one fault at a time: each ends (restart, SIGCONT, heal) and the pair is back in sync with a
  client write acknowledged before the next one starts; a pair that does not recover within
  `recovery_timeout_s` ends the campaign and fails it;
- recovery time is measured from the fault's end to the first moment both nodes report the
  pair in sync (one primary, one backup, same view) and some client has had a write
  acknowledged after the fault ended;
- a node that exits when nobody killed it is a violation (it is restarted so the campaign goes
  on), except after a full disk, where exiting is the rule (fail-stop, see DESIGN.md);
- the data directory is kept when anything failed, and its path is in the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import evedb
from evedb.client import node_status
from evedb.runtime.launch import Pair, free_port_pair
from evedb.runtime.node import STORAGE_FAILURE_EXIT_CODE

from . import checker, workloads
from .proxy import FaultProxy
from .scheduler import KINDS, Fault, schedule

NAMES = ("primary", "backup")


def _other(name: str) -> str:
    return "backup" if name == "primary" else "primary"


class ProxiedPair(Pair):
    """A `Pair` whose nodes dial each other through the given peer addresses (proxies), each
    with a file that, while it exists, makes its SQLite writes fail with SQLITE_FULL."""

    def __init__(self, *args, peer_addresses: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.peer_addresses = peer_addresses

    def disk_full_file(self, name: str) -> str:
        return os.path.join(self.data_dir, f"{name}.disk-full")

    def command(self, name: str) -> list[str]:
        command = super().command(name)
        command[command.index("--peer") + 1] = self.peer_addresses[name]
        return command + ["--test-disk-full-file", self.disk_full_file(name)]


@dataclass
class FaultResult:
    number: int
    kind: str
    target: str
    node: str  # the process the target role resolved to ("both" for links)
    duration_s: float
    at_s: float = 0.0  # when it started, from the start of the load
    recovered: bool = False
    recovery_s: float | None = None
    note: str = ""


@dataclass
class CampaignSettings:
    seed: int = 1
    duration_s: float = 60.0
    clients: int = 3
    workers: int = 2
    peer_timeout_ms: int = 1000
    recovery_timeout_s: float = 60.0
    client_timeout_s: float = 30.0
    kinds: tuple[str, ...] = KINDS
    data_dir: str | None = None  # default: a fresh temporary directory, removed if all went well
    keep_data: bool = False


@dataclass
class CampaignReport:
    settings: dict
    faults: list[FaultResult] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    workload: dict = field(default_factory=dict)
    final_statuses: list[dict] = field(default_factory=list)
    unrecovered: int = 0
    data_dir: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.unrecovered

    def summary(self) -> dict[str, dict]:
        by_kind: dict[str, dict] = {}
        for fault in self.faults:
            entry = by_kind.setdefault(fault.kind, {"injected": 0, "recovered": 0, "recovery_s": []})
            entry["injected"] += 1
            if fault.recovered:
                entry["recovered"] += 1
                entry["recovery_s"].append(fault.recovery_s)
        for entry in by_kind.values():
            times = entry.pop("recovery_s")
            entry["recovery_median_s"] = round(statistics.median(times), 3) if times else None
            entry["recovery_max_s"] = round(max(times), 3) if times else None
        return dict(sorted(by_kind.items(), key=lambda item: KINDS.index(item[0])))

    def as_dict(self) -> dict:
        return {
            "settings": self.settings, "elapsed_s": round(self.elapsed_s, 1), "summary": self.summary(),
            "faults": [asdict(fault) for fault in self.faults], "workload": self.workload,
            "violations": self.violations, "unrecovered": self.unrecovered,
            "final_statuses": self.final_statuses, "data_dir": self.data_dir,
        }

    def lines(self) -> list[str]:
        out = [f"{'fault':20s} {'injected':>8s} {'recovered':>9s} {'median s':>9s} {'max s':>7s}"]
        totals = [0, 0]
        for kind, entry in self.summary().items():
            median = "-" if entry["recovery_median_s"] is None else f"{entry['recovery_median_s']:.2f}"
            maximum = "-" if entry["recovery_max_s"] is None else f"{entry['recovery_max_s']:.2f}"
            out.append(f"{kind:20s} {entry['injected']:>8d} {entry['recovered']:>9d} {median:>9s} {maximum:>7s}")
            totals[0] += entry["injected"]
            totals[1] += entry["recovered"]
        out.append(f"{'total':20s} {totals[0]:>8d} {totals[1]:>9d}")
        out.append("workload: " + ", ".join(f"{key} {value}" for key, value in self.workload.items()))
        for fault in self.faults:
            if fault.note:
                out.append(f"  #{fault.number} {fault.kind} ({fault.node}): {fault.note}")
        for line in self.violations[:50]:
            out.append(f"VIOLATION: {line}")
        if self.unrecovered:
            out.append(f"the pair did not recover from {self.unrecovered} fault(s)")
        if self.data_dir:
            out.append(f"data and node logs kept in {self.data_dir}")
        out.append(f"violations: {len(self.violations)}")
        return out


class Campaign:
    def __init__(self, settings: CampaignSettings, echo=print):
        self.settings = settings
        self.echo = echo
        self.report = CampaignReport(settings={k: v for k, v in asdict(settings).items() if k != "kinds"}
                                     | {"kinds": list(settings.kinds)})
        self._expected_exit: set[str] = set()

    # --- setup ---

    def _start(self, data_dir: str) -> None:
        port = free_port_pair()
        node_ports = {"primary": port, "backup": port + 1}
        # The peer proxy named after a node carries what that node sends (the link it dials).
        self.peer_proxies = {name: FaultProxy(("127.0.0.1", node_ports[_other(name)]), name=f"peer-from-{name}")
                             for name in NAMES}
        self.client_proxies = {name: FaultProxy(("127.0.0.1", node_ports[name]), name=f"client-to-{name}")
                               for name in NAMES}
        rules_path = os.path.join(data_dir, "fault_rules.toml")
        with open(rules_path, "w") as handle:
            handle.write(workloads.MIXER_RULES_TOML)
        self.pair = ProxiedPair(
            os.path.join(data_dir, "pair"), port, workers=self.settings.workers,
            extra_args=("--peer-timeout-ms", str(self.settings.peer_timeout_ms),
                        "--procedures", workloads.PROCEDURE_MODULE, "--rules", rules_path),
            peer_addresses={name: self.peer_proxies[name].address_text for name in NAMES},
        )
        self.direct_dsn = self.pair.dsn
        self.client_dsn = "evedb://" + ",".join(self.client_proxies[name].address_text for name in NAMES)
        self.pair.start_all()
        self.pair.wait_ready(90)
        workloads.create_schema(self.client_dsn)

    def _start_clients(self) -> None:
        self.stop_clients = threading.Event()
        self.clients = [workloads.WorkloadClient(self.client_dsn, self.settings.seed, number, self.stop_clients,
                                                 timeout_s=self.settings.client_timeout_s)
                        for number in range(self.settings.clients)]
        for client in self.clients:
            client.start()

    # --- observing the pair ---

    def _status(self, name: str, timeout: float = 1.0) -> dict | None:
        try:
            return node_status(self.pair.address(name), timeout=timeout)
        except Exception:
            return None

    def _roles(self) -> dict[str, str]:
        """Role -> process name, from what the live nodes say (the higher view wins a tie)."""
        statuses = {name: self._status(name) for name in NAMES}
        live = sorted(((s["view"], name, s["role"]) for name, s in statuses.items() if s), reverse=True)
        roles: dict[str, str] = {}
        for _, name, role in live:
            roles.setdefault(role, name)
        for role in NAMES:  # a role nobody claims goes to whoever has none
            if role not in roles:
                roles[role] = next((name for name in NAMES if name not in roles.values()), _other(roles[_other(role)]))
        return roles

    def _in_sync(self) -> bool:
        statuses = [self._status(name) for name in NAMES]
        if None in statuses:
            return False
        roles = sorted(status["role"] for status in statuses)
        return (roles == ["backup", "primary"] and statuses[0]["view"] == statuses[1]["view"]
                and all(status["peer_state"] == "synced" for status in statuses))

    def _check_processes(self) -> None:
        """A node that exited by itself is a violation (after a full disk it is the rule)."""
        for name, process in self.pair.processes.items():
            code = process.poll()
            if code is not None and name not in self._expected_exit:
                self.report.violations.append(f"{name} exited by itself with code {code} (see its log)")
                self.pair.start(name)

    def _wait_recovered(self, healed_at: float) -> float | None:
        deadline = healed_at + self.settings.recovery_timeout_s
        while time.monotonic() < deadline:
            self._check_processes()
            if any(client.acknowledged_after(healed_at) for client in self.clients) and self._in_sync():
                return time.monotonic() - healed_at
            time.sleep(0.05)
        return None

    # --- faults ---

    def _kill(self, name: str) -> None:
        self._expected_exit.add(name)
        self.pair.kill(name)

    def _restart(self, name: str) -> None:
        self.pair.start(name)
        self._expected_exit.discard(name)

    def _wait_status(self, name: str, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._status(name, timeout=0.5)
            if status is not None and predicate(status):
                return True
            time.sleep(0.02)
        return False

    def _inject(self, fault: Fault, result: FaultResult) -> float:
        """Perform `fault`; return when it ended (monotonic time)."""
        kind, name = fault.kind, result.node
        if kind == "kill":
            self._kill(name)
            time.sleep(fault.duration_s)
            self._restart(name)
        elif kind == "kill_mid_transfer":
            self._kill(name)
            time.sleep(fault.duration_s)
            self._restart(name)
            caught = self._wait_status(name, lambda s: s["role"] == "backup" and s["peer_state"] != "synced", 20)
            self._kill(name)
            result.note = "killed while catching up" if caught else "caught up before the second kill"
            time.sleep(0.3)
            self._restart(name)
        elif kind == "kill_mid_failover":
            other = _other(name)
            self._kill(name)
            took_over = self._wait_status(other, lambda s: s["role"] == "primary", 20)
            time.sleep(fault.duration_s)
            self._restart(name)
            rejoining = self._wait_status(name, lambda s: s["role"] == "backup" and s["peer_state"] != "synced", 20)
            self._kill(name)
            result.note = ("took over; old primary killed again while rejoining" if took_over and rejoining
                           else f"took over: {took_over}, caught rejoining: {rejoining}")
            time.sleep(0.3)
            self._restart(name)
        elif kind == "pause":
            process = self.pair.processes[name]
            process.send_signal(signal.SIGSTOP)
            try:
                time.sleep(fault.duration_s)
            finally:
                process.send_signal(signal.SIGCONT)
        elif kind == "disk_full":
            trigger = self.pair.disk_full_file(name)
            self._expected_exit.add(name)
            open(trigger, "w").close()
            filled_at = time.monotonic()
            process = self.pair.processes[name]
            try:
                # Under load the node writes within milliseconds; the disk stays full at least
                # `duration_s` (the node is down meanwhile, as a real full disk would keep it).
                code = process.wait(timeout=15.0)
                time.sleep(max(0.0, filled_at + fault.duration_s - time.monotonic()))
                result.note = f"stopped with exit code {code}"
                if code != STORAGE_FAILURE_EXIT_CODE:
                    self.report.violations.append(f"{name} stopped with code {code} on a full disk, not the "
                                                  f"fail-stop code {STORAGE_FAILURE_EXIT_CODE} (see its log)")
            except subprocess.TimeoutExpired:
                result.note = "did not stop: wrote nothing while the disk was full"
            os.remove(trigger)
            if process.poll() is not None:
                self._restart(name)
            else:
                self._expected_exit.discard(name)
        elif kind.startswith(("peer_", "client_")):
            proxies = self.peer_proxies if kind.startswith("peer_") else self.client_proxies
            chosen = list(proxies.values()) if fault.target == "both" else [proxies[name]]
            action = kind.split("_", 1)[1]
            for proxy in chosen:
                if action == "delay":
                    proxy.set_delay(fault.delay_ms)
                elif action == "stall":
                    proxy.stall(fault.duration_s)
                elif action == "drop":
                    proxy.drop(fault.duration_s)
                elif action == "cut":
                    proxy.cut()
            time.sleep(fault.duration_s)
            for proxy in chosen:
                proxy.heal()
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return time.monotonic()

    # --- the run ---

    def run(self) -> CampaignReport:
        settings = self.settings
        data_dir = settings.data_dir or tempfile.mkdtemp(prefix="evedb-torture-")
        os.makedirs(data_dir, exist_ok=True)
        self.echo(f"seed {settings.seed}: {settings.duration_s:g}s of faults, {settings.clients} clients, "
                  f"{settings.workers} workers per node, data in {data_dir}")
        started = time.monotonic()
        self.pair = None
        try:
            self._start(data_dir)
            self._start_clients()
            load_started = time.monotonic()
            deadline = load_started + settings.duration_s
            for fault in schedule(settings.seed, 100_000, peer_timeout_ms=settings.peer_timeout_ms,
                                  kinds=settings.kinds):
                if time.monotonic() + fault.gap_s >= deadline:
                    break
                time.sleep(fault.gap_s)
                self._check_processes()
                node = "both" if fault.target == "both" else self._roles()[fault.target]
                result = FaultResult(fault.number, fault.kind, fault.target, node, fault.duration_s,
                                     at_s=round(time.monotonic() - load_started, 2))
                self.report.faults.append(result)
                healed_at = self._inject(fault, result)
                recovery_s = self._wait_recovered(healed_at)
                result.recovered = recovery_s is not None
                result.recovery_s = None if recovery_s is None else round(recovery_s, 3)
                self.echo(f"  {fault.describe()} -> {node}: "
                          + (f"recovered in {recovery_s:.2f}s" if result.recovered else "NOT RECOVERED")
                          + (f" ({result.note})" if result.note else ""))
                if not result.recovered:
                    self.report.unrecovered += 1
                    break
            self._settle_and_check()
        except Exception as error:
            self.report.violations.append(f"the campaign failed: {type(error).__name__}: {error}")
        finally:
            if getattr(self, "stop_clients", None) is not None:
                self.stop_clients.set()
            if self.pair is not None:
                self.pair.stop()
            for proxy in list(getattr(self, "peer_proxies", {}).values()) + list(
                    getattr(self, "client_proxies", {}).values()):
                proxy.close()
        self.report.elapsed_s = time.monotonic() - started
        if self.report.ok and not settings.keep_data and settings.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            self.report.data_dir = data_dir
        return self.report

    def _settle_and_check(self) -> None:
        self.stop_clients.set()
        for client in self.clients:
            client.join(self.settings.client_timeout_s + 10)
        if any(client.is_alive() for client in self.clients):
            self.report.violations.append("a client did not finish its last request")
        # The last commits reach the backup with the next heartbeat: wait for equal roots.
        deadline = time.monotonic() + 30
        statuses = []
        while time.monotonic() < deadline:
            statuses = [self._status(name, timeout=2) for name in NAMES]
            if None not in statuses and not checker.check_roots(statuses) and self._in_sync():
                break
            time.sleep(0.1)
        if None in statuses:
            self.report.violations.append("a node does not answer after the campaign")
            return
        self.report.final_statuses = statuses
        self.report.violations += checker.check_roots(statuses)
        connection = evedb.connect(self.direct_dsn, autocommit=True, timeout=30)
        try:
            balances = dict(connection.execute("SELECT id, balance FROM fault_account").fetchall())
            transfers = connection.execute("SELECT id, source, target, amount FROM fault_transfer").fetchall()
            ring = connection.execute("SELECT k, next FROM fault_ring").fetchall()
            cycle_ops = connection.execute("SELECT id, seq, position, a, b, c, d FROM fault_cycle_op").fetchall()
        finally:
            connection.close()
        records = [client.record for client in self.clients]
        self.report.violations += checker.check_client_replies(records)
        self.report.violations += checker.check_exactly_once(records, transfers, cycle_ops)
        self.report.violations += checker.check_bank(balances, transfers)
        self.report.violations += checker.check_cycle(records, ring, cycle_ops)
        acknowledged = [ack for record in records for ack in record.acknowledged]
        self.report.workload = {
            "transfers acknowledged": sum(ack.kind == "transfer" for ack in acknowledged),
            "rotations acknowledged": sum(ack.kind == "cycle" for ack in acknowledged),
            "unknown outcomes": sum(len(record.unknown) for record in records),
            "reads checked": sum(record.reads_checked for record in records),
            "view changes": max(status["view"] for status in statuses),
            "state transfers": sum(status["state_transfers"] for status in statuses),
        }


def run_campaign(settings: CampaignSettings, echo=print) -> CampaignReport:
    return Campaign(settings, echo).run()


def write_json(report: CampaignReport, path: str) -> None:
    with open(path, "w") as handle:
        json.dump(report.as_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
