"""Per-sensor state survives a worker restart (changelogged tables on the real broker)."""

from __future__ import annotations

import uuid

import numpy as np
import orjson

from conftest import collect, produce
from mantis_stream import topics as names

RATE = 10240.0
CHUNK = 1024
WARMUP = 50  # AnomalyDetector's default warm-up


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

    first = await start_worker(app_id=app_id)
    # 3 chunks of 1024 = one 2048-sample frame + 1024 samples pending; a warmed-up detector.
    await produce(broker.bootstrap, names.READINGS, [chunk(asset, i) for i in range(3)] + [scalar(asset, i) for i in range(WARMUP + 10)])

    def before(found: dict) -> bool:
        return len([i for i in found[names.ANOMALIES] if mine(i)]) >= WARMUP + 11

    found = await collect(broker.bootstrap, (names.ANOMALIES,), before)
    tmp = [v for v, _, _ in found[names.ANOMALIES] if mine((v,)) and v["sensor_id"] == "TMP"]
    assert tmp[-1]["warm"] is True
    first.stop()

    await start_worker(app_id=app_id)
    await produce(broker.bootstrap, names.READINGS, [chunk(asset, 3), scalar(asset, WARMUP + 10)])

    def after(found: dict) -> bool:
        return len([i for i in found[names.ANOMALIES] if mine(i)]) >= WARMUP + 13

    found = await collect(broker.bootstrap, (names.ANOMALIES, names.FEATURES), after)
    vib = [v for v, _, _ in found[names.FEATURES] if mine((v,)) and v["sensor_id"] == "VIB"]
    # The 1024 samples pending at the restart and the 1024 after it make the second frame.
    assert len(vib) == 2
    assert abs(vib[1]["epoch"] - (1_790_000_000 + 3 * CHUNK / RATE + (CHUNK - 1) / RATE)) < 1e-6
    tmp = [v for v, _, _ in found[names.ANOMALIES] if mine((v,)) and v["sensor_id"] == "TMP"]
    assert len(tmp) == WARMUP + 11, "no reading processed twice after a graceful restart"
    assert tmp[-1]["warm"] is True, "the detector's state came back from its changelog"
