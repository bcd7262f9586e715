"""Reading and writing trace context in Kafka and HTTP headers.

Why this exists
===============

OpenTelemetry propagators speak "carriers" of string keys and string values.
Kafka headers are a list of ``(str, bytes)`` pairs that may repeat a key, and
Faust hands them over in three shapes (the raw list on ``event.message``, a
dict on ``event.headers``, and a list, dict or ``None`` on a
``PendingMessage``).  The getter and setter here accept all of them, decode and
encode bytes, and match names case-insensitively (``X-B3-TraceId`` written by
a Java producer is the same header as ``x-b3-traceid``).

Notes
=====

* :func:`inject_replacing` first removes every header the configured
  propagators own (``traceparent``, ``tracestate``, ``baggage``, ``b3``,
  ``x-b3-*``, ``uber-trace-id``): ``event.forward()`` copies the incoming
  headers, and a stale ``traceparent`` left beside the new one would make the
  next stage join the wrong span.
* The propagators are the global ones (``opentelemetry.propagate``), which the
  SDK builds from ``OTEL_PROPAGATORS``; :func:`mantis_stream.tracing.configure`
  re-reads that variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

__all__ = ["KafkaHeadersGetter", "KafkaHeadersSetter", "HTTPHeadersGetter", "extract", "inject_replacing", "write_replacing"]


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _pairs(carrier: Any) -> Iterable[tuple[Any, Any]]:
    if not carrier:
        return ()
    if isinstance(carrier, Mapping):
        return carrier.items()
    return carrier  # list/tuple of pairs


class KafkaHeadersGetter(Getter[Any]):
    """Get from Kafka headers (list of pairs or dict; bytes or str values). First match wins."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        key = key.lower()
        for k, v in _pairs(carrier):
            if v is not None and _text(k).lower() == key:
                return [_text(v)]
        return None

    def keys(self, carrier: Any) -> list[str]:
        return [_text(k) for k, _ in _pairs(carrier)]


class KafkaHeadersSetter(Setter[Any]):
    """Set on Kafka headers: replaces the key in a dict, appends to a list; values as UTF-8 bytes."""

    def set(self, carrier: Any, key: str, value: str) -> None:
        data = value.encode("utf-8")
        if isinstance(carrier, MutableMapping):
            carrier[key] = data
        else:
            carrier.append((key, data))


class HTTPHeadersGetter(Getter[Mapping[str, str]]):
    """Get from an HTTP header mapping (aiohttp's CIMultiDict, a dict, ...), case-insensitively."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        if not carrier:
            return None
        getall = getattr(carrier, "getall", None)
        if getall is not None:  # multidict: case-insensitive already
            values = getall(key, None)
            return [_text(v) for v in values] if values else None
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            for k, v in carrier.items():
                if k.lower() == lowered:
                    value = v
                    break
        return None if value is None else [_text(value)]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys()) if carrier else []


KAFKA_GETTER = KafkaHeadersGetter()
KAFKA_SETTER = KafkaHeadersSetter()
HTTP_GETTER = HTTPHeadersGetter()


def extract(headers: Any, context: Context | None = None) -> Context:
    """The context carried by Kafka ``headers`` (any shape Faust uses; ``None`` is fine)."""
    return propagate.get_global_textmap().extract(headers or (), context, getter=KAFKA_GETTER)


def _owned_fields() -> frozenset[str]:
    textmap = propagate.get_global_textmap()
    cached = _FIELDS_CACHE.get(id(textmap))
    if cached is None:
        cached = frozenset(f.lower() for f in textmap.fields) | {"uber-trace-id", "traceparent", "tracestate"}
        _FIELDS_CACHE.clear()
        _FIELDS_CACHE[id(textmap)] = cached
    return cached


_FIELDS_CACHE: dict[int, frozenset[str]] = {}


def strip_context(headers: Any) -> None:
    """Remove, in place, every header a configured propagator owns."""
    if not headers:
        return
    fields = _owned_fields()
    if isinstance(headers, MutableMapping):
        for k in [k for k in headers if _text(k).lower() in fields]:
            del headers[k]
    elif isinstance(headers, list):
        if any(_text(k).lower() in fields for k, _ in headers):
            headers[:] = [(k, v) for k, v in headers if _text(k).lower() not in fields]


def inject_replacing(headers: Any, context: Context | None = None) -> bool:
    """Write ``context`` into mutable Kafka ``headers``, replacing stale context headers.

    Returns False when ``headers`` cannot be written (``None`` or a tuple).
    """
    if headers is None or not isinstance(headers, (list, MutableMapping)):
        return False
    strip_context(headers)
    propagate.get_global_textmap().inject(headers, context, setter=KAFKA_SETTER)
    return True


def write_replacing(headers: Any, carrier: Mapping[str, str]) -> bool:
    """Write trace headers already in text form (a record's ``trace``) into Kafka ``headers``, replacing stale ones."""
    if headers is None or not isinstance(headers, (list, MutableMapping)):
        return False
    strip_context(headers)
    for key, value in carrier.items():
        KAFKA_SETTER.set(headers, key, value)
    return True


def http_extract(headers: Mapping[str, str] | None, context: Context | None = None) -> Context:
    """The context carried by HTTP request ``headers`` (case-insensitive)."""
    return propagate.get_global_textmap().extract(headers or {}, context, getter=HTTP_GETTER)
