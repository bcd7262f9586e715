"""Recording spans that end as one compact record, for the export process.

Why this exists
===============

An SDK span with the messaging attributes of a ``process`` span costs about
40 µs on the worker's interpreter (attribute validation under a lock per
attribute, bounded containers, the span processors' hooks, a ``ReadableSpan``
copy at the end), and a sampled reading has several.  When spans go to the
export process anyway (:mod:`.export_process`), the worker only needs to
record them: :class:`LeanTracer` takes the SDK's sampling decision in the same
way (the stage's sampler, random ids, ``RANDOM_TRACE_ID`` flag, the sampler's
attributes and trace state) and a sampled span is a :class:`LeanSpan` that
holds plain values and, when it ends, puts the same tuple
:func:`~.export_process.compact` makes of an SDK span into the batch
processor's queue.  The export process encodes OTLP from it as the SDK's
encoder would, so the collector sees what the SDK would send
(``tests/integration/test_tracing_export_process.py`` compares both over the
wire, ``tests/unit/test_tracing_record_encoder.py`` byte for byte).

Notes
=====

* Same limits as the SDK: attribute count and value length, events, links;
  over the count limit an attribute, event or link is dropped and counted.
* Attribute values the SDK would change or refuse (sequences, other types) go
  through the SDK's own ``BoundedAttributes``.
* Only used with the export process (``MANTIS_TRACING_EXPORT=process``);
  in-process exporters (tests' in-memory one) get SDK spans.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .export_process import SpanRecord

__all__ = ["LeanSpan", "LeanTracer"]

log = logging.getLogger("mantis_stream.tracing")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)
#: The SDK's own ids: random, never the invalid all-zero id.
_IDS = RandomIdGenerator()
_PRIMITIVE = frozenset((str, bool, int, float))
_UNSET = Status(StatusCode.UNSET)  # immutable: every new span shares it


def _clean(values: Any, limit: int | None, max_len: int | None) -> tuple[dict[str, Any], int]:
    """``values`` as the SDK's ``BoundedAttributes`` keeps them, and how many it dropped.

    Plain values (str, bool, int, float under a non-empty str key) are handled
    here, as the SDK does (strings cut at ``max_len``; over ``limit`` the oldest
    goes); anything else goes through ``BoundedAttributes`` itself.
    """
    if not values:
        return {}, 0
    short = True
    for key, value in values.items():
        kind = type(value)
        if kind not in _PRIMITIVE or type(key) is not str or not key:
            bounded = BoundedAttributes(limit, values, max_value_len=max_len)
            return dict(bounded), bounded.dropped
        if kind is str and max_len is not None and len(value) > max_len:
            short = False
    if short and (limit is None or len(values) <= limit):
        return dict(values), 0
    out: dict[str, Any] = {}
    dropped = 0
    for key, value in values.items():
        dropped += _put(out, key, value[:max_len] if max_len is not None and type(value) is str else value, limit)
    return out, dropped


def _put(values: dict[str, Any], key: str, value: Any, limit: int | None) -> int:
    """Set ``key`` as ``BoundedAttributes`` does (a set key moves to the end; when full the oldest goes); 1 if one went."""
    if key in values:
        del values[key]
    elif limit is not None and len(values) >= limit:
        if limit == 0:
            return 1
        del values[next(iter(values))]
        values[key] = value
        return 1
    values[key] = value
    return 0


def _append(items: list[tuple[Any, ...]], item: tuple[Any, ...], limit: int | None) -> int:
    """Append as the SDK's ``BoundedList`` does (when full the oldest goes); 1 if one went."""
    if limit is not None and len(items) >= limit:
        if limit == 0:
            return 1
        del items[0]
        items.append(item)
        return 1
    items.append(item)
    return 0


