"""``mantis-stream trace show|list`` through the CLI, on the recorded ``fixtures/traces/pipeline.jsonl``.

The rendering itself is tested in the test process (``tests/unit/test_trace_view.py``);
this checks the commands' arguments, exit codes and one-line errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parents[1] / "fixtures" / "traces" / "pipeline.jsonl"
WORK_ORDER_TRACE = "00000000000000000000000000abc024"
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mantis_stream", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def test_trace_commands_from_the_cli():
    shown = run_cli("trace", "show", "abc024", "--file", str(FIXTURE), "--width", "160")
    assert shown.returncode == 0, shown.stderr
    assert f"Trace {WORK_ORDER_TRACE}" in shown.stdout and "19 spans" in shown.stdout
    assert "\x1b[" not in shown.stdout  # not a terminal: no colors
    listed = run_cli("trace", "list", env={"MANTIS_TRACE_FILE": str(FIXTURE)})
    assert listed.returncode == 0, listed.stderr
    assert sum(1 for line in listed.stdout.splitlines() if line[:32].isalnum()) == 4
    missing = run_cli("trace", "show", "ffff", "--file", str(FIXTURE))
    assert missing.returncode == 1 and missing.stderr.strip() == f"mantis-stream trace: trace ffff not in {FIXTURE}"
    nofile = run_cli("trace", "list", "--file", "/nonexistent/t.jsonl")
    assert nofile.returncode == 1 and nofile.stderr.count("\n") == 1 and "no trace file at" in nofile.stderr
