"""``mantis-stream`` is its own CLI: its version and help, offline commands without the Faust app."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from mantis_stream.cli import APP_COMMANDS, OFFLINE_COMMANDS

FIXTURES = Path(__file__).parents[1] / "fixtures"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_version_is_mantis_streams() -> None:
    proc = run("-m", "mantis_stream", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mantis-stream {version('mantis-stream')}"


def test_help_is_ours_and_lists_every_command() -> None:
    proc = run("-m", "mantis_stream", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Welcome" not in proc.stdout and "faust" not in proc.stdout.split("Commands:")[0].lower()
    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {*OFFLINE_COMMANDS, *APP_COMMANDS}


@pytest.mark.parametrize("module", [*(f"commands.{name}" for name in ("detect", "evaluate", "evaluate_nab", "rul", "work_orders")),
                                    "evaluation.rul", "training.rul"])
def test_offline_modules_do_not_import_faust(module: str) -> None:
    code = (f"import sys, mantis_stream.{module}; "
            "print(sorted(m for m in ('faust', 'mantis_stream.app') if m in sys.modules))")
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_detect_runs_without_building_the_app(tmp_path: Path) -> None:
    csv = tmp_path / "series.csv"
    csv.write_text("timestamp,value\n" + "".join(f"2020-01-01 00:{i:02d}:00,{i % 7}.0\n" for i in range(40)))
    proc = run("-X", "importtime", "-m", "mantis_stream", "detect", str(csv))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "timestamp,value,anomaly_score" and len(proc.stdout.splitlines()) == 41
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "faust" not in imported and "mantis_stream.app" not in imported


@pytest.mark.parametrize("args", [("worker", "--help"), ("--datadir", "elsewhere", "worker", "--help")])
def test_app_commands_still_reach_faust(args: tuple[str, ...]) -> None:
    proc = run("-m", "mantis_stream", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Start worker instance for given app." in proc.stdout and "--web-port" in proc.stdout


def test_faust_finds_the_app_in_the_package() -> None:
    proc = run("-m", "faust", "-A", "mantis_stream", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"worker", "workers", "demo", "produce", "replay", "maintenance"} <= set(proc.stdout.split())


def test_bad_worker_settings_do_not_break_help() -> None:
    env = {**os.environ, "MANTIS_INFLUXDB_URL": "ftp://influx/mantis", "MANTIS_RUL_MODEL": "/no/such/rul.json"}
    for args in (("-m", "mantis_stream", "--help"), ("-m", "faust", "-A", "mantis_stream", "--help")):
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, check=False)
        assert proc.returncode == 0 and "Commands:" in proc.stdout, proc.stderr[-2000:]


def test_a_bad_influx_url_stops_the_worker_in_one_line() -> None:
    env = {**os.environ, "MANTIS_INFLUXDB_URL": "ftp://influx/mantis", "MANTIS_BROKER_WAIT": "0"}
    proc = subprocess.run([sys.executable, "-m", "mantis_stream", "worker"], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "mantis-stream: MANTIS_INFLUXDB_URL: InfluxDB URL must be http:// or https://, not 'ftp://influx/mantis'"]


def test_faust_gets_the_app_with_its_agents_registered() -> None:
    proc = run("-m", "faust", "-A", "mantis_stream", "agents")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for agent in ("@preprocess", "@frame", "@features", "@anomaly", "@rul", "@orchestrator", "@maintenance-orders"):
        assert agent in proc.stdout


@pytest.mark.parametrize("name", sorted(set(APP_COMMANDS) - {"worker"}))
def test_the_listed_summary_of_an_app_command_is_its_own(name: str) -> None:
    code = f"from mantis_stream.commands import {name}; print({name}.{name}.__doc__)"
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith(APP_COMMANDS[name].removesuffix("."))
