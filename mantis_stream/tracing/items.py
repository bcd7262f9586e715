"""Traces of records that travel many to a Kafka message (batched hops).

Why this exists
===============

Between its own stages the pipeline sends one Kafka message per partition and
batch (``mantis_stream.agents._batch``): Faust's cost is per message, so a batch
of 500 records costs one event instead of 500.  The sensor cannot see the
records inside such a message, so their spans are made here, with the same
shape the sensor gives a message of its own:

* :func:`open_item`: a CONSUMER ``process <topic>`` span per record, under the
  context the record carries (its ``traceparent``), with the messaging
  attributes of the Kafka message it came in.
* :func:`outgoing_carrier`: the headers a record takes along into the next
  batch: its process span's context, so the next stage's process span is its
  child.  A record inside a batch has no ``send`` span of its own (the batch is
  one Kafka send); its creation context is the process span it was made in.

Notes
=====

* A record carrying only a W3C ``traceparent`` (the pipeline's own hops) skips
  the propagators: :func:`w3c_context` reads the header text, and the headers
  it sends on are formatted directly (``carriers.w3c_carrier``).
* Near-free when unsampled: a record whose ``traceparent`` flags say "not
  sampled" gets no SDK span, and the headers it came with go on verbatim; its
  context (the upstream span, non-recording) is still current in its scope, so
  spans started there follow the decision and an outcome that must be
  recorded (``spans.keep``, ``spans.mark_failed``) stays in its trace.
  With tracing off (``OTEL_SDK_DISABLED``) a record gets no tracing state at all
  (:func:`open_item` returns None) and its headers still go on, to the next
  batch and to the public messages made from it.
* The record's :class:`~.context.EventTrace` rides in its context like an
  event's, so a dead letter sent inside it marks it failed (see the sensor).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from . import carriers, setup
from .attributes import process_attributes
from .context import CARRIED, EVENT_KEY, STAGE_KEY, EventTrace
from .spans import decided_parent, start_span, unsampled_parent

__all__ = [
    "open_item", "outgoing_carrier", "use_item", "carried", "carrier_of", "unsampled_headers", "w3c_context",
]

_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def carrier_of(ctx: Context | None) -> dict[str, str]:
    """The trace headers of ``ctx`` as a small dict (empty when there is no trace)."""
    fast = carriers.w3c_carrier(ctx)
    if fast is not None:
        return fast
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return carrier


def _enabled() -> bool:
    rt = setup._runtime or setup.current_runtime()
    return rt is not None and rt.enabled


def w3c_context(carrier: Mapping[str, str] | None) -> Context | None:
    """The context of ``carrier`` when it is only a version-00 W3C ``traceparent`` (and ``tracestate``), else None.

    Read from the header text, as the W3C propagator would, without the
    propagators' cost; anything else goes through them.
    """
    found = _w3c_parent(carrier)
    return None if found is None else found[0]


def _w3c_parent(carrier: Mapping[str, str] | None) -> tuple[Context, trace.Span, bool] | None:
    """:func:`w3c_context`, with the upstream span it holds and whether that span is sampled."""
    if not carrier:
        return None
    tp = carrier.get("traceparent")
    if tp is None:
        return None
    state = carrier.get("tracestate")
    if len(carrier) > (1 if state is None else 2) or not carriers.w3c_configured():
        return None  # another header (baggage, B3, ...) or other propagators: they read it
    key = (tp, state)
    found = _UNSAMPLED_CONTEXTS.get(key)
    if found is not None:
        return found
    if not _TRACEPARENT.fullmatch(tp):
        return None
    trace_id, span_id = int(tp[3:35], 16), int(tp[36:52], 16)
    if not (trace_id and span_id):
        return None
    flags = _FLAGS[tp[53:55]] if tp[53:55] in _FLAGS else TraceFlags(int(tp[53:55], 16))
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags,
                                        trace_state=TraceState.from_header([state]) if state else None))
    found = (trace.set_span_in_context(span), span, flags.sampled)
    if not flags.sampled:  # the same header comes back at every later stage of this worker: read it once
        if len(_UNSAMPLED_CONTEXTS) >= _MAX_CACHED:
            _UNSAMPLED_CONTEXTS.clear()
        _UNSAMPLED_CONTEXTS[key] = found
    return found


#: The flags the pipeline's own headers carry (sampled or not, random trace id or not).
_FLAGS = {f"{v:02x}": TraceFlags(v) for v in (0, 1, 2, 3)}
#: Unsampled ``traceparent`` headers already read (:func:`_w3c_parent`; immutable, so shared), at most ``_MAX_CACHED``.
_UNSAMPLED_CONTEXTS: dict[tuple[str, str | None], tuple[Context, trace.Span, bool]] = {}
_MAX_CACHED = 8192


def unsampled_headers(headers: Any) -> dict[str, str] | None:
    """The W3C trace headers of a Kafka message when it has no other trace context headers, else None."""
    if not headers:
        return None
    carrier: dict[str, str] = {}
    owned = carriers.owned_fields()
    for key, value in headers.items() if isinstance(headers, Mapping) else headers:
        name = (key.decode("latin-1") if isinstance(key, bytes) else str(key)).lower()
        if name in ("traceparent", "tracestate"):
            carrier[name] = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        elif name in owned:
            return None  # baggage, B3, Jaeger: the propagators read them
    return carrier if carrier.get("traceparent") else None


def open_item(
    stage: str,
    carrier: Mapping[str, str] | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    group: str | None,
    own_span: bool = True,
) -> EventTrace | None:
    """Start the process span of one record of a batched message (end it with ``record.end()``).

    None when tracing is off: the record then needs no tracing state.  With
    ``own_span`` False the record continues the upstream span its headers name
    (a second step of the same service): no span of its own, its headers go on
    as they came, and an error or a kept outcome still gets a span (a stand-in).
    """
    if not _enabled():
        return None
    name = "process " + topic
    found = _w3c_parent(carrier)
    if found is not None:  # a W3C parent has its decision made (only B3 defers)
        parent, current, sampled = found
        upstream = None if own_span and sampled else current
    else:
        parent = carriers.extract(carrier)
        upstream = unsampled_parent(parent) if own_span else decided_parent(parent)
    if upstream is not None:  # no span: the headers go on as they came
        record = EventTrace(stage=stage, name=name, span=upstream, ctx=parent, parent=parent, batched=True,
                            lazy_attributes=partial(process_attributes, topic, partition, offset, group),
                            carrier=carrier or {})
        record.ctx = Context({**parent, STAGE_KEY: stage, EVENT_KEY: record})
        return record
    attributes = process_attributes(topic, partition, offset, group)
    span = start_span(stage, name, parent, kind=SpanKind.CONSUMER, attributes=attributes)
    record = EventTrace(stage=stage, name=name, span=span, ctx=parent, parent=parent, batched=True,
                        attributes=attributes)
    if not span.is_recording():  # a root decision that dropped it
        record.carrier = carrier or {}
    ctx = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
    record.ctx = Context({**ctx, STAGE_KEY: stage, EVENT_KEY: record})
    return record


@contextlib.contextmanager
def use_item(record: EventTrace | None, carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the record's context current (its child spans and sends join its trace).

    With tracing off (``record`` None) only its headers are kept at hand, for
    :func:`outgoing_carrier` and the sensor's sends.
    """
    if record is None:
        reset = CARRIED.set(carrier)
        try:
            yield
        finally:
            CARRIED.reset(reset)
        return
    token = otel_context.attach(record.ctx)
    try:
        yield
    finally:
        for extra in reversed(record.extra_tokens):  # a stand-in made current inside
            otel_context.detach(extra)
        record.extra_tokens = ()
        otel_context.detach(token)


def carried() -> Mapping[str, str] | None:
    """With tracing off, the headers of the record being handled (else None)."""
    return CARRIED.get()


def outgoing_carrier() -> Mapping[str, str]:
    """The trace headers a record made now takes into an outgoing batch.

    Inside a record's scope: its process span's context (computed once per
    record), or the headers it came with when its trace does not record.
    Elsewhere (an event's scope): the current context.
    """
    ctx = otel_context.get_current()
    record = ctx.get(EVENT_KEY)
    if isinstance(record, EventTrace):
        if record.carrier is None:
            record.carrier = carrier_of(record.ctx)
        return record.carrier
    kept = carried()
    if kept is not None:
        return kept
    return carrier_of(ctx)
