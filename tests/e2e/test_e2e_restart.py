"""Per-sensor state survives a worker restart (changelogged tables on the real broker)."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import orjson

from mantis_stream import topics as names

from conftest import collect, produce

RATE = 10240.0
CHUNK = 1024
WARMUP = 300  # ConditionMonitor's commissioning (REFERENCE_DEFAULTS)
#: Models written to their changelog only when they must be: at a graceful stop or a hand-over.
NO_TIMED_CHECKPOINTS = {"MANTIS_CHECKPOINT_SECONDS": "3600"}


def chunk(asset: str, i: int) -> bytes:
    rng = np.random.default_rng(i)
    return orjson.dumps({"asset_id": asset, "sensor_id": "VIB", "ts": 1_790_000_000 + i * CHUNK / RATE,
                         "values": rng.standard_normal(CHUNK).round(4).tolist(), "sample_rate_hz": RATE})


def scalar(asset: str, i: int) -> bytes:
    return orjson.dumps({"asset_id": asset, "sensor_id": "TMP", "ts": 1_790_000_000 + i, "value": 60.0 + (i % 7) * 0.1})


async def test_partial_frames_and_models_survive_a_restart(broker, start_worker):
    asset = f"RST{uuid.uuid4().hex[:6]}"
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"
    mine = lambda item: item[0].get("asset_id") == asset  # noqa: E731

    def scores(count: int):  # type: ignore[no-untyped-def]
        return lambda found: len([i for i in found[names.ANOMALIES] if mine(i)]) >= count

    first = await start_worker(app_id=app_id, env=NO_TIMED_CHECKPOINTS)
    # A cold detector is checkpointed first; its warm state is written only at the graceful stop.
    await produce(broker.bootstrap, names.READINGS, [scalar(asset, i) for i in range(5)])
    await collect(broker.bootstrap, (names.ANOMALIES,), scores(5))
    # 3 chunks of 1024 = one 2048-sample frame + 1024 samples pending; a warmed-up detector.
    await produce(broker.bootstrap, names.READINGS, [chunk(asset, i) for i in range(3)] + [scalar(asset, i) for i in range(5, WARMUP + 10)])
    found = await collect(broker.bootstrap, (names.ANOMALIES,), scores(WARMUP + 11))
    tmp = [v for v, _, _ in found[names.ANOMALIES] if mine((v,)) and v["sensor_id"] == "TMP"]
    assert tmp[-1]["warm"] is True
    first.stop()

    await start_worker(app_id=app_id, env=NO_TIMED_CHECKPOINTS)
    await produce(broker.bootstrap, names.READINGS, [chunk(asset, 3), scalar(asset, WARMUP + 10)])

    found = await collect(broker.bootstrap, (names.ANOMALIES, names.FEATURES), scores(WARMUP + 13))
    vib = [v for v, _, _ in found[names.FEATURES] if mine((v,)) and v["sensor_id"] == "VIB"]
    # The 1024 samples pending at the restart and the 1024 after it make the second frame.
    assert len(vib) == 2
    assert abs(vib[1]["epoch"] - (1_790_000_000 + 3 * CHUNK / RATE + (CHUNK - 1) / RATE)) < 1e-6
    tmp = [v for v, _, _ in found[names.ANOMALIES] if mine((v,)) and v["sensor_id"] == "TMP"]
    assert len(tmp) == WARMUP + 11, "no reading processed twice after a graceful restart"
    assert tmp[-1]["warm"] is True, "the detector's state came back from its changelog"


async def test_models_move_warm_to_the_worker_that_takes_their_partition(broker, start_worker):
    """A rebalance writes every model changed since its last checkpoint before the partitions move."""
    tag = uuid.uuid4().hex[:6]
    assets = [f"MV{tag}-{n}" for n in range(8)]  # spread over the 4 partitions
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"
    mine = lambda item: item[0].get("asset_id") in set(assets)  # noqa: E731

    def latest(found: dict) -> dict[str, dict]:
        """Each asset's newest score (an asset's outputs are in order on its partition)."""
        return {v["asset_id"]: v for v, _, _ in found[names.ANOMALIES] if mine((v,))}

    first = await start_worker(app_id=app_id, env=NO_TIMED_CHECKPOINTS)
    await produce(broker.bootstrap, names.READINGS, [scalar(a, i) for i in range(WARMUP + 5) for a in assets])
    found = await collect(broker.bootstrap, (names.ANOMALIES,), lambda f: len([i for i in f[names.ANOMALIES] if mine(i)]) >= len(assets) * (WARMUP + 5))
    assert all(v["warm"] for v in latest(found).values())

    second = await start_worker(app_id=app_id, env=NO_TIMED_CHECKPOINTS)
    deadline = time.monotonic() + 60
    while first.log().count("Worker ready") < 2 or "Worker ready" not in second.log():  # both recovered after the rebalance
        assert time.monotonic() < deadline, "no rebalance seen in the first worker's log"
        await asyncio.sleep(0.5)
    await produce(broker.bootstrap, names.READINGS, [scalar(a, WARMUP + 5) for a in assets])
    found = await collect(broker.bootstrap, (names.ANOMALIES,), lambda f: len([i for i in f[names.ANOMALIES] if mine(i)]) >= len(assets) * (WARMUP + 6))
    last = latest(found)
    assert sorted(last) == sorted(assets)
    cold = [a for a, v in last.items() if not v["warm"]]
    assert not cold, f"detectors came back cold after the hand-over: {cold}"
