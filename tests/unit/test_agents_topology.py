"""Topology of every stage with ``agent.test_context()``: what goes in, what comes out where."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import orjson

import mantis_stream  # noqa: F401  (registers the agents)
from mantis_stream import topics as names
from mantis_stream.agents._batch import partition_for
from mantis_stream.agents.anomaly import anomaly
from mantis_stream.agents.features import features
from mantis_stream.agents.framing import frame
from mantis_stream.agents.orchestrator import orchestrator
from mantis_stream.agents.preprocess import preprocess
from mantis_stream.agents.rul import rul
from mantis_stream.app import settings
from mantis_stream.models import records


def on(captured: list[tuple[str, dict[str, Any]]], topic: str) -> list[dict[str, Any]]:
    """Values sent to ``topic``; the records of batched messages one by one."""
    if topic not in names.BATCHED:
        return [kw["value"] for t, kw in captured if t == topic]
    return [item["value"] for t, kw in captured if t == topic for item in orjson.loads(kw["value"])["items"]]


def batch(*values: dict[str, Any]) -> bytes:
    """A batched message as the stage before would send it."""
    return orjson.dumps({"items": [{"value": v, "trace": {}} for v in values]})


async def test_preprocess_rekeys_valid_readings_and_dead_letters_bad_ones(sent):
    async with preprocess.test_context() as agent:
        await agent.put(orjson.dumps({"asset_id": "P-1", "sensor_id": "T", "ts": "2026-11-29T10:00:00Z", "value": 7}))
        await agent.put(b'{"asset_id": "P-1", "sensor_id": "T", "ts": 1790000000}')
    [reading] = on(sent, names.READINGS_KEYED)
    assert reading == {"asset_id": "P-1", "sensor_id": "T", "ts": 1795946400.0, "value": 7.0}
    assert [kw["partition"] for t, kw in sent if t == names.READINGS_KEYED] == [partition_for("P-1")]
    [letter] = on(sent, names.DEAD_LETTERS)
    assert letter["error"]["field"] == "value" and letter["stage"] == "preprocessing"


async def test_preprocess_passes_a_batch_on_in_time_order(sent):
    """Unkeyed readings come from several partitions out of order; a stage that needs order gets it."""
    async with preprocess.test_context() as agent:
        for cycle in (3, 1, 2):
            await agent.put(orjson.dumps({"asset_id": "E-9", "sensor_id": "G", "ts": 1_790_000_000 + cycle, "cycle": cycle,
                                          "channels": {"s2": 1.0}}), wait=False)
        for _ in range(100):
            if len(on(sent, names.READINGS_KEYED)) == 3:
                break
            await asyncio.sleep(0.01)
    assert [r["cycle"] for r in on(sent, names.READINGS_KEYED)] == [1, 2, 3]


async def test_frame_cuts_waveform_chunks_into_frames_without_losing_samples(sent):
    size = settings.frame_size
    chunk = np.arange(size * 3 // 4, dtype=float)
    async with frame.test_context() as agent:
        for i in range(4):  # 4 x 3/4 frame = 3 frames exactly
            await agent.put(batch({"asset_id": "P-2", "sensor_id": "V", "ts": 1790000000.0 + i * len(chunk) / 1000.0, "values": (chunk + i * len(chunk)).tolist(),
                             "sample_rate_hz": 1000.0}))
    frames = on(sent, names.FRAMES)
    assert len(frames) == 3
    samples = np.concatenate([records.frame_samples(f) + 0 for f in frames])
    expected = np.arange(size * 3, dtype=float).reshape(3, size)
    expected -= expected.mean(axis=1, keepdims=True)  # DC offset removed per frame
    np.testing.assert_allclose(samples, expected.ravel(), atol=1e-3)


async def test_frame_makes_sliding_windows_for_scalars_and_rows_for_channels(sent):
    async with frame.test_context() as agent:
        for i in range(settings.scalar_window + 2):
            await agent.put(batch({"asset_id": "P-3", "sensor_id": "T", "ts": 1790000000.0 + i, "value": float(i)}))
        await agent.put(batch({"asset_id": "E-1", "sensor_id": "G", "ts": 1790000000.0, "cycle": 3, "channels": {"s2": 1.0}}))
    frames = on(sent, names.FRAMES)
    windows = [f for f in frames if f["kind"] == "window"]
    assert len(windows) == settings.scalar_window + 2
    assert windows[-1]["values"] == [float(i) for i in range(2, settings.scalar_window + 2)]
    [row] = [f for f in frames if f["kind"] == "row"]
    assert row["channels"] == {"s2": 1.0} and row["cycle"] == 3


async def test_features_computes_spectral_features_per_frame(sent):
    rate, size = 8192.0, 2048
    t = np.arange(size) / rate
    tone = records.waveform_frame("P-4", "V", 1790000000.0, np.sin(2 * np.pi * 512.0 * t), rate, {})
    window = records.window_frame("P-4", "T", 1790000000.0, [1.0, 2.0, 3.0], "degC")
    async with features.test_context() as agent:
        await agent.put(batch(tone))
        await agent.put(batch(window))
    out = {m["sensor_id"]: m for m in on(sent, names.FEATURES)}
    assert abs(out["V"]["features"]["dominant_freq_hz"] - 512.0) < rate / size
    assert math.isclose(out["V"]["features"]["rms"], 1 / math.sqrt(2), rel_tol=0.01)
    assert out["T"]["features"]["mean"] == 2.0
    assert out["V"]["ts"] == "2026-09-21T14:13:20.000Z"


async def test_features_finds_the_frame_a_batch_fails_on_and_computes_the_others(sent):
    window = records.window_frame("P-5", "T", 1790000000.0, [1.0, 2.0, 3.0], "degC")
    unknown = {**records.window_frame("P-5", "U", 1790000000.0, [1.0], None), "kind": "hologram"}
    async with features.test_context() as agent:
        await agent.put(batch(window, unknown, {**window, "sensor_id": "T2"}))
    assert [m["sensor_id"] for m in on(sent, names.FEATURES)] == ["T", "T2"]
    assert [m["sensor_id"] for m in on(sent, names.FEATURE_BATCHES)] == ["T", "T2"]
    [letter] = on(sent, names.DEAD_LETTERS)
    assert letter["stage"] == "feature-extraction" and letter["source"]["index"] == 1
    assert "hologram" in letter["error"]["message"]


async def test_anomaly_scores_every_feature_vector_with_its_model(sent):
    async with anomaly.test_context() as agent:
        for i in range(5):
            await agent.put(batch({"asset_id": "P-5", "sensor_id": "T", "ts": "2026-11-29T10:00:00Z", "epoch": 1.0,
                             "features": {"mean": float(i), "std": 1.0}}))
    out = on(sent, names.ANOMALIES)
    assert len(out) == 5
    assert all(0.0 <= a["score"] <= 1.0 and a["model"]["name"] and a["is_anomaly"] is False for a in out)


async def test_rul_uses_cycles_when_readings_carry_them(sent):
    async with rul.test_context() as agent:
        for c in range(1, 61):
            await agent.put(batch({"asset_id": "E-2", "sensor_id": "G", "ts": "2026-11-29T10:00:00Z", "epoch": 1.0, "cycle": c,
                             "features": {"s2": 642.0 + 0.02 * c, "s3": 1585.0 + 0.3 * c, "s4": 1400.0 + 0.5 * c}}))
    out = on(sent, names.RUL)
    assert out, "a run of 60 cycles must give RUL estimates"
    assert all(r["unit"] == "cycles" and r["lower"] <= r["rul"] <= r["upper"] and 0 <= r["health_index"] <= 1 for r in out)


async def test_orchestrator_opens_one_work_order_per_asset_and_reason(sent):
    low = {"asset_id": "P-6", "sensor_id": "V", "ts": "2026-11-29T10:00:00Z", "rul": 1.0, "unit": "seconds",
           "lower": 0.5, "upper": 2.0, "health_index": 0.1, "model": {"name": "m", "version": "1"}}
    async with orchestrator.test_context() as agent:
        for _ in range(3):
            await agent.put(batch(low))
    orders = on(sent, names.WORK_ORDERS)
    assert len(orders) == 1
    assert orders[0]["reason"] == "rul_below_threshold" and orders[0]["priority"] == "critical"
