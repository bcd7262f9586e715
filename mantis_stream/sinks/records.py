"""Rows the sinks write, made from the pipeline's messages (pure functions).

Why: the agents hand the sinks decoded JSON values; turning them into typed,
validated rows here keeps the database code free of message parsing and lets
a bad message be rejected (and logged) before it reaches a batch, where it
would fail the whole statement.

Usage::

    record = from_message("mantis.rul", value, trace_id="4bf92f35...")

Notes:
- Text loses NUL characters (PostgreSQL rejects them in ``text``).
- Timestamps become timezone-aware UTC datetimes; RFC 3339 strings (any
  number of fraction digits) and Unix seconds are accepted.
- ``trace_id`` comes from the message's own ``trace_id`` when present, else
  from the ``traceparent`` header (:func:`trace_id_from_headers`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from .. import topics as names
from ..models.reading import InvalidReading

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_FRACTION = re.compile(r"(\.\d+)")


class InvalidMessage(InvalidReading):
    """A message the sinks cannot store; ``field`` names the culprit.

    An :class:`InvalidReading` so that its dead letter names the field like the
    other stages' do (``error.field``).
    """


class AnomalyEvent(NamedTuple):
    asset_id: str
    sensor_id: str
    ts: datetime
    model_name: str
    model_version: str
    score: float
    threshold: float | None
    is_anomaly: bool
    trace_id: str | None


class RulEstimate(NamedTuple):
    asset_id: str
    sensor_id: str  # "" when the estimate is for the whole asset
    ts: datetime
    model_name: str
    model_version: str
    rul: float
    unit: str
    lower: float | None
    upper: float | None
    health_index: float | None
    cycle: int | None
    trace_id: str | None


class WorkOrder(NamedTuple):
    work_order_id: str
    asset_id: str
    priority: str
    reason: str
    created_at: datetime
    rul: float | None
    evidence: str  # a JSON object, as text (jsonb parameter)
    trace_id: str | None
    action: str = "open"  # open | escalate | resolve
    why: str = ""
    defect_band: str | None = None


class FeatureVector(NamedTuple):
    asset_id: str
    sensor_id: str
    ts: datetime
    features: dict[str, float]
    trace_id: str | None


Record = AnomalyEvent | RulEstimate | WorkOrder | FeatureVector


# -- helpers -----------------------------------------------------------------


def trace_id_from_headers(headers: Any) -> str | None:
    """The W3C trace id (32 hex digits) of a ``traceparent`` header, if any.

    ``headers`` is what Faust gives: a mapping or a list of ``(key, value)`` pairs,
    values as bytes or str.
    """
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if key.lower() != "traceparent":
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        m = _TRACEPARENT.match(str(value).strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1)
    return None


def parse_ts(value: Any, field: str = "ts") -> datetime:
    """An RFC 3339 string or Unix seconds -> aware UTC datetime."""
    if isinstance(value, bool):
        raise InvalidMessage(field, "not a timestamp")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidMessage(field, "not finite")
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidMessage(field, f"out of range: {value!r}") from None
    if not isinstance(value, str) or not value:
        raise InvalidMessage(field, "missing or not a string")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    # datetime keeps microseconds: cut longer fractions (nanoseconds) to six digits.
    text = _FRACTION.sub(lambda m: m.group(1)[:7], text, count=1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage(field, f"not an RFC 3339 timestamp: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _text(value: Mapping[str, Any], field: str, *, required: bool = True, default: str = "") -> str:
    raw = value.get(field)
    if raw is None or raw == "":
        if required:
            raise InvalidMessage(field, "missing")
        return default
    if isinstance(raw, (dict, list)):
        raise InvalidMessage(field, "not a string")
    return str(raw).replace("\x00", "")


def _number(value: Mapping[str, Any], field: str) -> float | None:
    raw = value.get(field)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidMessage(field, f"not a number: {raw!r}")
    return float(raw)


def _required_number(value: Mapping[str, Any], field: str) -> float:
    number = _number(value, field)
    if number is None:
        raise InvalidMessage(field, "missing")
    return number


def _model(value: Mapping[str, Any]) -> tuple[str, str]:
    model = value.get("model")
    if isinstance(model, Mapping):
        return (
            _text(model, "name", required=False, default="unknown"),
            _text(model, "version", required=False, default=""),
        )
    if isinstance(model, str) and model:
        return model.replace("\x00", ""), ""
    return "unknown", ""


def _model_output(value: Mapping[str, Any], name: str, version: str) -> dict[str, Any]:
    """The leading fields of a model's output (anomaly event, RUL estimate): one set of checks for both."""
    return {
        "asset_id": _text(value, "asset_id"),
        "sensor_id": _text(value, "sensor_id", required=False),
        "ts": parse_ts(value.get("ts")),
        "model_name": name,
        "model_version": version,
    }


