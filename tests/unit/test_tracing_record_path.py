"""The per-record tracing path stays what it was while it got cheaper: cached deny decisions, one context copy."""

from __future__ import annotations

import enum
import gc
import weakref

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mantis_stream import tracing
from mantis_stream.tracing import attributes, items
from mantis_stream.tracing.attributes import MAX_STRING
from mantis_stream.tracing.context import EVENT_KEY, STAGE_KEY, stage_of_context
from mantis_stream.tracing.setup import reload_propagators

UPSTREAM = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"



def test_a_key_already_asked_follows_a_changed_denylist() -> None:
    key = {"asset.serial_no": "S-1"}
    assert tracing.span_attributes(**key) == key  # asked (and remembered) before the change
    try:
        tracing.set_denylist(["*.serial*"], extend=True)
        assert tracing.span_attributes(**key) == {}
        assert attributes.is_denied("DB.Password")  # case-insensitive, as the patterns are
    finally:
        tracing.set_denylist(attributes.DEFAULT_DENYLIST)
    assert tracing.span_attributes(**key) == key


class Level(enum.IntEnum):
    HIGH = 3


def test_values_are_bounded_and_masked_whatever_their_type() -> None:
    long = "x" * (MAX_STRING + 50)
    attrs = tracing.span_attributes(
        asset_id="A" * (MAX_STRING + 1), sensor_id=7,
        **{"s": long, "url": "postgresql://u:hunter2@db/x", "flag": True, "level": Level.HIGH,
           "np": np.float32(0.5), "n": np.int64(4), "ok": [1, 2], "mixed": [1, "a"], "big": list(range(100))},
    )
    assert len(attrs["asset.id"]) == MAX_STRING and attrs["sensor.id"] == "7"
    assert len(attrs["s"]) == MAX_STRING and "hunter2" not in attrs["url"]
    assert attrs["flag"] is True and type(attrs["level"]) is int and attrs["level"] == 3
    assert type(attrs["np"]) is float and type(attrs["n"]) is int and attrs["ok"] == [1, 2]
    assert "mixed" not in attrs and "big" not in attrs


def test_a_remembered_unsampled_header_with_other_headers_still_goes_to_the_propagators(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain = {"traceparent": f"00-{UPSTREAM}-{PARENT}-00"}
    assert items.w3c_context(plain) is items.w3c_context(plain)  # read once, then remembered
    assert items.w3c_context({**plain, "baggage": "k=v"}) is None
    try:
        monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,b3multi")
        reload_propagators()
        assert items.w3c_context(plain) is None
    finally:
        monkeypatch.delenv("OTEL_PROPAGATORS")
        reload_propagators()


def test_a_sampled_record_has_its_process_span_with_attributes_current_in_its_context(
        spans: InMemorySpanExporter) -> None:
    carrier = {"traceparent": f"00-{UPSTREAM}-{PARENT}-01"}
    record = tracing.open_item("anomaly-detection", carrier, topic="t.batches", partition=2, offset=9, group="g")
    assert record is not None and record.span.is_recording()
    assert trace.get_current_span(record.ctx) is record.span
    assert record.ctx.get(EVENT_KEY) is record and stage_of_context(record.ctx) == "anomaly-detection"
    with tracing.use_item(record, carrier):
        out = tracing.outgoing_carrier()
    record.end()
    (span,) = spans.get_finished_spans()
    assert out == {"traceparent": f"00-{UPSTREAM}-{span.context.span_id:016x}-01"}
    assert span.name == "process t.batches" and format(span.parent.span_id, "016x") == PARENT
    assert dict(span.attributes) == {
        "messaging.system": "kafka", "messaging.operation.name": "process", "messaging.operation.type": "process",
        "messaging.destination.name": "t.batches", "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 9, "messaging.consumer.group.name": "g",
    }


def test_an_unsampled_record_keeps_its_upstream_context_and_headers(spans: InMemorySpanExporter) -> None:
    carrier = {"traceparent": f"00-{UPSTREAM}-{PARENT}-00"}
    record = tracing.open_item("anomaly-detection", carrier, topic="t.batches", partition=0, offset=1, group="g")
    assert record is not None and not record.span.is_recording()
    assert trace.get_current_span(record.ctx) is record.span is trace.get_current_span(record.parent)
    assert record.ctx.get(STAGE_KEY) == "anomaly-detection" and record.ctx.get(EVENT_KEY) is record
    with tracing.use_item(record, carrier):
        assert tracing.outgoing_carrier() == carrier
    record.end()
    assert spans.get_finished_spans() == ()
    assert record.lazy_attributes()["messaging.kafka.offset"] == 1  # for a stand-in, built only when asked


def test_a_record_continuing_the_upstream_span_makes_none_but_an_error_gets_one(spans: InMemorySpanExporter) -> None:
    carrier = {"traceparent": f"00-{UPSTREAM}-{PARENT}-01"}
    open_ = lambda i: tracing.open_item(  # noqa: E731
        "preprocessing", carrier, topic="t.keyed", partition=0, offset=i, group="g", own_span=False)
    plain, failing = open_(1), open_(2)
    assert plain is not None and failing is not None
    assert format(plain.span.get_span_context().span_id, "016x") == PARENT and not plain.span.is_recording()
    with tracing.use_item(plain, carrier):
        assert tracing.outgoing_carrier() == carrier  # the next stage's span is the upstream span's child
    with tracing.use_item(failing, carrier):
        tracing.mark_failed(failing, ValueError("bad frame"))
    plain.end()
    failing.end()
    (error,) = spans.get_finished_spans()
    assert error.name == "process t.keyed" and format(error.parent.span_id, "016x") == PARENT
    assert error.attributes["error.type"] == "ValueError" and error.attributes["messaging.kafka.offset"] == 2
    assert not error.links  # its parent is the sampled upstream span: no "unsampled trace" link


@pytest.mark.parametrize("flags", ["00", "01"])
def test_an_ended_record_is_freed_without_the_garbage_collector(spans: InMemorySpanExporter, flags: str) -> None:
    # Why: a record's context holds the record; left as a cycle, every record of every hop waits for
    # the collector, whose runs grow with the heap (the models) and cost more than the record itself.
    carrier = {"traceparent": f"00-{UPSTREAM}-{PARENT}-{flags}"}
    gc.disable()
    try:
        record = tracing.open_item("anomaly-detection", carrier, topic="t.batches", partition=0, offset=3, group="g")
        assert record is not None
        with tracing.use_item(record, carrier):
            tracing.outgoing_carrier()
        context = weakref.ref(record.ctx)
        record.end()
        del record
        assert context() is None
    finally:
        gc.enable()
