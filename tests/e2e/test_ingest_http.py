"""Hostile input through the worker: the HTTP ingest and the Kafka input.

Why: anything a plant or an attacker sends must end as a dead letter or a clear
4xx naming the reason, never as a crash, and memory stays bounded by
``MANTIS_MAX_MESSAGE_BYTES``.  The corpus in ``tests/fuzz`` holds one raw message
per file: ``bad-*`` are rejected, ``ok-*`` accepted (the parser alone:
``tests/unit/test_reading_hostile.py``).
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest

from mantis_stream import topics as names
from mantis_stream.errors import payload_text

from conftest import collect, produce, spawn_worker
from test_scaleout import drain

FUZZ = Path(__file__).parents[1] / "fuzz"
CORPUS = sorted(p for p in FUZZ.iterdir() if p.name.startswith(("bad-", "ok-")))
MAX_BYTES = 65_536
MAX_SAMPLES = 4096
TOKEN = "s3cret-ingest-token"

# ----------------------------------------------------------------- HTTP ingest


@pytest.fixture(scope="module")
def ingest_worker(broker, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One worker for the module: token required, 64 KiB message limit."""
    worker = spawn_worker(broker.url, tmp_path_factory.mktemp("ingest") / "worker.log", env={
        "MANTIS_INGEST_TOKEN": TOKEN, "MANTIS_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        "MANTIS_MAX_WAVEFORM_SAMPLES": str(MAX_SAMPLES), "MANTIS_FRAME_SIZE": "256",
    })
    deadline = time.monotonic() + 90
    while "Ready" not in worker.log():
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            raise RuntimeError(f"worker not ready:\n{worker.log()[-3000:]}")
        time.sleep(0.3)
    yield worker
    worker.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def post(url: str, body: bytes, headers: dict | None = None, **kw) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url + "/api/v1/ingest", data=body, headers=AUTH if headers is None else headers, **kw) as resp:
            text = await resp.read()
            try:
                return resp.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return resp.status, {"raw": text[:200].decode(errors="replace")}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_health_answers(ingest_worker) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(ingest_worker.web_url + "/health") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "ok" and "preprocess" in " ".join(body["agents"])


