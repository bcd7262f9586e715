"""End to end: a real worker (subprocess) on the local broker exports its spans to an OTLP receiver here.

One reading produced with a known ``traceparent`` must give one trace holding
spans from every stage it passes (each its own ``service.name``), correctly
parented, with the messaging conventions' attributes; a reading posted over
HTTP adds the ingestion service; a bad reading gives an ERROR span and a dead
letter carrying the same trace id.

Uses the lead's fixtures in ``conftest.py``: ``broker`` (Tansu) and
``start_worker``; the worker runs with the shipped sampling strategies, so the
sampled ``traceparent`` flag decides (parent-based).
"""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import orjson
import pytest

from mantis_stream import topics as names

from conftest import collect, produce
from otlp_receiver import OTLPReceiver, ReceivedSpan

pytestmark = pytest.mark.broker

#: Stages one scalar reading passes through (storage only with a sink configured).
PIPELINE = {
    "mantis-preprocessing",
    "mantis-feature-extraction",
    "mantis-anomaly-detection",
    "mantis-rul-prediction",
    "mantis-orchestrator",
}


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def reading(asset: str, i: int = 0) -> dict:
    return {"asset_id": asset, "sensor_id": "TMP-1", "ts": 1_790_000_000 + i, "value": 60.0 + i, "unit": "degC"}


async def wait_trace(rx: OTLPReceiver, trace_id: str, until, timeout: float = 90.0) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = rx.trace(trace_id)
        if until(spans):
            return spans
        if time.monotonic() > deadline:
            summary = sorted({(s.service, s.name) for s in spans})
            raise TimeoutError(f"trace {trace_id}: condition not met in {timeout} s; have {summary}")
        await asyncio.sleep(0.25)


def has_services(wanted: set[str]):
    return lambda spans: wanted <= {s.service for s in spans if s.kind == "CONSUMER" or s.kind == "SERVER"}


def check_parenting(spans: list[ReceivedSpan], root_parent: str) -> None:
    """Every span's parent is in the trace, except the producer's span the trace came in with."""
    ids = {s.span_id: s for s in spans}
    for s in spans:
        assert s.parent_span_id in ids or s.parent_span_id == root_parent, (s.service, s.name, s.parent_span_id)
    for s in spans:
        if s.kind == "CONSUMER" and s.parent_span_id in ids:
            parent = ids[s.parent_span_id]
            if s.attributes["messaging.destination.name"] in names.BATCHED:
                # a record of a batched hop continues the process span it was made in, one hop upstream
                assert parent.kind == "CONSUMER", (s.name, parent.name)
                assert parent.attributes["messaging.destination.name"] != s.attributes["messaging.destination.name"]
            else:
                # a process span continues the send span of the message it processes
                assert parent.kind == "PRODUCER", (s.name, parent.name)
                assert parent.attributes["messaging.destination.name"] == s.attributes["messaging.destination.name"]


def check_messaging(span: ReceivedSpan, app_id: str) -> None:
    a = span.attributes
    assert a["messaging.system"] == "kafka"
    if span.kind == "CONSUMER":
        assert span.name == f"process {a['messaging.destination.name']}"
        assert a["messaging.operation.name"] == "process" and a["messaging.operation.type"] == "process"
        assert a["messaging.consumer.group.name"] == app_id
        assert isinstance(a["messaging.destination.partition.id"], str)
        assert isinstance(a["messaging.kafka.offset"], int) and a["messaging.kafka.offset"] >= 0
    else:
        assert span.name == f"send {a['messaging.destination.name']}"
        assert a["messaging.operation.type"] == "send"


@pytest.fixture
def receiver():
    # Requested before ``start_worker`` so that it outlives the worker (teardown is LIFO).
    with OTLPReceiver() as rx:
        yield rx


def worker_env(rx: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "MANTIS_BATCH_WITHIN": "0.02",
    }


