"""``/health`` tells the truth about the broker, and a stop is bounded when the broker is gone.

Why: ``/health`` answered 200 ``ok`` 30 s after the broker died while the
worker logged errors, and SIGTERM left the worker looping on ``Unable to
update metadata`` for minutes.  Both run against the real broker, stopped and
started again on its port (Tansu keeps topics in memory: they are created again,
as a broker with storage would still have them).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from mantis_stream import topics as names

from conftest import PARTITIONS, collect, produce


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(url) as resp:
            return resp.status, await resp.json()


async def wait_for(url: str, ok: Callable[[int, dict[str, Any]], bool], timeout: float) -> tuple[float, int, dict[str, Any]]:
    """Poll ``url`` until ``ok(status, body)``; returns (seconds taken, status, body)."""
    started = time.monotonic()
    status, body = 0, {}
    while time.monotonic() - started < timeout:
        try:
            status, body = await get(url)
        except (TimeoutError, aiohttp.ClientError):
            status, body = 0, {}
        if ok(status, body):
            return time.monotonic() - started, status, body
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url}: not as expected within {timeout} s; last {status} {body}")


def restart(broker) -> None:  # type: ignore[no-untyped-def]
    broker.start()
    broker.create_topics(list(names.ALL_TOPICS), PARTITIONS)


async def test_health_is_unready_within_15_s_of_the_broker_death_and_ready_after_it_returns(broker, start_worker) -> None:  # type: ignore[no-untyped-def]
    worker = await start_worker()
    health, live = worker.web_url + "/health", worker.web_url + "/health/live"
    _, _, body = await wait_for(health, lambda s, b: s == 200 and b["status"] == "ok", 60)
    assert body["broker"]["reachable"] and body["broker"]["partitions_assigned"] > 0
    broker.stop()
    try:
        took, _status, body = await wait_for(health, lambda s, b: s == 503, 15)
        assert body["status"] == "unavailable" and not body["broker"]["reachable"]
        assert any("broker not reachable" in p for p in body["problems"]), body
        assert (await get(live))[0] == 200, "the process is alive: liveness must not fail with the broker"
    finally:
        restart(broker)
    took_back, _, body = await wait_for(health, lambda s, b: s == 200 and b["status"] == "ok", 120)
    assert worker.proc.poll() is None
    # ready means working: readings sent now come out as features
    asset = f"HEALTH-{worker.app_id[-8:]}"
    await produce(broker.bootstrap, names.READINGS, [orjson.dumps({"asset_id": asset, "sensor_id": "TMP", "ts": 1_790_000_000 + i,
                                                                   "value": 60.0 + i % 3}) for i in range(30)])
    await collect(broker.bootstrap, (names.FEATURES,), lambda f: any(v["asset_id"] == asset for v, _, _ in f[names.FEATURES]),
                  timeout=120)
    print(f"unready {took:.1f} s after the broker stopped; ready again {took_back:.1f} s after it returned")


async def test_sigterm_with_the_broker_gone_exits_within_30_s(broker, start_worker) -> None:  # type: ignore[no-untyped-def]
    worker = await start_worker(env={"MANTIS_STOP_TIMEOUT": "20"})
    broker.stop()
    try:
        await wait_for(worker.web_url + "/health", lambda s, b: s == 503, 15)
        await asyncio.sleep(5)  # the worker's clients are now retrying
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        deadline = started + 30
        while worker.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        took = time.monotonic() - started
        assert worker.proc.poll() is not None, f"still running 30 s after SIGTERM:\n{worker.log()[-3000:]}"
        print(f"exited {took:.1f} s after SIGTERM, code {worker.proc.returncode}")
    finally:
        restart(broker)
