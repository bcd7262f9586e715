"""The tracing sensor through real Faust agents (``agent.test_context()``), in-memory exporter.

A small throwaway ``faust.App`` per test (not the project's app) with a fake
producer, so sends go through ``Topic.publish_message`` and fire the send hooks.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import faust
from faust.types import TP, RecordMetadata
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mantis_stream import tracing
from mantis_stream.settings import Settings
from mantis_stream.tracing import context as tcontext
from mantis_stream.tracing.sensor import TracingSensor

TRACE = "12345678901234567890123456789012"
PARENT = "1234567890123456"
SAMPLED = f"00-{TRACE}-{PARENT}-01"
UNSAMPLED = f"00-{TRACE}-{PARENT}-00"
STAGES = {"single": "preprocessing", "batch": "feature-extraction", "scorer": "anomaly-detection"}


class FakeProducer:
    """Stands in for the Kafka producer: records what is sent, completes at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any, Any]] = []

    async def maybe_start(self) -> None:
        return None

    async def send(self, topic, key, value, partition=None, timestamp=None, headers=None):
        self.sent.append((topic, key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        p = partition or 0
        fut.set_result(RecordMetadata(topic, p, TP(topic, p), len(self.sent) - 1))
        return fut

    def headers_of(self, topic: str) -> list[dict[str, str]]:
        out = []
        for t, _k, _v, headers in self.sent:
            if t == topic:
                items = headers.items() if isinstance(headers, dict) else headers
                out.append({k: v.decode() for k, v in items})
        return out


def make_app(name: str = "t-tracing") -> tuple[faust.App, FakeProducer]:
    app = faust.App(name, broker="kafka://127.0.0.1:1", store="memory://")
    app.sensors.add(TracingSensor(stages=STAGES, dead_letter_topics=("mantis.dead-letters",)))
    producer = FakeProducer()

    async def maybe_start_producer() -> FakeProducer:
        return producer

    app.maybe_start_producer = maybe_start_producer  # type: ignore[method-assign]
    return app, producer


def ready(app: faust.App) -> None:
    app.finalize()
    app.flow_control.resume()



def passing_agent(name: str = "single", *, forward: bool = True) -> tuple[Any, FakeProducer]:
    """A ready app whose one agent passes each event of ``src`` on to ``out``.

    ``forward``: ``Event.forward`` (copies the incoming headers, stale trace
    context included); else ``Topic.send`` of the value alone.
    """
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name=name)
    async def passing(stream):
        async for event in stream.events():
            if forward:
                await event.forward(out)
            else:
                await out.send(value=event.value)

    ready(app)
    return passing, producer



def strategies_runtime(tmp_path: Path, doc: dict) -> InMemorySpanExporter:
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps(doc))
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(sampling_strategies=path), exporter)
    return exporter


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def service(span: Any) -> str:
    return span.resource.attributes["service.name"]


def tp_of(headers: dict[str, str]) -> tuple[str, str, str]:
    _v, trace_id, span_id, flags = headers["traceparent"].split("-")
    return trace_id, span_id, flags


async def test_process_span_parent_child_chain_and_injection(spans: InMemorySpanExporter) -> None:
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")

    @app.agent(src, name="single")
    async def single(stream):
        async for event in stream.events():
            with tracing.stage_tracer("preprocessing").start_as_current_span(
                "validate_reading", attributes=tracing.span_attributes(asset_id="PUMP-7", sensor_id="TMP-1")
            ):
                pass
            await out.send(key=b"PUMP-7", value=event.value, headers=event.headers)

    ready(app)
    async with single.test_context() as agent:
        await agent.put({"v": 1}, key=b"k1", headers=[("traceparent", SAMPLED.encode()), ("other", b"x")])

    found = by_name(spans)
    (process,) = found["process src"]
    (child,) = found["validate_reading"]
    (send,) = found["send out"]
    # one trace, correctly parented: remote producer span -> process -> {validate, send}
    assert format(process.context.trace_id, "032x") == TRACE
    assert format(process.parent.span_id, "016x") == PARENT and process.parent.is_remote
    assert child.parent.span_id == process.context.span_id
    assert send.parent.span_id == process.context.span_id
    assert {child.context.trace_id, send.context.trace_id} == {process.context.trace_id}
    # kinds and services
    assert process.kind is SpanKind.CONSUMER and send.kind is SpanKind.PRODUCER
    assert {service(process), service(child), service(send)} == {"mantis-preprocessing"}
    # messaging conventions 1.44
    a = process.attributes
    assert a["messaging.system"] == "kafka"
    assert a["messaging.operation.name"] == "process" and a["messaging.operation.type"] == "process"
    assert a["messaging.destination.name"] == "src"
    assert a["messaging.consumer.group.name"] == "t-tracing"
    assert a["messaging.destination.partition.id"] == "0"
    assert a["messaging.kafka.offset"] == 0
    assert a["messaging.kafka.message.key"] == "k1"
    s = send.attributes
    assert s["messaging.operation.type"] == "send" and s["messaging.destination.name"] == "out"
    assert s["messaging.kafka.message.key"] == "PUMP-7" and s["messaging.kafka.offset"] == 0
    assert child.attributes["asset.id"] == "PUMP-7" and child.attributes["sensor.id"] == "TMP-1"
    # the outgoing message carries the send span's context, the stale one is gone, others kept
    (headers,) = producer.headers_of("out")
    assert tp_of(headers) == (TRACE, format(send.context.span_id, "016x"), "01")
    assert headers["other"] == "x"
    assert tcontext.open_count() == 0