async def test_one_reading_one_trace_across_every_stage(broker, receiver: OTLPReceiver, start_worker) -> None:
    worker = await start_worker(env=worker_env(receiver))
    asset = f"E2E-TRACE-{secrets.token_hex(3)}"

    # 1. a Kafka producer's reading with a known, sampled traceparent
    trace_id, parent = new_ids()
    await produce(
        broker.bootstrap, names.READINGS, [orjson.dumps(reading(asset))],
        headers=[[("traceparent", f"00-{trace_id}-{parent}-01".encode()), ("tracestate", b"plant=north")]],
    )
    spans = await wait_trace(receiver, trace_id, has_services(PIPELINE))
    check_parenting(spans, parent)
    first = [s for s in spans if s.parent_span_id == parent]
    assert [(s.service, s.name, s.kind) for s in first] == [("mantis-preprocessing", "process mantis.readings", "CONSUMER")]
    for s in spans:
        assert s.resource["service.name"] == s.service
        if s.kind in ("CONSUMER", "PRODUCER"):
            check_messaging(s, worker.app_id)
    by_service = {s.service for s in spans}
    assert PIPELINE <= by_service
    # one span per stage per record, each stage's per-batch compute span (the reading is its batch's first
    # sampled record), and nothing else: no per-record child spans, no send spans between stages
    names_seen = sorted(s.name for s in spans)
    assert {"validate_reading", "compute_fft", "predict_anomaly", "predict_rul"} <= set(names_seen), names_seen
    per_record = [s for s in spans if s.kind == "CONSUMER"]
    compute = [s for s in spans if s.kind == "INTERNAL"]
    assert len(per_record) + len(compute) == len(spans), names_seen
    ids = {s.span_id: s for s in spans}
    # framing continues preprocessing's process span: one process span per service, and the
    # feature stage's record is its child
    assert sorted(s.service for s in per_record) == sorted(set(s.service for s in per_record)), names_seen
    (features,) = [s for s in per_record if s.service == "mantis-feature-extraction"]
    assert ids[features.parent_span_id].name == "process mantis.readings"
    for c in compute:  # a compute span is the child of its stage's process span of this reading
        assert ids[c.parent_span_id].kind == "CONSUMER" and ids[c.parent_span_id].service == c.service, c.name
    anomaly = next(s for s in per_record if s.service == "mantis-anomaly-detection")
    assert anomaly.attributes["asset.id"] == asset and "model.name" in anomaly.attributes
    assert "prediction.score" in anomaly.attributes
    fft = next(s for s in compute if s.name == "compute_fft")
    assert fft.service == "mantis-feature-extraction"

    # 2. over HTTP: the trace starts at the ingestion service
    trace_id2, parent2 = new_ids()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{worker.web_url}/api/v1/ingest",
            data=orjson.dumps(reading(asset, 1)),
            headers={"traceparent": f"00-{trace_id2}-{parent2}-01", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 202, await response.text()
    spans2 = await wait_trace(receiver, trace_id2, has_services(PIPELINE | {"mantis-ingestion"}))
    check_parenting(spans2, parent2)
    (server,) = [s for s in spans2 if s.kind == "SERVER"]
    assert server.name == "POST /api/v1/ingest" and server.parent_span_id == parent2
    assert server.service == "mantis-ingestion" and server.attributes["http.request.method"] == "POST"
    send = next(s for s in spans2 if s.name == "send mantis.readings")
    assert send.parent_span_id == server.span_id and send.service == "mantis-ingestion"


async def test_bad_reading_error_span_and_dead_letter_same_trace(broker, receiver: OTLPReceiver, start_worker) -> None:
    await start_worker(env=worker_env(receiver))
    trace_id, parent = new_ids()
    marker = secrets.token_hex(4).encode()
    bad = b"{this is not json " + marker
    await produce(broker.bootstrap, names.READINGS, [bad], headers=[[("traceparent", f"00-{trace_id}-{parent}-01".encode())]])

    def ours(found):
        return any(marker.decode() in v.get("payload", "") for v, _h, _r in found[names.DEAD_LETTERS])

    found = await collect(broker.bootstrap, (names.DEAD_LETTERS,), ours, timeout=90)
    _value, headers, _record = next(item for item in found[names.DEAD_LETTERS] if marker.decode() in item[0].get("payload", ""))
    tp = headers["traceparent"].decode().split("-")
    assert tp[1] == trace_id and int(tp[3], 16) & 1  # the dead letter carries the reading's trace, sampled

    spans = await wait_trace(
        receiver, trace_id, lambda ss: any(s.status == "ERROR" for s in ss) and any(s.name == "send mantis.dead-letters" for s in ss)
    )
    error = next(s for s in spans if s.status == "ERROR" and s.kind == "CONSUMER")
    assert error.service == "mantis-preprocessing" and error.name == "process mantis.readings"
    assert error.parent_span_id == parent
    assert error.attributes.get("error.type")
    dead_send = next(s for s in spans if s.name == "send mantis.dead-letters")
    assert dead_send.parent_span_id in {s.span_id for s in spans}
    assert tp[2] == dead_send.span_id
