"""Helpers agents call to make spans: batches, outcomes, failures, HTTP server spans.

Why this exists
===============

Agents should say *what* they do (``compute_fft`` over 500 frames, this reading
is a dead letter, this score is an anomaly, this is ``POST /api/v1/ingest``) and
not how OpenTelemetry parents, samples or keeps it.  Those rules live here:

* :func:`continue_span`: a span under an incoming context.  Parent-based: when
  the parent's flags already say "not sampled" no SDK span is made at all; the
  parent's own (non-recording) span stands for it, so its ``traceparent`` goes on
  verbatim.
* :func:`batch_span`: one span for work done over many records: the child of
  the first sampled record's process span (so a sampled reading's trace shows
  the stage's compute span), linked to the other sampled records (and they back
  to it).  No SDK span when no record of the batch is sampled.
* :func:`keep` / :func:`mark_failed`: an outcome that must be recorded although
  the record's trace is not sampled (an anomaly at or over its threshold, a work
  order, an error): a sampled ``process <topic>`` span is started in the same
  trace id, child of the unsampled context, and becomes the record's context, so
  what the record sends afterwards carries a sampled ``traceparent`` of the
  reading's trace (the sampler keeps spans that start with ``error.type`` or
  ``mantis.sampling.reason``).
* :func:`annotate`: attributes on the record's process span, when it records.
* :func:`http_server_span`: a SERVER span continuing a ``traceparent`` from HTTP
  headers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import carriers, semconv, setup
from .attributes import span_attributes
from .context import STAGE_KEY, EventTrace, record_of

__all__ = [
    "annotate", "batch_span", "continue_span", "fail_event", "http_server_span", "keep", "mark_failed", "set_http_status",
    "decided_parent", "start_span", "unsampled_parent",
]

_MAX_DESCRIPTION = 256


def _describe(exc: BaseException | None, fallback: str) -> tuple[str, str]:
    if exc is None:
        return "dead_letter", fallback
    etype = type(exc).__qualname__
    text = f"{etype}: {exc}"
    return etype, text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def _error(span: trace.Span, exc: BaseException | None, etype: str, description: str) -> None:
    span.set_attribute(semconv.ERROR_TYPE, etype)
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, description))


def _stand_in(record: EventTrace, attributes: Mapping[str, Any], link_reason: str) -> trace.Span | None:
    """Start a sampled process span for ``record`` in its (unsampled) trace; it becomes the record's span."""
    rt = setup.current_runtime()
    if rt is None or not rt.enabled:
        return None  # tracing is off: nothing to record
    was_current = trace.get_current_span() is record.span
    ctx = record.ctx
    span = record.span
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    attrs = dict(record.attributes or (record.lazy_attributes() if record.lazy_attributes else {}))
    attrs.update(attributes)
    stand_in = rt.tracer(record.stage).start_span(
        record.name,
        context=ctx,
        kind=SpanKind.CONSUMER,
        attributes=attrs,
        # in a sampled trace (a record continuing its upstream span) the stand-in is that span's child already
        links=[] if sc.trace_flags.sampled else [Link(sc, {semconv.LINK_REASON: link_reason})],
    )
    record.also_end += (span,)
    record.span = stand_in
    record.carrier = None  # what it sends from now on carries the sampled context
    record.ctx = trace.set_span_in_context(stand_in, ctx)
    if was_current:
        record.extra_tokens += (otel_context.attach(record.ctx),)
    return stand_in


def mark_failed(record: EventTrace, exc: BaseException | None, *, reason: str = "sent to the dead-letter topic") -> None:
    """Give ``record``'s process span ERROR status (or a sampled stand-in in an unsampled trace)."""
    if record.failed and exc is None:
        return
    record.failed = True
    etype, description = _describe(exc, reason)
    if record.span.is_recording():
        _error(record.span, exc, etype, description)
        return
    err = _stand_in(record, {semconv.ERROR_TYPE: etype}, "error-in-unsampled-trace")
    if err is not None:
        _error(err, exc, etype, description)


def keep(record: EventTrace | None, reason: str, **attributes: Any) -> None:
    """Record ``record`` although its trace is not sampled (``reason``: ``anomaly``, ``work-order``).

    In a sampled trace only ``attributes`` are added to its process span.
    """
    if record is None:
        return
    attrs = span_attributes(**attributes)
    if record.span.is_recording():
        record.span.set_attributes(attrs)
        return
    attrs[semconv.SAMPLING_REASON] = reason
    _stand_in(record, attrs, "outcome-in-unsampled-trace")


def annotate(target: Any, **attributes: Any) -> None:
    """Put ``attributes`` (through :func:`span_attributes`) on the process span of ``target``
    (a record's ``EventTrace`` or a Faust event), if it records."""
    record = target if isinstance(target, EventTrace) or target is None else record_of(target)
    if record is not None and record.span.is_recording():
        record.span.set_attributes(span_attributes(**attributes))


def fail_event(event: Any, exc: BaseException) -> None:
    """Mark ``event`` failed: its process span gets ERROR status and the recorded exception.

    Works in unsampled traces too (see the module docstring).  A no-op for an
    event the sensor has not seen.
    """
    record = record_of(event)
    if record is not None:
        mark_failed(record, exc)


