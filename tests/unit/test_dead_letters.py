"""Dead letters always fit the producer, and one record's failure never stops its batch.

Why: the dead letter of a 5.8 MB reading once carried it whole, the producer
refused it, the agent crashed and the readings after it were lost.  These tests
run the real agents (``test_context``) with ``Topic.send`` captured, or made to
fail the way the producer fails.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import faust
import orjson
import pytest
from faust.exceptions import ProducerSendError

import mantis_stream  # noqa: F401  (registers the agents)
from mantis_stream import limits
from mantis_stream import topics as names
from mantis_stream.agents.anomaly import anomaly
from mantis_stream.agents.preprocess import preprocess
from mantis_stream.app import settings
from mantis_stream.errors import MAX_HEADER_BYTES, payload_fields
from mantis_stream.settings import Settings

from conftest import CapturingProducer

LIMIT = settings.dead_letter_payload_bytes


def letter_size(kw: dict[str, Any]) -> int:
    """Bytes the producer is handed for one dead letter: value, key and headers."""
    headers = sum(len(k.encode()) + len(v or b"") for k, v in kw.get("headers") or [])
    return len(orjson.dumps(kw["value"])) + len(kw.get("key") or b"") + headers


def feature_record(i: int, asset: str = "P-1") -> dict[str, Any]:
    return {"asset_id": asset, "sensor_id": "T", "ts": f"2026-11-29T10:00:0{i}Z", "epoch": float(i),
            "features": {"mean": float(i), "std": 1.0}}


@pytest.fixture
def refusing() -> Iterator[tuple[list[tuple[str, dict[str, Any]]], list[tuple[str | None, bytes]]]]:
    """``Topic.send`` and the bulk public records captured; a send (or a record) whose value holds a listed
    marker (on the listed topic, or any) is refused as the producer (or broker) refuses an oversized message."""
    from mantis_stream.app import app

    app.finalize()
    app.flow_control.resume()
    sent: list[tuple[str, dict[str, Any]]] = []
    markers: list[tuple[str | None, bytes]] = []

    async def send(self: faust.Topic, **kwargs: Any) -> None:
        value = kwargs.get("value")
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        if any(m in raw and topic in (None, self.get_topic_name()) for topic, m in markers):
            raise ProducerSendError("Error while sending: MessageSizeTooLargeError()")
        sent.append((self.get_topic_name(), kwargs))

    def refuses(topic: str, raw: bytes) -> bool:
        return any(m in raw and t in (None, topic) for t, m in markers)

    producer = CapturingProducer(sent, refuses)
    with mock.patch.object(faust.Topic, "send", send), \
            mock.patch("mantis_stream.agents._publish._kafka_producer", lambda: producer):
        yield sent, markers


def test_payload_is_kept_up_to_the_limit_with_its_length_and_digest() -> None:
    raw = b'{"asset_id":"A","values":[' + b"1," * 100_000 + b"1]}"
    fields = payload_fields(raw, 1000)
    assert fields["payload"] == raw[:1000].decode() and fields["payload_encoding"] == "utf-8"
    assert fields["payload_bytes"] == len(raw) and fields["payload_truncated"] is True
    assert fields["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    # a cut through a multi-byte character drops the partial character, the rest stays text
    text = ("é" * 600).encode()
    fields = payload_fields(text, 1001)
    assert fields["payload"] == "é" * 500 and fields["payload_encoding"] == "utf-8"
    # not UTF-8: base64 of the kept bytes; small: whole, not truncated
    fields = payload_fields(b"\xff\xfe" + b"x" * 50, 1000)
    assert base64.b64decode(fields["payload"]) == b"\xff\xfe" + b"x" * 50
    assert fields["payload_encoding"] == "base64" and fields["payload_truncated"] is False


async def test_an_oversized_reading_is_a_bounded_dead_letter_and_the_next_readings_go_on(refusing) -> None:
    sent, _ = refusing
    big = b'{"asset_id":"BIG","sensor_id":"S","ts":1790000000,"sample_rate_hz":1,"values":[' + b"0," * 2_900_000 + b"0]}"
    utf16 = '{"asset_id":"U16","sensor_id":"S","ts":1790000000,"value":1}'.encode("utf-16")
    good = orjson.dumps({"asset_id": "OK-1", "sensor_id": "S", "ts": 1_790_000_000, "value": 1.0})
    async with preprocess.test_context() as agent:
        for value in (big, b"\xff\xfe\x00garbage", utf16, good):
            await agent.put(value)
    letters = [kw for t, kw in sent if t == names.DEAD_LETTERS]
    assert len(letters) == 3
    first = letters[0]
    assert first["value"]["error"]["field"] == "payload" and "over the limit" in first["value"]["error"]["message"]
    assert first["value"]["payload_bytes"] == len(big) and first["value"]["payload_truncated"] is True
    assert first["value"]["payload_sha256"] == hashlib.sha256(big).hexdigest()
    assert len(first["value"]["payload"]) == LIMIT and big.startswith(first["value"]["payload"].encode())
    for kw in letters:
        assert letter_size(kw) <= limits.dead_letter_bytes(LIMIT) <= limits.producer_max_request_size(settings)
    [(_, keyed)] = [(t, kw) for t, kw in sent if t == names.READINGS_KEYED]
    assert orjson.loads(keyed["value"])["items"][0]["value"]["asset_id"] == "OK-1"


async def test_json_escaping_and_huge_headers_cannot_grow_a_dead_letter(refusing) -> None:
    sent, _ = refusing
    controls = b"\x01" * (3 * LIMIT)  # valid UTF-8, but six bytes each once JSON-escaped
    headers = [(f"h{i}", b"v" * 4096) for i in range(64)]  # 256 KiB of headers
    async with preprocess.test_context() as agent:
        await agent.put(controls, headers=headers, key=b"k" * 100_000)
    [kw] = [kw for t, kw in sent if t == names.DEAD_LETTERS]
    value = kw["value"]
    assert value["payload_encoding"] == "base64" and base64.b64decode(value["payload"]) == controls[:LIMIT]
    assert sum(len(k) + len(v) for k, v in kw["headers"]) <= MAX_HEADER_BYTES
    assert value["headers_dropped"] == 64 - len(kw["headers"]) > 0
    assert letter_size(kw) <= limits.dead_letter_bytes(LIMIT)


async def test_a_refused_output_is_the_dead_letter_of_its_record_and_the_batch_goes_on(refusing) -> None:
    sent, markers = refusing
    markers.append((None, b'"P-BAD"'))
    batch = orjson.dumps({"items": [{"value": feature_record(0)}, {"value": feature_record(1, "P-BAD")},
                                    {"value": feature_record(2)}]})
    async with anomaly.test_context() as agent:
        await agent.put(batch)
    [letter] = [kw["value"] for t, kw in sent if t == names.DEAD_LETTERS]
    assert letter["stage"] == "anomaly-detection" and letter["source"]["index"] == 1
    assert letter["error"]["type"] == "ProducerSendError"
    assert [kw["value"]["ts"][-3:] for t, kw in sent if t == names.ANOMALIES] == ["00Z", "02Z"]
    [(_, out)] = [(t, kw) for t, kw in sent if t == names.ASSESSMENTS]
    assert [i["value"]["ts"][-3:] for i in orjson.loads(out["value"])["items"]] == ["00Z", "02Z"]


async def test_a_refused_batch_message_is_split_and_only_its_bad_record_dead_lettered(refusing) -> None:
    sent, markers = refusing
    markers.append((names.ASSESSMENTS, b'10:00:01Z'))  # the batched output of record 1, not its public anomaly
    batch = orjson.dumps({"items": [{"value": feature_record(i)} for i in range(3)]})
    async with anomaly.test_context() as agent:
        await agent.put(batch)
    letters = [kw["value"] for t, kw in sent if t == names.DEAD_LETTERS]
    assert [v["source"]["index"] for v in letters] == [1]
    records = [i["value"]["ts"][-3:] for t, kw in sent if t == names.ASSESSMENTS for i in orjson.loads(kw["value"])["items"]]
    assert records == ["00Z", "02Z"]
    assert len([t for t, _ in sent if t == names.ANOMALIES]) == 3  # the public outputs all went


async def test_a_dead_letter_the_producer_refuses_is_sent_again_without_its_payload(refusing) -> None:
    sent, markers = refusing
    markers.append((names.DEAD_LETTERS, b"REFUSE-ME"))
    async with preprocess.test_context() as agent:
        await agent.put(b'{"asset_id": REFUSE-ME}')
    [letter] = [kw for t, kw in sent if t == names.DEAD_LETTERS]
    assert letter["value"]["payload"] == "" and letter["value"]["payload_truncated"] is True
    assert letter["value"]["payload_bytes"] == len(b'{"asset_id": REFUSE-ME}') and "key" not in letter


def test_the_input_limit_does_not_cap_what_the_worker_writes() -> None:
    small = Settings(max_message_bytes=4096)
    limits.check(small)
    assert limits.producer_max_request_size(small) >= limits.WORKER_RECORD_BYTES
    assert limits.consumer_max_fetch_size(small) >= limits.WORKER_RECORD_BYTES


@pytest.mark.parametrize(("changes", "name"), [
    ({"max_message_bytes": 100}, "MANTIS_MAX_MESSAGE_BYTES"),
    ({"dead_letter_payload_bytes": -1}, "MANTIS_DEAD_LETTER_PAYLOAD_BYTES"),
    ({"dead_letter_payload_bytes": 2_000_000}, "MANTIS_DEAD_LETTER_PAYLOAD_BYTES"),
])
def test_sizes_the_worker_cannot_honour_are_refused_in_one_line(changes: dict[str, int], name: str) -> None:
    with pytest.raises(SystemExit) as info:
        limits.check(Settings(**changes))
    message = str(info.value)
    assert message.startswith(f"mantis-stream: {name}=") and "\n" not in message
