"""Trace context formats in Kafka and HTTP headers: W3C (default), B3, Jaeger, baggage."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode

from mantis_stream import tracing
from mantis_stream.settings import Settings
from mantis_stream.tracing import carriers, setup
from test_tracing_sensor import PARENT, SAMPLED, TRACE, make_app, ready, tp_of


@pytest.fixture
def with_propagators(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    exporters: list[InMemorySpanExporter] = []

    def use(value: str) -> InMemorySpanExporter:
        monkeypatch.setenv("OTEL_PROPAGATORS", value)
        exporter = InMemorySpanExporter()
        tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
        exporters.append(exporter)
        return exporter

    yield use
    tracing.shutdown()
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    setup.reload_propagators()


def test_getter_and_setter_handle_bytes_lists_dicts_and_case() -> None:
    g = carriers.KafkaHeadersGetter()
    assert g.get([("TraceParent", b"a"), ("traceparent", b"b")], "traceparent") == ["a"]  # first wins
    assert g.get({"traceparent": "s"}, "traceparent") == ["s"]
    assert g.get(None, "traceparent") is None
    assert g.keys([("a", b"1"), ("b", None)]) == ["a", "b"]
    s = carriers.KafkaHeadersSetter()
    lst: list = []
    s.set(lst, "traceparent", "x")
    dct: dict = {}
    s.set(dct, "traceparent", "y")
    assert lst == [("traceparent", b"x")] and dct == {"traceparent": b"y"}
    assert carriers.inject_replacing(None) is False and carriers.inject_replacing(()) is False


def test_w3c_and_baggage_default() -> None:
    setup.reload_propagators()
    ctx = carriers.extract([("traceparent", SAMPLED.encode()), ("baggage", b"plant=north")])
    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE
    assert baggage.get_baggage("plant", ctx) == "north"
    headers = [("traceparent", b"00-" + b"f" * 32 + b"-" + b"e" * 16 + b"-01"), ("baggage", b"old=1"), ("x", b"1")]
    carriers.inject_replacing(headers, ctx)
    d = dict(headers)
    assert d["traceparent"] == SAMPLED.encode() and d["baggage"] == b"plant=north" and d["x"] == b"1"
    assert len(headers) == 3


async def test_b3_multi_header_in_and_out_through_the_sensor(with_propagators) -> None:
    spans = with_propagators("tracecontext,baggage,b3multi")
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name="single")
    async def single(stream):  # noqa: ANN001
        async for event in stream.events():
            await event.forward(out)

    ready(app)
    async with single.test_context() as agent:
        await agent.put(
            b"x",
            headers=[("X-B3-TraceId", TRACE.encode()), ("X-B3-SpanId", PARENT.encode()), ("X-B3-Sampled", b"1")],
        )
    process = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER)
    send = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    assert format(process.context.trace_id, "032x") == TRACE and format(process.parent.span_id, "016x") == PARENT
    (sent,) = producer.sent
    names = [k.lower() for k, _ in sent[3]]
    assert names.count("x-b3-traceid") == 1 and names.count("x-b3-spanid") == 1  # stale ones replaced
    (headers,) = producer.headers_of("out")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-b3-traceid"] == TRACE and lowered["x-b3-spanid"] == format(send.context.span_id, "016x")
    assert tp_of(headers)[0] == TRACE  # W3C too, both formats


async def test_b3_single_header(with_propagators) -> None:
    spans = with_propagators("b3")
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name="single")
    async def single(stream):  # noqa: ANN001
        async for event in stream.events():
            await out.send(value=event.value)

    ready(app)
    async with single.test_context() as agent:
        await agent.put(b"x", headers={"b3": f"{TRACE}-{PARENT}-1".encode()})
    send = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    assert format(send.context.trace_id, "032x") == TRACE
    (headers,) = producer.headers_of("out")
    assert headers["b3"].startswith(f"{TRACE}-{format(send.context.span_id, '016x')}-1")
    assert "traceparent" not in headers  # only the named propagators write


async def test_jaeger_uber_trace_id(with_propagators) -> None:
    spans = with_propagators("jaeger")
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name="single")
    async def single(stream):  # noqa: ANN001
        async for event in stream.events():
            await event.forward(out)

    ready(app)
    async with single.test_context() as agent:
        await agent.put(b"x", headers=[("uber-trace-id", f"{TRACE}:{PARENT}:0:1".encode()), ("uberctx-plant", b"north")])
    process = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER)
    send = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    assert format(process.context.trace_id, "032x") == TRACE and format(process.parent.span_id, "016x") == PARENT
    (sent,) = producer.sent
    assert [k for k, _ in sent[3]].count("uber-trace-id") == 1
    (headers,) = producer.headers_of("out")
    trace_id, span_id, _parent, flags = headers["uber-trace-id"].split(":")
    assert trace_id.rjust(32, "0") == TRACE and span_id.rjust(16, "0") == format(send.context.span_id, "016x")
    assert int(flags, 16) & 1


def test_http_server_span_continues_traceparent(with_propagators) -> None:
    spans = with_propagators("tracecontext,baggage")
    with tracing.http_server_span("ingestion", "post", "/api/v1/ingest", {"TraceParent": SAMPLED}) as span:
        tracing.set_http_status(span, 202)
        inner = trace.get_current_span()
        assert inner is span
    (server,) = spans.get_finished_spans()
    assert server.name == "POST /api/v1/ingest" and server.kind is SpanKind.SERVER
    assert server.resource.attributes["service.name"] == "mantis-ingestion"
    assert format(server.context.trace_id, "032x") == TRACE and format(server.parent.span_id, "016x") == PARENT
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/api/v1/ingest"
    assert server.attributes["http.response.status_code"] == 202
    with pytest.raises(RuntimeError):
        with tracing.http_server_span("ingestion", "GET", "/health", {}):
            raise RuntimeError("boom")
    failed = spans.get_finished_spans()[-1]
    assert failed.status.status_code is StatusCode.ERROR and failed.parent is None
