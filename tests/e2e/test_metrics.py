"""Prometheus metrics: the sensor alone (fakes), then GET /metrics of a real worker after a run."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from faust.types import TP
from opentelemetry import context as otel_context
from prometheus_client.parser import text_string_to_metric_families

from mantis_stream import topics as names
from mantis_stream.metrics import OTHER_ASSET, MetricsSensor, render
from mantis_stream.tracing.context import STAGE_KEY
from mantis_stream.tracing.filelog import read_spans

from conftest import collect, produce


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def total(parsed: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in parsed.items() if n == name and want <= set(ls))


class FakeEvent:
    def __init__(self, value: object) -> None:
        self.value = value
        self.message: SimpleNamespace | None = None


def stream(prefix: str) -> SimpleNamespace:
    return SimpleNamespace(prefix=prefix)


# -- the sensor alone -----------------------------------------------------------------------


def test_stage_counters_latency_and_dead_letters():
    sensor = MetricsSensor()
    tp = TP(names.FEATURES, 0)
    event = FakeEvent({"asset_id": "A", "features": {}})
    sensor.on_stream_event_in(tp, 1, stream("anomaly"), event)
    time.sleep(0.01)
    sensor.on_stream_event_out(tp, 1, stream("anomaly"), event, None)  # take_events acks without state
    token = otel_context.attach(otel_context.set_value(STAGE_KEY, "anomaly-detection"))
    try:
        sensor.on_send_initiated(None, names.ANOMALIES, None, 0, 10)
        sensor.on_send_initiated(None, names.DEAD_LETTERS, None, 0, 10)
    finally:
        otel_context.detach(token)
    sensor.on_send_initiated(None, "mantis-stream-anomaly-detectors-changelog", None, 0, 10)
    parsed = samples(render(sensor.registry).decode())
    assert value(parsed, "mantis_events_in_total", stage="anomaly-detection", topic=names.FEATURES) == 1
    assert value(parsed, "mantis_events_out_total", stage="anomaly-detection", topic=names.ANOMALIES) == 1
    assert value(parsed, "mantis_dead_letters_total", stage="anomaly-detection") == 1
    assert value(parsed, "mantis_events_out_total", stage="state", topic="mantis-stream-anomaly-detectors-changelog") == 1
    assert value(parsed, "mantis_stage_latency_seconds_count", stage="anomaly-detection") == 1
    assert value(parsed, "mantis_stage_latency_seconds_sum", stage="anomaly-detection") >= 0.01
    assert value(parsed, "mantis_stage_latency_seconds_bucket", stage="anomaly-detection", le="0.001") == 0


def test_a_batched_message_counts_its_records_in_and_in_the_latency():
    sensor = MetricsSensor()
    tp = TP(names.FEATURE_BATCHES, 2)
    event = FakeEvent(b"")
    event.message = SimpleNamespace(topic=names.FEATURE_BATCHES)
    sensor.on_stream_event_in(tp, 7, stream("anomaly"), event)
    sensor.on_records(event, 175)
    sensor.on_stream_event_out(tp, 7, stream("anomaly"), event, None)
    not_a_batch = FakeEvent(b"{}")
    sensor.on_stream_event_in(tp, 8, stream("anomaly"), not_a_batch)  # a dead letter: it carries no record
    sensor.on_stream_event_out(tp, 8, stream("anomaly"), not_a_batch, None)
    parsed = samples(render(sensor.registry).decode())
    assert value(parsed, "mantis_events_in_total", stage="anomaly-detection", topic=names.FEATURE_BATCHES) == 175
    assert value(parsed, "mantis_messages_in_total", stage="anomaly-detection", topic=names.FEATURE_BATCHES) == 2
    assert value(parsed, "mantis_stage_latency_seconds_count", stage="anomaly-detection") == 175


def test_scores_and_rul_per_asset_observed_once_and_capped():
    sensor = MetricsSensor(max_assets=2)
    for i, asset in enumerate(["P1", "P2", "P3", "P4"]):
        msg = {"asset_id": asset, "sensor_id": "S", "score": 0.25 * (i + 1), "is_anomaly": i == 3, "threshold": 0.9}
        # observed as published (once), not as consumed (by the sinks)
        sensor.on_send_initiated(None, names.ANOMALIES, FakeEvent(orjson.dumps(msg)), 0, 10)
        sensor.on_stream_event_in(TP(names.ANOMALIES, 0), i, stream("sink-postgres"), FakeEvent(msg))
    rul = {"asset_id": "P1", "rul": 42.5, "unit": "cycles", "health_index": 0.7}
    sensor.on_send_initiated(None, names.RUL, FakeEvent(orjson.dumps(rul)), 0, 10)
    parsed = samples(render(sensor.registry).decode())
    assert value(parsed, "mantis_anomaly_score_count") == 4
    assert value(parsed, "mantis_asset_anomaly_score", asset_id="P1") == 0.25
    assert value(parsed, "mantis_asset_anomaly_score", asset_id="P2") == 0.5
    assert value(parsed, "mantis_asset_anomaly_score", asset_id="P3") is None  # over the cap of 2
    assert value(parsed, "mantis_asset_anomaly_score", asset_id=OTHER_ASSET) == 1.0  # P4, the last one
    assert value(parsed, "mantis_anomalies_total", asset_id=OTHER_ASSET) == 1
    assert value(parsed, "mantis_metrics_assets_over_cap_total") == 2
    assert value(parsed, "mantis_asset_rul", asset_id="P1", unit="cycles") == 42.5
    assert value(parsed, "mantis_asset_health_index", asset_id="P1") == 0.7


def test_consumer_lag_from_highwater_and_committed_offsets():
    a, b, gone = TP(names.READINGS, 0), TP(names.READINGS, 1), TP(names.READINGS, 2)
    monitor = SimpleNamespace(tp_committed_offsets={a: 90, gone: 1}, tp_read_offsets={b: 9}, tp_end_offsets={a: 95})
    consumer = SimpleNamespace(assignment=lambda: {a, b}, highwater=lambda tp: {a: 100, b: 15}[tp])
    sensor = MetricsSensor(app=SimpleNamespace(monitor=monitor, consumer=consumer))
    parsed = samples(render(sensor.registry).decode())
    assert value(parsed, "mantis_consumer_lag", topic=names.READINGS, partition="0") == 10  # 100 - 90
    assert value(parsed, "mantis_consumer_lag", topic=names.READINGS, partition="1") == 5  # 15 - (9 + 1)
    assert value(parsed, "mantis_consumer_lag", topic=names.READINGS, partition="2") is None  # not assigned


def test_dropped_spans_come_from_the_tracing_runtime():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mantis_stream import tracing
    from mantis_stream.settings import Settings

    rt = tracing.configure(Settings(), InMemorySpanExporter())
    try:
        rt.drops.add("queue_full", 3)
        rt.drops.add("export_failed", 2)
        parsed = samples(render(MetricsSensor().registry).decode())
        assert value(parsed, "mantis_spans_dropped_total", reason="queue_full") == 3
        assert value(parsed, "mantis_spans_dropped_total", reason="export_failed") == 2
    finally:
        tracing.shutdown()


# -- end to end --------------------------------------------------------------------------------


async def scrape(url: str) -> tuple[str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            assert resp.status == 200
            return resp.headers["Content-Type"], await resp.text()


#: Each stage behind a batched hop and the hop it reads: every reading of the run is one record on each.
BATCHED_INPUTS = (("feature-extraction", names.FRAMES), ("anomaly-detection", names.FEATURE_BATCHES),
                  ("rul-prediction", names.FEATURE_BATCHES), ("orchestrator", names.ASSESSMENTS))


async def test_metrics_endpoint_and_trace_file_after_an_end_to_end_run(broker, start_worker, tmp_path):
    prefix = f"MET{uuid.uuid4().hex[:6]}"
    engine = f"{prefix}-ENGINE"
    trace_file = tmp_path / "traces.jsonl"
    worker = await start_worker(env={"MANTIS_RUL_THRESHOLD_CYCLES": "1e9", "MANTIS_TRACE_FILE": str(trace_file),
                                     "OTEL_TRACES_SAMPLER": "always_on"})
    readings = [orjson.dumps({"asset_id": engine, "sensor_id": "GAS-PATH", "ts": 1_790_000_000 + i, "cycle": i + 1,
                              "channels": {"s2": 642.0 + 0.01 * i, "s3": 1585.0 + 0.2 * i, "s4": 1400.0 + 0.3 * i}})
                for i in range(40)]
    bad = [b"{not json", orjson.dumps({"asset_id": prefix, "sensor_id": "S", "ts": 1_790_000_000, "value": "hot"})]
    await produce(broker.bootstrap, names.READINGS, readings + bad)

    mine = lambda item: item[0].get("asset_id") == engine  # noqa: E731
    await collect(broker.bootstrap, (names.ANOMALIES, names.RUL),
                  until=lambda f: any(map(mine, f[names.ANOMALIES])) and any(map(mine, f[names.RUL])))

    deadline = time.monotonic() + 30
    while True:  # the gauges follow what the stages publish; the orchestrator comes last
        content_type, text = await scrape(worker.web_url)
        parsed = samples(text)
        if value(parsed, "mantis_asset_rul", asset_id=engine, unit="cycles") is not None and \
                value(parsed, "mantis_asset_anomaly_score", asset_id=engine) is not None and \
                value(parsed, "mantis_stage_latency_seconds_count", stage="orchestrator") and \
                all(total(parsed, "mantis_stage_latency_seconds_count", stage=stage) >= len(readings)
                    for stage, _ in BATCHED_INPUTS):
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.5)

    assert content_type.startswith("text/plain") and "version=" in content_type
    # every reading entered preprocessing (a fresh app id reads the topic from the start)
    assert total(parsed, "mantis_events_in_total", stage="preprocessing", topic=names.READINGS) >= len(readings) + len(bad)
    # between stages the readings travel in batches (a message per partition and batch)
    assert 1 <= total(parsed, "mantis_events_out_total", stage="preprocessing", topic=names.READINGS_KEYED) <= len(readings)
    # on the batched hops every record counts, in and in the latency, not every message
    for stage, topic in BATCHED_INPUTS:
        records = total(parsed, "mantis_events_in_total", stage=stage, topic=topic)
        assert records >= len(readings), (stage, records)
        assert 1 <= total(parsed, "mantis_messages_in_total", stage=stage, topic=topic) <= records, stage
        assert total(parsed, "mantis_stage_latency_seconds_count", stage=stage) >= len(readings), stage
    assert total(parsed, "mantis_events_out_total", stage="feature-extraction", topic=names.FEATURES) >= len(readings)
    assert total(parsed, "mantis_events_out_total", stage="rul-prediction", topic=names.RUL) >= 1
    assert total(parsed, "mantis_dead_letters_total", stage="preprocessing") >= len(bad)
    for stage in ("preprocessing", "feature-extraction", "anomaly-detection", "rul-prediction", "orchestrator"):
        assert value(parsed, "mantis_stage_latency_seconds_count", stage=stage) >= 1, stage
    # the gauge holds an estimate the RUL stage published for this engine
    gauge = value(parsed, "mantis_asset_rul", asset_id=engine, unit="cycles")
    published = lambda f: {v["rul"] for v, _, _ in f[names.RUL] if v["asset_id"] == engine}  # noqa: E731
    await collect(broker.bootstrap, (names.RUL,), until=lambda f: gauge in published(f), timeout=30)
    assert 0.0 <= value(parsed, "mantis_asset_anomaly_score", asset_id=engine) <= 1.0
    assert value(parsed, "mantis_anomaly_score_count") >= 1
    lags = {ls: v for (n, ls), v in parsed.items() if n == "mantis_consumer_lag"}
    assert any(dict(ls)["topic"] == names.READINGS for ls in lags), lags
    assert all(v >= 0 for v in lags.values())
    assert value(parsed, "mantis_spans_dropped_total", reason="queue_full") is not None

    # MANTIS_TRACE_FILE: the same run's spans, readable by `mantis-stream trace`
    worker.stop()  # flushes the span processor
    spans = [s for s in read_spans(trace_file).spans if s.attributes.get("asset.id") == engine]
    assert spans, f"no spans of {engine} in {trace_file}"
    trace_id = spans[-1].trace_id
    services = {s.service for s in read_spans(trace_file).spans if s.trace_id == trace_id}
    assert {"mantis-preprocessing", "mantis-feature-extraction", "mantis-anomaly-detection"} <= services, services


# -- dashboard and compose -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exposed_names() -> set[str]:
    names_ = set()
    for family in MetricsSensor().registry.collect():
        names_.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names_


def test_dashboard_queries_only_metrics_the_worker_exposes():
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bmantis_[a-z_]+", e)}
    used |= set(re.findall(r"\bmantis_[a-z_]+", json.dumps(dashboard["templating"])))
    assert used and used <= exposed_names(), used - exposed_names()
    # every kind of metric the issue asks for has a panel
    for metric in ("mantis_events_in_total", "mantis_events_out_total", "mantis_dead_letters_total",
                   "mantis_stage_latency_seconds_bucket", "mantis_consumer_lag", "mantis_asset_anomaly_score",
                   "mantis_asset_rul", "mantis_spans_dropped_total"):
        assert metric in used, metric
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {"mantis-prometheus"}
    provisioned = (ROOT / "config" / "grafana-provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: mantis-prometheus" in provisioned and "http://prometheus:9090" in provisioned


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_has_prometheus_scraping_the_worker_and_grafana():
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                              capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert {"prometheus", "grafana", "worker"} <= set(services)
    resolved = result.stdout  # absolute host paths in the resolved file
    assert f"{ROOT}/config/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in resolved
    assert f"{ROOT}/config/grafana-dashboard.json:/var/lib/grafana/dashboards/mantis/mantis-stream.json:ro" in resolved
    assert f"{ROOT}/config/grafana-provisioning/datasources:/etc/grafana/provisioning/datasources:ro" in resolved
    prometheus_yml = (ROOT / "config" / "prometheus.yml").read_text()
    # every replica of the worker service (``--scale worker=N``), found by DNS, on the worker's web port
    assert "metrics_path: /metrics" in prometheus_yml and 'names: ["worker"]' in prometheus_yml
    assert "port: 6066" in prometheus_yml