async def test_forward_replaces_stale_traceparent_and_tracestate(spans: InMemorySpanExporter) -> None:
    single, producer = passing_agent()  # Event.forward copies the raw incoming headers, stale traceparent included
    async with single.test_context() as agent:
        await agent.put(b"raw", headers=[("traceparent", SAMPLED.encode()), ("tracestate", b"vendor=1"), ("k", b"v")])
    (send,) = by_name(spans)["send out"]
    (sent_tuple,) = [s for s in producer.sent if s[0] == "out"]
    names = [k for k, _ in sent_tuple[3]]
    assert names.count("traceparent") == 1 and names.count("tracestate") == 1
    (headers,) = producer.headers_of("out")
    assert tp_of(headers) == (TRACE, format(send.context.span_id, "016x"), "01")
    assert headers["tracestate"] == "vendor=1"  # carried along by the context, not left stale
    assert headers["k"] == "v"


async def test_message_without_context_starts_root_and_omits_null_key(spans: InMemorySpanExporter) -> None:
    app, _ = make_app()
    src = app.topic("src")

    @app.agent(src, name="single")
    async def single(stream):
        async for _event in stream.events():
            pass

    ready(app)
    async with single.test_context() as agent:
        await agent.put(b"no-headers")
    (process,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.parent is None
    assert "messaging.kafka.message.key" not in process.attributes


async def test_fail_event_gives_error_status_and_exception(spans: InMemorySpanExporter) -> None:
    app, producer = make_app()
    src, dead = app.topic("src"), app.topic("mantis.dead-letters")

    @app.agent(src, name="single")
    async def single(stream):
        async for event in stream.events():
            try:
                raise ValueError("field 'ts': cannot read timestamp")
            except ValueError as exc:
                tracing.fail_event(event, exc)
                await dead.send(value=b"{}", headers=list(event.message.headers))

    ready(app)
    async with single.test_context() as agent:
        await agent.put(b"bad", headers=[("traceparent", SAMPLED.encode())])
    (process,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.status.status_code is StatusCode.ERROR
    assert "cannot read timestamp" in process.status.description
    assert process.attributes["error.type"] == "ValueError"
    (exc_event,) = [e for e in process.events if e.name == "exception"]
    assert exc_event.attributes["exception.type"] == "ValueError"
    (send,) = by_name(spans)["send mantis.dead-letters"]
    assert send.parent.span_id == process.context.span_id
    (headers,) = producer.headers_of("mantis.dead-letters")
    assert tp_of(headers)[0] == TRACE


async def test_dead_letter_send_alone_marks_the_event_failed(spans: InMemorySpanExporter) -> None:
    app, _ = make_app()
    src, dead = app.topic("src"), app.topic("mantis.dead-letters")

    @app.agent(src, name="single")
    async def single(stream):
        async for _event in stream.events():
            await dead.send(value=b"{}")

    ready(app)
    async with single.test_context() as agent:
        await agent.put(b"bad")
    (process,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["error.type"] == "dead_letter"


async def test_error_in_unsampled_trace_is_still_recorded(tmp_path: Path) -> None:
    # every root sampled: a span started under the unsampled message (validate_reading) must follow its parent
    exporter = strategies_runtime(tmp_path, {"default_strategy": {"type": "probabilistic", "param": 1.0}})
    try:
        app, producer = make_app()
        src, dead = app.topic("src"), app.topic("mantis.dead-letters")

        @app.agent(src, name="single")
        async def single(stream):
            async for event in stream.events():
                with tracing.stage_tracer("preprocessing").start_as_current_span("validate_reading"):
                    pass
                tracing.fail_event(event, KeyError("asset_id"))
                await dead.send(value=b"{}", headers=list(event.message.headers))

        ready(app)
        async with single.test_context() as agent:
            await agent.put(b"bad", headers=[("traceparent", UNSAMPLED.encode())])
        finished = exporter.get_finished_spans()
        names = sorted(s.name for s in finished)
        assert names == ["process src", "send mantis.dead-letters"]
        error = next(s for s in finished if s.kind is SpanKind.CONSUMER)
        send = next(s for s in finished if s.kind is SpanKind.PRODUCER)
        assert error.status.status_code is StatusCode.ERROR
        assert error.context.trace_flags.sampled
        assert format(error.context.trace_id, "032x") == TRACE  # same trace id as the reading
        (link,) = error.links
        assert link.attributes["mantis.link.reason"] == "error-in-unsampled-trace"
        assert link.context.trace_id == error.context.trace_id and not link.context.trace_flags.sampled
        assert error.parent.span_id == link.context.span_id
        assert send.parent.span_id == error.context.span_id
        (headers,) = producer.headers_of("mantis.dead-letters")
        assert tp_of(headers) == (TRACE, format(send.context.span_id, "016x"), "01")
    finally:
        tracing.shutdown()


async def test_unsampled_parent_no_span_even_in_a_100_percent_stage(tmp_path: Path) -> None:
    """Parent-based: a 100 % service does not restart an unsampled trace; its context goes on unchanged."""
    exporter = strategies_runtime(
        tmp_path,
        {
            "default_strategy": {"type": "probabilistic", "param": 0.0},
            "service_strategies": [{"service": "mantis-anomaly-detection", "type": "probabilistic", "param": 1.0}],
        },
    )
    try:
        scorer, producer = passing_agent("scorer", forward=False)
        async with scorer.test_context() as agent:
            await agent.put(b"x", headers=[("traceparent", UNSAMPLED.encode())])
            await agent.put(b"y")  # no context: this stage is the root and decides (100 %)
        finished = exporter.get_finished_spans()
        (root,) = [s for s in finished if s.kind is SpanKind.CONSUMER]
        assert root.parent is None and format(root.context.trace_id, "032x") != TRACE
        first, second = producer.headers_of("out")
        assert first["traceparent"] == UNSAMPLED  # verbatim
        assert tp_of(second)[0] == format(root.context.trace_id, "032x")
    finally:
        tracing.shutdown()


async def test_batch_each_message_own_trace_and_batch_span_links_all(spans: InMemorySpanExporter) -> None:
    app, producer = make_app()
    src, out = app.topic("src"), app.topic("out")
    traces = [f"{i + 1:032x}" for i in range(5)]
    seen_batches: list[int] = []

    @app.agent(src, name="batch")
    async def batch(stream):
        async for events in stream.take_events(5, within=0.5):
            seen_batches.append(len(events))
            with tracing.batch_span("feature-extraction", "compute_fft", events, **{"batch.size": len(events)}):
                await asyncio.sleep(0)
            for event in events:
                with tracing.use_event(event):
                    with tracing.stage_tracer("feature-extraction").start_as_current_span("extract_features"):
                        pass
                    await out.send(value=event.value)

    ready(app)
    async with batch.test_context() as agent:
        for i, t in enumerate(traces):
            await agent.put({"i": i}, headers=[("traceparent", f"00-{t}-{PARENT}-01".encode())], wait=False)
        for _ in range(200):
            if len(producer.sent) == len(traces):
                break
            await asyncio.sleep(0.01)
    assert seen_batches == [5]
    found = by_name(spans)
    processes = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(processes) == 5  # every message's span ended although take_events acked it itself
    assert sorted(format(p.context.trace_id, "032x") for p in processes) == traces  # each in its own trace
    (fft,) = found["compute_fft"]
    assert service(fft) == "mantis-feature-extraction"
    assert fft.attributes["messaging.batch.message_count"] == 5 and fft.attributes["batch.size"] == 5
    # the batch's compute span is in its first sampled message's trace, linked to the others'
    first, *others = sorted(processes, key=lambda p: p.context.trace_id)
    assert fft.parent.span_id == first.context.span_id and fft.context.trace_id == first.context.trace_id
    assert {(link.context.trace_id, link.context.span_id) for link in fft.links} == {
        (p.context.trace_id, p.context.span_id) for p in others
    }
    for p in others:  # and each of those messages' spans links back to the batch
        assert any(link.context.span_id == fft.context.span_id for link in p.links)
    children = found["extract_features"]
    sends = found["send out"]
    by_span = {p.context.span_id: p for p in processes}
    assert all(c.parent.span_id in by_span for c in children) and len({c.parent.span_id for c in children}) == 5
    assert all(s.parent.span_id in by_span for s in sends) and len({s.parent.span_id for s in sends}) == 5
    for s in sends:
        assert s.context.trace_id == by_span[s.parent.span_id].context.trace_id
    injected = {tp_of(h)[0] for h in producer.headers_of("out")}
    assert injected == set(traces)
    assert tcontext.open_count() == 0


async def test_use_event_and_context_of_without_sensor_state(spans: InMemorySpanExporter) -> None:
    class Msg:
        headers: ClassVar[list[tuple[str, bytes]]] = [("traceparent", SAMPLED.encode())]

    class Ev:
        message = Msg()
        headers: ClassVar[dict[str, bytes]] = {}

    ctx = tracing.context_of(Ev())
    from opentelemetry import trace

    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE
    with tracing.use_event(Ev()):
        assert format(trace.get_current_span().get_span_context().span_id, "016x") == PARENT
    assert not trace.get_current_span().get_span_context().is_valid

    class Bare:
        message = None
        headers: ClassVar[dict[str, bytes]] = {}

    assert tracing.context_of(Bare()) is None
    with tracing.use_event(Bare()):
        pass
    tracing.fail_event(Bare(), ValueError("ignored"))  # unknown event: no-op


async def test_batch_agent_failure_in_unsampled_trace(tmp_path: Path) -> None:
    """The lead's pattern: take_events, per-event scope, fail_event then the dead letter."""
    exporter = strategies_runtime(tmp_path, {"default_strategy": {"type": "probabilistic", "param": 0.3}})
    try:
        app, producer = make_app()
        src, out, dead = app.topic("src"), app.topic("out"), app.topic("mantis.dead-letters")
        traces = [f"{i + 1:032x}" for i in range(4)]

        @app.agent(src, name="batch")
        async def batch(stream):
            async for events in stream.take_events(4, within=0.5):
                for event in events:
                    with tracing.use_event(event):
                        if event.value["i"] == 2:
                            tracing.fail_event(event, ValueError("bad frame"))
                            await dead.send(value=b"{}", headers=list(event.message.headers))
                        else:
                            await out.send(value=event.value)

        ready(app)
        async with batch.test_context() as agent:
            for i, t in enumerate(traces):
                await agent.put({"i": i}, headers=[("traceparent", f"00-{t}-{PARENT}-00".encode())], wait=False)
            for _ in range(200):
                if len(producer.sent) == len(traces):
                    break
                await asyncio.sleep(0.01)
        finished = exporter.get_finished_spans()
        assert {format(s.context.trace_id, "032x") for s in finished} == {traces[2]}
        error = next(s for s in finished if s.kind is SpanKind.CONSUMER)
        assert error.status.status_code is StatusCode.ERROR and error.attributes["error.type"] == "ValueError"
        assert error.attributes["messaging.kafka.offset"] == 2  # the conventions' attributes, computed late
        send = next(s for s in finished if s.kind is SpanKind.PRODUCER)
        assert send.parent.span_id == error.context.span_id
        (headers,) = producer.headers_of("mantis.dead-letters")
        assert tp_of(headers) == (traces[2], format(send.context.span_id, "016x"), "01")
        for h in producer.headers_of("out"):  # the others keep their unsampled context
            assert tp_of(h)[2] == "00"
        assert tcontext.open_count() == 0
    finally:
        tracing.shutdown()
