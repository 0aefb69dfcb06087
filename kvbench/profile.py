"""Where the time goes under kv load: sample the primary, the backup and the client processes
with py-spy while the eve pair (or another mode) serves a steady mix, and summarise.

    python -m kvbench.profile [--mode eve] [--mix w100] [--clients 16] [--seconds 10] [--json PATH]

py-spy (`pip install py-spy`, the `profile` extra) samples each process tree from outside
(`--nonblocking`: the targets are never paused; `--subprocesses`: a node's workers too) at
100 Hz and writes collapsed stacks; this module sums them per process group into the
functions holding the most samples: "self" (the innermost frame) and "total" (anywhere on the
stack).  Alongside, /proc gives the cores each group used (kvbench/cpu.py), so the shares can
be read as CPU time.  A sampler on a 2-core machine takes some CPU itself: read shares, not
absolute times.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import evedb
from evedb.runtime.modes import deployment, settled_statuses

from . import cpu
from .bench import SERVER_ARGS
from .driver import LoadRun
from .workload import Workload, populate

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Innermost frames that mean the thread is blocked, not computing (py-spy's idle detection
# misses some in --nonblocking mode): counted as "waiting", left out of the shares.
_WAITING = {"select", "_recv", "poll", "wait", "sleep", "_worker", "acquire", "accept", "recv_into", "_wait_for_tstate_lock",
            "_receive_exactly", "recv"}


def _project_files() -> set[str]:
    """Basenames of evedb's own modules, for the "total" list (wrappers like click are noise)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = set()
    for package in ("evedb", "evedb/runtime", "kvbench", "mixer_rules"):
        folder = os.path.join(root, package)
        names.update(name for name in os.listdir(folder) if name.endswith(".py") and name != "__init__.py")
    return names - {"main.py"}


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['function']} ({os.path.basename(match['file'])})"


def summarise_collapsed(path: str, top: int = 25) -> dict:
    """Self and total sample counts per function from a py-spy `--format raw` file."""
    own, total, samples, waiting = collections.Counter(), collections.Counter(), 0, 0
    project = _project_files()
    by_file = collections.Counter()
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return {"samples": 0, "waiting_samples": 0, "self": [], "total": [], "self_by_file": []}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        # py-spy puts "process ..." and "thread ..." entries first: keep only code frames.
        code = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not code:
            continue
        if code[-1].partition(" (")[0].rpartition(".")[2] in _WAITING:
            waiting += count
            continue
        samples += count
        own[code[-1]] += count
        by_file[code[-1].rpartition("(")[2].rstrip(")")] += count
        for frame in set(code):
            if frame.rpartition("(")[2].rstrip(")") in project:
                total[frame] += count

    def shares(counter):
        return [{"function": name, "share": value / samples} for name, value in counter.most_common(top)]

    return {"samples": samples, "waiting_samples": waiting, "self": shares(own), "total": shares(total),
            "self_by_file": shares(by_file)}


def profile(mode: str, mix: str, clients: int, seconds: float, processes: int, keys: int, echo=print) -> dict:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy, or the `profile` extra)")
    with tempfile.TemporaryDirectory(prefix="evedb-kv-profile-") as scratch:
        pair = deployment(mode, scratch, None, server_args=SERVER_ARGS)
        with pair:
            pair.wait_ready(90)
            connection = evedb.connect(pair.dsn, autocommit=True, timeout=30)
            populate(connection, keys, 100)
            connection.close()
            settled_statuses(pair, timeout=30)
            load = LoadRun(pair.dsn, Workload(mix=mix, keys=keys), clients=clients, processes=processes, timeout_s=30)
            _, measure_from, _ = load.start(2.0, seconds + 2.0)
            time.sleep(max(0.0, measure_from - time.monotonic()))
            targets = {name: process.pid for name, process in pair.processes.items()}
            targets.update({f"client{number}": pid for number, pid in enumerate(load.pids)})
            recorders = {}
            for name, pid in targets.items():
                output = os.path.join(scratch, f"{name}.txt")
                recorders[name] = (output, subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
                     "--nonblocking", "--format", "raw", "--output", output]
                    + (["--subprocesses"] if not name.startswith("client") else []),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            groups = {**{name: [pid] for name, pid in targets.items() if not name.startswith("client")},
                      "clients": load.pids}
            before, started = cpu.sample(groups), time.monotonic()
            problems = {}
            for name, (_, recorder) in recorders.items():
                _, error = recorder.communicate(timeout=seconds + 60)
                if recorder.returncode != 0:
                    problems[name] = error.decode(errors="replace")[-500:]
            cores = cpu.cores_used(before, cpu.sample(groups), time.monotonic() - started)
            result = load.finish()
            primary, backup, equal = settled_statuses(pair, timeout=30)
            report = {
                "mode": mode, "mix": mix, "clients": clients, "client_processes": processes, "seconds": seconds,
                "ops_per_s_while_sampled": (result.writes + result.reads) / result.duration_s,
                "cores": cores, "roots_equal": equal, "problems": problems,
                "groups": {name: summarise_collapsed(output) for name, (output, _) in recorders.items()},
            }
    return report


def format_profile(report: dict, top: int = 12) -> list[str]:
    lines = [f"profile: {report['mode']} {report['mix']} {report['clients']} clients, "
             f"{report['ops_per_s_while_sampled']:.0f} ops/s while sampled; cores "
             + ", ".join(f"{name} {value:.2f}" for name, value in report["cores"].items())
             + f"; roots equal: {'yes' if report['roots_equal'] else 'NO'}"]
    for name, summary in report["groups"].items():
        lines.append(f"\n[{name}] {summary['samples']} busy samples ({summary.get('waiting_samples', 0)} waiting "
                     f"left out); self time by file: "
                     + ", ".join(f"{entry['function']} {entry['share']:.0%}" for entry in summary["self_by_file"][:8]))
        for entry in summary["self"][:top]:
            lines.append(f"  self  {entry['share']:6.1%}  {entry['function']}")
        for entry in summary["total"][:top]:
            lines.append(f"  total {entry['share']:6.1%}  {entry['function']}")
    for name, problem in report["problems"].items():
        lines.append(f"py-spy failed on {name}: {problem}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="eve")
    parser.add_argument("--mix", default="w100")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    report = profile(options.mode, options.mix, options.clients, options.seconds, options.client_processes, options.keys)
    for line in format_profile(report):
        print(line)
    if options.json:
        with open(options.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, sort_keys=True)
        print(f"wrote {options.json}")


if __name__ == "__main__":
    main()
