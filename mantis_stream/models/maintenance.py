"""Work-order rules: when does an asset need a technician, and why?

Pure state machine, one per asset, fed anomaly and RUL messages and maintenance
events in order:

- ``persistent_anomaly``: ``persistence`` alert-level scores in a row from one
  sensor; priority ``medium`` at the alert level, ``high`` in the danger zone.
- ``rul_below_threshold``: the asset's RUL (the least of its sensors' latest
  estimates) under the threshold of its unit; priority ``critical`` under a
  third of it, else ``high``.

At most one open work order per asset and reason, under every input: an order
stays open until a maintenance event resolves it (``on_maintenance``); a later,
worse trigger escalates the open order's priority (a ``Decision`` with action
``escalate`` and the same id) instead of opening another; a recovering reading
changes nothing (a machine does not heal itself). Work-order ids are derived
from the asset, reason and triggering timestamp, so a message processed twice
(at-least-once delivery) yields the same id and the sinks can deduplicate.

Each decision says *why* (``Decision.why``, one line a technician can act on):
for an anomaly, the features that left the healthy reference and by how much,
and the bearing defect band (BPFO, BPFI, BSF, FTF) that grew, when the
vibration features carry them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

NAMESPACE = uuid.UUID("6f1c2a0e-3b7d-4c55-9a51-2f4d0c8e9b11")
RUL_REASON = "rul_below_threshold"
ANOMALY_REASON = "persistent_anomaly"
PRIORITIES = ("low", "medium", "high", "critical")
#: Layout of ``to_bytes``: 1 had ``open`` as reason -> id.
STATE_VERSION = 2
#: Departures kept in a work order's evidence (bounded: it goes into spans and rows).
MAX_FEATURES = 5
DEFECT_BANDS = ("bpfo", "bpfi", "bsf", "ftf")


@dataclass(frozen=True, slots=True)
class Decision:
    work_order_id: str
    reason: str
    priority: str
    rul: float | None
    evidence: dict[str, Any]
    action: str = "open"  # open | escalate | resolve
    why: str = ""


def work_order_id(asset_id: str, reason: str, trigger_ts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{asset_id}|{reason}|{trigger_ts}"))


def defect_band(departures: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The bearing defect band whose envelope energy grew most (factor on its reference), if any departed."""
    bands = [d for d in departures if str(d.get("feature", "")).rpartition(":")[2] in {f"{b}_energy" for b in DEFECT_BANDS}]
    if not bands:
        return None
    top = max(bands, key=lambda d: float(d.get("factor") or 0.0))
    if float(top.get("severity") or 0.0) < 1.0:
        return None
    return {"band": str(top["feature"]).rpartition(":")[2].removesuffix("_energy").upper(), "factor": top.get("factor")}


def explain_anomaly(sensor: str, level: str, departures: list[dict[str, Any]], band: dict[str, Any] | None,
                    consecutive: int) -> str:
    """One line: which features left the reference and by how much, and the defect band that grew."""
    def factor(d: dict[str, Any]) -> str:
        return f"{d['feature']} {float(d.get('factor') or 0.0):.2f}x reference"

    departed = [d for d in departures if float(d.get("severity") or 0.0) >= 1.0][:3]
    text = f"{sensor}: {level} for {consecutive} scores in a row"
    if departed:
        text += "; " + ", ".join(map(factor, departed))
    else:
        text += "; a sudden change in its features, none past its alert level"
        if departures:
            text += f" (largest departure: {factor(departures[0])})"
    if band:
        text += f"; bearing defect band {band['band']} energy {float(band['factor']):.1f}x reference"
    return text


