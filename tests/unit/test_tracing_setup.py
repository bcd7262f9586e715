"""The SDK runtime: services, exporters from OTEL_*, dropped spans, limits, logs, attributes, install()."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import faust
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from mantis_stream import tracing
from mantis_stream.settings import DEFAULT_SERVICES, Settings
from mantis_stream.tracing import logs, setup
from mantis_stream.tracing.sensor import TracingSensor

from otlp_receiver import OTLPReceiver
from test_tracing_sensor import SAMPLED, passing_agent, tp_of


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch):
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_MAX_QUEUE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    tracing.shutdown()


def test_one_provider_per_stage_one_shared_processor() -> None:
    exporter = InMemorySpanExporter()
    rt = tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    for stage in DEFAULT_SERVICES:
        with tracing.stage_tracer(stage).start_as_current_span(f"work {stage}"):
            pass
    assert set(rt.providers) == set(DEFAULT_SERVICES)
    processors = {id(p) for prov in rt.providers.values() for p in prov._active_span_processor._span_processors}
    assert processors == {id(rt.processor)}
    got = {s.name: s.resource.attributes["service.name"] for s in exporter.get_finished_spans()}
    assert got == {f"work {stage}": name for stage, name in DEFAULT_SERVICES.items()}


def test_service_names_follow_settings() -> None:
    exporter = InMemorySpanExporter()
    services = dict(DEFAULT_SERVICES, orchestrator="plant-7-orchestrator")
    tracing.configure(Settings(services=services), exporter, sampler_override=ALWAYS_ON)
    with tracing.stage_tracer("orchestrator").start_as_current_span("create_work_order"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "plant-7-orchestrator"


def test_configure_again_replaces_the_runtime() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    tracing.configure(Settings(), first, sampler_override=ALWAYS_ON)
    tracing.configure(Settings(), second, sampler_override=ALWAYS_ON)
    with tracing.stage_tracer("storage").start_as_current_span("write_influxdb"):
        pass
    assert not first.get_finished_spans() and len(second.get_finished_spans()) == 1


@pytest.mark.parametrize(
    "env, kind",
    [
        ({}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_exporter_from_env(monkeypatch: pytest.MonkeyPatch, env: dict, kind: str | None) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exporter = setup.exporter_from_env()
    if kind is None:
        assert exporter is None
    elif kind == "console":
        assert isinstance(exporter, ConsoleSpanExporter)
    else:
        assert type(exporter).__module__.startswith(f"opentelemetry.exporter.otlp.proto.{kind}")
    if exporter is not None:
        exporter.shutdown()


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "zipkin"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}])
def test_unknown_exporter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="OTEL_"):
        setup.exporter_from_env()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_over_both_protocols(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        for stage in ("preprocessing", "anomaly-detection"):
            with tracing.stage_tracer(stage).start_as_current_span("x", attributes={"asset.id": "P-1"}):
                pass
        rt.force_flush()
        spans = rx.wait_for(lambda s: len(s) >= 2, timeout=15)
        assert {s.service for s in spans} == {"mantis-preprocessing", "mantis-anomaly-detection"}
        assert all(s.attributes["asset.id"] == "P-1" for s in spans)
        assert {s.transport for s in spans} == {"grpc" if protocol == "grpc" else "http"}


def test_sdk_disabled_no_spans_but_context_still_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    rt = tracing.configure(Settings(sampling_strategies=Path("/nonexistent")))  # file not even read
    assert not rt.enabled and rt.processor is None
    assert isinstance(tracing.stage_tracer("preprocessing"), trace.NoOpTracer)


async def test_sdk_disabled_sensor_still_forwards_upstream_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.configure(Settings())
    single, producer = passing_agent(forward=False)
    async with single.test_context() as agent:
        await agent.put(b"x", headers=[("traceparent", SAMPLED.encode())])
    (headers,) = producer.headers_of("out")
    assert headers["traceparent"] == SAMPLED


class SlowExporter(SpanExporter):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.exported = 0

    def export(self, spans: Sequence) -> SpanExportResult:
        time.sleep(self.delay)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def test_slow_collector_bounded_queue_drops_are_counted_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "16")
    slow = SlowExporter(delay=1.0)
    rt = tracing.configure(Settings(), slow, sampler_override=ALWAYS_ON, batch=True)
    tracer = tracing.stage_tracer("preprocessing")
    caplog.set_level(logging.WARNING, logger="mantis_stream.tracing")
    started = time.perf_counter()
    for _ in range(2000):
        with tracer.start_as_current_span("process mantis.readings"):
            pass
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # the pipeline never waits for the collector
    assert rt.dropped_spans >= 2000 - 64 - 16 * 2
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # rate limited, not one line per span
    started = time.perf_counter()
    rt.shutdown(timeout=2.0)
    assert time.perf_counter() - started < 4.0


def test_collector_down_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from otlp_receiver import free_port

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
    tracer = tracing.stage_tracer("preprocessing")
    started = time.perf_counter()
    for _ in range(3000):
        with tracer.start_as_current_span("process mantis.readings"):
            pass
    assert time.perf_counter() - started < 1.5
    started = time.perf_counter()
    tracing.shutdown()
    assert time.perf_counter() - started < 7.0
    assert rt.dropped_spans > 0


def test_span_limits_bound_sizes() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    with tracing.stage_tracer("storage").start_as_current_span("x") as span:
        span.set_attribute("long", "y" * 100_000)
        for i in range(500):
            span.set_attribute(f"k{i}", i)
    (s,) = exporter.get_finished_spans()
    assert len(s.attributes) <= 64 and len(s.attributes.get("long", "")) <= 1024


def test_span_attributes_never_payloads_or_secrets() -> None:
    attrs = tracing.span_attributes(
        asset_id="PUMP-7",
        sensor_id=42,
        **{
            "model.name": "half-space-trees",
            "model.version": "1",
            "prediction.score": np.float64(0.93),
            "prediction.result": True,
            "batch.size": np.int64(500),
            "db.password": "hunter2",
            "authorization": "Bearer x",
            "reading.values": [1.0, 2.0],
            "payload": b"raw",
            "waveform": np.zeros(4096),
            "long": "z" * 10_000,
            "sink.url": "postgresql://mantis:secret@db:5432/mantis",
            "dict": {"a": 1},
            "nothing": None,
        },
    )
    assert attrs["asset.id"] == "PUMP-7" and attrs["sensor.id"] == "42"
    assert attrs["prediction.score"] == pytest.approx(0.93) and type(attrs["prediction.score"]) is float
    assert attrs["batch.size"] == 500 and type(attrs["batch.size"]) is int
    assert attrs["prediction.result"] is True and attrs["model.name"] == "half-space-trees"
    for gone in ("db.password", "authorization", "reading.values", "payload", "waveform", "dict", "nothing"):
        assert gone not in attrs
    assert len(attrs["long"]) <= 256
    assert "secret" not in attrs["sink.url"] and "***" in attrs["sink.url"]


def test_denylist_is_configurable() -> None:
    from mantis_stream.tracing import attributes

    try:
        tracing.set_denylist(["*.serial*"], extend=True)
        assert "asset.serial_no" not in tracing.span_attributes(**{"asset.serial_no": "S-1"})
        assert "db.password" not in tracing.span_attributes(**{"db.password": "x"})
    finally:
        tracing.set_denylist(attributes.DEFAULT_DENYLIST)


def test_log_records_inside_spans_carry_ids(caplog: pytest.LogCaptureFixture) -> None:
    logs.install_log_correlation()
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    caplog.set_level(logging.INFO, logger="mantis.test")
    with tracing.stage_tracer("anomaly-detection").start_as_current_span("predict_anomaly") as span:
        logging.getLogger("mantis.test").info("scored")
    logging.getLogger("mantis.test").info("outside")
    inside, outside = caplog.records[-2:]
    sc = span.get_span_context()
    assert inside.trace_id == format(sc.trace_id, "032x") and inside.span_id == format(sc.span_id, "016x")
    assert inside.trace_sampled is True
    assert outside.trace_id == "0" * 32 and outside.span_id == "0" * 16
    formatted = logging.Formatter(tracing.LOG_FORMAT).format(inside)
    assert f"trace_id={inside.trace_id}" in formatted


def test_install_registers_once_and_configures_lazily(tmp_path: Path) -> None:
    app = faust.App("t-install", broker="kafka://127.0.0.1:1", store="memory://")
    tracing.shutdown()
    tracing.install(app, Settings())
    tracing.install(app, Settings())
    assert sum(isinstance(s, TracingSensor) for s in app.sensors) == 1
    assert setup._runtime is None  # nothing built at import/install time
    tracing.stage_tracer("preprocessing")  # first use
    assert setup._runtime is not None and setup._runtime.enabled


def test_install_bad_strategies_file_stops_worker_with_one_line(tmp_path: Path) -> None:
    app = faust.App("t-install-bad", broker="kafka://127.0.0.1:1", store="memory://")
    tracing.shutdown()
    tracing.install(app, Settings(sampling_strategies=tmp_path / "missing.json"))
    with pytest.raises(SystemExit) as err:
        app.on_worker_init.send()
    assert "MANTIS_SAMPLING_STRATEGIES=" in str(err.value) and "\n" not in str(err.value)


def test_ratio_sampler_from_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(sampling_strategies=Path("/nonexistent")), exporter)
    with tracing.stage_tracer("anomaly-detection").start_as_current_span("x", context=Context()):
        pass
    assert not exporter.get_finished_spans()


def test_send_outside_any_trace_leaves_headers_alone() -> None:
    """Table changelogs (sent from the producer's buffer task) and CLI producers with explicit headers."""
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    sensor = TracingSensor()

    class Pending:
        key = None
        partition = None
        headers: ClassVar[list[tuple[str, bytes]]] = [("traceparent", SAMPLED.encode())]

    msg = Pending()
    state = sensor.on_send_initiated(None, "mantis.readings", msg, 0, 10)
    sensor.on_send_completed(None, state, None)
    assert not exporter.get_finished_spans()
    assert msg.headers == [("traceparent", SAMPLED.encode())]


def test_send_under_a_foreign_span_uses_the_default_stage() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON)
    sensor = TracingSensor()

    class Pending:
        key = b"k"
        partition = 2
        headers: ClassVar[dict[str, bytes]] = {"traceparent": b"00-" + b"f" * 32 + b"-" + b"e" * 16 + b"-01"}

    msg = Pending()
    with trace.get_tracer("someone-else").start_as_current_span("x"):
        pass
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("other").start_as_current_span("foreign") as foreign:
        state = sensor.on_send_initiated(None, "mantis.readings", msg, 1, 10)
    sensor.on_send_completed(None, state, None)
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER and span.parent.span_id == foreign.get_span_context().span_id
    assert span.resource.attributes["service.name"] == "mantis-ingestion"
    assert span.attributes["messaging.destination.partition.id"] == "2"
    assert tp_of({k: v.decode() for k, v in msg.headers.items()})[1] == format(span.context.span_id, "016x")


def test_a_sampler_named_in_the_environment_takes_its_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    rt = tracing.configure(Settings(sampling_strategies=Path("/nonexistent")), InMemorySpanExporter())
    sampler = rt.sampler("anomaly-detection")
    assert sampler is not None and "TraceIdRatioBased{0.25}" in sampler.get_description()
