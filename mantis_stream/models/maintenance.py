"""Work-order rules: when does an asset need a technician?

Pure state machine, one per asset, fed anomaly and RUL messages in order:

- ``rul_below_threshold``: the asset's RUL (the least of its sensors' latest
  estimates) under the threshold of its unit; priority ``critical`` under a
  third of it, else ``high``.  Re-armed once it recovers above 1.5 x the
  threshold.
- ``persistent_anomaly``: ``persistence`` anomalous scores in a row from one
  sensor; priority ``medium``.  Re-armed after twice as many normal scores.

At most one open work order per asset and reason.  Work-order ids are derived
from the asset, reason and triggering timestamp, so a message processed twice
(at-least-once delivery) yields the same id and the sinks can deduplicate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

NAMESPACE = uuid.UUID("6f1c2a0e-3b7d-4c55-9a51-2f4d0c8e9b11")
RUL_REASON = "rul_below_threshold"
ANOMALY_REASON = "persistent_anomaly"


@dataclass(frozen=True, slots=True)
class Decision:
    work_order_id: str
    reason: str
    priority: str
    rul: float | None
    evidence: dict[str, Any]


def work_order_id(asset_id: str, reason: str, trigger_ts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{asset_id}|{reason}|{trigger_ts}"))


@dataclass
class AssetMaintenance:
    thresholds: dict[str, float]  # unit -> RUL threshold
    persistence: int
    open: dict[str, str] = field(default_factory=dict)  # reason -> work_order_id
    anomaly_streak: dict[str, int] = field(default_factory=dict)
    normal_streak: dict[str, int] = field(default_factory=dict)
    rul_by_sensor: dict[str, float] = field(default_factory=dict)

    @property
    def last_rul(self) -> float | None:
        return min(self.rul_by_sensor.values(), default=None)

    def on_rul(self, message: dict[str, Any]) -> Decision | None:
        unit = message["unit"]
        self.rul_by_sensor[message.get("sensor_id", "")] = float(message["rul"])
        rul = self.last_rul
        assert rul is not None
        threshold = self.thresholds[unit]
        if RUL_REASON in self.open:
            if rul > 1.5 * threshold:
                del self.open[RUL_REASON]
            return None
        if rul >= threshold:
            return None
        return self._open(
            message["asset_id"], RUL_REASON, "critical" if rul < threshold / 3 else "high", rul, message["ts"],
            {"rul": rul, "unit": unit, "lower": message.get("lower"), "upper": message.get("upper"),
             "health_index": message.get("health_index"), "sensor_id": message.get("sensor_id"), "threshold": threshold},
        )

    def on_anomaly(self, message: dict[str, Any]) -> Decision | None:
        sensor = message["sensor_id"]
        if not message["is_anomaly"]:
            self.anomaly_streak[sensor] = 0
            self.normal_streak[sensor] = self.normal_streak.get(sensor, 0) + 1
            if ANOMALY_REASON in self.open and all(n >= 2 * self.persistence for n in self.normal_streak.values()):
                del self.open[ANOMALY_REASON]
            return None
        self.normal_streak[sensor] = 0
        streak = self.anomaly_streak[sensor] = self.anomaly_streak.get(sensor, 0) + 1
        if streak < self.persistence or ANOMALY_REASON in self.open:
            return None
        return self._open(
            message["asset_id"], ANOMALY_REASON, "medium", self.last_rul, message["ts"],
            {"sensor_id": sensor, "score": message["score"], "threshold": message["threshold"], "consecutive": streak},
        )

    def _open(self, asset_id: str, reason: str, priority: str, rul: float | None, ts: str,
              evidence: dict[str, Any]) -> Decision:
        wo_id = work_order_id(asset_id, reason, ts)
        self.open[reason] = wo_id
        return Decision(wo_id, reason, priority, rul, evidence)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"open": self.open, "anomaly_streak": self.anomaly_streak,
                             "normal_streak": self.normal_streak, "rul_by_sensor": self.rul_by_sensor})

    @classmethod
    def from_bytes(cls, data: bytes, thresholds: dict[str, float], persistence: int) -> "AssetMaintenance":
        return cls(thresholds, persistence, **orjson.loads(data))
