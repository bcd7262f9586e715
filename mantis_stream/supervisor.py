"""N worker processes of one consumer group on one machine (``mantis-stream workers N``).

Why this exists
    One Faust worker is one Python process: one core.  Kafka spreads a topic's
    partitions over the members of a consumer group, so N workers with the
    same app id share the work N ways, up to the partition count.  This starts
    them as a user would (``mantis-stream worker``), each with its own web port
    (``MANTIS_WEB_PORT`` + i: health, ingest and ``/metrics``) and data
    directory, and stops them together.

Behaviour
    - Worker ``i`` runs ``python -m mantis_stream --datadir ROOT/worker-i worker``
      with ``MANTIS_WEB_PORT`` = base port + i; every other setting comes from
      the environment, so all of them join the group ``MANTIS_APP_ID``.
    - Their output goes to the supervisor's own stdout/stderr (each log line
      carries its process id).
    - SIGTERM or SIGINT: each worker gets SIGTERM (Faust's graceful stop:
      offsets committed, partitions released), then SIGKILL after
      ``stop_timeout`` seconds.  The workers run in their own session so a
      Ctrl-C in the terminal reaches them once, through the supervisor.
    - When one worker exits on its own, the others are stopped and the
      supervisor exits with that worker's code: a process manager (systemd,
      Docker's restart policy) restarts the whole set, as it would one worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

#: How often the supervisor looks at its workers.
POLL_SECONDS = 0.2


def worker_commands(n: int, *, web_port: int, datadir: Path, loglevel: str = "info",
                    without_web: bool = False) -> list[tuple[list[str], dict[str, str]]]:
    """Command line and environment of each of ``n`` workers."""
    if n < 1:
        raise ValueError(f"workers: N must be >= 1, got {n}")
    out = []
    for i in range(n):
        cmd = [sys.executable, "-m", "mantis_stream", "--datadir", str(datadir / f"worker-{i}"), "worker", "-l", loglevel]
        if without_web:
            cmd.append("--without-web")
        out.append((cmd, {**os.environ, "MANTIS_WEB_PORT": str(web_port + i)}))
    return out


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every running worker, then SIGKILL those still running after ``timeout`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def supervise(n: int, *, web_port: int, datadir: Path, loglevel: str = "info", without_web: bool = False,
              stop_timeout: float = 30.0) -> int:
    """Run ``n`` workers until a signal or until one exits; returns the exit code for the supervisor."""
    commands = worker_commands(n, web_port=web_port, datadir=datadir, loglevel=loglevel, without_web=without_web)
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (cmd, env) in enumerate(commands):
            (datadir / f"worker-{i}").parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        print(f"mantis-stream workers: started {n} (pids {', '.join(str(p.pid) for p in procs)}; "
              f"web ports {web_port}-{web_port + n - 1})", file=sys.stderr, flush=True)
        while not stopping:
            exited = [p for p in procs if p.poll() is not None]
            if exited:
                code = exited[0].returncode
                print(f"mantis-stream workers: worker {exited[0].pid} exited with {code}; stopping the others",
                      file=sys.stderr, flush=True)
                return code or 1
            time.sleep(POLL_SECONDS)
        return 0
    finally:
        stop_all(procs, stop_timeout)
        for s, handler in previous.items():
            signal.signal(s, handler)
