"""Rows the sinks write, made from the pipeline's messages (pure functions).

Why: the agents hand the sinks decoded JSON values; each is checked against
its topic's shape (:mod:`mantis_stream.models.schema`, the one the builders
fill) and turned into a typed row here, which keeps the database code free of
message parsing and lets a bad message be rejected (and logged) before it
reaches a batch, where it would fail the whole statement.

Usage::

    row = from_message("mantis.rul", value, trace_id="4bf92f35...")

Notes:
- Text loses NUL characters (PostgreSQL rejects them in ``text``).
- Timestamps become timezone-aware UTC datetimes (:func:`parse_ts`).
- ``trace_id`` comes from a work order's own ``trace_id`` when present, else
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
from ..models.schema import (
    AnomalyMessage,
    FeaturesMessage,
    ModelRef,
    RulMessage,
    WorkOrderMessage,
    validate,
)
from ..models.schema import parse_datetime as parse_ts

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class InvalidMessage(InvalidReading):
    """A message the sinks cannot store; ``field`` names the culprit.

    An :class:`InvalidReading` so that its dead letter names the field like the
    other stages' do (``error.field``).
    """


class AnomalyRow(NamedTuple):
    asset_id: str
    sensor_id: str
    ts: datetime
    model_name: str
    model_version: str
    score: float
    threshold: float | None
    is_anomaly: bool
    trace_id: str | None


class RulRow(NamedTuple):
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


class WorkOrderRow(NamedTuple):
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


class FeatureRow(NamedTuple):
    asset_id: str
    sensor_id: str
    ts: datetime
    features: dict[str, float]
    trace_id: str | None


Record = AnomalyRow | RulRow | WorkOrderRow | FeatureRow


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


def _text(value: str) -> str:
    return value.replace("\x00", "")


def _model(model: ModelRef | str | None) -> tuple[str, str]:
    if isinstance(model, dict):
        return _text(model.get("name", "")) or "unknown", _text(model.get("version", ""))
    if model:
        return _text(model), ""
    return "unknown", ""


def _trace(own: str | None, trace_id: str | None) -> str | None:
    return _text(own) if own else trace_id


# -- one function per topic --------------------------------------------------


def anomaly_row(value: Any, trace_id: str | None = None) -> AnomalyRow:
    msg = validate(AnomalyMessage, value)
    name, version = _model(msg.get("model"))
    return AnomalyRow(
        asset_id=_text(msg["asset_id"]), sensor_id=_text(msg.get("sensor_id", "")), ts=parse_ts(msg["ts"]),
        model_name=name, model_version=version, score=msg["score"], threshold=msg.get("threshold"),
        is_anomaly=msg["is_anomaly"], trace_id=trace_id,
    )


def rul_row(value: Any, trace_id: str | None = None) -> RulRow:
    msg = validate(RulMessage, value)
    name, version = _model(msg.get("model"))
    return RulRow(
        asset_id=_text(msg["asset_id"]), sensor_id=_text(msg.get("sensor_id", "")), ts=parse_ts(msg["ts"]),
        model_name=name, model_version=version, rul=msg["rul"], unit=msg.get("unit", "cycles"),
        lower=msg.get("lower"), upper=msg.get("upper"), health_index=msg.get("health_index"),
        cycle=msg.get("cycle"), trace_id=trace_id,
    )


#: Longest ``why`` stored (characters): a line a technician reads, not a payload.
MAX_WHY = 500


def work_order_row(value: Any, trace_id: str | None = None) -> WorkOrderRow:
    msg = validate(WorkOrderMessage, value)
    evidence = msg.get("evidence") or {}
    band_info = evidence.get("defect_band")
    band = str(band_info.get("band"))[:8] if isinstance(band_info, Mapping) and band_info.get("band") else None
    created = msg.get("created_at")
    return WorkOrderRow(
        work_order_id=_text(msg["work_order_id"]),
        asset_id=_text(msg["asset_id"]),
        priority=_text(msg.get("priority", "")) or "medium",
        reason=_text(msg["reason"]),
        created_at=parse_ts(created, "created_at") if created is not None else datetime.now(UTC),
        rul=msg.get("rul"),
        # jsonb rejects \u0000 too; orjson writes NaN/inf as null.
        evidence=orjson.dumps(evidence).decode().replace("\\u0000", ""),
        trace_id=_trace(msg.get("trace_id"), trace_id),
        action=msg.get("action", "open"),
        why=_text(msg.get("why", ""))[:MAX_WHY],
        defect_band=band,
    )


def feature_row(value: Any, trace_id: str | None = None) -> FeatureRow:
    msg = validate(FeaturesMessage, value)
    return FeatureRow(
        asset_id=_text(msg["asset_id"]), sensor_id=_text(msg.get("sensor_id", "")), ts=parse_ts(msg["ts"]),
        features={k: v for k, v in msg["features"].items() if v is not None and math.isfinite(v)},
        trace_id=trace_id,
    )


_BY_TOPIC: dict[str, Callable[[Any, str | None], Record]] = {
    names.ANOMALIES: anomaly_row,
    names.RUL: rul_row,
    names.WORK_ORDERS: work_order_row,
    names.FEATURES: feature_row,
}


def from_message(topic: str, value: Any, trace_id: str | None = None) -> Record:
    """The row for a message on one of the public topics; raises :class:`InvalidMessage` naming the field."""
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
    try:
        return convert(value, trace_id)
    except InvalidMessage:
        raise
    except InvalidReading as exc:
        raise InvalidMessage(exc.field, exc.reason) from None
