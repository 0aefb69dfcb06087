"""The short CI fault campaign: `evedb torture` on a real pair for ~25 s of seeded faults.

Seed 19's plan opens with a cut of both peer links, a kill during catch-up, a full disk on the
primary, a kill of the backup and long pauses of the primary, so even a slow run covers
several kinds of fault.  The long campaign is the same command with a longer --duration
(bench/FAULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

SEED = 19


def test_the_ci_campaign_reports_zero_violations(tmp_path):
    report_path = tmp_path / "campaign.json"
    finished = subprocess.run(
        [sys.executable, "-m", "cli.main", "torture", "--duration", "25", "--seed", str(SEED),
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=240,
    )
    lines = finished.stdout.strip().splitlines()
    assert lines and lines[-1] == "violations: 0", finished.stdout[-4000:] + finished.stderr[-2000:]
    assert finished.returncode == 0, finished.stdout[-4000:]
    report = json.loads(report_path.read_text())
    assert report["violations"] == [] and report["unrecovered"] == 0
    faults = report["faults"]
    assert len(faults) >= 3 and all(fault["recovered"] for fault in faults)
    assert [fault["kind"] for fault in faults[:3]] == ["peer_cut", "kill_mid_transfer", "disk_full"]
    assert faults[2]["note"] == "stopped with exit code 74"  # fail-stop on a full disk
    workload = report["workload"]
    assert workload["transfers acknowledged"] > 0 and workload["rotations acknowledged"] > 0
    assert workload["view changes"] >= 1  # the full disk on the primary made the backup take over
    assert "fault" in finished.stdout and "total" in finished.stdout  # the table


def test_torture_refuses_an_unknown_fault_kind():
    finished = subprocess.run([sys.executable, "-m", "cli.main", "torture", "--kinds", "kill,meteor"],
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "unknown fault kinds: meteor" in finished.stdout
