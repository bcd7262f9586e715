"""Export from a child process: the same spans reach a real OTLP receiver, failures are counted, shutdown flushes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from mantis_stream import tracing
from mantis_stream.settings import Settings
from mantis_stream.tracing import export_process

from otlp_receiver import OTLPReceiver, free_port


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "MANTIS_TRACE_FILE", "MANTIS_TRACING_EXPORT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    yield
    tracing.shutdown()


def make_spans(tag: str) -> None:
    """Roots and children across two stage services: attributes (long, sequences, too many), events, links,
    errors set by hand and by an escaping exception, a renamed span."""
    tracer = tracing.stage_tracer("anomaly-detection")
    other = tracing.stage_tracer("preprocessing").start_span("linked", attributes={"mantis.tag": tag})
    other.end()
    with tracer.start_as_current_span("process mantis.internal.features", kind=SpanKind.CONSUMER,
                                      attributes={"mantis.tag": tag, "asset.id": "P-1", "messaging.kafka.offset": 7,
                                                  "mantis.scores": (0.5, 1.5)},
                                      links=[Link(other.get_span_context(), {"mantis.link.reason": "batch"})]) as span:
        span.add_event("departure", {"feature": "rms", "factor": 1.4})
        span.set_attributes({f"mantis.extra.{i}": i for i in range(80)})  # over the 64 limit: the oldest go
        span.set_attribute("mantis.tag", tag)
        with tracer.start_as_current_span("predict_anomaly", attributes={"mantis.tag": tag, "mantis.long": "x" * 5000,
                                                                          "mantis.scores": [1, 2]}) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.set_attribute("error.type", "ValueError")
        with contextlib.suppress(KeyError), tracer.start_as_current_span("renamed later") as failing:
            failing.update_name("predict_rul")
            failing.set_attribute("mantis.tag", tag)
            raise KeyError("asset P-1")


def shape(spans: list, tag: str) -> list[tuple]:
    """What a receiver saw of one run, with ids replaced by their place (the runs have different ids)."""
    mine = sorted((s for s in spans if s.attributes.get("mantis.tag") == tag), key=lambda s: s.name)
    index = {s.span_id: s.name for s in mine}
    return [(s.name, s.kind, s.service, {k: v for k, v in s.attributes.items() if k != "mantis.tag"},
             {k: v for k, v in s.resource.items() if k != "service.instance.id"}, s.status, s.status_message,
             [(name, {k: v if k != "exception.stacktrace" else v.startswith("Traceback") for k, v in attrs.items()})
              for name, attrs in s.events],  # the frames differ
             [(index.get(span), attrs) for _, span, attrs in s.links], index.get(s.parent_span_id, s.parent_span_id),
             s.flags, len({x.trace_id for x in mine if x.name != "linked"}))
            for s in mine]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_receiver_gets_the_same_spans_as_from_an_in_process_exporter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str,
) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint)
        every = tmp_path / "all.json"  # the strategies sampler, whose decisions put attributes on roots
        every.write_text('{"default_strategy": {"type": "probabilistic", "param": 1.0}}')
        got = {}
        for mode in ("thread", "process"):
            monkeypatch.setenv("MANTIS_TRACING_EXPORT", mode)
            rt = tracing.configure(Settings(sampling_strategies=every))
            assert isinstance(rt.exporter, export_process.ProcessSpanExporter) == (mode == "process")
            make_spans(mode)
            assert rt.force_flush()
            got[mode] = shape(rx.wait_for(lambda s, m=mode: sum(x.attributes.get("mantis.tag") == m for x in s) >= 4), mode)
            tracing.shutdown()
        assert got["process"] == got["thread"]
        names = [row[0] for row in got["process"]]
        assert names == ["linked", "predict_anomaly", "predict_rul", "process mantis.internal.features"]
        by_name = {row[0]: row for row in got["process"]}
        process = by_name["process mantis.internal.features"]
        assert by_name["linked"][3]["sampler.type"] == "probabilistic"  # the root's sampler said why
        assert len(by_name["predict_anomaly"][3]["mantis.long"]) < 5000
        assert "mantis.extra.79" in process[3] and "asset.id" not in process[3]  # the oldest attributes went
        assert by_name["predict_rul"][5] == "ERROR" and by_name["predict_rul"][7][0][0] == "exception"


def test_the_child_process_imports_no_application_code(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        pid = rt.exporter.pid
        maps = Path(f"/proc/{pid}/maps").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-P", str(Path(export_process.__file__).resolve()).encode()]
        assert "river" not in maps and "faust" not in maps  # neither the models nor the stream framework loaded


def test_failed_exports_in_the_child_count_as_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
    tracer = tracing.stage_tracer("preprocessing")
    for _ in range(25):
        tracer.start_span("process mantis.readings").end()
    assert rt.force_flush(timeout_millis=15_000)
    assert rt.dropped_spans == 25


def test_shutdown_flushes_what_the_child_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        child = rt.exporter.pid
        tracer = tracing.stage_tracer("rul-prediction")
        for i in range(300):
            tracer.start_span("predict_rul", attributes={"mantis.i": i}).end()
        tracing.shutdown()  # no flush before: shutdown must export them
        assert len([s for s in rx.snapshot() if s.name == "predict_rul"]) == 300
        assert rt.dropped_spans == 0
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def test_a_stalled_collector_is_ridden_out_without_drops_and_the_backlog_goes_in_larger_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """15,000 spans made while the collector answers nothing (7x the worker's span queue) all arrive."""
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        assert rt.force_flush(timeout_millis=30_000)  # the export process is up (it reads nothing before)
        tracer = tracing.stage_tracer("anomaly-detection")
        with rx._lock:  # the receiver's Export waits on it: the collector stalls
            for i in range(30):
                for j in range(500):
                    tracer.start_span("process mantis.internal.feature-batches",
                                      attributes={"messaging.kafka.offset": i * 500 + j, "asset.id": "P-1"}).end()
                time.sleep(0.02)  # the processor's thread hands them on, as between a worker's batches
            assert rt.dropped_spans == 0
        assert rt.force_flush(timeout_millis=60_000)
        assert len(rx.wait_for(lambda s: len(s) >= 15_000, timeout=60)) == 15_000
        assert rt.dropped_spans == 0
        assert rx.requests <= 15_000 // export_process.EXPORT_BATCH + 8 < 15_000 // 512  # the backlog went in bulk


def test_the_span_queue_in_front_of_the_export_process_is_longer_unless_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    queue_size = {}
    for mode, size in (("process", None), ("thread", None), ("process", "1000")):
        monkeypatch.setenv("MANTIS_TRACING_EXPORT", mode)
        if size:
            monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", size)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        queue_size[mode, size] = rt.processor._max
        tracing.shutdown()
    assert queue_size == {("process", None): export_process.QUEUE_SIZE, ("thread", None): 2048,
                            ("process", "1000"): 1000}


def test_a_dead_child_is_replaced_and_its_unconfirmed_spans_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint)
        rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
        first = rt.exporter.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while rt.exporter._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        tracer = tracing.stage_tracer("orchestrator")
        with tracer.start_as_current_span("create_work_order"):
            pass
        assert rt.force_flush()
        assert rt.exporter.pid != first
        assert [s.name for s in rx.wait_for(lambda s: len(s) >= 1)] == ["create_work_order"]
        assert rt.dropped_spans == 0  # nothing was in flight when it died


