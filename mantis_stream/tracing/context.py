"""Which trace context belongs to which Faust event, and how agent code gets it.

Why this exists
===============

The sensor opens a ``process <topic>`` span per event in
``on_stream_event_in``.  A single-event agent (``async for event in
stream.events()``) runs in the same task, so the sensor simply makes the span
current.  A batch agent (``stream.take_events``) does not: the events are read
by a background task and handed over as a list, and Faust acks them itself
(calling ``on_stream_event_out`` without the sensor's state).  So the span and
its context are kept here, keyed by the event object, and agent code asks for
them: :func:`use_event` makes an event's context current (for its child spans
and its sends), :func:`context_of` returns it.

Notes
=====

* Two keys ride in the OpenTelemetry ``Context`` next to the span: the stage
  (so a send knows which service's tracer to use) and the event's record (so a
  send to the dead-letter topic can mark the event failed).
* The registry is bounded (:data:`MAX_OPEN_EVENTS`): an event never acked
  (a crashed agent) has its span ended when evicted, not leaked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from . import carriers

__all__ = [
    "EventTrace", "STAGE_KEY", "EVENT_KEY", "CARRIED", "context_of", "use_event", "record_of", "stage_of_context",
]

STAGE_KEY = otel_context.create_key("mantis-stage")
EVENT_KEY = otel_context.create_key("mantis-event")

#: With tracing off, the headers of the record being handled (``items.use_item``): the
#: sensor writes them on the messages it sends.
CARRIED: ContextVar[Mapping[str, str] | None] = ContextVar("mantis-carried", default=None)

#: Most events with an open process span at once (per process) before the oldest is ended.
MAX_OPEN_EVENTS = 65_536


@dataclass(eq=False, slots=True)
class EventTrace:
    """The tracing state of one event in one stage."""

    stage: str
    name: str
    span: trace.Span
    ctx: Context
    #: The extracted upstream context (the process span's parent).
    parent: Context
    attributes: dict[str, Any] | None = None
    #: Computes ``attributes`` when the span was not recording (they were skipped).
    lazy_attributes: Any = None
    token: Token[Context] | None = None
    task: object | None = None
    #: Contexts attached inside the event's scope (a stand-in made current), detached with it.
    extra_tokens: tuple[Token[Context], ...] = ()
    #: Spans to end with the event besides ``span`` (the unsampled original of an error span).
    also_end: tuple[trace.Span, ...] = ()
    #: The trace headers records made in this scope take along (batched hops; see ``items``).
    carrier: Mapping[str, str] | None = None
    #: A record of a batched message (``items``): what it sends carries its process span's
    #: context, without a ``send`` span of its own.
    batched: bool = False
    failed: bool = False
    ended: bool = False

    def end(self) -> None:
        """End the span(s); the record's context (which holds the record) is let go, so the pair is
        freed when the batch is, not left to the garbage collector."""
        if self.ended:
            return
        self.ended = True
        for span in self.also_end:
            span.end()
        self.span.end()
        self.ctx = self.parent


_open: dict[Any, EventTrace] = {}


def register(event: Any, record: EventTrace) -> None:
    if len(_open) >= MAX_OPEN_EVENTS:
        oldest = next(iter(_open))
        stale = _open.pop(oldest)
        stale.span.set_attribute("mantis.span.evicted", True)
        stale.end()
    _open[event] = record


def pop(event: Any) -> EventTrace | None:
    return _open.pop(event, None)


def record_of(event: Any) -> EventTrace | None:
    try:
        return _open.get(event)
    except TypeError:  # unhashable stand-in
        return None


def open_count() -> int:
    return len(_open)


def stage_of_context(ctx: Context | None = None) -> str | None:
    stage = otel_context.get_value(STAGE_KEY, ctx)
    return stage if isinstance(stage, str) else None


def context_of(event: Any) -> Context | None:
    """The context of ``event``'s process span; else the one its headers carry; else None."""
    record = record_of(event)
    if record is not None:
        return record.ctx
    message = getattr(event, "message", None)
    headers = getattr(message, "headers", None) or getattr(event, "headers", None)
    if not headers:
        return None
    ctx = carriers.extract(headers)
    if not trace.get_current_span(ctx).get_span_context().is_valid and not ctx:
        return None
    return ctx


@contextlib.contextmanager
def use_event(event: Any) -> Iterator[None]:
    """Make ``event``'s process span (its context) current for the block."""
    ctx = context_of(event)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
