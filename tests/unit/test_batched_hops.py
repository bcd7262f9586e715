"""Batched hops between stages: many records per Kafka message, each with its own trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import mantis_stream  # noqa: F401  (registers the agents)
from mantis_stream import topics as names
from mantis_stream import tracing
from mantis_stream.agents import _batch
from mantis_stream.agents._batch import Outbox, partition_for
from mantis_stream.agents.anomaly import anomaly
from mantis_stream.app import assessments_topic
from mantis_stream.settings import Settings

PARENT = "1234567890123456"


def traceparent(i: int, sampled: bool = True) -> str:
    return f"00-{i + 1:032x}-{PARENT}-{'01' if sampled else '00'}"



def feature_record(i: int) -> dict[str, Any]:
    return {"asset_id": "P-1", "sensor_id": "T", "ts": "2026-11-29T10:00:00Z", "epoch": float(i),
            "features": {"mean": float(i), "std": 1.0}}


def test_partition_is_kafkas_keyed_partition() -> None:
    partitioner = DefaultPartitioner()
    for asset in ("P-1", "pump-17", "ENGINE-0042", "ü"):
        assert partition_for(asset, 4) == partitioner(asset.encode(), [0, 1, 2, 3], [0, 1, 2, 3])


async def test_outbox_one_message_per_partition_bounded_in_size(sent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_batch, "WORKER_RECORD_BYTES", 400)
    out = Outbox(assessments_topic, "test")
    for i in range(6):
        out.add(i % 2, {"i": i, "pad": "x" * 100}, None)
    await out.flush()
    messages = [(kw["partition"], orjson.loads(kw["value"])) for t, kw in sent if t == names.ASSESSMENTS]
    assert all(len(kw["value"]) <= 400 for _, kw in sent)
    by_partition: dict[int, list[int]] = {}
    for partition, body in messages:
        by_partition.setdefault(partition, []).extend(item["value"]["i"] for item in body["items"])
    assert by_partition == {0: [0, 2, 4], 1: [1, 3, 5]}  # every record once, in order, on its partition
    assert len(messages) > 2  # split to respect the size bound
    out_again = Outbox(assessments_topic, "test")
    await out_again.flush()  # nothing queued: nothing sent
    assert len([t for t, _ in sent if t == names.ASSESSMENTS]) == len(messages)


async def test_each_record_gets_its_own_trace_through_a_batched_stage(sent, spans) -> None:
    batch = orjson.dumps({"items": [{"value": feature_record(i), "trace": {"traceparent": traceparent(i)}}
                                    for i in range(3)]})
    async with anomaly.test_context() as agent:
        await agent.put(batch)
    finished = spans.get_finished_spans()
    processes = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert sorted(format(p.context.trace_id, "032x") for p in processes) == [f"{i + 1:032x}" for i in range(3)]
    assert all(format(p.parent.span_id, "016x") == PARENT for p in processes)
    assert all(p.name == f"process {names.FEATURE_BATCHES}" for p in processes)
    assert all(p.attributes["messaging.destination.name"] == names.FEATURE_BATCHES for p in processes)
    # one span per record in the stage, the record's outcome on it
    assert all(p.attributes["asset.id"] == "P-1" and "prediction.score" in p.attributes for p in processes)
    assert all(p.attributes["model.name"] for p in processes)
    # one compute span for the batch, in the first record's trace, linked to the others (and they back to it)
    (predict,) = [s for s in finished if s.name == "predict_anomaly"]
    first, *others = sorted(processes, key=lambda p: p.context.trace_id)
    assert predict.parent.span_id == first.context.span_id and predict.context.trace_id == first.context.trace_id
    assert {link.context.span_id for link in predict.links} == {p.context.span_id for p in others}
    assert all(any(link.context.span_id == predict.context.span_id for link in p.links) for p in others)
    assert len(finished) == 4
    # the public message and the batched record each carry the record's trace on
    public = [kw for t, kw in sent if t == names.ANOMALIES]
    assert len(public) == 3
    # a record in a batch has no send span of its own: it carries its process span's context
    assert not [s for s in finished if s.name == f"send {names.ASSESSMENTS}"]
    [(_, kw)] = [(t, kw) for t, kw in sent if t == names.ASSESSMENTS]
    carried = [item["trace"]["traceparent"] for item in orjson.loads(kw["value"])["items"]]
    assert [c.split("-")[1:3] for c in carried] == [
        [format(p.context.trace_id, "032x"), format(p.context.span_id, "016x")]
        for p in sorted(processes, key=lambda p: p.context.trace_id)
    ]
    assert {c.split("-")[1] for c in carried} == {f"{i + 1:032x}" for i in range(3)}


async def test_unsampled_records_make_no_spans_but_keep_their_trace(sent, tmp_path: Path) -> None:
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps({"default_strategy": {"type": "probabilistic", "param": 0.0}}))
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(sampling_strategies=path), exporter)
    try:
        batch = orjson.dumps({"items": [{"value": feature_record(0), "trace": {"traceparent": traceparent(0, False)}}]})
        async with anomaly.test_context() as agent:
            await agent.put(batch)
        assert exporter.get_finished_spans() == ()
        [(_, kw)] = [(t, kw) for t, kw in sent if t == names.ASSESSMENTS]
        assert orjson.loads(kw["value"])["items"][0]["trace"]["traceparent"] == traceparent(0, False)
    finally:
        tracing.shutdown()


async def test_tracing_off_records_carry_their_headers_on(sent, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from mantis_stream.app import app

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.configure(Settings())
    try:
        batch = orjson.dumps({"items": [{"value": feature_record(0), "trace": {"traceparent": traceparent(0)}}]})
        async with anomaly.test_context() as agent:
            await agent.put(batch)
        [(_, kw)] = [(t, kw) for t, kw in sent if t == names.ASSESSMENTS]
        assert orjson.loads(kw["value"])["items"][0]["trace"] == {"traceparent": traceparent(0)}
        # a public message sent in a record's scope gets the record's headers, replacing stale ones
        sensor = next(s for s in app.sensors if isinstance(s, tracing.TracingSensor))
        message = SimpleNamespace(headers=[("traceparent", b"stale"), ("k", b"v")], key=None, partition=None)
        with tracing.use_item(None, {"traceparent": traceparent(1)}):
            assert sensor.on_send_initiated(None, names.ANOMALIES, message, 0, 10) is None
        assert message.headers == [("k", b"v"), ("traceparent", traceparent(1).encode())]
    finally:
        tracing.shutdown()


async def test_bad_record_is_a_dead_letter_with_its_place_in_the_batch(sent, spans) -> None:
    good, bad = feature_record(0), {"asset_id": "P-1", "sensor_id": "T", "ts": "2026-11-29T10:00:00Z"}
    batch = orjson.dumps({"items": [{"value": good, "trace": {"traceparent": traceparent(0)}},
                                    {"value": bad, "trace": {"traceparent": traceparent(1)}}]})
    async with anomaly.test_context() as agent:
        await agent.put(batch)
    [letter] = [kw for t, kw in sent if t == names.DEAD_LETTERS]
    value = letter["value"]
    assert value["stage"] == "anomaly-detection" and value["source"]["topic"] == names.FEATURE_BATCHES
    assert value["source"]["index"] == 1 and json.loads(value["payload"]) == bad
    assert dict(letter["headers"])["traceparent"] == traceparent(1).encode()
    assert letter["key"] == b"P-1"  # keyed by its asset, like the stage's other output
    assert len([t for t, _ in sent if t == names.ANOMALIES]) == 1  # the good record went on
    errors = [s for s in spans.get_finished_spans() if s.status.status_code is StatusCode.ERROR]
    [process] = [s for s in errors if s.kind is SpanKind.CONSUMER]
    assert format(process.context.trace_id, "032x") == f"{2:032x}" and process.attributes["error.type"] == "KeyError"


async def test_a_message_that_is_not_a_batch_is_a_dead_letter(sent) -> None:
    async with anomaly.test_context() as agent:
        await agent.put(b'{"asset_id": "P-1"}')
        await agent.put(orjson.dumps({"items": [{"value": feature_record(0)}]}))
    [letter] = [kw["value"] for t, kw in sent if t == names.DEAD_LETTERS]
    assert letter["error"]["type"] == "InvalidBatch" and "items" in letter["error"]["message"]
    assert len([t for t, _ in sent if t == names.ANOMALIES]) == 1



def strategies_at(tmp_path: Path, p: float) -> InMemorySpanExporter:
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps({"default_strategy": {"type": "probabilistic", "param": p}}))
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(sampling_strategies=path), exporter)
    return exporter


async def test_a_work_order_is_recorded_in_its_unsampled_readings_trace(sent, tmp_path: Path) -> None:
    from mantis_stream.agents.orchestrator import orchestrator

    exporter = strategies_at(tmp_path, 0.0)
    try:
        asset = "WO-UNSAMPLED"
        rul = {"asset_id": asset, "sensor_id": "T", "ts": "2026-11-29T10:00:00Z", "rul": 1.0, "unit": "cycles",
               "lower": 0.5, "upper": 2.0, "health_index": 0.1, "model": {"name": "m", "version": "1"}}
        normal = {"asset_id": asset, "sensor_id": "T", "ts": "2026-11-29T10:00:01Z", "score": 0.1, "threshold": 0.9,
                  "is_anomaly": False, "model": {"name": "m", "version": "1"}, "warm": True}
        batch = orjson.dumps({"items": [{"value": rul, "trace": {"traceparent": traceparent(7, False)}},
                                        {"value": normal, "trace": {"traceparent": traceparent(8, False)}}]})
        async with orchestrator.test_context() as agent:
            await agent.put(batch)
        (order,) = [kw["value"] for t, kw in sent if t == names.WORK_ORDERS]
        reading_trace = f"{8:032x}"
        assert order["trace_id"] == reading_trace  # the reading's trace id...
        finished = exporter.get_finished_spans()
        assert {format(s.context.trace_id, "032x") for s in finished} == {reading_trace}  # ...leads to spans
        process = next(s for s in finished if s.kind is SpanKind.CONSUMER)
        assert process.name == f"process {names.ASSESSMENTS}" and process.context.trace_flags.sampled
        assert process.attributes["mantis.sampling.reason"] == "work-order"
        assert process.attributes["messaging.destination.name"] == names.ASSESSMENTS  # built late, for the stand-in
        assert format(process.parent.span_id, "016x") == PARENT
        (create,) = [s for s in finished if s.name == "create_work_order"]
        assert create.parent.span_id == process.context.span_id
    finally:
        tracing.shutdown()


def test_an_outcome_turns_an_unsampled_record_into_a_sampled_one(tmp_path: Path) -> None:
    exporter = strategies_at(tmp_path, 1.0)  # every root sampled: none of what follows is a root
    try:
        open_ = lambda i: tracing.open_item(  # noqa: E731
            "anomaly-detection", {"traceparent": traceparent(i, False)},
            topic=names.FEATURE_BATCHES, partition=0, offset=i, group="g",
        )
        plain, anomalous = open_(1), open_(2)
        assert not plain.span.is_recording() and format(plain.span.get_span_context().span_id, "016x") == PARENT
        with tracing.use_item(plain, plain.carrier):
            assert tracing.outgoing_carrier() == {"traceparent": traceparent(1, False)}  # verbatim
            with tracing.stage_tracer("anomaly-detection").start_as_current_span("child") as child:
                assert not child.is_recording()  # follows the record's decision, not a new root
        with tracing.use_item(anomalous, anomalous.carrier):
            tracing.keep(anomalous, "anomaly", asset_id="P-1", **{"prediction.score": 0.97})
            carried = tracing.outgoing_carrier()["traceparent"]
        for record in (plain, anomalous):
            record.end()
        (span,) = exporter.get_finished_spans()
        assert format(span.context.trace_id, "032x") == f"{3:032x}" and format(span.parent.span_id, "016x") == PARENT
        assert span.attributes["mantis.sampling.reason"] == "anomaly" and span.attributes["prediction.score"] == 0.97
        assert carried == f"00-{3:032x}-{span.context.span_id:016x}-01"  # what it sends on is sampled
    finally:
        tracing.shutdown()
