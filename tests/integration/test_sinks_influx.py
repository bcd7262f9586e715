"""The InfluxDB sink against a real influxd: points, replay, outages, spans."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mantis_stream import topics as names
from mantis_stream.sinks.buffer import Backoff
from mantis_stream.sinks.influx import InfluxSink, InfluxTarget, line, point
from mantis_stream.sinks.records import from_message

from servers import *  # noqa: F403

pytestmark = pytest.mark.influxdb

FAST = Backoff(initial=0.05, maximum=0.3)
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def feature(i: int, sensor: str = "VIB-001") -> dict:
    return {"asset_id": "PUMP-7", "sensor_id": sensor, "ts": iso(T0 + timedelta(milliseconds=i)),
            "features": {"rms": 0.1 * i, "kurtosis": 3.0, "peak_hz": 120, "bad": float("nan")}}


def anomaly(i: int) -> dict:
    return {"asset_id": "PUMP-7", "sensor_id": "VIB-001", "ts": iso(T0 + timedelta(seconds=i)),
            "score": 0.25, "threshold": 0.7, "is_anomaly": False, "model": {"name": "hst", "version": "1"}}


def rul(i: int) -> dict:
    return {"asset_id": "PUMP-7", "ts": iso(T0 + timedelta(seconds=i)), "rul": 50.0, "unit": "cycles",
            "lower": 40.0, "upper": 60.0, "health_index": 0.4, "cycle": i,
            "model": {"name": "exp", "version": "2"}}


def batch(n: int, start: int = 0) -> list:
    return (
        [from_message(names.FEATURES, feature(i), TRACE) for i in range(start, start + n)]
        + [from_message(names.ANOMALIES, anomaly(i), TRACE) for i in range(start, start + n)]
        + [from_message(names.RUL, rul(i), TRACE) for i in range(start, start + n)]
    )


def database_of(url: str) -> str:
    return InfluxTarget.from_url(url).database


def count(server, url: str, measurement: str, field: str) -> int:
    result = server.query(f'SELECT count("{field}") FROM "{measurement}"', database_of(url))
    series = result["results"][0].get("series")
    return series[0]["values"][0][1] if series else 0


# -- pure ---------------------------------------------------------------------------


def test_url_parsing():
    t = InfluxTarget.from_url("https://me:p%40ss@db.example:9999/prefix/plant1?rp=week")
    assert (t.host, t.port, t.database, t.ssl, t.path) == ("db.example", 9999, "plant1", True, "/prefix/")
    assert (t.username, t.password, t.retention_policy) == ("me", "p@ss", "week")
    assert InfluxTarget.from_url("http://localhost/mantis").port == 8086
    with pytest.raises(ValueError, match="database"):
        InfluxTarget.from_url("http://localhost:8086")


def test_line_protocol_escaping():
    text = line("m", {"asset_id": "PUMP 7,a=b", "empty": ""}, {"x y": 1.5, "n": 3, "ok": True, "s": 'say "hi"',
                                                             "nan": float("nan"), "none": None}, 123)
    assert text == r'm,asset_id=PUMP\ 7\,a\=b x\ y=1.5,n=3i,ok=true,s="say \"hi\"" 123'
    assert line("m", {}, {"nan": float("inf")}, 1) is None
    measurement, text = point(from_message(names.FEATURES, feature(2), TRACE))
    assert measurement == "features"
    assert "bad=" not in text and "peak_hz=120.0" in text and f'trace_id="{TRACE}"' in text
    assert text.endswith(" 1795946400002000000")


# -- server ----------------------------------------------------------------------------


async def test_points_written_database_created_and_replay_idempotent(influx_server, influx_url):
    sink = InfluxSink(influx_url, backoff=FAST)
    try:
        assert await sink.start()
        await sink.write(batch(100))
        assert count(influx_server, influx_url, "features", "rms") == 100
        assert count(influx_server, influx_url, "anomaly_scores", "score") == 100
        assert count(influx_server, influx_url, "rul", "rul") == 100
        await sink.write(batch(100))  # replay
        assert count(influx_server, influx_url, "features", "rms") == 100
        assert count(influx_server, influx_url, "rul", "rul") == 100
    finally:
        await sink.close()
    db = database_of(influx_url)
    result = influx_server.query('SELECT * FROM "anomaly_scores" LIMIT 1', db)["results"][0]["series"][0]
    row = dict(zip(result["columns"], result["values"][0]))
    assert row["asset_id"] == "PUMP-7" and row["sensor_id"] == "VIB-001" and row["model"] == "hst"
    assert row["trace_id"] == TRACE and row["is_anomaly"] is False and row["score"] == 0.25
    tags = influx_server.query('SHOW TAG KEYS FROM "rul"', db)["results"][0]["series"][0]["values"]
    assert ["trace_id"] not in tags and ["asset_id"] in tags


async def test_refused_point_is_dropped_not_retried_forever(influx_server, influx_url):
    sink = InfluxSink(influx_url, backoff=FAST)
    rejected = []
    sink._buffer._on_reject = lambda row, exc: rejected.append(row)
    try:
        assert await sink.start()
        # "rms" becomes a string field in the shard of T0: float values conflict (HTTP 400).
        db = database_of(influx_url)
        req = urllib.request.Request(
            f"http://{influx_server.host}:{influx_server.port}/write?db={db}",
            data=b'features,asset_id=OTHER,sensor_id=S rms="text" %d' % (int(T0.timestamp()) * 10**9), method="POST",
        )
        urllib.request.urlopen(req, timeout=10).close()
        await asyncio.wait_for(sink.write(batch(3)), 30)
    finally:
        await sink.close()
    assert len(rejected) == 3 and all(m == "features" for m, _ in rejected)
    assert count(influx_server, influx_url, "rul", "rul") == 3


async def test_outage_loses_nothing_and_buffer_stays_bounded(influx_server, influx_url):
    sink = InfluxSink(influx_url, backoff=FAST, capacity=300, max_batch=100)
    try:
        assert await sink.start()
        await sink.write(batch(10))
        await asyncio.to_thread(influx_server.stop)
        writes = [asyncio.create_task(sink.write(batch(50, start=1000 + k * 50))) for k in range(6)]
        await asyncio.sleep(1.5)
        assert not any(w.done() for w in writes)
        assert sink.stats.pending <= 300 and sink.stats.failures > 0
        await asyncio.to_thread(influx_server.start)
        await asyncio.wait_for(asyncio.gather(*writes), 60)
    finally:
        if not influx_server.is_running():
            influx_server.start()
        await sink.close()
    assert sink.stats.high_water <= 300
    assert count(influx_server, influx_url, "features", "rms") == 310
    assert count(influx_server, influx_url, "anomaly_scores", "score") == 310
    assert count(influx_server, influx_url, "rul", "rul") == 310


async def test_start_with_server_down_does_not_crash(influx_server, influx_url):
    await asyncio.to_thread(influx_server.stop)
    sink = InfluxSink(influx_url, backoff=FAST, timeout=2.0)
    try:
        assert await sink.start() is False
        write = asyncio.create_task(sink.write(batch(5)))
        await asyncio.sleep(0.5)
        assert not write.done()
        await asyncio.to_thread(influx_server.start)
        await asyncio.wait_for(write, 60)
    finally:
        if not influx_server.is_running():
            influx_server.start()
        await sink.close()
    assert count(influx_server, influx_url, "rul", "rul") == 5


async def test_spans_follow_db_conventions_without_password(influx_server, influx_url):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = influx_url.replace("http://", "http://writer:s3cret-pw@")
    sink = InfluxSink(url, tracer=provider.get_tracer("test"), backoff=FAST)
    try:
        await sink.write(batch(4))
    finally:
        await sink.close()
    writes = [s for s in exporter.get_finished_spans() if s.name == "write_influxdb"]
    assert {dict(s.attributes)["db.collection.name"] for s in writes} == {"features", "anomaly_scores", "rul"}
    attrs = dict(writes[0].attributes)
    assert attrs["db.system.name"] == "influxdb"
    assert attrs["db.operation.name"] == "write"
    assert attrs["db.namespace"] == database_of(influx_url)
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == influx_server.port
    assert attrs["db.operation.batch.size"] == 4
    for span in exporter.get_finished_spans():
        assert all("s3cret" not in str(v) for v in span.attributes.values())
    assert "s3cret" not in repr(sink)
