"""The naive peer: the same stages written the way a Faust user first would.

One event at a time (``stream.events()``), one awaited ``send`` per output, the
stock ``faust.contrib.opentelemetry`` sensor, per-key state in plain dicts.  It
uses mantis-stream's own core (parser, DSP, river detector) so the comparison
measures the streaming design, not the maths.

    faust -A bench.naive_app worker
"""

from __future__ import annotations

import os

import faust
import numpy as np
from faust.contrib.opentelemetry import setup_opentelemetry
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mantis_stream import codecs  # noqa: F401  (orjson codec)
from mantis_stream.dsp.framing import FrameAssembler, remove_dc
from mantis_stream.dsp.spectral import waveform_features
from mantis_stream.dsp.stats import window_features
from mantis_stream.kafka import profile_options
from mantis_stream.models.anomaly import AnomalyDetector
from mantis_stream.models.reading import InvalidReading, format_timestamp, parse_reading

provider = TracerProvider(resource=Resource.create({"service.name": "naive-pipeline"}))
if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "otlp":
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)

app = faust.App(
    os.environ.get("MANTIS_APP_ID", "naive"), broker=os.environ["MANTIS_BROKER"], value_serializer="orjson",
    key_serializer="raw", topic_partitions=4, web_enabled=False, **profile_options("local"),
)
setup_opentelemetry(app)

readings = app.topic("mantis.readings", value_serializer="raw")
keyed = app.topic("mantis.internal.readings-keyed")
frames = app.topic("mantis.internal.frames")
features_topic = app.topic("mantis.features")
anomalies = app.topic("mantis.anomalies")
dead_letters = app.topic("mantis.dead-letters")

FRAME = 2048
assemblers: dict[str, FrameAssembler] = {}
windows: dict[str, list[float]] = {}
detectors: dict[str, AnomalyDetector] = {}


@app.agent(readings)
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        try:
            reading = parse_reading(event.value)
        except InvalidReading as exc:
            await dead_letters.send(value={"error": str(exc)})
            continue
        await keyed.send(key=reading.asset_id.encode(), value=reading.to_message(), headers=event.headers)


@app.agent(keyed)
async def frame(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        r = event.value
        key = f"{r['asset_id']}/{r['sensor_id']}"
        if "values" in r:
            assembler = assemblers.setdefault(key, FrameAssembler(FRAME))
            for f in remove_dc(assembler.push(np.asarray(r["values"]))):
                await frames.send(key=event.key, value={**r, "values": f.tolist()}, headers=event.headers)
        else:
            window = windows.setdefault(key, [])
            window.append(r["value"])
            del window[:-10]
            await frames.send(key=event.key, value={**r, "window": list(window)}, headers=event.headers)


@app.agent(frames)
async def features(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        f = event.value
        if "values" in f:
            feats = waveform_features(np.asarray(f["values"])[None, :], f["sample_rate_hz"], f.get("meta"))[0]
        else:
            feats = window_features(np.asarray(f["window"]))
        out = {"asset_id": f["asset_id"], "sensor_id": f["sensor_id"], "ts": format_timestamp(f["ts"]), "features": feats}
        await features_topic.send(key=event.key, value=out, headers=event.headers)


@app.agent(features_topic)
async def anomaly(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        m = event.value
        detector = detectors.setdefault(f"{m['asset_id']}/{m['sensor_id']}", AnomalyDetector())
        result = detector.process_one(m["features"])
        await anomalies.send(key=event.key, value={
            "asset_id": m["asset_id"], "sensor_id": m["sensor_id"], "ts": m["ts"], "score": result.score,
            "threshold": result.threshold, "is_anomaly": result.is_anomaly}, headers=event.headers)
