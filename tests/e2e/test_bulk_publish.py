"""Public records published in bulk keep the contract: one Kafka record each, keyed by asset, own trace headers.

Why: the stages publish ``mantis.features`` / ``mantis.anomalies`` / ``mantis.rul``
as one produce batch per partition (``agents._publish``), not one ``Topic.send``
per record.  Users and the sinks still read one record per message, on its
asset's partition, with the trace context of the reading it came from; and a
record the producer refuses is that record's dead letter, the rest of its batch
published.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from unittest import mock

import faust
import orjson
import pytest
from aiokafka import AIOKafkaProducer

import mantis_stream  # noqa: F401  (registers the agents)
from mantis_stream import topics as names
from mantis_stream.agents._batch import partition_for
from mantis_stream.agents.anomaly import anomaly

from conftest import collect, produce

pytestmark = pytest.mark.broker

ASSETS = ("BULK-A", "BULK-B", "BULK-C")
PER_ASSET = 40


def trace_id(asset: int, i: int) -> str:
    return f"{asset + 1:08x}{i + 1:024x}"


async def test_each_public_record_is_one_kafka_record_keyed_by_asset_with_its_readings_trace(broker, start_worker) -> None:
    prefix = uuid.uuid4().hex[:6]
    assets = [f"{prefix}-{a}" for a in ASSETS]
    values, headers, traces = [], [], {}
    for a, asset in enumerate(assets):
        for i in range(PER_ASSET):
            values.append(orjson.dumps({"asset_id": asset, "sensor_id": "TMP-1", "ts": 1_790_000_000 + i, "value": 60.0 + i % 3}))
            headers.append([("traceparent", f"00-{trace_id(a, i)}-{i + 1:016x}-01".encode())])
            traces[trace_id(a, i)] = asset
    await start_worker()
    await produce(broker.bootstrap, names.READINGS, values, headers)
    expected = len(values)  # a scalar window (hence features and a score) per reading
    mine = lambda v: str(v.get("asset_id", "")).startswith(prefix)  # noqa: E731
    found = await collect(broker.bootstrap, (names.FEATURES, names.ANOMALIES), lambda f: all(
        sum(mine(v) for v, _, _ in f[t]) >= expected for t in (names.FEATURES, names.ANOMALIES)), timeout=120)
    for topic in (names.FEATURES, names.ANOMALIES):
        records = [(v, h, r) for v, h, r in found[topic] if mine(v)]
        assert len(records) == expected, f"{topic}: {len(records)} Kafka records for {expected} public records"
        assert len({(v["asset_id"], v["sensor_id"], v["ts"]) for v, _, _ in records}) == expected
        for value, hdrs, record in records:
            assert "items" not in value and value["sensor_id"] == "TMP-1"  # one record, not a batch
            assert record.key == value["asset_id"].encode()
            assert record.partition == partition_for(value["asset_id"], 4)
            carried = hdrs["traceparent"].decode().split("-")[1]
            assert traces[carried] == value["asset_id"], f"{topic}: a record carries another asset's trace"
        assert len({h["traceparent"] for _, h, _ in records}) == expected, f"{topic}: records share a trace context"


def feature_record(i: int, asset: str) -> dict[str, Any]:
    return {"asset_id": asset, "sensor_id": "T", "ts": f"2026-11-29T10:00:0{i}Z", "epoch": float(i),
            "features": {"mean": float(i), "std": 1.0}}


@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")  # a setting lowered for this test
async def test_a_record_the_producer_refuses_is_its_dead_letter_and_the_rest_of_the_batch_is_published(
        broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The anomaly stage in-process, publishing through a real producer to the broker; one record is too large."""
    from mantis_stream.app import app

    app.finalize()
    app.flow_control.resume()
    prefix = uuid.uuid4().hex[:6]
    huge = f"{prefix}-" + "H" * 4000  # an asset id that makes its anomaly record larger than the producer accepts
    records = [feature_record(0, f"{prefix}-P1"), feature_record(1, huge), feature_record(2, f"{prefix}-P2")]
    traced = [{"value": r, "trace": {"traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01"}} for i, r in enumerate(records)]
    monkeypatch.setattr(app.conf, "producer_max_request_size", 2000)
    sent: list[tuple[str, dict[str, Any]]] = []

    async def capture(self: faust.Topic, **kwargs: Any) -> None:  # Faust's own producer is not running here
        sent.append((self.get_topic_name(), kwargs))

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        with mock.patch.object(faust.Topic, "send", capture), \
                mock.patch("mantis_stream.agents._publish._kafka_producer", lambda: producer):
            async with anomaly.test_context() as agent:
                await agent.put(orjson.dumps({"items": traced}))
                for _ in range(200):  # the batch is done once its internal output is sent, after the public ones
                    if any(t == names.ASSESSMENTS for t, _ in sent):
                        break
                    await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    [letter] = [kw["value"] for t, kw in sent if t == names.DEAD_LETTERS]
    assert letter["stage"] == "anomaly-detection" and letter["source"]["index"] == 1
    assert letter["error"]["type"] == "ProducerSendError" and "MessageSizeTooLargeError" in letter["error"]["message"]
    [(_, out)] = [(t, kw) for t, kw in sent if t == names.ASSESSMENTS]
    assert [i["value"]["asset_id"] for i in orjson.loads(out["value"])["items"]] == [f"{prefix}-P1", f"{prefix}-P2"]
    found = await collect(broker.bootstrap, (names.ANOMALIES,),
                          lambda f: sum(str(v["asset_id"]).startswith(prefix) for v, _, _ in f[names.ANOMALIES]) >= 2)
    published = sorted((v["asset_id"], h["traceparent"].decode().split("-")[1], r.key)
                       for v, h, r in found[names.ANOMALIES] if str(v["asset_id"]).startswith(prefix))
    assert published == [(f"{prefix}-P1", f"{1:032x}", f"{prefix}-P1".encode()),
                         (f"{prefix}-P2", f"{3:032x}", f"{prefix}-P2".encode())]
