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

from test_tracing_sensor import PARENT, SAMPLED, TRACE, make_app, passing_agent, ready, tp_of


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
    single, producer = passing_agent()
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
    single, producer = passing_agent(forward=False)
    async with single.test_context() as agent:
        await agent.put(b"x", headers={"b3": f"{TRACE}-{PARENT}-1".encode()})
    send = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    assert format(send.context.trace_id, "032x") == TRACE
    (headers,) = producer.headers_of("out")
    assert headers["b3"].startswith(f"{TRACE}-{format(send.context.span_id, '016x')}-1")
    assert "traceparent" not in headers  # only the named propagators write


async def test_jaeger_uber_trace_id(with_propagators) -> None:
    spans = with_propagators("jaeger")
    single, producer = passing_agent()
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


#: The same context in each format: (propagators, headers, sampled).
FORMATS = {
    "w3c": ("tracecontext", lambda s: [("traceparent", f"00-{TRACE}-{PARENT}-{'01' if s else '00'}".encode())]),
    "b3multi": ("b3multi", lambda s: [("X-B3-TraceId", TRACE.encode()), ("X-B3-SpanId", PARENT.encode()),
                                      ("X-B3-Sampled", b"1" if s else b"0")]),
    "b3": ("b3", lambda s: [("b3", f"{TRACE}-{PARENT}-{'1' if s else '0'}".encode())]),
    "jaeger": ("jaeger", lambda s: [("uber-trace-id", f"{TRACE}:{PARENT}:0:{'1' if s else '0'}".encode())]),
}


def strategies_with(monkeypatch: pytest.MonkeyPatch, tmp_path, propagators: str, root_p: float) -> InMemorySpanExporter:
    import json

    monkeypatch.setenv("OTEL_PROPAGATORS", propagators)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"default_strategy": {"type": "probabilistic", "param": root_p}}))
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(sampling_strategies=path), exporter)
    return exporter


async def run_single(headers: list) -> tuple[object, object]:
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name="scorer")  # anomaly detection: 100 % in the shipped file, irrelevant under a parent
    async def scorer(stream):
        async for event in stream.events():
            await event.forward(out)

    ready(app)
    async with scorer.test_context() as agent:
        await agent.put(b"x", headers=list(headers))  # a copy: the sensor rewrites a forwarded message's headers
    return app, producer


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("sampled", [True, False])
async def test_parent_based_alike_for_every_format(fmt, sampled, monkeypatch, tmp_path) -> None:
    """The parent's flag decides, whatever the format; a root rate of 1.0 never overrides "not sampled"."""
    propagators, make = FORMATS[fmt]
    exporter = strategies_with(monkeypatch, tmp_path, propagators, 1.0)
    try:
        _app, producer = await run_single(make(sampled))
        finished = exporter.get_finished_spans()
        if sampled:
            assert {s.kind for s in finished} == {SpanKind.CONSUMER, SpanKind.PRODUCER}
            assert all(format(s.context.trace_id, "032x") == TRACE for s in finished)
        else:
            assert finished == ()  # no span at all
            (sent,) = producer.sent
            # the incoming context goes on as it came (same trace, same parent span, not sampled)
            sc = trace.get_current_span(carriers.extract(sent[3])).get_span_context()
            assert (format(sc.trace_id, "032x"), format(sc.span_id, "016x"), sc.trace_flags.sampled) == (TRACE, PARENT, False)
    finally:
        tracing.shutdown()
        monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
        setup.reload_propagators()


@pytest.mark.parametrize("headers", [
    [("X-B3-TraceId", TRACE.encode()), ("X-B3-SpanId", PARENT.encode())],
    [("b3", f"{TRACE}-{PARENT}".encode())],
], ids=["multi", "single"])
@pytest.mark.parametrize("root_p", [1.0, 0.0])
async def test_b3_without_sampling_state_defers_to_the_root_strategy(headers, root_p, monkeypatch, tmp_path) -> None:
    exporter = strategies_with(monkeypatch, tmp_path, "b3multi", root_p)
    try:
        _app, producer = await run_single(headers)
        finished = exporter.get_finished_spans()
        (sent,) = producer.sent
        out = {k.lower(): v.decode() for k, v in sent[3]}
        assert out.get("x-b3-traceid", out.get("b3", "")[:32]) == TRACE  # the same trace either way
        if root_p:
            process = next(s for s in finished if s.kind is SpanKind.CONSUMER)
            assert format(process.context.trace_id, "032x") == TRACE and format(process.parent.span_id, "016x") == PARENT
            assert process.context.trace_flags.sampled
        else:
            assert finished == ()
    finally:
        tracing.shutdown()
        monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
        setup.reload_propagators()


def test_propagators_are_rebuilt_from_the_environment_by_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3, jaeger")
    try:
        setup.reload_propagators()
        headers: list[tuple[str, bytes]] = []
        carriers.inject_replacing(headers, carriers.extract([("traceparent", SAMPLED.encode())]))
        assert {k for k, _ in headers} == set()  # no b3/jaeger context to read from a traceparent
        ctx = carriers.extract([("uber-trace-id", f"{TRACE}:{PARENT}:0:1".encode())])
        carriers.inject_replacing(headers, ctx)
        assert {k for k, _ in headers} == {"b3", "uber-trace-id"}
        monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,none")
        setup.reload_propagators()
        carriers.inject_replacing(headers := [], ctx)
        assert headers == []
    finally:
        monkeypatch.delenv("OTEL_PROPAGATORS")
        setup.reload_propagators()


def test_an_unknown_propagator_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,b4")
    with pytest.raises(ValueError, match="OTEL_PROPAGATORS: no propagator 'b4'"):
        setup.propagators_from_env()
