"""The export process encodes OTLP straight from span records: byte for byte what the SDK's encoder makes."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from mantis_stream.tracing import export_process
from mantis_stream.tracing.lean import LeanTracer

LIMITS = SpanLimits(max_span_attributes=8, max_events=2, max_links=3, max_attribute_length=16,
                    max_event_attributes=2, max_link_attributes=2)


def make_records() -> tuple[list[tuple], dict[int, tuple]]:
    """Records of every shape: lean spans of two services, and SDK spans compacted, with trace state,
    remote and local parents, events, links, sequences, limits hit, every status and kind."""
    resources = [Resource.create({"service.name": name}) for name in ("preprocessing", "anomaly-detection")]
    scopes = [InstrumentationScope("mantis_stream", "0.1.0"), InstrumentationScope("other")]
    keys: dict[tuple, int] = {}
    records: list[tuple] = []
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState.from_header(["vendor=a,other=b"]))
    parent = set_span_in_context(NonRecordingSpan(remote))
    memory = InMemorySpanExporter()
    for i, (resource, scope) in enumerate([(r, s) for r in resources for s in scopes]):
        origin = keys.setdefault(export_process.origin_key(resource, scope), len(keys))
        lean = LeanTracer(ALWAYS_ON, LIMITS, origin, records.append)
        provider = TracerProvider(sampler=ALWAYS_ON, span_limits=LIMITS, resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        sdk = provider.get_tracer(scope.name, scope.version)
        for tracer in (lean, sdk):
            for kind in SpanKind:
                with tracer.start_as_current_span(
                    f"process {kind.name}", context=parent if kind is SpanKind.CONSUMER else None, kind=kind,
                    attributes={"messaging.system": "kafka", "messaging.kafka.offset": i, "asset.id": f"P-{i % 2}",
                                "mantis.score": 0.5 + i, "mantis.flag": bool(i % 2), "mantis.scores": (1.5, 2.5)},
                    links=[Link(remote, {"mantis.link.reason": "batch", "n": i})] * 4,
                ) as span:
                    span.add_event("departure", {"feature": "rms", "factor": 1.4, "x": "y" * 40})
                    span.add_event("second")
                    span.add_event("third", {"k": [1, 2]})
                    with tracer.start_as_current_span("child") as child:
                        child.set_attributes({f"k{j}": "v" * 40 for j in range(10)})
                        child.set_status(Status(StatusCode.ERROR, "boom") if i % 2 else Status(StatusCode.OK))
    records.extend(export_process.compact(memory.get_finished_spans(),
                                          lambda key: keys.setdefault(key, len(keys))))
    return records, {number: key for key, number in keys.items()}


def test_the_request_is_what_the_sdk_encoder_makes_of_the_rebuilt_spans() -> None:
    records, origins = make_records()
    assert len(records) == 4 * 2 * 5 * 2  # resources x scopes, lean and SDK, kinds, parent and child
    expected = encode_spans(export_process.rebuild(records, origins))
    encoder = export_process.RecordEncoder()
    for _ in range(2):  # the second time from the encoded attributes it kept
        got = encoder.request(records, origins)
        assert got == expected
        assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    spans = [s for rs in got.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(got.resource_spans) == 2 and all(len(rs.scope_spans) >= 2 for rs in got.resource_spans)
    assert {s.trace_state for s in spans if s.kind == s.SPAN_KIND_CONSUMER} == {"vendor=a,other=b"}
    assert all(any(getattr(s, f"dropped_{what}_count") for s in spans) for what in ("attributes", "events", "links"))
    assert {s.status.code for s in spans} == {0, 1, 2} and {s.flags for s in spans} == {0x100, 0x300}


def test_an_attribute_that_cannot_be_encoded_is_left_out_and_the_span_goes() -> None:
    origins = {0: export_process.origin_key(Resource.create({"service.name": "s"}), InstrumentationScope("t"))}
    record = (0, 1, 2, 1, None, 0, False, "s", 0, 1, 2, {"a": "x", "bad": object(), "b": 3}, 0, [], 0, [], 0, 0, None)
    request = export_process.RecordEncoder().request([record], origins)
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert [(kv.key, kv.value.WhichOneof("value")) for kv in span.attributes] == [("a", "string_value"),
                                                                                 ("b", "int_value")]