def decided_parent(parent: Context) -> trace.Span | None:
    """The span current in ``parent`` when it is valid and its sampling decision made (not deferred), else None."""
    current = trace.get_current_span(parent)
    sc = current.get_span_context()
    return current if sc.is_valid and not carriers.is_deferred(parent, sc) else None


def unsampled_parent(parent: Context) -> trace.Span | None:
    """The span current in ``parent`` when its flags already say "not sampled" (not deferred), else None."""
    current = decided_parent(parent)
    return current if current is not None and not current.get_span_context().trace_flags.sampled else None


def continue_span(
    stage: str,
    name: str,
    parent: Context,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any] | None = None,
) -> trace.Span:
    """Start ``name`` under ``parent`` for ``stage``: parent-based.

    A parent whose flags say "not sampled" (and did not defer the decision) gets
    no SDK call: its own non-recording span is returned, and its context goes on
    unchanged.
    """
    current = unsampled_parent(parent)
    if current is not None:
        return current
    return start_span(stage, name, parent, kind=kind, attributes=attributes)


def start_span(
    stage: str, name: str, parent: Context, *, kind: SpanKind, attributes: Mapping[str, Any] | None = None,
) -> trace.Span:
    """Start ``name`` under ``parent`` with ``stage``'s tracer: the sampler decides (see :func:`continue_span`)."""
    rt = setup._runtime or setup.current_runtime()
    tracer = rt.tracer(stage) if rt is not None else setup.stage_tracer(stage)
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def _context_for(span: trace.Span, parent: Context, stage: str) -> Context:
    ctx = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
    return otel_context.set_value(STAGE_KEY, stage, ctx)


@contextlib.contextmanager
def _current(span: trace.Span, ctx: Context) -> Iterator[None]:
    """Make ``ctx`` current for the block, then end ``span``.

    Why: one rule for :func:`batch_span` and :func:`http_server_span`: an
    exception escaping the block fails the span (ERROR) and is re-raised; a
    closed generator (``GeneratorExit``) is no failure.
    """
    token = otel_context.attach(ctx)
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            _error(span, exc, *_describe(exc, ""))
        raise
    finally:
        otel_context.detach(token)
        span.end()


#: Most links a batch span carries to the other sampled records of its batch.
MAX_BATCH_LINKS = 128


@contextlib.contextmanager
def batch_span(stage: str, name: str, events: Sequence[Any], **attributes: Any) -> Iterator[trace.Span]:
    """One span for work over ``events`` (Faust events or records' ``EventTrace``), current for the block.

    Its parent is the first sampled record's process span; it links to the other
    sampled records (at most :data:`MAX_BATCH_LINKS`) and they back to it.  When
    no record is sampled no span is made: the first record's (unsampled) context
    is current, so spans started inside are not sampled either.  An exception
    escaping the block is recorded (ERROR) and re-raised.
    """
    first: Context | None = None
    parent: EventTrace | None = None
    sampled: list[EventTrace] = []
    for event in events:
        record = event if isinstance(event, EventTrace) else record_of(event)
        if record is None:
            continue
        if record.span.get_span_context().trace_flags.sampled:
            if parent is None:
                parent = record
            elif len(sampled) < MAX_BATCH_LINKS:
                sampled.append(record)
        elif first is None and parent is None:
            first = trace.set_span_in_context(record.span, Context())
    if parent is None:
        if first is None:
            yield trace.INVALID_SPAN
            return
        token = otel_context.attach(otel_context.set_value(STAGE_KEY, stage, first))
        try:
            yield trace.get_current_span(first)
        finally:
            otel_context.detach(token)
        return
    attrs = span_attributes(**attributes)
    attrs[semconv.MESSAGING_BATCH_MESSAGE_COUNT] = len(events)
    ctx = trace.set_span_in_context(parent.span, Context())  # not the record's scope: no sends of its own
    span = setup.stage_tracer(stage).start_span(
        name, context=ctx, attributes=attrs, links=[Link(r.span.get_span_context()) for r in sampled],
    )
    if sampled:
        back = {semconv.LINK_REASON: "batch"}
        sc = span.get_span_context()
        for record in sampled:
            if record.span.is_recording():
                record.span.add_link(sc, back)
    with _current(span, _context_for(span, ctx, stage)):
        yield span


@contextlib.contextmanager
def http_server_span(stage: str, method: str, route: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """A SERVER span ``"{method} {route}"`` continuing the trace context in HTTP ``headers``.

    Current for the block (sends inside it carry its context).  An escaping
    exception is recorded with ERROR status and re-raised; use
    :func:`set_http_status` for the response code.
    """
    method = method.upper()
    parent = carriers.http_extract(headers)
    attrs = {semconv.HTTP_REQUEST_METHOD: method, semconv.HTTP_ROUTE: route, semconv.URL_PATH: route}
    span = continue_span(stage, f"{method} {route}", parent, kind=SpanKind.SERVER, attributes=attrs)
    with _current(span, _context_for(span, parent, stage)):
        yield span


def set_http_status(span: trace.Span, status: int) -> None:
    """Record the response status; 5xx is an error of the server span (HTTP conventions)."""
    span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, int(status))
    if status >= 500:
        span.set_attribute(semconv.ERROR_TYPE, str(int(status)))
        span.set_status(Status(StatusCode.ERROR))
