"""Work-order rules: one open order per asset and reason, escalation, maintenance, why, deterministic ids."""

from __future__ import annotations

import random

import orjson

from mantis_stream.models.maintenance import (
    ANOMALY_REASON,
    RUL_REASON,
    AssetMaintenance,
    defect_band,
    work_order_id,
)


def rul(value: float, sensor: str = "V", ts: str = "2026-11-29T10:00:00Z") -> dict:
    return {"asset_id": "A", "sensor_id": sensor, "ts": ts, "rul": value, "unit": "cycles", "lower": value - 1, "upper": value + 1}


def score(anomalous: bool, sensor: str = "V", level: str = "alert", departures: list | None = None,
          ts: str = "2026-11-29T10:00:00Z") -> dict:
    return {"asset_id": "A", "sensor_id": sensor, "ts": ts, "score": 0.7 if anomalous else 0.1,
            "threshold": 0.5, "is_anomaly": anomalous, "level": level if anomalous else "normal",
            "departures": departures or []}


def machine() -> AssetMaintenance:
    return AssetMaintenance({"cycles": 30.0, "seconds": 3600.0}, persistence=3)


def test_rul_under_threshold_opens_one_order_and_escalates_it():
    m = machine()
    assert m.on_rul(rul(50)) is None
    first = m.on_rul(rul(20))
    assert first and first.reason == RUL_REASON and first.priority == "high" and first.action == "open"
    assert "20" in first.why and "30" in first.why
    worse = m.on_rul(rul(5, ts="2026-11-29T10:05:00Z"))
    assert worse and worse.action == "escalate" and worse.priority == "critical"
    assert worse.work_order_id == first.work_order_id, "escalation changes the open order, it opens no new one"
    assert m.on_rul(rul(2)) is None, "already critical"


def test_a_recovering_rul_does_not_reopen_orders():
    # The NAB replay bug: a RUL jumping between 0 and a healthy value re-armed the
    # rule on every healthy reading and opened a new order on the next low one.
    m = machine()
    decisions = []
    for i in range(30):
        decisions.append(m.on_rul(rul(0.0 if i % 2 else 5000.0, ts=f"2026-11-29T10:{i:02d}:00Z")))
    opened = [d for d in decisions if d and d.action == "open"]
    assert len(opened) == 1 and RUL_REASON in m.open


def test_at_most_one_open_order_per_reason_under_random_input():
    rng = random.Random(5)
    m = machine()
    open_ids: dict[str, set[str]] = {ANOMALY_REASON: set(), RUL_REASON: set()}
    for i in range(3000):
        ts = f"2026-11-29T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        kind = rng.random()
        if kind < 0.45:
            d = m.on_rul(rul(rng.choice([0.0, 5.0, 25.0, 40.0, 1e4]), sensor=rng.choice("VT"), ts=ts))
        elif kind < 0.99:
            d = m.on_anomaly(score(rng.random() < 0.7, sensor=rng.choice("VT"), level=rng.choice(["alert", "danger"]), ts=ts))
        else:
            for r in m.on_maintenance({"asset_id": "A", "ts": ts}):
                assert r.action == "resolve"
                open_ids[r.reason].discard(r.work_order_id)
            continue
        if d is None:
            continue
        if d.action == "open":
            assert not open_ids[d.reason], f"a second open {d.reason} order"
            open_ids[d.reason].add(d.work_order_id)
        else:
            assert open_ids[d.reason] == {d.work_order_id}


def test_persistent_anomalies_need_consecutive_alerts_and_say_why():
    m = machine()
    departures = [
        {"feature": "bpfo_energy", "value": 6.0, "reference": 1.0, "factor": 6.0, "severity": 8.9},
        {"feature": "rms", "value": 0.5, "reference": 0.3, "factor": 1.67, "severity": 2.7},
        {"feature": "bpfi_energy", "value": 1.1, "reference": 1.0, "factor": 1.1, "severity": 0.2},
    ]
    assert m.on_anomaly(score(True)) is None
    assert m.on_anomaly(score(True)) is None
    assert m.on_anomaly(score(False)) is None
    decisions = [m.on_anomaly(score(True, departures=departures)) for _ in range(5)]
    opened = [d for d in decisions if d]
    assert len(opened) == 1 and opened[0].reason == ANOMALY_REASON and opened[0].evidence["consecutive"] == 3
    order = opened[0]
    assert order.priority == "medium"
    assert order.evidence["defect_band"] == {"band": "BPFO", "factor": 6.0}
    assert "bpfo_energy 6.00x reference" in order.why and "rms 1.67x" in order.why and "BPFO" in order.why
    assert "bpfi_energy" not in order.why, "a feature within its alert level is not a reason"
    danger = m.on_anomaly(score(True, level="danger", departures=departures))
    assert danger and danger.action == "escalate" and danger.priority == "high"
    assert danger.work_order_id == order.work_order_id


def test_defect_band_needs_a_departed_band():
    assert defect_band([{"feature": "rms", "factor": 3.0, "severity": 5.0}]) is None
    assert defect_band([{"feature": "ftf_energy", "factor": 1.2, "severity": 0.4}]) is None
    assert defect_band([{"feature": "VIB:bsf_energy", "factor": 3.0, "severity": 2.0},
                        {"feature": "VIB:bpfi_energy", "factor": 4.0, "severity": 3.0}]) == {"band": "BPFI", "factor": 4.0}


def test_maintenance_resolves_open_orders_and_restarts_the_rules():
    m = machine()
    opened = m.on_rul(rul(10))
    for _ in range(3):
        m.on_anomaly(score(True))
    resolved = m.on_maintenance({"asset_id": "A", "ts": "2026-11-29T12:00:00Z", "note": "bearing replaced"})
    assert {r.reason for r in resolved} == {RUL_REASON, ANOMALY_REASON}
    assert all(r.action == "resolve" and "bearing replaced" in r.why for r in resolved)
    assert opened.work_order_id in {r.work_order_id for r in resolved}
    assert not m.open and m.on_maintenance({"asset_id": "A"}) == []
    again = m.on_rul(rul(10, ts="2026-11-29T13:00:00Z"))
    assert again and again.action == "open" and again.work_order_id != opened.work_order_id


def test_ids_are_deterministic_and_state_round_trips():
    assert work_order_id("A", RUL_REASON, "t") == work_order_id("A", RUL_REASON, "t")
    m = machine()
    m.on_rul(rul(10))
    m.on_anomaly(score(True))
    restored = AssetMaintenance.from_bytes(m.to_bytes(), {"cycles": 30.0, "seconds": 3600.0}, 3)
    assert restored.open == m.open and restored.anomaly_streak == m.anomaly_streak
    assert restored.on_rul(rul(5)).action == "escalate", "the open order survives a restart"


def test_version_1_state_is_migrated():
    old = orjson.dumps({"open": {RUL_REASON: "wo-1"}, "anomaly_streak": {"V": 2}, "normal_streak": {"V": 0},
                        "rul_by_sensor": {"V": 12.0}})
    m = AssetMaintenance.from_bytes(old, {"cycles": 30.0, "seconds": 3600.0}, 3)
    assert m.open == {RUL_REASON: {"id": "wo-1", "priority": "high"}} and m.anomaly_streak == {"V": 2}
    assert m.on_rul(rul(20)) is None, "the migrated open order still blocks a second one"
    up = m.on_rul(rul(1))
    assert up.action == "escalate" and up.work_order_id == "wo-1"
