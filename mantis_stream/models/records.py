"""The messages the pipeline writes (docs/interface.md "Topics"), as builders.

Values are plain dicts (encoded by the orjson codec): a record class per
message would cost more per event than the rest of a stage's work.  Each
public builder fills its topic's shape from :mod:`.schema`, so mypy holds it to
the declaration the sinks validate against, and returns it as the plain dict the
stages' publishers take (``dict[str, Any]``; a TypedDict is one at run time, and
``typing.cast`` would be a call per record: hence the ``return-value`` ignores,
which go once the publishers take a ``Mapping``; ``departures`` come as the
plain dicts of ``Departure.as_dict``).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .schema import MAINTENANCE_ACTIONS as MAINTENANCE_ACTIONS
from .schema import (
    AnomalyMessage,
    FeaturesMessage,
    MaintenanceMessage,
    RulMessage,
    WorkOrderMessage,
    format_timestamp,
    validate,
)
from .schema import ModelRef as ModelRef


def waveform_frame(asset_id: str, sensor_id: str, ts: float, samples: np.ndarray, sample_rate_hz: float,
                   meta: dict[str, Any] | None) -> dict[str, Any]:
    """Internal: one fixed-size vibration frame, samples as the hex of little-endian float32 (CPython decodes hex
    several times faster than base64)."""
    return {
        "kind": "waveform", "asset_id": asset_id, "sensor_id": sensor_id, "ts": ts,
        "sample_rate_hz": sample_rate_hz,
        "samples_hex": samples.astype("<f4").tobytes().hex(),
        "meta": meta or {},
    }


def frame_samples(frame: dict[str, Any]) -> np.ndarray:
    """A frame's samples; frames written by earlier releases carry them as base64 (``samples``)."""
    raw = bytes.fromhex(frame["samples_hex"]) if "samples_hex" in frame else base64.b64decode(frame["samples"])
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


def window_frame(asset_id: str, sensor_id: str, ts: float, values: list[float], unit: str | None) -> dict[str, Any]:
    """Internal: the last N readings of a scalar sensor."""
    return {"kind": "window", "asset_id": asset_id, "sensor_id": sensor_id, "ts": ts, "values": values, "unit": unit}


def row_frame(asset_id: str, sensor_id: str, ts: float, channels: dict[str, float], cycle: int | None) -> dict[str, Any]:
    """Internal: one sample of several channels (e.g. one turbofan cycle)."""
    return {"kind": "row", "asset_id": asset_id, "sensor_id": sensor_id, "ts": ts, "channels": channels, "cycle": cycle}


def features_message(frame: dict[str, Any], features: dict[str, float]) -> FeaturesMessage:
    out: FeaturesMessage = {
        "asset_id": frame["asset_id"], "sensor_id": frame["sensor_id"],
        "ts": format_timestamp(frame["ts"]), "features": features,
        "frame": frame["kind"], "epoch": frame["ts"],
    }
    if frame.get("cycle") is not None:
        out["cycle"] = frame["cycle"]
    return out


def anomaly_message(features: dict[str, Any], score: float, threshold: float, is_anomaly: bool,
                    model: ModelRef, warm: bool, level: str = "normal",
                    departures: list[dict[str, Any]] | None = None) -> AnomalyMessage:
    """``level``: normal / alert / danger; ``departures``: the features furthest from the healthy reference (bounded)."""
    out: AnomalyMessage = {
        "asset_id": features["asset_id"], "sensor_id": features["sensor_id"], "ts": features["ts"],
        "score": score, "threshold": threshold, "is_anomaly": is_anomaly, "model": model, "warm": warm,
        "level": level, "departures": departures or [],  # type: ignore[typeddict-item]
    }
    return out


def rul_message(features: dict[str, Any], rul: float, unit: str, lower: float, upper: float,
                health_index: float, model: ModelRef) -> RulMessage:
    out: RulMessage = {
        "asset_id": features["asset_id"], "sensor_id": features["sensor_id"], "ts": features["ts"],
        "rul": rul, "unit": unit, "lower": lower, "upper": upper, "health_index": health_index, "model": model,
    }
    if features.get("cycle") is not None:
        out["cycle"] = features["cycle"]
    return out


def work_order_message(work_order_id: str, asset_id: str, priority: str, reason: str, created_at: str,
                       rul: float | None, trace_id: str | None, evidence: dict[str, Any],
                       action: str = "open", why: str = "") -> WorkOrderMessage:
    """``action``: open (a new order), escalate (same id, higher priority), resolve (maintenance done)."""
    out: WorkOrderMessage = {
        "work_order_id": work_order_id, "asset_id": asset_id, "priority": priority, "reason": reason,
        "created_at": created_at, "rul": rul, "trace_id": trace_id, "evidence": evidence,
        "action": action, "why": why,
    }
    return out


def maintenance_asset(value: Any) -> str:
    """The asset of a ``mantis.maintenance`` message; raises InvalidReading naming the bad field."""
    return validate(MaintenanceMessage, value)["asset_id"]


def maintenance_message(asset_id: str, ts: str, action: str = "done", note: str = "",
                        by: str = "") -> MaintenanceMessage:
    """``mantis.maintenance``: the asset was serviced; its references restart and its open work orders are resolved."""
    out: MaintenanceMessage = {"asset_id": asset_id, "ts": ts, "action": action, "note": note,
                               "by": by}
    return out
