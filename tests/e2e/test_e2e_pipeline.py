"""End to end on the real broker: every reading shape and every bad input, no key."""

from __future__ import annotations

import base64
import math
import uuid

import orjson

from mantis_stream import topics as names

from conftest import collect, produce

FRAME = 2048
CHUNK = 1024
MAX_SAMPLES = 4096


def good_readings(prefix: str) -> dict[str, list[dict]]:
    t0 = 1_790_000_000.0
    scalar = [{"asset_id": f"{prefix}-PUMP", "sensor_id": "TMP-1", "ts": t0 + i, "value": 60.0 + 0.1 * i, "unit": "degC"}
              for i in range(12)]
    waveform = [{
        "asset_id": f"{prefix}-PUMP", "sensor_id": "VIB-1", "ts": t0 + i * CHUNK / 10240.0,
        "values": [0.5 + math.sin(2 * math.pi * 100.0 * (i * CHUNK + n) / 10240.0) for n in range(CHUNK)],
        "sample_rate_hz": 10240.0, "meta": {"shaft_hz": 29.5},
    } for i in range(6)]
    channels = [{"asset_id": f"{prefix}-ENGINE", "sensor_id": "GAS-PATH", "ts": f"2026-11-29T10:{i // 60:02d}:{i % 60:02d}Z",
                 "cycle": i + 1, "channels": {"s2": 642.0 + 0.01 * i, "s3": 1585.0 + 0.2 * i, "s4": 1400.0 + 0.3 * i}}
                for i in range(40)]
    return {"scalar": scalar, "waveform": waveform, "channels": channels}


def dead_letter_payload(raw: bytes) -> str:
    """INTERFACE.md: the original value as text, or base64 when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def bad_readings(prefix: str) -> dict[str, tuple[bytes, str]]:
    """Raw value -> the field its dead letter must name."""
    base = {"asset_id": f"{prefix}-BAD", "sensor_id": "S", "ts": 1_790_000_000}
    dump = lambda **kw: orjson.dumps({**base, **kw})  # noqa: E731
    return {
        "not json": (b"{this is not json", "payload"),
        "not utf-8": (b"\xff\xfe\x00garbage", "payload"),
        "not an object": (b"[1, 2, 3]", "payload"),
        "missing asset": (orjson.dumps({"sensor_id": "S", "ts": 1_790_000_000, "value": 1.0}), "asset_id"),
        "wrong type": (dump(value="hot"), "value"),
        "NaN token": (b'{"asset_id": "%s-BAD", "sensor_id": "S", "ts": 1790000000, "value": NaN}' % prefix.encode(), "payload"),
        "Infinity token": (b'{"asset_id": "%s-BAD", "sensor_id": "S", "ts": 1790000000, "value": Infinity}' % prefix.encode(), "payload"),
        "empty waveform": (dump(values=[], sample_rate_hz=100.0), "values"),
        "oversized waveform": (dump(values=[0.0] * (MAX_SAMPLES + 1), sample_rate_hz=100.0), "values"),
        "no sample rate": (dump(values=[1.0, 2.0]), "sample_rate_hz"),
        "bad timestamp": (orjson.dumps({**base, "ts": "yesterday", "value": 1.0}), "ts"),
        "negative timestamp": (orjson.dumps({**base, "ts": -5, "value": 1.0}), "ts"),
        "two shapes": (dump(value=1.0, channels={"a": 1.0}), "value"),
        "bad channel": (dump(channels={"a": "x"}), "channels.a"),
    }


async def test_every_shape_reaches_every_topic_and_bad_input_becomes_dead_letters(broker, start_worker):
    prefix = f"E2E{uuid.uuid4().hex[:6]}"
    worker = await start_worker(env={
        "MANTIS_FRAME_SIZE": str(FRAME),
        "MANTIS_MAX_WAVEFORM_SAMPLES": str(MAX_SAMPLES),
        # Any RUL estimate of the engine opens a work order, so the test sees one.
        "MANTIS_RUL_THRESHOLD_CYCLES": "1e9",
    })
    good = good_readings(prefix)
    bad = bad_readings(prefix)
    values = [orjson.dumps(r) for shape in good.values() for r in shape] + [raw for raw, _ in bad.values()]
    await produce(broker.bootstrap, names.READINGS, values)

    mine = lambda item: str(item[0].get("asset_id", "")).startswith(prefix)  # noqa: E731
    payloads = {name: dead_letter_payload(raw) for name, (raw, _) in bad.items()}
    expected_features = len(good["scalar"]) + len(good["waveform"]) * CHUNK // FRAME + len(good["channels"])

    def done(found: dict) -> bool:
        feats = [i for i in found[names.FEATURES] if mine(i)]
        anomalies = [i for i in found[names.ANOMALIES] if mine(i)]
        letters = {i[0]["payload"] for i in found[names.DEAD_LETTERS]} & set(payloads.values())
        return (len(feats) >= expected_features and len(anomalies) >= expected_features
                and any(mine(i) for i in found[names.RUL]) and any(mine(i) for i in found[names.WORK_ORDERS])
                and len(letters) == len(bad))

    found = await collect(broker.bootstrap, (names.FEATURES, names.ANOMALIES, names.RUL, names.WORK_ORDERS, names.DEAD_LETTERS), done)
    assert worker.proc.poll() is None, "the worker must keep running after bad input"

    features = [v for v, _, _ in found[names.FEATURES] if mine((v,))]
    by_sensor = {}
    for v in features:
        by_sensor.setdefault(v["sensor_id"], []).append(v)
    # Nothing lost, nothing duplicated: 12 windows, 6 chunks of 1024 -> 3 frames of 2048, 40 rows.
    assert len(by_sensor["TMP-1"]) == 12
    assert len(by_sensor["VIB-1"]) == 3
    assert len(by_sensor["GAS-PATH"]) == 40
    vib = by_sensor["VIB-1"][0]["features"]
    assert abs(vib["dominant_freq_hz"] - 100.0) < 10.0
    assert abs(vib["rms"] - 1 / math.sqrt(2)) < 0.05, "DC offset of 0.5 must be removed before features"

    anomalies = [v for v, _, _ in found[names.ANOMALIES] if mine((v,))]
    assert len(anomalies) == expected_features
    assert all(0.0 <= a["score"] <= 1.0 and {"name", "version"} <= set(a["model"]) for a in anomalies)

    rul = [v for v, _, _ in found[names.RUL] if mine((v,))]
    assert all(r["unit"] == "cycles" for r in rul if r["asset_id"].endswith("ENGINE"))
    assert all(r["lower"] <= r["rul"] <= r["upper"] for r in rul)

    orders = [v for v, _, _ in found[names.WORK_ORDERS] if mine((v,))]
    assert len({(o["asset_id"], o["reason"]) for o in orders}) == len(orders), "one open work order per asset and reason"
    assert all(o["work_order_id"] and o["created_at"] for o in orders)

    letters = [(v, h) for v, h, _ in found[names.DEAD_LETTERS]]
    for name, (_raw, field) in bad.items():
        matching = [v for v, _ in letters if v["payload"] == payloads[name]]
        assert matching, f"no dead letter for {name}"
        letter = matching[0]
        assert letter["stage"] == "preprocessing"
        assert letter["error"]["field"] == field, (name, letter["error"])
        assert field.split(".")[0] in letter["error"]["message"]
        assert letter["source"]["topic"] == names.READINGS and letter["source"]["offset"] >= 0
