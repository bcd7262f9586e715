"""Shared fixtures: the real local broker (Tansu) and the worker as a subprocess.

Every test lives in one of three folders and is marked by it, so one folder or
marker selects a tier (``make test-fast`` runs ``tests/unit``):

- ``unit``: in the test process only: no broker, database, worker or CLI subprocess;
- ``integration``: one real component: the broker, PostgreSQL, InfluxDB, or a CLI command in a subprocess;
- ``e2e``: a worker process (or the demo / ``workers`` command that starts one) on the broker.

The server markers (``broker``, ``postgres``, ``influxdb``) follow the fixtures a test
uses, so ``-m "not postgres"`` deselects every test that needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from mantis_stream import topics as names
from mantis_stream.demo.broker import EmbeddedBroker, free_port

try:  # the sinks' servers (PostgreSQL, InfluxDB)
    from servers import *  # noqa: F403
except ImportError:  # pragma: no cover - before the sinks land
    pass

# Unit tests configure tracing themselves; nothing may export to a default collector.
os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PARTITIONS = 4
FOLDERS = ("unit", "integration", "e2e")
SERVER_FIXTURES = {"broker": "broker", "postgres_server": "postgres", "influx_server": "influxdb"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder and by the servers its fixtures start; refuse a misplaced test."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder not in FOLDERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e "
                                    "(see tests/conftest.py); move it to the folder of its heaviest need")
        item.add_marker(folder)
        servers = [mark for fixture, mark in SERVER_FIXTURES.items() if fixture in item.fixturenames]
        if folder == "unit" and servers:
            raise pytest.UsageError(f"{item.nodeid}: a unit test needs {', '.join(servers)}; "
                                    "move it to tests/integration or tests/e2e")
        for mark in servers:
            item.add_marker(mark)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A Tansu broker per test module, topics pre-created with one partition count.

    Per module, not per session: a worker with a fresh app id reads its topics
    from the earliest offset, so a broker shared by the whole session makes each
    later test's worker work through every earlier test's readings first.
    """
    with EmbeddedBroker() as b:
        b.create_topics(list(names.ALL_TOPICS), PARTITIONS)
        yield b


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    app_id: str
    web_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spawn_worker(broker_url: str, log_path: Path, app_id: str | None = None, env: dict[str, str] | None = None) -> WorkerProcess:
    app_id = app_id or f"mantis-test-{uuid.uuid4().hex[:8]}"
    web_port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full_env.update(
        MANTIS_BROKER=broker_url, MANTIS_APP_ID=app_id, MANTIS_WEB_PORT=str(web_port),
        MANTIS_PARTITIONS=str(PARTITIONS), OTEL_TRACES_EXPORTER="none", PYTHONUNBUFFERED="1",
    )
    full_env.update(env or {})
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mantis_stream", "worker", "-l", "info"],
        cwd=log_path.parent, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    return WorkerProcess(proc, app_id, web_port, log_path, full_env)


async def wait_ready(worker: WorkerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while "Ready" not in worker.log():
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker not ready in {timeout} s:\n{worker.log()[-4000:]}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def start_worker(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    """``await start_worker(env={...})``: a ready worker with a fresh app id."""
    started: list[WorkerProcess] = []

    async def _start(env: dict[str, str] | None = None, app_id: str | None = None, wait: bool = True) -> WorkerProcess:
        worker = spawn_worker(broker.url, tmp_path / f"worker-{len(started)}.log", app_id=app_id, env=env)
        started.append(worker)
        if wait:
            await wait_ready(worker)
        return worker

    yield _start
    for worker in started:
        worker.stop()


async def produce(bootstrap: str, topic: str, values: list[bytes], headers: list[list[tuple[str, bytes]]] | None = None,
                  key: bytes | None = None) -> None:
    """Produce raw values without a key (like kafka-console-producer)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=(headers[i] if headers else []))
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(bootstrap: str, topics: tuple[str, ...], until: Callable[[dict[str, list[Any]]], bool],
                  timeout: float = 180.0) -> dict[str, list[Any]]:
    """Consume ``topics`` from the beginning until ``until(found)`` holds; values decoded as JSON.

    Each found item is ``(value, headers_dict, record)``.
    """
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    found: dict[str, list[Any]] = {t: [] for t in topics}
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while not until(found):
            if time.monotonic() > deadline:
                counts = {t: len(v) for t, v in found.items()}
                raise TimeoutError(f"condition not met in {timeout} s; got {counts}")
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    found[tp.topic].append((orjson.loads(r.value), dict(r.headers or []), r))
        return found
    finally:
        await consumer.stop()


class CapturingProducer:
    """Stands in for the worker's aiokafka producer behind ``agents._publish`` (bulk public records).

    Each record of a batch is captured as ``(topic, {"key", "value", "headers"})``,
    like a captured ``Topic.send``; a batch holding a record for which
    ``refuses(topic, value)`` is true fails as the broker fails a batch it refuses.
    """

    def __init__(self, captured: list[tuple[str, dict[str, Any]]],
                 refuses: Callable[[str, bytes], bool] = lambda topic, value: False) -> None:
        self.captured, self.refuses = captured, refuses

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, batch: _Builder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        from aiokafka.errors import MessageSizeTooLargeError
        from aiokafka.structs import RecordMetadata, TopicPartition

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if any(self.refuses(topic, value) for _, value, _ in batch.records):
            future.set_exception(MessageSizeTooLargeError())
            return future
        for key, value, headers in batch.records:
            self.captured.append((topic, {"key": key, "value": orjson.loads(value), "headers": headers}))
        future.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), 0, -1, 0, 0))
        return future


class _Builder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> object:
        self.records.append((key, value, list(headers)))
        return object()

    def close(self) -> None:
        pass


@pytest.fixture
def sent() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The project's app with every ``Topic.send`` and bulk public record captured as (topic, kwargs) instead of produced."""
    from unittest import mock

    import faust

    from mantis_stream.app import app

    app.finalize()
    app.flow_control.resume()
    captured: list[tuple[str, dict[str, Any]]] = []

    async def fake_send(self: faust.Topic, **kwargs: Any) -> None:
        captured.append((self.get_topic_name(), kwargs))

    producer = CapturingProducer(captured)
    with mock.patch.object(faust.Topic, "send", fake_send), \
            mock.patch("mantis_stream.agents._publish._kafka_producer", lambda: producer):
        yield captured


@pytest.fixture
def write_femto_npz() -> Callable[[Path, Any], None]:
    """Write generated accelerations ``(snapshots, 2560, 2)`` in g as a bearing in the
    npz layout of datasets/femto.py, one snapshot every 10 s."""
    import numpy as np

    def write(path: Path, acc: np.ndarray) -> None:
        secs = np.arange(len(acc)) * 10
        hmsu = np.zeros((len(acc), acc.shape[1], 4), dtype=np.int32)
        hmsu[:, :, 0] = (9 + secs // 3600)[:, None]
        hmsu[:, :, 1] = (secs // 60 % 60)[:, None]
        hmsu[:, :, 2] = (secs % 60)[:, None]
        files = np.array([f"acc_{i + 1:05d}.csv" for i in range(len(acc))])
        np.savez(path, acc_milli_g=np.round(acc * 1000).astype(np.int32), time_hmsu=hmsu, files=files)

    return write


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing configured with every span sampled into an in-memory exporter (the fixture's value)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from mantis_stream import tracing
    from mantis_stream.settings import Settings

    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    yield exporter
    tracing.shutdown()