async def test_bearer_token_is_required(ingest_worker) -> None:  # type: ignore[no-untyped-def]
    reading = orjson.dumps({"asset_id": "TOK", "sensor_id": "S", "ts": 1_790_000_000, "value": 1.0})
    assert (await post(ingest_worker.web_url, reading, headers={"Content-Type": "application/json"}))[0] == 401
    for bad in ("Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"bearer  {TOKEN}", TOKEN, "Bearer é"):
        status, body = await post(ingest_worker.web_url, reading, headers={"Authorization": bad})
        assert status == 401 and body.get("error"), bad
    status, body = await post(ingest_worker.web_url, reading)
    assert status == 202 and body == {"accepted": 1}


async def test_oversized_bodies_get_413_and_memory_stays_bounded(ingest_worker) -> None:  # type: ignore[no-untyped-def]
    before = rss_kib(ingest_worker.proc.pid)
    big = b'{"asset_id":"BIG","sensor_id":"S","ts":1790000000,"sample_rate_hz":1,"values":[' + b"0," * 2_000_000 + b"0]}"
    for _ in range(5):  # with Content-Length: refused before reading
        status, body = await post(ingest_worker.web_url, big)
        assert status == 413 and str(MAX_BYTES) in body["error"]

    async def chunked():  # no Content-Length: refused once the limit is passed
        for _ in range(200):
            yield b"0," * 32_768

    for _ in range(3):
        try:
            status, body = await post(ingest_worker.web_url, chunked())
        except aiohttp.ClientError:  # the server may close the connection mid-upload: still refused
            continue
        assert status == 413
    assert ingest_worker.proc.poll() is None
    grown = rss_kib(ingest_worker.proc.pid) - before
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB over oversized requests"


async def test_hostile_bodies_get_400_with_a_reason(ingest_worker) -> None:  # type: ignore[no-untyped-def]
    for path in CORPUS:
        status, body = await post(ingest_worker.web_url, path.read_bytes())
        if path.name.startswith("ok-"):
            assert status == 202, (path.name, body)
        else:
            assert status == 400, (path.name, status, body)
            assert body["error"] and body["field"], (path.name, body)
    # Arrays: the failing item is named; over the batch limit is refused.
    ok = {"asset_id": "ARR", "sensor_id": "S", "ts": 1_790_000_000, "value": 1.0}
    status, body = await post(ingest_worker.web_url, orjson.dumps([ok, {**ok, "value": "x"}]))
    assert status == 400 and body["field"] == "[1].value"
    status, body = await post(ingest_worker.web_url, b"[]")
    assert status == 400 and body["field"] == "body"
    status, body = await post(ingest_worker.web_url, orjson.dumps([ok] * 10_001)[:MAX_BYTES - 1] + b"]")
    assert status == 400
    assert ingest_worker.proc.poll() is None


async def test_ingested_readings_flow_and_hostile_kafka_input_becomes_dead_letters(broker, ingest_worker) -> None:  # type: ignore[no-untyped-def]
    """HTTP-ingested chunks, out of order and duplicated, all end as frames or dead letters.

    And every corpus file produced straight to Kafka ends as a dead letter (or a feature when ok).
    """
    asset = f"HTTP{uuid.uuid4().hex[:6]}"
    rate = 1000.0
    chunks = [{"asset_id": asset, "sensor_id": "VIB", "ts": 1_790_000_000 + i * 128 / rate,
               "values": [math.sin(i * 128 + n) for n in range(128)], "sample_rate_hz": rate} for i in range(8)]
    # In order: 8 chunks of 128 = 4 frames of 256.
    status, body = await post(ingest_worker.web_url, orjson.dumps(chunks))
    assert status == 202 and body["accepted"] == 8
    # A duplicate chunk and an out-of-order one, each alone.
    for item in (chunks[3], chunks[1]):
        status, _ = await post(ingest_worker.web_url, orjson.dumps(item))
        assert status == 202
    # An extreme waveform (finite, but its energy overflows) must not poison the sensor's models.
    extreme = {"asset_id": asset, "sensor_id": "XTR", "ts": 1_790_000_000, "values": [1e308, -1e308] * 128, "sample_rate_hz": rate}
    normal = [{"asset_id": asset, "sensor_id": "XTR", "ts": 1_790_000_001 + i, "values": [math.sin(n) for n in range(256)], "sample_rate_hz": rate}
              for i in range(3)]
    status, _ = await post(ingest_worker.web_url, orjson.dumps([extreme, *normal]))
    assert status == 202

    tag = f"KZ{uuid.uuid4().hex[:6]}"
    corpus = [p.read_bytes().replace(b'"FZ"', f'"{tag}"'.encode()) for p in CORPUS]
    await produce(broker.bootstrap, names.READINGS, corpus)
    bad_payloads = {payload_text(raw) for p, raw in zip(CORPUS, corpus) if p.name.startswith("bad-")}

    def done(found: dict) -> bool:
        letters = {v["payload"] for v, _, _ in found[names.DEAD_LETTERS]} & bad_payloads
        vib = [v for v, _, _ in found[names.FEATURES] if v["asset_id"] == asset and v["sensor_id"] == "VIB"]
        xtr = [v for v, _, _ in found[names.ANOMALIES] if v["asset_id"] == asset and v["sensor_id"] == "XTR"]
        xtr_letters = [v for v, _, _ in found[names.DEAD_LETTERS] if asset in v["payload"] and "XTR" in v["payload"]]
        return len(letters) == len(bad_payloads) and len(vib) >= 4 and len(xtr) + len(xtr_letters) >= 4

    found = await collect(broker.bootstrap, (names.FEATURES, names.ANOMALIES, names.DEAD_LETTERS), done, timeout=120)
    assert ingest_worker.proc.poll() is None
    for v, _, _ in found[names.DEAD_LETTERS]:
        if v["payload"] in bad_payloads:
            assert v["stage"] == "preprocessing" and v["error"]["field"] and v["error"]["message"]
    # Scores of the sensor that saw the extreme chunk stay numbers in [0, 1].
    xtr = [v for v, _, _ in found[names.ANOMALIES] if v["asset_id"] == asset and v["sensor_id"] == "XTR"]
    assert all(isinstance(a["score"], float) and 0.0 <= a["score"] <= 1.0 for a in xtr), [a["score"] for a in xtr]
    # The duplicate and the out-of-order chunk must not make frames that never existed
    # (4 frames of 256 samples; a repeat of one of them is allowed, a shifted one is not).
    want = {round(1_790_000_000 + ((j + 1) * 256 - 1) / rate, 4) for j in range(4)}
    found = await drain(broker.bootstrap, (names.FEATURES,))
    got = {round(v["epoch"], 4) for v, _, _ in found[names.FEATURES] if v["asset_id"] == asset and v["sensor_id"] == "VIB"}
    assert got == want, f"duplicate/out-of-order chunks made frames that never existed: {sorted(got - want)}"