def test_an_unknown_export_mode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTIS_TRACING_EXPORT", "fork")
    with pytest.raises(ValueError, match="MANTIS_TRACING_EXPORT='fork'"):
        tracing.configure(Settings())


def test_the_trace_file_is_written_by_the_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mantis_stream.tracing.filelog import read_spans

    path = tmp_path / "traces.jsonl"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("MANTIS_TRACE_FILE", str(path))
    rt = tracing.configure(Settings(), sampler_override=ALWAYS_ON)
    assert isinstance(rt.exporter, export_process.ProcessSpanExporter)
    make_spans("file")
    assert rt.force_flush()
    spans = read_spans(path).spans
    assert sorted(s.name for s in spans) == ["linked", "predict_anomaly", "predict_rul", "process mantis.internal.features"]


def test_lean_spans_drop_and_count_as_the_sdk_does() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from mantis_stream.tracing.lean import LeanTracer

    limits = SpanLimits(max_span_attributes=8, max_events=2, max_links=3, max_attribute_length=16,
                        max_event_attributes=2, max_link_attributes=2)
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON, span_limits=limits, resource=Resource.create({"service.name": "s"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    records: list[tuple] = []
    origins = {0: export_process.origin_key(Resource.create({"service.name": "s"}), InstrumentationScope("t"))}
    lean = LeanTracer(ALWAYS_ON, limits, 0, records.append)
    other = provider.get_tracer("t").start_span("other")
    for tracer in (provider.get_tracer("t"), lean):
        links = [Link(other.get_span_context(), {"a": 1, "b": 2, "c": 3}) for _ in range(5)]
        span = tracer.start_span("s", attributes={f"k{i}": "v" * 40 for i in range(10)}, links=links)
        span.set_attributes({"k3": 1, "late": (1, 2), "k9": True})
        for i in range(4):
            span.add_event(f"e{i}", {"x": 1, "y": 2, "z": "w" * 30})
        span.end()
    (sdk,) = memory.get_finished_spans()
    (rebuilt,) = export_process.rebuild(records, origins)
    assert dict(rebuilt.attributes) == dict(sdk.attributes)
    assert list(rebuilt.attributes) == list(sdk.attributes)  # which ones went: the oldest
    assert (rebuilt.dropped_attributes, rebuilt.dropped_events, rebuilt.dropped_links) == \
        (sdk.dropped_attributes, sdk.dropped_events, sdk.dropped_links) == (3, 2, 2)
    assert [(e.name, dict(e.attributes), e.dropped_attributes) for e in rebuilt.events] == \
        [(e.name, dict(e.attributes), e.dropped_attributes) for e in sdk.events]
    assert [(dict(link.attributes), link.dropped_attributes) for link in rebuilt.links] == \
        [(dict(link.attributes), link.dropped_attributes) for link in sdk.links]
