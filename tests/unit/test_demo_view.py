"""The demo's live view: an asset's row shows its worst sensor."""

from __future__ import annotations

from mantis_stream import topics as names
from mantis_stream.demo.view import DemoView


def rul(sensor: str, value: float, health: float) -> dict:
    return {"asset_id": "PUMP-2", "sensor_id": sensor, "rul": value, "unit": "seconds", "health_index": health}


def test_row_shows_the_worst_sensor_not_the_latest_message() -> None:
    view = DemoView()
    view.update(names.RUL, rul("TMP-1", 120.0, 0.2))
    view.update(names.RUL, rul("VIB-1", 34800.0, 0.95))  # a healthy sensor of the same asset, later
    [row] = [line for line in view.render().splitlines() if line.startswith("PUMP-2")]
    assert "120 sec" in row and "0.20" in row
    view.update(names.RUL, rul("TMP-1", 30.0, 0.1))
    [row] = [line for line in view.render().splitlines() if line.startswith("PUMP-2")]
    assert "30 sec" in row


def test_an_escalated_order_is_one_order_and_says_why() -> None:
    view = DemoView()
    order = {"work_order_id": "wo-1", "asset_id": "PUMP-2", "priority": "medium", "reason": "persistent_anomaly",
             "created_at": "2026-12-07T10:00:00Z", "rul": None, "action": "open",
             "why": "VIB-1: alert for 5 scores in a row; bpfo_energy 14.57x reference"}
    view.update(names.WORK_ORDERS, order)
    view.update(names.WORK_ORDERS, {**order, "priority": "high", "action": "escalate"})
    lines = view.render().splitlines()
    [row] = [line for line in lines if line.startswith("PUMP-2")]
    assert row.rstrip().endswith(" 1"), "one work order, escalated"
    assert any("(escalate)" in line for line in lines) and any("bpfo_energy 14.57x" in line for line in lines)