def _trace(value: Mapping[str, Any], trace_id: str | None) -> str | None:
    own = value.get("trace_id")
    if isinstance(own, str) and own:
        return own.replace("\x00", "")
    return trace_id


# -- one function per topic --------------------------------------------------


def anomaly_event(value: Mapping[str, Any], trace_id: str | None = None) -> AnomalyEvent:
    name, version = _model(value)
    is_anomaly = value.get("is_anomaly")
    if not isinstance(is_anomaly, bool):
        raise InvalidMessage("is_anomaly", "missing or not a boolean")
    return AnomalyEvent(
        **_model_output(value, name, version),
        score=_required_number(value, "score"),
        threshold=_number(value, "threshold"),
        is_anomaly=is_anomaly,
        trace_id=_trace(value, trace_id),
    )


def rul_estimate(value: Mapping[str, Any], trace_id: str | None = None) -> RulEstimate:
    name, version = _model(value)
    cycle = value.get("cycle")
    if cycle is not None and (isinstance(cycle, bool) or not isinstance(cycle, (int, float)) or not math.isfinite(cycle)):
        raise InvalidMessage("cycle", f"not an integer: {cycle!r}")
    return RulEstimate(
        **_model_output(value, name, version),
        rul=_required_number(value, "rul"),
        unit=_text(value, "unit", required=False, default="cycles"),
        lower=_number(value, "lower"),
        upper=_number(value, "upper"),
        health_index=_number(value, "health_index"),
        cycle=None if cycle is None else int(cycle),
        trace_id=_trace(value, trace_id),
    )


#: Longest ``why`` stored (characters): a line a technician reads, not a payload.
MAX_WHY = 500
WORK_ORDER_ACTIONS = ("open", "escalate", "resolve")


def work_order(value: Mapping[str, Any], trace_id: str | None = None) -> WorkOrder:
    action = _text(value, "action", required=False, default="open")
    if action not in WORK_ORDER_ACTIONS:
        raise InvalidMessage("action", f"{action!r} is not one of {', '.join(WORK_ORDER_ACTIONS)}")
    evidence = value.get("evidence")
    if evidence is None:
        evidence = {}
    if not isinstance(evidence, Mapping):
        raise InvalidMessage("evidence", "not an object")
    band_info = evidence.get("defect_band")
    band = str(band_info.get("band"))[:8] if isinstance(band_info, Mapping) and band_info.get("band") else None
    created = value.get("created_at")
    return WorkOrder(
        work_order_id=_text(value, "work_order_id"),
        asset_id=_text(value, "asset_id"),
        priority=_text(value, "priority", required=False, default="medium"),
        reason=_text(value, "reason"),
        created_at=parse_ts(created, "created_at") if created is not None else datetime.now(UTC),
        rul=_number(value, "rul"),
        # jsonb rejects \u0000 too; orjson writes NaN/inf as null.
        evidence=orjson.dumps(evidence).decode().replace("\\u0000", ""),
        trace_id=_trace(value, trace_id),
        action=action,
        why=_text(value, "why", required=False)[:MAX_WHY],
        defect_band=band,
    )


def feature_vector(value: Mapping[str, Any], trace_id: str | None = None) -> FeatureVector:
    features = value.get("features")
    if not isinstance(features, Mapping):
        raise InvalidMessage("features", "missing or not an object")
    clean = {
        str(k): float(v)
        for k, v in features.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    return FeatureVector(
        asset_id=_text(value, "asset_id"),
        sensor_id=_text(value, "sensor_id", required=False),
        ts=parse_ts(value.get("ts")),
        features=clean,
        trace_id=_trace(value, trace_id),
    )


_BY_TOPIC: dict[str, Callable[[Mapping[str, Any], str | None], Record]] = {
    names.ANOMALIES: anomaly_event,
    names.RUL: rul_estimate,
    names.WORK_ORDERS: work_order,
    names.FEATURES: feature_vector,
}


def from_message(topic: str, value: Any, trace_id: str | None = None) -> Record:
    """The record for a message on one of the public topics; raises :class:`InvalidMessage`."""
    try:
        convert = _BY_TOPIC[topic]
    except KeyError:
        raise InvalidMessage("topic", f"no sink record for topic {topic!r}") from None
    if isinstance(value, (bytes, str)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidMessage("value", "not JSON") from None
    if not isinstance(value, Mapping):
        raise InvalidMessage("value", "not a JSON object")
    return convert(value, trace_id)
