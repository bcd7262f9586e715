"""Work-order rules: thresholds, persistence, re-arming, deterministic ids."""

from __future__ import annotations

from mantis_stream.models.maintenance import ANOMALY_REASON, RUL_REASON, AssetMaintenance, work_order_id


def rul(value: float, sensor: str = "V", ts: str = "2026-11-29T10:00:00Z") -> dict:
    return {"asset_id": "A", "sensor_id": sensor, "ts": ts, "rul": value, "unit": "cycles", "lower": value - 1, "upper": value + 1}


def score(anomalous: bool, sensor: str = "V") -> dict:
    return {"asset_id": "A", "sensor_id": sensor, "ts": "2026-11-29T10:00:00Z", "score": 0.99 if anomalous else 0.1,
            "threshold": 0.9, "is_anomaly": anomalous}


def machine() -> AssetMaintenance:
    return AssetMaintenance({"cycles": 30.0, "seconds": 3600.0}, persistence=3)


def test_rul_under_threshold_opens_one_order_until_it_recovers():
    m = machine()
    assert m.on_rul(rul(50)) is None
    first = m.on_rul(rul(20))
    assert first and first.reason == RUL_REASON and first.priority == "high"
    assert m.on_rul(rul(5)) is None, "already open for this asset and reason"
    assert m.on_rul(rul(44)) is None and RUL_REASON in m.open, "re-armed only above 1.5 x threshold"
    assert m.on_rul(rul(46)) is None and RUL_REASON not in m.open
    again = m.on_rul(rul(5, ts="2026-11-29T11:00:00Z"))
    assert again and again.priority == "critical" and again.work_order_id != first.work_order_id


def test_asset_rul_is_the_least_of_its_sensors():
    m = machine()
    assert m.on_rul(rul(10, sensor="V")) is not None
    assert m.on_rul(rul(1000, sensor="T")) is None and RUL_REASON in m.open, "a healthy sensor must not re-arm"


def test_persistent_anomalies_need_consecutive_scores():
    m = machine()
    assert m.on_anomaly(score(True)) is None
    assert m.on_anomaly(score(True)) is None
    assert m.on_anomaly(score(False)) is None
    decisions = [m.on_anomaly(score(True)) for _ in range(5)]
    opened = [d for d in decisions if d]
    assert len(opened) == 1 and opened[0].reason == ANOMALY_REASON and opened[0].evidence["consecutive"] == 3


def test_ids_are_deterministic_and_state_round_trips():
    assert work_order_id("A", RUL_REASON, "t") == work_order_id("A", RUL_REASON, "t")
    m = machine()
    m.on_rul(rul(10))
    m.on_anomaly(score(True))
    restored = AssetMaintenance.from_bytes(m.to_bytes(), {"cycles": 30.0, "seconds": 3600.0}, 3)
    assert restored.open == m.open and restored.anomaly_streak == m.anomaly_streak
    assert restored.on_rul(rul(5)) is None, "the open order survives a restart"
