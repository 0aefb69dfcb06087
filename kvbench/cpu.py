"""Where the cores went during a measured window: CPU seconds of process trees, read from /proc.

A sample holds, per named group (primary, backup, clients), the user + system CPU of each
group's root processes and all their descendants (a node's worker processes are its children),
plus the machine's total busy time from /proc/stat, so "other" is whatever else ran on the
machine (another job sharing it).  On a system without /proc every figure is 0.0.
"""

from __future__ import annotations

import os

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _all_processes() -> dict[int, tuple[int, float]]:
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                table[int(name)] = fields
    return table


def machine_busy_s() -> float:
    try:
        with open("/proc/stat", "rb") as handle:
            values = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS_PER_S


def sample(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each group's process trees, and `machine` busy seconds."""
    table = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    result = {}
    for name, roots in groups.items():
        total, stack, seen = 0.0, list(roots), set()
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            total += table[pid][1]
            stack.extend(children.get(pid, ()))
        result[name] = total
    result["machine"] = machine_busy_s()
    return result


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each group kept busy between two samples; `other` is the machine minus the groups.
    A process that died between the samples (a killed node) is left out of its group."""
    if seconds <= 0:
        return {}
    used = {name: max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) / seconds for name in after}
    ours = sum(value for name, value in used.items() if name != "machine")
    used["other"] = max(0.0, used.get("machine", 0.0) - ours)
    return used
