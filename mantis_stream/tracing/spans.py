"""Helpers agents call to make spans: batches, failures, HTTP server spans.

Why this exists
===============

Agents should say *what* they do (``compute_fft`` over 500 frames, this reading
is a dead letter, this is ``POST /api/v1/ingest``) and not how OpenTelemetry
links, restarts or samples it.  Those rules live here:

* :func:`batch_span`: one span for work done over many events, linked to each
  event's process span (and each process span linked back to it), a new root
  whose sampling follows the linked traces.
* :func:`fail_event`: the event's process span gets ERROR and the exception.  In
  an unsampled trace a sampled ``process <topic>`` span with ``error.type`` is
  started in the same trace id (child of, and linked to, the unsampled process
  span), and becomes the event's context: the dead letter sent afterwards
  carries a sampled ``traceparent`` of the same trace.
* :func:`http_server_span`: a SERVER span continuing a ``traceparent`` from HTTP
  headers; a 100%-sampled operation receiving an unsampled parent starts a new
  trace linked to it, like the Kafka sensor does.
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
from .context import STAGE_KEY, EventTrace, context_of, record_of

__all__ = ["batch_span", "fail_event", "http_server_span", "set_http_status", "mark_failed", "start_with_restart"]

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


def mark_failed(record: EventTrace, exc: BaseException | None, *, reason: str = "sent to the dead-letter topic") -> None:
    """Give ``record``'s process span ERROR status (or a sampled stand-in in an unsampled trace)."""
    if record.failed and exc is None:
        return
    record.failed = True
    etype, description = _describe(exc, reason)
    span = record.span
    if span.is_recording():
        _error(span, exc, etype, description)
        return
    sc = span.get_span_context()
    rt = setup.current_runtime()
    if not sc.is_valid or rt is None or not rt.enabled:
        return  # tracing is off: nothing to record
    attributes = dict(record.attributes or (record.lazy_attributes() if record.lazy_attributes else {}))
    attributes[semconv.ERROR_TYPE] = etype  # the sampler keeps spans that start with error.type
    err = rt.tracer(record.stage).start_span(
        record.name,
        context=record.ctx,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(sc, {semconv.LINK_REASON: "error-in-unsampled-trace"})],
    )
    _error(err, exc, etype, description)
    record.also_end.append(span)
    record.span = err
    was_current = trace.get_current_span() is span
    record.ctx = trace.set_span_in_context(err, record.ctx)
    if was_current:
        record.extra_tokens.append(otel_context.attach(record.ctx))


def fail_event(event: Any, exc: BaseException) -> None:
    """Mark ``event`` failed: its process span gets ERROR status and the recorded exception.

    Works in unsampled traces too (see the module docstring).  A no-op for an
    event the sensor has not seen.
    """
    record = record_of(event)
    if record is not None:
        mark_failed(record, exc)


def start_with_restart(
    stage: str,
    name: str,
    parent: Context,
    *,
    kind: SpanKind,
    attributes: Mapping[str, Any] | None = None,
) -> trace.Span:
    """Start ``name`` under ``parent`` for ``stage``; restart the trace (with a link) when the parent
    is unsampled and the stage's strategy for ``name`` is 100%."""
    rt = setup._runtime or setup.current_runtime()
    tracer = rt.tracer(stage) if rt is not None else setup.stage_tracer(stage)
    links = None
    psc = trace.get_current_span(parent).get_span_context()
    if psc.is_valid and not psc.trace_flags.sampled and rt is not None and rt.restarts_unsampled(stage, name):
        links = [Link(psc, {semconv.LINK_REASON: "unsampled-parent"})]
        parent = trace.set_span_in_context(trace.INVALID_SPAN, parent)
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=links)


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


@contextlib.contextmanager
def batch_span(stage: str, name: str, events: Sequence[Any], **attributes: Any) -> Iterator[trace.Span]:
    """One span for work over ``events`` (Faust events or records' ``EventTrace``), linked to each one's process-span context.

    The span is a new root (a batch belongs to no single trace) and current for
    the block; it is sampled when any linked trace is.  Each event's recording
    process span gets a link back to it.  An exception escaping the block is
    recorded (ERROR) and re-raised.
    """
    links: list[Link] = []
    records: list[EventTrace] = []
    for event in events:
        record = event if isinstance(event, EventTrace) else record_of(event)
        if record is not None:
            records.append(record)
            ctx: Context | None = record.ctx
        else:
            ctx = context_of(event)
        if ctx is None:
            continue
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            links.append(Link(sc))
    attrs = span_attributes(**attributes)
    attrs[semconv.MESSAGING_BATCH_MESSAGE_COUNT] = len(events)
    root = otel_context.set_value(STAGE_KEY, stage, Context())
    span = setup.stage_tracer(stage).start_span(name, context=root, links=links, attributes=attrs)
    sc = span.get_span_context()
    if span.is_recording():
        back = {semconv.LINK_REASON: "batch"}
        for record in records:
            if record.span.is_recording():
                record.span.add_link(sc, back)
    with _current(span, _context_for(span, root, stage)):
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
    span = start_with_restart(stage, f"{method} {route}", parent, kind=SpanKind.SERVER, attributes=attrs)
    with _current(span, _context_for(span, parent, stage)):
        yield span


def set_http_status(span: trace.Span, status: int) -> None:
    """Record the response status; 5xx is an error of the server span (HTTP conventions)."""
    span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, int(status))
    if status >= 500:
        span.set_attribute(semconv.ERROR_TYPE, str(int(status)))
        span.set_status(Status(StatusCode.ERROR))
