"""The broker is not up when the worker starts: it waits, says so, then works.

Why: aiokafka's producer gives up at once ("Unable to bootstrap"), and the
worker used to exit with a traceback; in compose or Kubernetes the worker often
starts before its broker.  ``mantis_stream.kafka.wait_for_broker`` retries with
a capped back-off and a clear log line, up to ``MANTIS_BROKER_WAIT`` seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from mantis_stream import topics as names
from mantis_stream.demo.broker import EmbeddedBroker, free_port
from mantis_stream.kafka import wait_for_broker

from conftest import PARTITIONS, collect, produce, spawn_worker, wait_ready


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_for_broker_retries_with_capped_backoff_then_returns(caplog) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    answers = iter(["Connection refused"] * 6 + [None])
    waited = wait_for_broker("kafka://127.0.0.1:1", 300, probe=lambda h, p: next(answers), sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert waited == sum(clock.sleeps)
    text = caplog.text
    assert "not reachable: 127.0.0.1:1 (Connection refused)" in text and "retrying in" in text
    assert "reachable after" in text


def test_wait_for_broker_tries_every_url_and_gives_up_clearly() -> None:
    clock = FakeClock()
    tried: list[tuple[str, int]] = []

    def probe(host: str, port: int) -> str:
        tried.append((host, port))
        return "Connection refused"

    with pytest.raises(SystemExit) as info:
        wait_for_broker("kafka://a:9092,b:9093", 10, probe=probe, sleep=clock.sleep, clock=clock)
    assert ("a", 9092) in tried and ("b", 9093) in tried
    assert "no Kafka broker answered" in str(info.value) and "MANTIS_BROKER_WAIT" in str(info.value)
    assert clock.now <= 10.0 + 1e-9, "the wait is bounded by the timeout"


def test_no_wait_tries_once_then_stops_in_one_line() -> None:
    clock = FakeClock()
    assert wait_for_broker("kafka://127.0.0.1:1", 0, probe=lambda h, p: None, sleep=clock.sleep, clock=clock) == 0.0
    with pytest.raises(SystemExit, match=r"no Kafka broker answered at 127.0.0.1:1 \(refused\) \(MANTIS_BROKER_WAIT=0"):
        wait_for_broker("kafka://127.0.0.1:1", 0, probe=lambda h, p: "refused", sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


@pytest.mark.broker
async def test_worker_started_before_the_broker_waits_then_processes(tmp_path: Path) -> None:
    port = free_port()
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"
    worker = spawn_worker(f"kafka://127.0.0.1:{port}", tmp_path / "worker.log", app_id=app_id)
    broker = EmbeddedBroker(port=port)
    try:
        deadline = time.monotonic() + 30
        while worker.log().count("not reachable") < 3:
            assert worker.proc.poll() is None, f"the worker must wait for the broker, not exit:\n{worker.log()[-3000:]}"
            assert time.monotonic() < deadline, worker.log()[-3000:]
            await asyncio.sleep(0.3)
        assert worker.proc.poll() is None
        assert f"127.0.0.1:{port} (Connection refused); retrying in" in worker.log()

        broker.start()
        broker.create_topics(list(names.ALL_TOPICS), PARTITIONS)
        await wait_ready(worker, timeout=120)
        assert "reachable after" in worker.log()

        asset = f"LATE{uuid.uuid4().hex[:6]}"
        await produce(broker.bootstrap, names.READINGS, [
            orjson.dumps({"asset_id": asset, "sensor_id": "TMP", "ts": 1_790_000_000 + i, "value": 20.0 + i}) for i in range(5)])
        found = await collect(broker.bootstrap, (names.FEATURES,),
                              lambda f: sum(v["asset_id"] == asset for v, _, _ in f[names.FEATURES]) >= 5, timeout=90)
        assert sum(v["asset_id"] == asset for v, _, _ in found[names.FEATURES]) == 5
    finally:
        worker.stop()
        broker.stop()


async def test_worker_gives_up_after_the_configured_wait(tmp_path: Path) -> None:
    worker = spawn_worker(f"kafka://127.0.0.1:{free_port()}", tmp_path / "worker.log", env={"MANTIS_BROKER_WAIT": "3"})
    try:
        rc = await asyncio.to_thread(worker.proc.wait, 60)
    finally:
        worker.kill()
    assert rc != 0
    assert "no Kafka broker answered" in worker.log() and "within 3 s" in worker.log()
    assert "Traceback" not in worker.log(), "a clear message, not a traceback"
