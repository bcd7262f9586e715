"""Closing the demo's terminal leaves no process behind, and the demo keeps its files in one folder.

Why: a SIGHUP during ``make run`` once left the embedded broker and the worker
running (owned by init); the next demo silently used that old broker.  The
test starts the real demo in its own process group, as a terminal would, sends
SIGHUP to the group and looks for the demo's children by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mantis_stream.demo.broker import EmbeddedBroker, free_port

from conftest import ROOT


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def start_demo(cwd: Path, broker_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    env.update(MANTIS_BROKER=broker_url, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "mantis_stream", "demo", "--duration", "300"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_line(demo: subprocess.Popen[str], pattern: str, seen: list[str], timeout: float = 90) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = demo.stderr.readline()  # type: ignore[union-attr]
        if not line and demo.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r}:\n{''.join(seen)}")


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_to_the_demo_group_stops_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    demo = start_demo(tmp_path, f"kafka://127.0.0.1:{free_port()}")  # nothing listens there: the demo starts Tansu
    seen: list[str] = []
    try:
        broker_pid = int(wait_for_line(demo, r"started the embedded Tansu broker at \S+ \(pid (\d+)\)", seen)[1])
        match = wait_for_line(demo, r"worker pid (\d+), web server http://127.0.0.1:(\d+)", seen)
        worker_pid, web_port = int(match[1]), int(match[2])
        assert alive(broker_pid) and alive(worker_pid)
        deadline = time.monotonic() + 90
        log = tmp_path / "mantis-demo" / "mantis-demo-worker.log"
        while "Ready" not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(seen)
            time.sleep(0.5)
        os.killpg(demo.pid, sig)  # what closing the terminal (or a service manager) does
        demo.wait(timeout=60)
        seen.append(demo.stderr.read())  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while (alive(broker_pid) or alive(worker_pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(worker_pid), f"the worker outlived the demo:\n{''.join(seen)}"
        assert not alive(broker_pid), f"the embedded broker outlived the demo:\n{''.join(seen)}"
        assert "stopped." in "".join(seen)
        assert web_port > 0
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["mantis-demo"], files
        inside = {p.name for p in (tmp_path / "mantis-demo").iterdir()}
        assert {"mantis-demo-worker.log", "mantis-traces.jsonl"} <= inside
        assert any(name.startswith("mantis-demo-") and name.endswith("-data") for name in inside), inside
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


@pytest.mark.broker
def test_the_demo_says_when_it_uses_a_broker_it_did_not_start(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        demo = start_demo(tmp_path, broker.url)
        seen: list[str] = []
        try:
            wait_for_line(demo, rf"using the broker already running at {re.escape(broker.url)} \(not started by this demo", seen)
            worker_pid = int(wait_for_line(demo, r"worker pid (\d+)", seen)[1])
            os.killpg(demo.pid, signal.SIGINT)
            demo.wait(timeout=60)
            assert not alive(worker_pid)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
        assert broker.pid is not None and alive(broker.pid), "a broker the demo did not start keeps running"


def test_gitignore_lists_the_demo_folder() -> None:
    assert "/mantis-demo/" in (ROOT / ".gitignore").read_text().splitlines()
