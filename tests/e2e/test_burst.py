"""One burst of hostile input among good readings on one partition: nothing lost, nothing crashes.

Why: a 5.8 MB reading once made a dead letter the producer refused; the agent
crashed and the two bad readings after it were lost without a trace.  Here a
worker with a small input limit (``MANTIS_MAX_MESSAGE_BYTES=4096``, which also
used to crash the first model checkpoint) gets readings of 0.5x to 20x that
limit, non-UTF-8 bytes, UTF-16, NaN, Infinity, a 10,000-deep array, an empty
message, a null value, a null key and every file of the fuzz corpus
(``tests/fuzz``), mixed with good readings on the same partition.  Every input
must end as its outputs (a feature and an anomaly score) or as exactly one dead
letter that fits the producer, with no agent restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from mantis_stream import limits
from mantis_stream import topics as names

from conftest import collect

LIMIT = 4096
PAYLOAD_BYTES = 16_384
FRAME = 64
FUZZ = Path(__file__).parents[1] / "fuzz"


def sized(asset: str, sensor: str, size: int) -> bytes:
    """A valid scalar reading of exactly ``size`` bytes (padded in ``meta``)."""
    base = {"asset_id": asset, "sensor_id": sensor, "ts": 1_790_000_000, "value": 1.0, "meta": {"pad": ""}}
    raw = orjson.dumps(base)
    base["meta"]["pad"] = "x" * (size - len(raw))
    raw = orjson.dumps(base)
    assert len(raw) == size
    return raw


def burst(tag: str) -> tuple[list[tuple[str, bytes | None, bytes | None]], dict[str, tuple[str, str]]]:
    """(name, key, value) in send order, and the good ones' (asset, sensor)."""
    good: dict[str, tuple[str, str]] = {}
    inputs: list[tuple[str, bytes | None, bytes | None]] = []

    def add_good(name: str, asset: str, sensor: str, value: bytes, key: bytes | None = b"k") -> None:
        good[name] = (asset, sensor)
        inputs.append((name, key, value))

    def scalar(i: int) -> tuple[str, str, bytes]:
        asset, sensor = f"{tag}-G", f"S{i}"
        return asset, sensor, orjson.dumps({"asset_id": asset, "sensor_id": sensor, "ts": 1_790_000_000 + i, "value": 20.0 + i})

    bad = [
        ("2x", sized(f"{tag}-B", "2x", 2 * LIMIT)),
        ("5x", sized(f"{tag}-B", "5x", 5 * LIMIT)),
        ("20x", sized(f"{tag}-B", "20x", 20 * LIMIT)),
        ("not utf-8", b"\xff\xfe\x00garbage\x80"),
        ("utf-16", orjson.dumps({"asset_id": f"{tag}-B", "sensor_id": "U", "ts": 1_790_000_000, "value": 1}).decode().encode("utf-16")),
        ("NaN", b'{"asset_id":"%s-B","sensor_id":"N","ts":1790000000,"value":NaN}' % tag.encode()),
        ("Infinity", b'{"asset_id":"%s-B","sensor_id":"I","ts":1790000000,"value":Infinity}' % tag.encode()),
        ("10000-deep", b"[" * 10_000 + b"]" * 10_000),
        ("empty", b""),
        ("null value", None),
    ] + [(p.name, p.read_bytes()) for p in sorted(FUZZ.glob("bad-*"))]
    i = 0
    for name, value in bad:
        asset, sensor, raw = scalar(i)
        add_good(f"good {i}", asset, sensor, raw)
        inputs.append((name, b"k", value))
        i += 1
    add_good("0.5x", f"{tag}-H", "half", sized(f"{tag}-H", "half", LIMIT // 2))
    add_good("1x", f"{tag}-H", "one", sized(f"{tag}-H", "one", LIMIT))
    asset, sensor, raw = scalar(i)
    add_good("null key", asset, sensor, raw, key=None)
    wave = {"asset_id": f"{tag}-W", "sensor_id": "VIB", "ts": 1_790_000_000,
            "values": [math.sin(n / 3) for n in range(FRAME)], "sample_rate_hz": 1000.0}
    add_good("waveform", f"{tag}-W", "VIB", orjson.dumps(wave))
    for path in sorted(FUZZ.glob("ok-*")):
        reading = orjson.loads(path.read_bytes())
        if "values" in reading:  # a chunk shorter than a frame has no output of its own
            continue
        reading["asset_id"] = f"{tag}-{path.stem}"
        add_good(path.name, reading["asset_id"], reading["sensor_id"], orjson.dumps(reading))
    return inputs, good


async def send_to_partition_0(bootstrap: str, inputs: list[tuple[str, bytes | None, bytes | None]]) -> dict[str, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(names.READINGS, value, key=key, partition=0) for _, key, value in inputs]
        return {name: (await f).offset for (name, _, _), f in zip(inputs, futures)}
    finally:
        await producer.stop()


async def largest_record(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return max((len(r.value or b"") for records in batches.values() for r in records), default=0)
    finally:
        await consumer.stop()


async def test_a_hostile_burst_on_one_partition_loses_nothing_and_crashes_nothing(broker, start_worker) -> None:
    worker = await start_worker(env={
        "MANTIS_MAX_MESSAGE_BYTES": str(LIMIT), "MANTIS_DEAD_LETTER_PAYLOAD_BYTES": str(PAYLOAD_BYTES),
        "MANTIS_FRAME_SIZE": str(FRAME),
    })
    tag = f"BU{uuid.uuid4().hex[:6]}"
    inputs, good = burst(tag)
    offsets = await send_to_partition_0(broker.bootstrap, inputs)
    bad_offsets = {offsets[name]: name for name, _, _ in inputs if name not in good}
    by_value = {name: value for name, _, value in inputs}

    def letters_of(found: dict) -> list[dict]:
        return [v for v, _, r in found[names.DEAD_LETTERS]
                if v["source"]["topic"] == names.READINGS and v["source"]["partition"] == 0
                and v["source"]["offset"] in bad_offsets]

    def outputs(found: dict, topic: str) -> set[tuple[str, str]]:
        return {(v["asset_id"], v["sensor_id"]) for v, _, _ in found[topic]}

    def done(found: dict) -> bool:
        return (set(good.values()) <= outputs(found, names.ANOMALIES)
                and {v["source"]["offset"] for v in letters_of(found)} == set(bad_offsets))

    topics = (names.FEATURES, names.ANOMALIES, names.DEAD_LETTERS)
    await collect(broker.bootstrap, topics, done, timeout=120)
    await asyncio.sleep(3)  # room for a duplicate letter or a late crash to show
    found = await collect(broker.bootstrap, topics, done, timeout=60)

    log = worker.log()
    assert worker.proc.poll() is None
    assert "Restarting dead" not in log and "Crashed reason" not in log, log[-4000:]
    assert "restarted after a crash" not in log
    # good readings: every one has its feature and its score, none is a dead letter
    assert set(good.values()) <= outputs(found, names.FEATURES)
    good_offsets = {offsets[name] for name in good}
    assert not [v for v, _, _ in found[names.DEAD_LETTERS] if v["source"]["topic"] == names.READINGS
                and v["source"]["partition"] == 0 and v["source"]["offset"] in good_offsets]
    # bad input: exactly one dead letter each, naming its field, small enough for the producer
    letters = letters_of(found)
    assert sorted(v["source"]["offset"] for v in letters) == sorted(bad_offsets), "one dead letter per bad input"
    bound = limits.dead_letter_bytes(PAYLOAD_BYTES)
    for _value, _headers, record in found[names.DEAD_LETTERS]:
        assert len(record.value) + sum(len(k) + len(v or b"") for k, v in record.headers) <= bound
    for letter in letters:
        name = bad_offsets[letter["source"]["offset"]]
        raw = by_value[name] or b""
        assert letter["stage"] == "preprocessing" and letter["error"]["field"], (name, letter["error"])
        if not name.startswith("bad-"):
            assert letter["error"]["field"] == "payload", (name, letter["error"])
        assert letter["payload_bytes"] == len(raw) and letter["payload_sha256"] == hashlib.sha256(raw).hexdigest(), name
        assert letter["payload_truncated"] is (len(raw) > PAYLOAD_BYTES), name
    over = {bad_offsets[v["source"]["offset"]]: v["error"]["message"] for v in letters}
    for name in ("2x", "5x", "20x", "10000-deep"):
        assert f"over the limit of {LIMIT}" in over[name], over[name]
    # the worker's own records are not capped by the input limit: model checkpoints above 4096 bytes were written
    assert await largest_record(broker.bootstrap, f"{worker.app_id}-anomaly-detectors-changelog") > LIMIT


async def test_a_reading_larger_than_the_fetch_size_neither_stalls_its_partition_nor_hides_the_next(broker, start_worker) -> None:
    """The field report's sequence, at the default limits: a 5.8 MB reading, then a non-UTF-8 one and a bare Infinity.

    5.8 MB is over the consumer's fetch size per partition (``limits.consumer_max_fetch_size``);
    the broker still returns it whole (Kafka >= 0.10.1, Tansu), alone.
    """
    from mantis_stream.settings import Settings

    worker = await start_worker()
    tag = f"BIG{uuid.uuid4().hex[:6]}"
    huge = b'{"asset_id":"%s","sensor_id":"S","ts":1790000000,"sample_rate_hz":1,"values":[' % tag.encode() + b"0," * 2_900_000 + b"0]}"
    assert len(huge) > limits.consumer_max_fetch_size(Settings())
    after = [b"\xff\xfe\x00garbage", b'{"asset_id":"%s","sensor_id":"S","ts":1790000000,"value":Infinity}' % tag.encode()]
    good = [orjson.dumps({"asset_id": tag, "sensor_id": f"OK{i}", "ts": 1_790_000_000 + i, "value": 1.0}) for i in range(3)]
    inputs = [("huge", None, huge), ("not utf-8", None, after[0]), ("Infinity", None, after[1])]
    inputs += [(f"good {i}", None, v) for i, v in enumerate(good)]
    offsets = await send_to_partition_0(broker.bootstrap, inputs)
    bad = {offsets["huge"], offsets["not utf-8"], offsets["Infinity"]}

    def done(found: dict) -> bool:
        letters = {v["source"]["offset"] for v, _, _ in found[names.DEAD_LETTERS]
                   if v["source"]["topic"] == names.READINGS and v["source"]["partition"] == 0}
        return bad <= letters and len([v for v, _, _ in found[names.ANOMALIES] if v["asset_id"] == tag]) >= 3

    found = await collect(broker.bootstrap, (names.ANOMALIES, names.DEAD_LETTERS), done, timeout=120)
    [letter] = [v for v, _, _ in found[names.DEAD_LETTERS] if v["source"]["offset"] == offsets["huge"]
                and v["source"]["topic"] == names.READINGS and v["source"]["partition"] == 0]
    assert letter["payload_bytes"] == len(huge) and letter["payload_truncated"] is True
    assert len(letter["payload"]) == 65_536 and letter["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    assert "Restarting dead" not in worker.log() and worker.proc.poll() is None
