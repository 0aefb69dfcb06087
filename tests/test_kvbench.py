"""`evedb bench kv` (kvbench/): the key-value microbenchmarks, end to end on real pairs.

- the CLI in `unreplicated` and `eve` writes a JSON with positive figures and equal roots;
- the --cpu-us procedure gives the same checksum and root on both nodes, refuses a bad
  iteration count without disturbing the pair, and the knobs reach the workload (value size in
  the stored rows, the hot-set share in the keys drawn, the hot keys written on the server);
- the failure timeline, in a short form: kill -9 and restart of each node, failover, equal roots.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

import evedb
from evedb.runtime.modes import deployment, settled_statuses
from kvbench.bench import SERVER_ARGS, summarise
from kvbench.driver import LoadRun
from kvbench.procedures import spin
from kvbench.timeline import Schedule, recovery, run_timeline
from kvbench.workload import Generator, Workload, populate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_smoke_unreplicated_and_eve(tmp_path):
    out = tmp_path / "kv.json"
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "bench", "kv", "--modes", "unreplicated,eve", "--mixes", "w50",
         "--clients", "2", "--runs", "1", "--duration", "0.8", "--warmup", "0.2", "--keys", "300",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "roots equal after every run: yes" in completed.stdout
    report = json.loads(out.read_text())
    assert [point["mode"] for point in report["points"]] == ["unreplicated", "eve"]
    assert report["roots_equal_all"] is True
    for point in report["points"]:
        assert point["ops_per_s"] > 0 and point["writes_per_s"] > 0 and point["reads_per_s"] > 0
        assert 0 < point["p50_ms"] <= point["p99_ms"]
        assert point["batches"] > 0 and point["parallel_batch_width"] >= 1
        assert point["errors"] == 0 and point["roots_equal"] is True
        assert point["cores"]["clients"] > 0
    eve = report["points"][1]["runs"][0]
    assert eve["state_root"] == eve["backup_state_root"] and eve["committed_seq"][0] == eve["committed_seq"][1]
    assert report["ratios"][0]["eve/unreplicated"] > 0


def test_cli_refuses_bad_options(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "cli.main", "bench", "kv", "--mixes", "w75"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "unknown mix 'w75'" in completed.stderr


def test_generator_knobs():
    workload = Workload(mix="w50", keys=1000, value_bytes=33, conflict=0.4, hot_keys=5, cpu_us=10, iterations=77)
    generator = Generator(workload, random.Random(1), tag="t")
    operations = [generator.next() for _ in range(20_000)]
    hot_share = sum(operation.key <= 5 for operation in operations) / len(operations)
    assert abs(hot_share - (0.4 + 0.6 * 5 / 1000)) < 0.02
    writes = [operation for operation in operations if operation.is_write]
    assert abs(len(writes) / len(operations) - 0.5) < 0.02
    assert all(operation.target == "kv_update_cpu" and len(operation.params[1]) == 33 and operation.params[2] == 77
               for operation in writes)
    plain = Generator(Workload(mix="w100", keys=10), random.Random(2), tag="u").next()
    assert plain.method == "execute" and plain.target == "UPDATE kv SET v = ? WHERE k = ?"


def test_cpu_procedure_on_a_pair_and_knobs_on_the_server(tmp_path):
    pair = deployment("eve", str(tmp_path), None, server_args=SERVER_ARGS + ("--peer-timeout-ms", "700"))
    with pair:
        pair.wait_ready(60)
        connection = evedb.connect(pair.dsn, autocommit=True, timeout=20)
        populate(connection, keys=200, value_bytes=37)
        cursor = connection.cursor()
        cursor.callproc("kv_update_cpu", (7, "x" * 37, 5000))
        assert cursor.fetchone()[0] == spin(5000)
        with pytest.raises(evedb.Error, match="iterations must be an integer"):
            cursor.callproc("kv_update_cpu", (8, "y", -1))
        cursor.callproc("kv_select_cpu", (7, 100))
        assert cursor.fetchall() == [("x" * 37,)]

        workload = Workload(mix="w100", keys=200, value_bytes=37, cpu_us=20, iterations=2000, conflict=0.5, hot_keys=3)
        load = LoadRun(pair.dsn, workload, clients=2, processes=2, seed=3, timeout_s=20)
        load.start(0.0, 1.0)
        result = load.finish()
        assert result.writes > 10 and result.errors == 0
        primary, backup, equal = settled_statuses(pair)
        assert equal and primary["state_root"] == backup["state_root"]

        cursor.execute("SELECT min(length(v)), max(length(v)), count(*) FROM kv")
        assert cursor.fetchone() == (37, 37, 200)
        cursor.execute("SELECT k FROM kv WHERE v NOT LIKE 'init.%' ORDER BY k")
        written = [row[0] for row in cursor.fetchall()]
        assert written[:3] == [1, 2, 3]  # half the writes went to the hot keys 1..3
        assert len(written) < 200  # and the rest were spread, not written everywhere
        connection.close()


def test_recovery_and_summary_arithmetic():
    rates = [100, 100, 100, 10, 0, 20, 80, 100]
    assert recovery(rates, 1.0, 3.0, 8.0, 100.0) == {"lowest_ops_per_s": 0, "back_to_half_s": 3.0}
    assert recovery(rates, 1.0, 0.0, 3.0, 100.0) == {"lowest_ops_per_s": 100, "back_to_half_s": 0.0}
    assert recovery([100, 0, 0], 1.0, 1.0, 3.0, 100.0)["back_to_half_s"] is None
    runs = [{"ops_per_s": value, "rollbacks": 1, "roots_equal": True, "cores": {"clients": value / 100}}
            for value in (5.0, 1.0, 3.0)]
    summary = summarise(runs)
    assert summary["ops_per_s"] == 3.0 and summary["rollbacks"] == 3 and summary["cores"]["clients"] == 0.03


def test_timeline_short(tmp_path):
    report = run_timeline(Workload(mix="w50", keys=300), clients=2, processes=1,
                          schedule=Schedule(kill_backup_s=1.5, restart_backup_s=3.0, kill_primary_s=4.5,
                                            restart_primary_s=6.0, end_s=8.0),
                          directory=str(tmp_path), extra_server_args=("--peer-timeout-ms", "500"))
    print(report["ops_per_second"], report["events"])
    assert report["roots_equal"] is True and report["state_root"] == report["backup_state_root"]
    assert report["baseline_ops_per_s"] > 0
    kills = [event for event in report["events"] if event["action"] == "kill"]
    restarts = [event for event in report["events"] if event["action"] == "restart"]
    assert [event["node"] for event in kills] == ["backup", "primary"]
    assert all(event["back_to_half_s"] is not None for event in kills)  # throughput came back after each kill
    assert kills[1]["noticed_s"] is not None and report["view"] >= 1  # the backup took over
    assert all(event["synced_s"] is not None for event in restarts)
    assert sum(report["ops_per_second"][-2:]) > 0  # still serving at the end
