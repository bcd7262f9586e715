"""Real PostgreSQL and InfluxDB servers for the tests, on temporary dirs and loopback ports.

Why: the sinks' promises (idempotent replay, one open work order per asset and
reason, no loss through an outage) are the database's behaviour, so they are
tested against the real servers, not mocks.

Usage (``tests/conftest.py`` does ``from servers import *``)::

    async def test_x(postgres_dsn, influx_url): ...
    def test_y(postgres_server): postgres_server.stop(); postgres_server.start()

Notes:
- PostgreSQL 15 from Debian (``/usr/lib/postgresql/15/bin``, or ``MANTIS_PG_BIN``):
  ``initdb`` refuses root, so as root the data dir belongs to ``postgres`` and
  ``initdb``/``pg_ctl`` run through ``runuser -u postgres --``.
- InfluxDB 1.x (``influxd`` on PATH, or ``MANTIS_INFLUXD``): a config generated
  from ``influxd config`` with every path under the temporary dir.
- A missing binary skips the tests only when ``CI`` is unset; in CI it fails them.
- The servers are per session; each test gets its own database
  (``postgres_dsn``, ``influx_url``). A test that stops a server starts it again;
  the per-test fixtures restart a server found stopped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

__all__ = [
    "PostgresServer",
    "InfluxServer",
    "free_port",
    "postgres_server",
    "postgres_dsn",
    "influx_server",
    "influx_url",
]

PG_BIN = Path(os.environ.get("MANTIS_PG_BIN", "/usr/lib/postgresql/15/bin"))
INFLUXD = os.environ.get("MANTIS_INFLUXD") or shutil.which("influxd") or "/usr/bin/influxd"
PG_PASSWORD = "s3cret-pw"  # trust auth ignores it; present so tests can check masking


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(path: str | Path, what: str) -> None:
    if Path(path).exists():
        return
    message = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: install it, tests must not be skipped)", pytrace=False)
    pytest.skip(message)


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``init()``, ``start()``, ``stop()``, ``create_database()``."""

    user = "mantis"

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.base = base
        self.data = base / "data"
        self.sockets = base / "sock"
        self.log = base / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._as_postgres, *args], check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
            "-E", "UTF8", "--locale=C", "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        result = self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "30", "start", check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{log[-2000:]}")
        if not _wait_port(self.port, 10):
            raise RuntimeError("PostgreSQL did not open its port")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def is_running(self) -> bool:
        return self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return result.stdout

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def dsn(self, database: str = "postgres", *, password: str | None = PG_PASSWORD) -> str:
        auth = f"{self.user}:{password}" if password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"


class InfluxServer:
    """A throwaway ``influxd``: ``start()``, ``stop()``, ``url(database)``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.host = "127.0.0.1"
        self.port = free_port()
        self.rpc_port = free_port()
        self.config = base / "influxdb.conf"
        self.log = base / "influxd.log"
        self._proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        try:
            text = subprocess.run([INFLUXD, "config"], check=True, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            text = "[meta]\n  dir = \"/var/lib/influxdb/meta\"\n[data]\n  dir = \"/var/lib/influxdb/data\"\n" \
                   "  wal-dir = \"/var/lib/influxdb/wal\"\n[http]\n  bind-address = \":8086\"\n"
        text = text.replace("/var/lib/influxdb", str(self.base))
        lines, section = [], ""
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("["):
                section = stripped
            key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
            if key == "bind-address" and section == "":
                line = f'bind-address = "{self.host}:{self.rpc_port}"'
            elif key == "bind-address" and section == "[http]":
                line = f'  bind-address = "{self.host}:{self.port}"'
            elif key in ("reporting-disabled", "reporting-enabled"):
                continue
            elif key == "store-enabled" and section == "[monitor]":
                line = "  store-enabled = false"
            elif key in ("log-enabled", "query-log-enabled") and section in ("[http]", "[data]"):
                line = f"  {key} = false"
            elif key == "level" and section == "[logging]":
                line = '  level = "warn"'
            lines.append(line)
        self.config.write_text("reporting-disabled = true\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if not self.config.exists():
            self.write_config()
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([INFLUXD, "-config", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"influxd exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("influxd did not answer /ping within 30 s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def query(self, q: str, database: str | None = None) -> dict:
        import json
        from urllib.parse import urlencode

        params = {"q": q, "epoch": "ns"}
        if database:
            params["db"] = database
        url = f"http://{self.host}:{self.port}/query?{urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def url(self, database: str) -> str:
        return f"http://{self.host}:{self.port}/{database}"


def _tempdir(prefix: str) -> Path:
    # Not under pytest's tmp dir: /tmp/pytest-of-root is 0700 and postgres could not enter it.
    return Path(tempfile.mkdtemp(prefix=prefix))


def _database_name() -> str:
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def postgres_server():
    _require(PG_BIN / "initdb", "PostgreSQL (initdb)")
    _require(PG_BIN / "pg_ctl", "PostgreSQL (pg_ctl)")
    base = _tempdir("mantis-pg-")
    server = PostgresServer(base)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A DSN (with a password, which trust auth ignores) of a fresh, empty database."""
    if not postgres_server.is_running():
        postgres_server.start()
    name = _database_name()
    postgres_server.create_database(name)
    return postgres_server.dsn(name)


@pytest.fixture(scope="session")
def influx_server():
    _require(INFLUXD, "InfluxDB 1.x (influxd)")
    base = _tempdir("mantis-influx-")
    server = InfluxServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def influx_url(influx_server: InfluxServer) -> str:
    """The URL of a database that does not exist yet (the sink creates it)."""
    if not influx_server.is_running():
        influx_server.start()
    return influx_server.url(_database_name())
