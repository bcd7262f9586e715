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
* :func:`outgoing_carrier`: the headers a record takes along into the next
  batch: its process span's context, so the next stage's process span is its
  child.  A record inside a batch has no ``send`` span of its own (the batch is
  one Kafka send); its creation context is the process span it was made in.

Notes
=====

* Cheap when unsampled: a record whose upstream trace is not sampled (and whose
  stage does not restart it) gets no SDK span at all, and the headers it came
  with go on unchanged.  With tracing off (``OTEL_SDK_DISABLED``) a record gets
  no tracing state at all (:func:`open_item` returns None) and its headers still
  go on, to the next batch and to the public messages made from it.
* The record's :class:`~.context.EventTrace` rides in its context like an
  event's, so a dead letter sent inside it marks it failed (see the sensor).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from . import carriers, setup
from .attributes import process_attributes
from .context import EVENT_KEY, STAGE_KEY, EventTrace
from .spans import start_with_restart

__all__ = ["open_item", "outgoing_carrier", "use_item", "carried", "carrier_of"]

#: The headers of the record being handled when tracing is off (see :func:`use_item`).
_carried: ContextVar[Mapping[str, str] | None] = ContextVar("mantis-carried", default=None)


def carrier_of(ctx: Context | None) -> dict[str, str]:
    """The trace headers of ``ctx`` as a small dict (empty when there is no trace)."""
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return carrier


def _enabled() -> bool:
    rt = setup._runtime or setup.current_runtime()
    return rt is not None and rt.enabled


def _traced(stage: str, name: str, parent: Context) -> bool:
    """Whether ``name`` under ``parent`` may record: else no SDK span is made at all."""
    sc = trace.get_current_span(parent).get_span_context()
    return not sc.is_valid or sc.trace_flags.sampled or setup._runtime.restarts_unsampled(stage, name)  # type: ignore[union-attr]


def open_item(
    stage: str,
    carrier: Mapping[str, str] | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    group: str | None,
) -> EventTrace | None:
    """Start the process span of one record of a batched message (end it with ``record.end()``).

    None when tracing is off: the record then needs no tracing state.
    """
    if not _enabled():
        return None
    parent = carriers.extract(carrier)
    name = "process " + topic
    if _traced(stage, name, parent):
        span = start_with_restart(stage, name, parent, kind=SpanKind.CONSUMER)
    else:
        span = trace.get_current_span(parent)  # the upstream context, passed on untouched
    ctx = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
    ctx = otel_context.set_value(STAGE_KEY, stage, ctx)
    record = EventTrace(stage=stage, name=name, span=span, ctx=ctx, parent=parent)
    describe = partial(process_attributes, topic, partition, offset, group)
    if span.is_recording():  # built only for spans that record (an error stand-in asks for them later)
        record.attributes = describe()
        span.set_attributes(record.attributes)
    else:
        record.lazy_attributes = describe
        record.carrier = carrier or {}  # not recording: the record's headers go on as they came
    record.ctx = otel_context.set_value(EVENT_KEY, record, ctx)
    return record


@contextlib.contextmanager
def use_item(record: EventTrace | None, carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the record's context current (its child spans and sends join its trace).

    With tracing off (``record`` None) only its headers are kept at hand, for
    :func:`outgoing_carrier` and the sensor's sends.
    """
    if record is None:
        reset = _carried.set(carrier)
        try:
            yield
        finally:
            _carried.reset(reset)
        return
    token = otel_context.attach(record.ctx)
    try:
        yield
    finally:
        for extra in reversed(record.extra_tokens):  # an error stand-in made current inside
            otel_context.detach(extra)
        record.extra_tokens.clear()
        otel_context.detach(token)


def carried() -> Mapping[str, str] | None:
    """With tracing off, the headers of the record being handled (else None)."""
    return _carried.get()


def outgoing_carrier() -> Mapping[str, str]:
    """The trace headers a record made now takes into an outgoing batch.

    Inside a record's scope: its process span's context (computed once per
    record), or the headers it came with when its trace does not record.
    Elsewhere (an event's scope): the current context.
    """
    kept = _carried.get()
    if kept is not None:
        return kept
    ctx = otel_context.get_current()
    record = ctx.get(EVENT_KEY)
    if not isinstance(record, EventTrace):
        return carrier_of(ctx)
    if record.carrier is None:
        record.carrier = carrier_of(record.ctx)
    return record.carrier
