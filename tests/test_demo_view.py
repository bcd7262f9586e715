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
