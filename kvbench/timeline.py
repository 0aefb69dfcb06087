"""`evedb bench kv --timeline`: throughput over time while the backup, then the primary, is
killed with SIGKILL and later restarted, with recovery times measured from the series.

Schedule (seconds from the start of the load; a kill waits until both nodes report synced, and
the real instant of each event is recorded): steady load; kill -9 the backup; restart it;
kill -9 the primary (the backup takes over after the peer timeout and the clients fail over
through the DSN's address list); restart it (it rejoins as backup); steady load to the end.

Measured, besides the series (completions per 0.25 s bucket, and per second):
- the baseline: the median bucket rate before the first kill (its first second left out);
- per kill: the lowest rate after it, and the time from the kill until the rate is back to at
  least half the baseline (0 when it never fell below half);
- per kill: when the survivor noticed (backup kill: the primary reports its peer not synced;
  primary kill: the backup reports itself primary), from a status poll every 0.1 s;
- per restart: the time until both nodes report each other synced (`node_status`).

Rules kept: the nodes' state roots are compared at the end, once they have caught up; every
client error (a request that outlasted its timeout across the failover) is counted.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from evedb.client import node_status
from evedb.runtime.modes import deployment, percentile, settled_statuses

from .bench import SERVER_ARGS
from .driver import LoadRun
from .workload import Workload, populate

BUCKET_S = 0.25
_MAX_SHIFT_S = 120.0


@dataclass(frozen=True)
class Schedule:
    kill_backup_s: float = 6.0
    restart_backup_s: float = 12.0
    kill_primary_s: float = 20.0
    restart_primary_s: float = 26.0
    end_s: float = 34.0

    def events(self) -> list[tuple[float, str, str]]:
        return [(self.kill_backup_s, "kill", "backup"), (self.restart_backup_s, "restart", "backup"),
                (self.kill_primary_s, "kill", "primary"), (self.restart_primary_s, "restart", "primary")]


class StatusMonitor(threading.Thread):
    """Polls both nodes every 0.1 s and keeps (seconds from start, node name, status or None)."""

    def __init__(self, pair, start_at: float):
        super().__init__(daemon=True)
        self.pair, self.start_at = pair, start_at
        self.samples: list[tuple[float, str, dict | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for name in ("primary", "backup"):
                try:
                    status = node_status(self.pair.address(name), timeout=0.5)
                except Exception:
                    status = None
                self.samples.append((time.monotonic() - self.start_at, name, status))
            self.stopping.wait(0.1)

    def wait_synced(self, timeout_s: float) -> bool:
        """Until the latest poll of both nodes says synced (or `timeout_s` passes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            latest = {name: status for _, name, status in self.samples[-4:]}
            if len(latest) == 2 and all(status is not None and status["peer_state"] == "synced"
                                        for status in latest.values()):
                return True
            time.sleep(0.05)
        return False

    def first(self, after_s: float, predicate) -> float | None:
        for moment, name, status in self.samples:
            if moment >= after_s and predicate(name, status):
                return moment
        return None


def run_timeline(workload: Workload, *, mode: str = "eve", clients: int = 16, processes: int = 2,
                 schedule: Schedule = Schedule(), workers: int | None = None, seed: int = 7, echo=None,
                 directory: str | None = None, timeout_s: float = 60.0, extra_server_args: tuple[str, ...] = ()) -> dict:
    say = echo or (lambda *args, **kwargs: None)
    with tempfile.TemporaryDirectory(prefix="evedb-kv-timeline-") as scratch:
        pair = deployment(mode, directory or scratch, workers, server_args=SERVER_ARGS + tuple(extra_server_args))
        if pair.standalone:
            raise ValueError(f"the timeline needs a pair: {mode!r} runs one node")
        with pair:
            pair.wait_ready(90)
            import evedb

            connection = evedb.connect(pair.dsn, autocommit=True, timeout=timeout_s)
            say(f"[timeline {mode}] populating kv: {workload.keys} rows through {pair.dsn}")
            populate(connection, workload.keys, workload.value_bytes)
            connection.close()
            settled_statuses(pair, timeout=30)
            load = LoadRun(pair.dsn, workload, clients=clients, processes=processes, seed=seed, timeout_s=timeout_s,
                           bucket_s=BUCKET_S)
            # Room for the waits before kills; the run is ended by `stop_at` at the shifted end.
            start_at, _, _ = load.start(0.0, schedule.end_s + _MAX_SHIFT_S)
            monitor = StatusMonitor(pair, start_at)
            monitor.start()
            events = []
            shift_s = 0.0  # how much later than scheduled the events run, after waits for sync
            for scheduled_s, action, name in schedule.events():
                at_s = scheduled_s + shift_s
                while time.monotonic() < start_at + at_s:
                    time.sleep(min(0.5, max(0.0, start_at + at_s - time.monotonic())))
                    say(f"\r[timeline {mode}] t={time.monotonic() - start_at:5.1f}s, next: {action} {name} "
                        f"at {at_s:g}s   ", nl=False)
                if action == "kill":
                    # Killing a node while its peer is still catching up would take the pair down
                    # (only an in-sync backup may take over): wait, and record the real instant.
                    monitor.wait_synced(timeout_s=_MAX_SHIFT_S / 2)
                    shift_s = max(shift_s, time.monotonic() - start_at - scheduled_s)
                    pair.kill(name)
                else:
                    pair.start(name)
                events.append({"at_s": time.monotonic() - start_at, "action": action, "node": name})
                say(f"\r[timeline {mode}] t={events[-1]['at_s']:5.1f}s: {action} -9 {name}" if action == "kill"
                    else f"\r[timeline {mode}] t={events[-1]['at_s']:5.1f}s: {action} {name}")
            end_s = schedule.end_s + shift_s
            while time.monotonic() < start_at + end_s:
                time.sleep(min(0.5, max(0.0, start_at + end_s - time.monotonic())))
                say(f"\r[timeline {mode}] t={time.monotonic() - start_at:5.1f}s of {end_s:.1f}s   ", nl=False)
            load.stop_at(start_at + end_s)
            result = load.finish()
            say("")
            primary, backup, roots_equal = settled_statuses(pair, timeout=60)
            # The settle check polls on its own: let the monitor see the synced pair too, or a
            # node that synced just after the load ended would have no synced sample.
            monitor.wait_synced(timeout_s=10)
            monitor.stopping.set()
            monitor.join()
    return timeline_report(result, events, monitor, schedule, end_s, mode=mode, clients=clients, workload=workload,
                           primary=primary, backup=backup, roots_equal=roots_equal)


def _other(name: str) -> str:
    return "backup" if name == "primary" else "primary"


def recovery(rates: list[float], bucket_s: float, at_s: float, until_s: float, baseline: float) -> dict:
    """Lowest rate in [at, until) and the time from `at` until the rate is back to half the baseline."""
    first, last = int(at_s / bucket_s), min(len(rates), int(until_s / bucket_s))
    window = rates[first:last]
    lowest = min(window) if window else 0.0
    back_s = None
    dipped = False
    for index in range(first, last):
        if rates[index] < 0.5 * baseline:
            dipped = True
        elif dipped:
            back_s = index * bucket_s - at_s
            break
    if not dipped:
        back_s = 0.0
    return {"lowest_ops_per_s": lowest, "back_to_half_s": back_s if back_s is None else max(0.0, back_s)}


def timeline_report(result, events, monitor, schedule, end_s, *, mode, clients, workload, primary, backup, roots_equal) -> dict:
    bucket_s = result.bucket_s
    rates = [count / bucket_s for count in result.buckets_ops][: int(end_s / bucket_s)]
    steady = rates[int(1.0 / bucket_s): int(events[0]["at_s"] / bucket_s)]
    baseline = statistics.median(steady) if steady else 0.0
    per_second = [sum(result.buckets_ops[index: index + int(1 / bucket_s)])
                  for index in range(0, len(rates), int(1 / bucket_s))]
    measured = []
    for number, event in enumerate(events):
        until = events[number + 1]["at_s"] if number + 1 < len(events) else end_s
        entry = dict(event)
        if event["action"] == "kill":
            entry.update(recovery(rates, bucket_s, event["at_s"], until, baseline))
            if event["node"] == "backup":
                noticed = monitor.first(event["at_s"], lambda name, status: name == "primary" and status is not None
                                        and status["peer_state"] != "synced")
            else:
                noticed = monitor.first(event["at_s"], lambda name, status: name == "backup" and status is not None
                                        and status["role"] == "primary")
            entry["noticed_s"] = None if noticed is None else noticed - event["at_s"]
        else:
            synced = _first_synced(monitor, event["at_s"], event["node"])
            entry["synced_s"] = None if synced is None else synced - event["at_s"]
        measured.append(entry)
    latencies = result.write_latencies_s + result.read_latencies_s
    return {
        "benchmark": "kv-timeline",
        "mode": mode,
        "clients": clients,
        "workload": asdict(workload),
        "schedule": asdict(schedule),
        "end_s": end_s,
        "bucket_s": bucket_s,
        "ops_per_bucket_s": rates,
        "ops_per_second": per_second,
        "baseline_ops_per_s": baseline,
        "events": measured,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else 0.0,
        "roots_equal": roots_equal,
        "state_root": (primary or {}).get("state_root"),
        "backup_state_root": (backup or {}).get("state_root"),
        "final_roles": {"primary": (primary or {}).get("node"), "backup": (backup or {}).get("node")},
        "committed_seq": [(primary or {}).get("committed_seq"), (backup or {}).get("committed_seq")],
        "view": (primary or {}).get("view"),
    }


def _first_synced(monitor: StatusMonitor, after_s: float, restarted: str) -> float | None:
    """The first poll after `after_s` at which the restarted node and the other both report synced."""
    latest: dict[str, dict | None] = {}
    for moment, name, status in monitor.samples:
        latest[name] = status
        if moment < after_s:
            continue
        mine, theirs = latest.get(restarted), latest.get(_other(restarted))
        if mine is not None and theirs is not None and mine["peer_state"] == "synced" \
                and theirs["peer_state"] == "synced" and moment >= after_s:
            return moment
    return None


def format_timeline(report: dict) -> list[str]:
    lines = [f"timeline, {report['mode']}: {report['clients']} clients, mix {report['workload']['mix']}, "
             f"baseline {report['baseline_ops_per_s']:.0f} ops/s (median before the first kill)",
             "ops per second: " + " ".join(str(count) for count in report["ops_per_second"])]
    for event in report["events"]:
        if event["action"] == "kill":
            back = event["back_to_half_s"]
            noticed = event["noticed_s"]
            lines.append(f"  t={event['at_s']:5.1f}s kill -9 {event['node']}: lowest {event['lowest_ops_per_s']:.0f} ops/s, "
                         f"back to 50% after {'never' if back is None else f'{back:.2f}s'}, noticed by the "
                         f"survivor after {'never' if noticed is None else f'{noticed:.2f}s'}")
        else:
            synced = event["synced_s"]
            lines.append(f"  t={event['at_s']:5.1f}s restart {event['node']}: both synced after "
                         f"{'never' if synced is None else f'{synced:.2f}s'}")
    lines.append(f"errors {report['errors']}, p50 {report['p50_ms']:.2f} ms, p99 {report['p99_ms']:.2f} ms, "
                 f"max {report['max_ms']:.0f} ms; final view {report['view']}")
    lines.append(f"both nodes' state roots equal at the end: {'yes' if report['roots_equal'] else 'NO'} "
                 f"(committed seq {report['committed_seq']})")
    return lines
