"""The Faust sensor that gives every consumed message a span and every produced one a context.

Why this exists
===============

Faust calls sensors around each event a stream processes and each message a
producer sends.  :class:`TracingSensor` uses those hooks to put each stage of
the pipeline in Jaeger as its own service:

* ``on_stream_event_in``: (except on batched topics, whose records get their
  spans from :mod:`.items`) extract the context from the Kafka headers and start
  a CONSUMER span ``process <topic>`` (messaging conventions 1.44) under the
  stage's service; make it current for the agent's code.  The parent is the
  producer's span (a single message may use it, per the conventions).
  Parent-based: a parent whose flags say "not sampled" gets no SDK span (its
  context goes on unchanged); a message whose only trace header is such a W3C
  ``traceparent`` skips the propagators (``items.w3c_context``) and its
  headers go on verbatim.
* ``on_stream_event_out``: end it (ERROR + exception when the event failed, see
  :func:`~mantis_stream.tracing.fail_event`).  Batch agents' events are acked by
  ``take_events`` itself, without the sensor's state: the span is found again by
  event in :mod:`.context`.
* ``on_send_initiated``: a PRODUCER span ``send <topic>`` under the current
  context, injected into the message's headers, replacing the stale trace
  headers a ``forward()`` copies.  No span in an unsampled context (its
  context is injected as it is), nor for a record of a batched message sending
  in its own scope (the message carries the record's process span context: one
  span per record per stage).  A send to the dead-letter topic from inside an
  event's context marks that event failed.  The span ends on
  ``on_send_completed`` / ``on_send_error``.  A send with no trace context at
  all (a table's changelog, sent from the producer's buffer task; a command-line
  producer passing its own ``traceparent``) gets no span and keeps its headers.

Usage
=====

.. sourcecode:: python

    app.sensors.add(TracingSensor(stages={"features": "feature-extraction"}))
    # or simply mantis_stream.tracing.install(app, settings)

Notes
=====

* The agent -> stage mapping is ``mantis_stream.stages.AGENT_STAGES``
  (:class:`.stage_map.StageMap`, shared with the metrics sensor).
* Do not also register ``faust.contrib.opentelemetry.OpenTelemetrySensor`` or
  the aiokafka instrumentation's injection: each message would get two spans
  and two ``traceparent`` headers.
* Telemetry never breaks message processing: every hook swallows (and logs at
  debug level) its own errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from faust.sensors.base import Sensor
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import carriers, semconv, setup
from .attributes import MAX_STRING, process_attributes
from .context import EVENT_KEY, STAGE_KEY, EventTrace, pop, register
from .items import carried, carrier_of, unsampled_headers, w3c_context
from .spans import _describe, continue_span, mark_failed
from .stage_map import StageMap

__all__ = ["TracingSensor"]

log = logging.getLogger("mantis_stream.tracing")


def _key_text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, (bytes, bytearray, memoryview)):
        text = bytes(key).decode("utf-8", "replace")
    else:
        text = str(key)
    return text if len(text) <= MAX_STRING else text[:MAX_STRING]


def _current_task() -> object | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class TracingSensor(Sensor):
    """Process spans for consumed events, send spans and context injection for produced messages."""

    def __init__(
        self,
        *,
        stages: Mapping[str, str] | None = None,
        default_stage: str = "ingestion",
        dead_letter_topics: Iterable[str] = ("mantis.dead-letters",),
        batched_topics: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stages = StageMap(stages or {}, default_stage)
        self.default_stage = default_stage
        self.dead_letter_topics = frozenset(dead_letter_topics)
        #: Topics whose messages carry many records, each with its own trace (``tracing.items``).
        self.batched_topics = frozenset(batched_topics)
        self._groups: dict[int, str | None] = {}

    # -- consumed events -----------------------------------------------------------

    def _consumer_group(self, stream: Any) -> str | None:
        app = getattr(stream, "app", None)
        key = id(app)
        group = self._groups.get(key, "")
        if group == "":
            group = getattr(getattr(app, "conf", None), "id", None)
            self._groups[key] = group = str(group) if group else None
        return group

    def _process_attributes(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, Any]:
        message = event.message
        attrs = process_attributes(tp.topic, tp.partition, offset, self._consumer_group(stream))
        key = _key_text(getattr(message, "key", None))
        if key is not None:  # the conventions: not set when the key is null
            attrs[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = key
        size = getattr(message, "serialized_value_size", None)
        if isinstance(size, int) and size > 0:
            attrs[semconv.MESSAGING_MESSAGE_BODY_SIZE] = size
        return attrs

    # Faust annotates the state as a dict, but only hands it back to on_stream_event_out untouched.
    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> EventTrace | None:  # type: ignore[override]
        if tp.topic in self.batched_topics:
            return None  # its records get their spans in the agent (tracing.items)
        try:
            stage = self.stages.of_stream(stream)
            message = event.message
            headers = getattr(message, "headers", None) or getattr(event, "headers", None)
            name = "process " + tp.topic
            carrier = unsampled_headers(headers)
            parent = w3c_context(carrier)  # a plain traceparent: read without the propagators
            decided = parent is not None and not trace.get_current_span(parent).get_span_context().trace_flags.sampled
            if parent is None:
                parent = carriers.extract(headers)
            # Attributes are set once the span is known to record: a dropped
            # (unsampled) span or tracing off costs no attribute building.
            span = continue_span(stage, name, parent, kind=SpanKind.CONSUMER)
            attrs: dict[str, Any] = {}
            if span.is_recording():
                attrs = self._process_attributes(tp, offset, stream, event)
                span.set_attributes(attrs)
            ctx = parent if span is trace.get_current_span(parent) or not span.get_span_context().is_valid \
                else trace.set_span_in_context(span, parent)
            record = EventTrace(stage=stage, name=name, span=span, ctx=ctx, parent=parent, attributes=attrs)
            if decided:
                record.carrier = carrier  # its trace headers go on as they came
            if not attrs:
                record.lazy_attributes = partial(self._process_attributes, tp, offset, stream, event)
            record.ctx = Context({**ctx, STAGE_KEY: stage, EVENT_KEY: record})  # one copy for both keys
            record.token = otel_context.attach(record.ctx)
            record.task = _current_task()
            register(event, record)
            return record
        except Exception as exc:  # pragma: no cover - telemetry must never break processing
            log.debug("tracing: could not start process span: %r", exc, exc_info=True)
            return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        try:
            record = pop(event)
            if record is None:
                if isinstance(state, EventTrace):
                    record = state
                else:
                    return
            # Detach only on the automatic-ack path: same task as the attach.  A
            # manual ack (take_events) runs in the agent's task; the attach was in
            # the stream's background drainer, whose next event replaces it.
            if state is record and record.task is _current_task():
                for token in reversed(record.extra_tokens):
                    otel_context.detach(token)
                if record.token is not None:
                    otel_context.detach(record.token)
            record.extra_tokens = ()
            record.token = None
            record.end()
        except Exception as exc:
            log.debug("tracing: could not end process span: %r", exc, exc_info=True)

    # -- produced messages ---------------------------------------------------------

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        try:
            ctx = otel_context.get_current()
            if topic in self.dead_letter_topics and isinstance(record := ctx.get(EVENT_KEY), EventTrace):
                # A dead letter: the event failed.  In an unsampled trace that
                # starts a sampled stand-in span; the dead letter joins it.
                mark_failed(record, None)
                ctx = otel_context.get_current()
                if not trace.get_current_span(ctx).is_recording() and record.span.is_recording():
                    ctx = record.ctx
            stage = ctx.get(STAGE_KEY)
            current = trace.get_current_span(ctx)
            sc = current.get_span_context()
            if not isinstance(stage, str):
                if not sc.is_valid:
                    kept = carried()
                    if kept:  # tracing off, inside a batched record: its headers go on
                        carriers.write_replacing(message.headers, kept)
                    # Else no trace here at all: e.g. a table's changelog, sent from the
                    # producer's buffer task, or a CLI producing with explicit
                    # headers.  No span, and the headers are left as they are.
                    return None
                stage = self.default_stage
            record = ctx.get(EVENT_KEY)
            if isinstance(record, EventTrace) and record.span is current and (
                record.batched or not sc.trace_flags.sampled
            ) and topic not in self.dead_letter_topics:
                if record.carrier is None:
                    record.carrier = carrier_of(record.ctx)
                carriers.write_replacing(message.headers, record.carrier)
                return None
            if not sc.trace_flags.sampled:
                carriers.inject_replacing(message.headers, ctx)  # parent-based: no span, the context goes on
                return None
            span = setup.stage_tracer(stage).start_span("send " + topic, context=ctx, kind=SpanKind.PRODUCER)
            if span.is_recording():
                attrs: dict[str, Any] = {
                    semconv.MESSAGING_SYSTEM: semconv.KAFKA,
                    semconv.MESSAGING_OPERATION_NAME: "send",
                    semconv.MESSAGING_OPERATION_TYPE: semconv.OP_TYPE_SEND,
                    semconv.MESSAGING_DESTINATION_NAME: topic,
                }
                key = _key_text(getattr(message, "key", None))
                if key is not None:
                    attrs[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = key
                partition = getattr(message, "partition", None)
                if partition is not None:
                    attrs[semconv.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
                if valsize:
                    attrs[semconv.MESSAGING_MESSAGE_BODY_SIZE] = int(valsize)
                span.set_attributes(attrs)
            inject_ctx = trace.set_span_in_context(span, ctx) if span.get_span_context().is_valid else ctx
            if not carriers.inject_replacing(message.headers, inject_ctx):
                log.debug("tracing: cannot write headers of a message to %s", topic)
            return span
        except Exception as exc:
            log.debug("tracing: could not start send span: %r", exc, exc_info=True)
            return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        if not isinstance(state, trace.Span):
            return
        try:
            if state.is_recording() and metadata is not None:
                partition = getattr(metadata, "partition", None)
                if partition is not None:
                    state.set_attribute(semconv.MESSAGING_DESTINATION_PARTITION_ID, str(partition))
                offset = getattr(metadata, "offset", None)
                if isinstance(offset, int) and offset >= 0:
                    state.set_attribute(semconv.MESSAGING_KAFKA_OFFSET, offset)
            state.end()
        except Exception as exc:  # noqa: BLE001 - a span that cannot end must never fail the send
            log.debug("tracing: could not end send span: %r", exc)

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        if not isinstance(state, trace.Span):
            return
        try:
            etype, description = _describe(exc, "")
            state.set_attribute(semconv.ERROR_TYPE, etype)
            state.record_exception(exc)
            state.set_status(Status(StatusCode.ERROR, description))
            state.end()
        except Exception as err:  # noqa: BLE001 - a span that cannot end must never fail the send
            log.debug("tracing: could not end send span: %r", err)
