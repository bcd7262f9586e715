"""Batched path == one event at a time: the same readings give the same outputs with any batch size.

Two workers on the real broker, one with ``MANTIS_BATCH_SIZE=1`` (every stage
handles one event per batch, and a batched hop carries one record) and one with
the default batch size, each fed the same readings under its own asset prefix
(keyed by asset, so each asset's readings arrive in order in both runs).  Every
feature vector, anomaly score and RUL estimate must match.
"""

from __future__ import annotations

import math
import uuid

import numpy as np
import orjson
import pytest

from mantis_stream import topics as names

from conftest import collect, produce

CHUNK = 1024
#: Per pump: the monitor commissions over 300 scores; the last 60 step 30 % up: a sustained departure, alarmed by
#: the healthy reference's CUSUM within a few tens of scores.
SCALARS = 600
FEATURES = 2 * SCALARS + 12 + 60  # windows, frames of 2048 samples, engine rows
OUTPUTS = (names.FEATURES, names.ANOMALIES, names.RUL)


def readings(prefix: str) -> list[dict]:
    """Scalar readings with a step, waveform chunks and engine cycles: enough to warm every model up."""
    rng = np.random.default_rng(7)
    t0 = 1_790_000_000.0
    out: list[dict] = []
    for asset in ("PUMP-1", "PUMP-2"):
        for i in range(SCALARS):
            value = 60.0 + rng.normal(0, 0.3) + (18.0 if i >= SCALARS - 60 else 0.0)
            out.append({"asset_id": f"{prefix}-{asset}", "sensor_id": "TMP-1", "ts": t0 + i, "value": round(value, 3)})
    for i in range(24):
        wave = [0.3 * math.sin(2 * math.pi * 120.0 * (i * CHUNK + n) / 10240.0) + rng.normal(0, 0.05) for n in range(CHUNK)]
        out.append({"asset_id": f"{prefix}-PUMP-1", "sensor_id": "VIB-1", "ts": t0 + i * CHUNK / 10240.0,
                    "values": [round(v, 5) for v in wave], "sample_rate_hz": 10240.0})
    for i in range(60):
        out.append({"asset_id": f"{prefix}-ENGINE", "sensor_id": "GAS-PATH", "ts": t0 + 60 * i, "cycle": i + 1,
                    "channels": {"s2": 642.0 + 0.01 * i + rng.normal(0, 0.05), "s3": 1585.0 + 0.2 * i}})
    return out


async def produce_keyed(bootstrap: str, items: list[dict]) -> None:
    assets = sorted({r["asset_id"] for r in items})
    for asset in assets:
        await produce(bootstrap, names.READINGS, [orjson.dumps(r) for r in items if r["asset_id"] == asset],
                      key=asset.encode())


async def outputs_of(bootstrap: str, prefix: str, expected: dict[str, int]) -> dict[str, dict[tuple, dict]]:
    """Each output topic's messages of ``prefix``'s assets, by (asset without prefix, sensor, ts)."""
    mine = lambda item: str(item[0].get("asset_id", "")).startswith(prefix + "-")  # noqa: E731

    def done(found: dict) -> bool:
        return all(sum(map(mine, found[t])) >= n for t, n in expected.items())

    found = await collect(bootstrap, OUTPUTS, done)
    out: dict[str, dict[tuple, dict]] = {}
    for topic in OUTPUTS:
        rows = [v for v, _, _ in found[topic] if mine((v,))]
        keyed = {(v["asset_id"].removeprefix(prefix), v["sensor_id"], v["ts"]): v for v in rows}
        assert len(keyed) == len(rows), f"{topic}: a duplicated output"
        out[topic] = keyed
    return out


def same(a: object, b: object) -> bool:
    """Equal, floats up to summation order (a batch of frames is reduced along an axis of a stack)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a if k != "asset_id")
    return a == b


async def test_batched_path_gives_the_outputs_of_one_event_at_a_time(broker, start_worker) -> None:
    runs = {}
    for batch_size in ("1", "500"):
        prefix = f"B{batch_size}x{uuid.uuid4().hex[:4]}"
        worker = await start_worker(env={"MANTIS_BATCH_SIZE": batch_size, "MANTIS_FRAME_SIZE": "2048"})
        await produce_keyed(broker.bootstrap, readings(prefix))
        runs[batch_size] = await outputs_of(
            broker.bootstrap, prefix, {names.FEATURES: FEATURES, names.ANOMALIES: FEATURES, names.RUL: 60},
        )
        worker.stop()

    one, batched = runs["1"], runs["500"]
    for topic in OUTPUTS:
        assert one[topic].keys() == batched[topic].keys(), topic
        different = [k for k in one[topic] if not same(one[topic][k], batched[topic][k])]
        assert not different, (topic, different[:3])
    # the comparison is not between constants: models warmed up and reacted to the step
    assert len(one[names.FEATURES]) == FEATURES
    assert any(v["is_anomaly"] for v in one[names.ANOMALIES].values())
    assert len({round(v["score"], 6) for v in one[names.ANOMALIES].values()}) > 20
