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
  attributes of the Kafka message it came in; a stage whose strategy is 100%
  restarts an unsampled trace with a link, as the sensor does.
* :func:`send_item`: a PRODUCER ``send <topic>`` span for the record's place in
  an outgoing batch, and the carrier (headers) that the record takes along, so
  the next stage's process span is its child.

Notes
=====

* Cheap when unsampled: a record whose upstream trace is not sampled (and whose
  stage does not restart it) gets no SDK span at all; its context, with the same
  trace id and the unsampled flag, is passed on as is.
* The record's :class:`~.context.EventTrace` rides in its context like an
  event's, so a dead letter sent inside it marks it failed (see the sensor).
"""

from __future__ import annotations

import contextlib
from functools import partial
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import carriers, semconv, setup
from .context import EVENT_KEY, STAGE_KEY, EventTrace
from .spans import start_with_restart

__all__ = ["open_item", "send_item", "use_item", "carrier_of"]


def carrier_of(ctx: Context | None) -> dict[str, str]:
    """The trace headers of ``ctx`` as a small dict (empty when there is no trace)."""
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return carrier


def _traced(stage: str, name: str, parent: Context) -> bool:
    """Whether ``name`` under ``parent`` may record: else no SDK span is made at all."""
    rt = setup._runtime or setup.current_runtime()
    if rt is None or not rt.enabled:
        return False
    sc = trace.get_current_span(parent).get_span_context()
    return not sc.is_valid or sc.trace_flags.sampled or rt.restarts_unsampled(stage, name)


def _process_attributes(topic: str, partition: int, offset: int, group: str | None) -> dict[str, Any]:
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


def open_item(
    stage: str,
    carrier: Mapping[str, str] | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    group: str | None,
) -> EventTrace:
    """Start the process span of one record of a batched message (end it with ``record.end()``)."""
    parent = carriers.extract(carrier)
    name = "process " + topic
    if _traced(stage, name, parent):
        span = start_with_restart(stage, name, parent, kind=SpanKind.CONSUMER)
    else:
        span = trace.get_current_span(parent)  # the upstream context, passed on untouched
    ctx = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
    ctx = otel_context.set_value(STAGE_KEY, stage, ctx)
    record = EventTrace(stage=stage, name=name, span=span, ctx=ctx, parent=parent)
    describe = partial(_process_attributes, topic, partition, offset, group)
    if span.is_recording():  # built only for spans that record (an error stand-in asks for them later)
        record.attributes = describe()
        span.set_attributes(record.attributes)
    else:
        record.lazy_attributes = describe
    record.ctx = otel_context.set_value(EVENT_KEY, record, ctx)
    return record


@contextlib.contextmanager
def use_item(record: EventTrace) -> Iterator[None]:
    """Make the record's context current (its child spans and sends join its trace)."""
    token = otel_context.attach(record.ctx)
    try:
        yield
    finally:
        for extra in reversed(record.extra_tokens):  # an error stand-in made current inside
            otel_context.detach(extra)
        record.extra_tokens.clear()
        otel_context.detach(token)


def send_item(stage: str, topic: str, partition: int) -> tuple[trace.Span | None, dict[str, str]]:
    """A ``send <topic>`` span for one record in an outgoing batch (current context), and its carrier.

    The span is None when the current trace does not record; the carrier then
    passes the current context on unchanged.  End the span once the batch is sent.
    """
    ctx = otel_context.get_current()
    sc = trace.get_current_span(ctx).get_span_context()
    if not (sc.is_valid and sc.trace_flags.sampled):
        return None, carrier_of(ctx)
    span = setup.stage_tracer(stage).start_span("send " + topic, context=ctx, kind=SpanKind.PRODUCER)
    if not span.is_recording():
        return None, carrier_of(ctx)
    span.set_attributes({
        semconv.MESSAGING_SYSTEM: semconv.KAFKA,
        semconv.MESSAGING_OPERATION_NAME: "send",
        semconv.MESSAGING_OPERATION_TYPE: semconv.OP_TYPE_SEND,
        semconv.MESSAGING_DESTINATION_NAME: topic,
        semconv.MESSAGING_DESTINATION_PARTITION_ID: str(partition),
    })
    return span, carrier_of(trace.set_span_in_context(span, ctx))