class LeanSpan(trace.Span):
    """A sampled span holding plain values; ``end`` hands one record to ``emit``."""

    __slots__ = ("_name", "_context", "_parent", "_kind", "_start", "_end", "_attributes", "_dropped_attributes",
                 "_events", "_dropped_events", "_links", "_dropped_links", "_status", "_tracer", "_record_exception",
                 "_set_status_on_exception")

    def __init__(self, tracer: LeanTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: Any, links: Sequence[Link], start_time: int | None,
                 record_exception: bool = True, set_status_on_exception: bool = True) -> None:
        limits = tracer.limits
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes, self._dropped_attributes = _clean(attributes, limits.max_span_attributes,
                                                            limits.max_attribute_length)
        self._events: list[tuple[Any, ...]] = []
        self._dropped_events = 0
        self._links: list[tuple[Any, ...]] = []
        self._dropped_links = 0
        for link in links:
            self._add_link(link.context, link.attributes)
        self._status = _UNSET
        self._start = start_time if start_time is not None else time.time_ns()
        self._end: int | None = None

    # -- the API -------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end is not None:
            log.warning("Setting attribute on ended span.")
            return
        limits = self._tracer.limits
        clean, _ = _clean(attributes, None, limits.max_attribute_length)
        mine = self._attributes
        limit = limits.max_span_attributes
        if (limit is None or len(mine) + len(clean) <= limit) and mine.keys().isdisjoint(clean):
            mine.update(clean)  # what setting them one by one would give
            return
        for key, value in clean.items():
            self._dropped_attributes += _put(mine, key, value, limit)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end is not None:
            log.warning("Tried calling add_event on an ended span.")
            return
        limits = self._tracer.limits
        values, dropped = _clean(attributes, limits.max_event_attributes, limits.max_attribute_length)
        event = (name, timestamp if timestamp is not None else time.time_ns(), values, dropped)
        self._dropped_events += _append(self._events, event, limits.max_events)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end is not None:
            log.warning("Tried calling add_link on an ended span.")
            return
        self._add_link(context, attributes)

    def _add_link(self, context: SpanContext, attributes: Any) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._tracer.limits
        values, dropped = _clean(attributes, limits.max_link_attributes, limits.max_attribute_length)
        link = (context.trace_id, context.span_id, int(context.trace_flags), context.is_remote,
                context.trace_state.to_header() if context.trace_state else None, values, dropped)
        self._dropped_links += _append(self._links, link, limits.max_links)

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        values: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            values.update(attributes)
        self.add_event("exception", values, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            log.warning("Calling end() on an ended span.")
            return
        self._end = end_time if end_time is not None else time.time_ns()
        ctx, parent = self._context, self._parent
        self._tracer.emit((
            self._tracer.origin, ctx.trace_id, ctx.span_id, int(ctx.trace_flags),
            ctx.trace_state.to_header() if ctx.trace_state else None,
            parent.span_id if parent else 0, parent.is_remote if parent else False,
            self._name, self._kind.value, self._start, self._end, self._attributes, self._dropped_attributes,
            self._events, self._dropped_events, self._links, self._dropped_links,
            self._status.status_code.value, self._status.description,
        ))

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc_val}"))
        self.end()


class LeanTracer(trace.Tracer):
    """The SDK tracer's sampling, with :class:`LeanSpan` for what is sampled (see the module docstring)."""

    def __init__(self, sampler: Sampler, limits: SpanLimits, origin: int, emit: Callable[[SpanRecord], None]) -> None:
        self.sampler = sampler
        self.limits = limits
        self.origin = origin
        self.emit = emit

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        links = links or ()
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = _IDS.generate_trace_id()
        else:
            trace_id = parent.trace_id
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        random_id = parent is None or parent.trace_flags.random_trace_id
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        if random_id:
            flags = _SAMPLED if sampled else _UNSAMPLED
        else:
            flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        span_id = _IDS.generate_span_id()
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=result.trace_state)
        if result.decision is Decision.DROP:
            return trace.NonRecordingSpan(span_context)
        return LeanSpan(self, name, span_context, parent, kind, result.attributes, links, start_time,
                        record_exception, set_status_on_exception)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # as the SDK's Tracer does
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current
