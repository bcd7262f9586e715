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
* A B3 context without a sampling state (``X-B3-Sampled``/``X-B3-Flags``
  absent, or a single ``b3`` header of two fields) means "defer" (the B3
  spec): :func:`extract` marks it (:func:`is_deferred`) and the stage's
  sampler decides as a root, in the same trace id.  OpenTelemetry's B3
  propagator reads it as unsampled (multi-header) or sampled (single header).
* The propagators are the global ones (``opentelemetry.propagate``), which the
  SDK builds from ``OTEL_PROPAGATORS``; :func:`mantis_stream.tracing.configure`
  re-reads that variable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import SpanContext

__all__ = [
    "KafkaHeadersGetter", "KafkaHeadersSetter", "HTTPHeadersGetter", "extract", "inject_replacing", "is_deferred",
    "write_replacing",
]

#: The remote span context whose sampling decision was deferred (B3 without a sampling state).
DEFERRED_KEY = otel_context.create_key("mantis-deferred-parent")


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _pairs(carrier: Any) -> Iterable[tuple[Any, Any]]:
    if not carrier:
        return ()
    if isinstance(carrier, Mapping):
        return carrier.items()
    pairs: Iterable[tuple[Any, Any]] = carrier  # list/tuple of pairs
    return pairs


class KafkaHeadersGetter(Getter[Any]):
    """Get from Kafka headers (list of pairs or dict; bytes or str values). First match wins."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        if isinstance(carrier, dict):  # a record's own carrier: the propagators' lower-case names
            value = carrier.get(key)
            if value is not None:
                return [_text(value)]
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


def _b3_defers(carrier: Any, getter: Getter[Any]) -> str | None:
    """The B3 trace id when ``carrier`` holds a B3 context without a sampling state, else None."""
    single = getter.get(carrier, "b3")
    if single:
        fields = single[0].split("-")
        return fields[0].lower() if len(fields) == 2 else None
    trace_id = getter.get(carrier, "x-b3-traceid")
    if not trace_id or getter.get(carrier, "x-b3-sampled") or getter.get(carrier, "x-b3-flags"):
        return None
    return trace_id[0].lower()


def _with_deferral(ctx: Context, carrier: Any, getter: Getter[Any]) -> Context:
    if not carrier or not _b3_fields_present(carrier, getter):
        return ctx
    b3_trace = _b3_defers(carrier, getter)
    if b3_trace is None:
        return ctx
    sc = trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid or int(b3_trace[-32:], 16) != sc.trace_id:
        return ctx  # another propagator's context won
    unsampled = SpanContext(sc.trace_id, sc.span_id, True, trace.TraceFlags(0), sc.trace_state)
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(unsampled), ctx)
    return otel_context.set_value(DEFERRED_KEY, unsampled, ctx)


def _b3_fields_present(carrier: Any, getter: Getter[Any]) -> bool:
    fields = _owned_fields()
    if "b3" not in fields and "x-b3-traceid" not in fields:
        return False  # no B3 propagator configured (the default): nothing to look for
    return bool(getter.get(carrier, "b3") or getter.get(carrier, "x-b3-traceid"))


def is_deferred(ctx: Context | None, parent: SpanContext) -> bool:
    """Whether ``parent`` (the span context current in ``ctx``) came with its sampling decision deferred."""
    return ctx is not None and ctx.get(DEFERRED_KEY) is parent


def extract(headers: Any, context: Context | None = None) -> Context:
    """The context carried by Kafka ``headers`` (any shape Faust uses; ``None`` is fine)."""
    if not headers:  # what every propagator returns for an empty carrier, without asking them
        return Context() if context is None else context
    ctx = propagate.get_global_textmap().extract(headers, context, getter=KAFKA_GETTER)
    return _with_deferral(ctx, headers, KAFKA_GETTER)


def w3c_configured() -> bool:
    """Whether the configured propagators read ``traceparent`` and no other trace context header."""
    textmap = propagate.get_global_textmap()
    cached = _W3C_CACHE.get(id(textmap))
    if cached is None:
        fields = {f.lower() for f in textmap.fields}
        cached = "traceparent" in fields and not fields & {"b3", "x-b3-traceid", "uber-trace-id"}
        _W3C_CACHE.clear()
        _W3C_CACHE[id(textmap)] = cached
    return cached


_W3C_CACHE: dict[int, bool] = {}
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})


def w3c_only() -> bool:
    """Whether the configured propagators are W3C trace context (and baggage) and nothing else."""
    textmap = propagate.get_global_textmap()
    cached = _W3C_ONLY_CACHE.get(id(textmap))
    if cached is None:
        fields = {f.lower() for f in textmap.fields}
        cached = "traceparent" in fields and fields <= _W3C_FIELDS
        _W3C_ONLY_CACHE.clear()
        _W3C_ONLY_CACHE[id(textmap)] = cached
    return cached


_W3C_ONLY_CACHE: dict[int, bool] = {}


def w3c_carrier(context: Context | None) -> dict[str, str] | None:
    """The headers the W3C propagators would write for ``context``, formatted directly.

    None when they cannot be written this way (other propagators configured,
    or baggage to carry): the caller then asks the propagators.
    """
    if not w3c_only() or baggage.get_all(context):
        return None
    sc = trace.get_current_span(context).get_span_context()
    if sc == trace.INVALID_SPAN_CONTEXT:
        return {}
    out = {"traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"}
    if sc.trace_state:
        out["tracestate"] = sc.trace_state.to_header()
    return out


def owned_fields() -> frozenset[str]:
    """The header names (lower case) the configured propagators read or write."""
    return _owned_fields()


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
    fast = w3c_carrier(context)
    if fast is None:
        propagate.get_global_textmap().inject(headers, context, setter=KAFKA_SETTER)
    else:
        for key, value in fast.items():
            KAFKA_SETTER.set(headers, key, value)
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
    ctx = propagate.get_global_textmap().extract(headers or {}, context, getter=HTTP_GETTER)
    return _with_deferral(ctx, headers, HTTP_GETTER)