@dataclass
class AssetMaintenance:
    thresholds: dict[str, float]  # unit -> RUL threshold
    persistence: int
    open: dict[str, dict[str, str]] = field(default_factory=dict)  # reason -> {"id", "priority"}
    anomaly_streak: dict[str, int] = field(default_factory=dict)
    rul_by_sensor: dict[str, float] = field(default_factory=dict)

    @property
    def last_rul(self) -> float | None:
        return min(self.rul_by_sensor.values(), default=None)

    def on_rul(self, message: dict[str, Any]) -> Decision | None:
        unit = message["unit"]
        if unit not in self.thresholds:
            raise ValueError(f"unit: {unit!r} is not one of {sorted(self.thresholds)}")
        self.rul_by_sensor[message.get("sensor_id", "")] = float(message["rul"])
        rul = self.last_rul
        assert rul is not None
        threshold = self.thresholds[unit]
        if rul >= threshold:
            return None
        priority = "critical" if rul < threshold / 3 else "high"
        why = f"RUL {rul:g} {unit} under the threshold {threshold:g} {unit}"
        if message.get("sensor_id"):
            why = f"{message['sensor_id']}: {why}"
        return self._trigger(
            message["asset_id"], RUL_REASON, priority, rul, message["ts"],
            {"rul": rul, "unit": unit, "lower": message.get("lower"), "upper": message.get("upper"),
             "health_index": message.get("health_index"), "sensor_id": message.get("sensor_id"), "threshold": threshold},
            why,
        )

    def on_anomaly(self, message: dict[str, Any]) -> Decision | None:
        sensor = message["sensor_id"]
        if not message["is_anomaly"]:
            self.anomaly_streak[sensor] = 0
            return None
        streak = self.anomaly_streak[sensor] = self.anomaly_streak.get(sensor, 0) + 1
        if streak < self.persistence:
            return None
        level = str(message.get("level") or "alert")
        departures = [d for d in (message.get("departures") or []) if isinstance(d, dict)][:MAX_FEATURES]
        band = defect_band(departures)
        evidence = {"sensor_id": sensor, "score": message["score"], "threshold": message["threshold"],
                    "consecutive": streak, "level": level, "features": departures}
        if band:
            evidence["defect_band"] = band
        return self._trigger(
            message["asset_id"], ANOMALY_REASON, "high" if level == "danger" else "medium", self.last_rul,
            message["ts"], evidence, explain_anomaly(sensor, level, departures, band, streak),
        )

    def on_maintenance(self, message: dict[str, Any]) -> list[Decision]:
        """The asset was serviced: every open order is resolved and the rules start afresh."""
        note = str(message.get("note") or "")[:200]
        why = "maintenance done" + (f": {note}" if note else "")
        out = [Decision(o["id"], reason, o["priority"], self.last_rul, {"maintenance_ts": message.get("ts")}, "resolve", why)
               for reason, o in sorted(self.open.items())]
        self.open.clear()
        self.anomaly_streak.clear()
        self.rul_by_sensor.clear()
        return out

    def _trigger(self, asset_id: str, reason: str, priority: str, rul: float | None, ts: str,
                 evidence: dict[str, Any], why: str) -> Decision | None:
        current = self.open.get(reason)
        if current is None:
            wo_id = work_order_id(asset_id, reason, ts)
            self.open[reason] = {"id": wo_id, "priority": priority}
            return Decision(wo_id, reason, priority, rul, evidence, "open", why)
        if PRIORITIES.index(priority) <= PRIORITIES.index(current["priority"]):
            return None
        current["priority"] = priority
        return Decision(current["id"], reason, priority, rul, evidence, "escalate", why)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"version": STATE_VERSION, "open": self.open, "anomaly_streak": self.anomaly_streak,
                             "rul_by_sensor": self.rul_by_sensor})

    @classmethod
    def from_bytes(cls, data: bytes, thresholds: dict[str, float], persistence: int) -> AssetMaintenance:
        """Inverse of :meth:`to_bytes`; a version-1 state's open orders keep their ids, at their reason's lowest priority."""
        state = orjson.loads(data)
        version = state.pop("version", 1)
        if version > STATE_VERSION:
            raise ValueError(f"maintenance state version {version} is newer than this release's {STATE_VERSION}")
        if version == 1:
            state.pop("normal_streak", None)
            lowest = {ANOMALY_REASON: "medium", RUL_REASON: "high"}
            state["open"] = {r: {"id": i, "priority": lowest.get(r, "medium")} for r, i in state.get("open", {}).items()}
        return cls(thresholds, persistence, **state)
