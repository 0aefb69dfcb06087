"""The `evedb` command line: `mix --explain` and the demo, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from cli.main import main


def test_mix_explain_with_schema(tmp_path):
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE item(i_id INTEGER PRIMARY KEY, i_stock INT);\n"
                      "CREATE TABLE audit(id INTEGER PRIMARY KEY, note TEXT);\n"
                      "CREATE TRIGGER t AFTER UPDATE ON item BEGIN INSERT INTO audit(note) VALUES ('x'); END;\n")
    result = CliRunner().invoke(main, ["mix", "--explain", "UPDATE item SET i_stock = ? WHERE i_id = ?",
                                       "--params", "[5, 7]", "--schema", str(schema), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["writes"] == ["audit", "item"]  # the trigger's write is seen
    assert {"table": "item", "key": [7]} in report["keys"]
    assert report["exclusive"] is False and report["read_only"] is False


def test_mix_explain_text_output_and_exclusive():
    result = CliRunner().invoke(main, ["mix", "--explain", "CREATE TABLE t(a INTEGER PRIMARY KEY)"])
    assert result.exit_code == 0, result.output
    assert "exclusive: yes (runs alone)" in result.output
    result = CliRunner().invoke(main, ["mix", "--explain", "SELECT * FROM t WHERE a = 1"])
    assert "reads:     t (whole table)" in result.output  # no schema: no keys
    assert "no schema given" in result.output


def test_mix_explain_rejects_bad_params_json():
    result = CliRunner().invoke(main, ["mix", "--explain", "SELECT 1", "--params", "[1,"])
    assert result.exit_code != 0
    assert "not JSON" in result.output


def test_demo_runs_real_work_and_exits_zero():
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--seconds", "3", "--clients", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout[-3000:]
    assert "backup state root" in completed.stdout and ": equal" in completed.stdout
    eve_line = next(line for line in completed.stdout.splitlines() if line.startswith("eve "))
    assert float(eve_line.split()[1]) > 0  # WIPS
