"""Span attributes that are safe to export: identifiers and small numbers, never payloads.

Why this exists
===============

A span is shipped to a collector that more people can read than the plant's
database.  :func:`span_attributes` is the one door agents use to put data on a
span: it keeps scalar values and short lists, truncates strings, masks
passwords in URLs, and drops any key on the deny-list (secrets, payloads).
SpanLimits on the providers bound what gets past anyway.

Usage
=====

.. sourcecode:: python

    tracer.start_as_current_span("predict_anomaly",
        attributes=span_attributes(asset_id=a, sensor_id=s, **{"model.name": "hst"}))

Notes
=====

* The deny-list is glob patterns on the attribute key, case-insensitive.
  Extend it with ``MANTIS_TRACE_DENY_ATTRIBUTES`` (comma-separated) or
  :func:`set_denylist`.
* Dotted keys (``"model.name"``) go through ``**{...}``; plain keyword names are
  used as they are.
"""

from __future__ import annotations

import fnmatch
import numbers
import re
from collections.abc import Iterable
from typing import Any

from ..settings import mask_url
from . import semconv

__all__ = [
    "DEFAULT_DENYLIST", "MAX_STRING", "MAX_SEQUENCE", "span_attributes", "set_denylist", "is_denied", "process_attributes",
]

#: Longest string value kept (characters) and longest list kept (items).
MAX_STRING = 256
MAX_SEQUENCE = 32

DEFAULT_DENYLIST: tuple[str, ...] = (
    "*password*", "*passwd*", "*secret*", "*token*", "*authorization*", "*api_key*", "*apikey*",
    "*credential*", "*cookie*", "*dsn*", "*private_key*",
    "*payload*", "*body", "*.values", "values", "*.samples", "*waveform*",
)

_denied: re.Pattern[str]


def set_denylist(patterns: Iterable[str], *, extend: bool = False) -> None:
    """Replace (or extend) the deny-list of attribute-key glob patterns."""
    global _denied
    base = list(_patterns) if extend else []
    base.extend(p.strip().lower() for p in patterns if p and p.strip())
    _patterns[:] = base
    _denied = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in base) or r"(?!x)x")
    _decisions.clear()


_patterns: list[str] = []
#: The deny-list's answer per key already asked (the pattern match costs microseconds; the keys are few).
_decisions: dict[str, bool] = {}
_MAX_DECISIONS = 4096
set_denylist(DEFAULT_DENYLIST)  # MANTIS_TRACE_DENY_ATTRIBUTES is added by tracing.install


def is_denied(key: str) -> bool:
    decision = _decisions.get(key)
    if decision is None:
        decision = _denied.match(key.lower()) is not None
        if len(_decisions) >= _MAX_DECISIONS:
            _decisions.clear()
        _decisions[key] = decision
    return decision


def _string(value: str) -> str:
    if "://" in value or "=" in value:  # a URL or DSN (userinfo, ?password=, key=value)
        value = mask_url(value) or value
    return value if len(value) <= MAX_STRING else value[: MAX_STRING - 1] + "…"


def _scalar(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int or kind is float or kind is bool:  # bool has no subclasses: every bool ends here
        return value
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


_PLAIN = frozenset((str, int, float, bool))


def clean_value(value: Any) -> Any:
    """A bounded, exportable version of ``value``, or None to drop it."""
    if value is None:
        return None
    if type(value) in _PLAIN:
        return _scalar(value)
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_SEQUENCE:
            return None  # a long list is data, not an attribute
        items = [_scalar(v) for v in value]
        if any(v is None for v in items) or len({type(v) for v in items}) > 1:
            return None
        return items
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        value = value.item()
    return _scalar(value)


def span_attributes(*, asset_id: Any = None, sensor_id: Any = None, **extra: Any) -> dict[str, Any]:
    """Attributes for a span: ``asset.id``, ``sensor.id`` and ``extra``, bounded and filtered.

    >>> span_attributes(asset_id="PUMP-7", sensor_id="TMP-001", **{"model.name": "hst", "password": "x"})
    {'asset.id': 'PUMP-7', 'sensor.id': 'TMP-001', 'model.name': 'hst'}
    """
    out: dict[str, Any] = {}
    if asset_id is not None:
        out[semconv.ASSET_ID] = _string(asset_id if type(asset_id) is str else str(asset_id))
    if sensor_id is not None:
        out[semconv.SENSOR_ID] = _string(sensor_id if type(sensor_id) is str else str(sensor_id))
    for key, value in extra.items():
        if is_denied(key):
            continue
        v = clean_value(value)
        if v is not None:
            out[key] = v
    return out


def process_attributes(topic: str, partition: int, offset: int, group: str | None) -> dict[str, Any]:
    """The messaging attributes of a ``process <topic>`` span (a message, or a record of a batched one)."""
    attrs: dict[str, Any] = {
        semconv.MESSAGING_SYSTEM: semconv.KAFKA,
        semconv.MESSAGING_OPERATION_NAME: "process",
        semconv.MESSAGING_OPERATION_TYPE: semconv.OP_TYPE_PROCESS,
        semconv.MESSAGING_DESTINATION_NAME: topic,
        semconv.MESSAGING_DESTINATION_PARTITION_ID: str(partition),
        semconv.MESSAGING_KAFKA_OFFSET: int(offset),
    }
    if group:
        attrs[semconv.MESSAGING_CONSUMER_GROUP_NAME] = group
    return attrs
