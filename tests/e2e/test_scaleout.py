"""Scale-out on the real broker: two workers in one consumer group, one killed mid-stream.

Why: per-asset state (partial frames, detectors, RUL trackers, maintenance
state) lives in changelogged tables and must move with its partition.  Waveform
chunks of 768 samples make 2048-sample frames that straddle chunk boundaries,
so a partial frame lost in the hand-over shows up as a missing frame, and one
replayed twice as a frame with a wrong timestamp.  The only duplicates allowed
(at-least-once) are exact repeats of a frame timestamp, and work orders repeated
only with the same ``work_order_id``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from mantis_stream import topics as names

from conftest import collect

RATE = 10240.0
CHUNK = 768
FRAME = 2048
T0 = 1_790_000_000.0
WORKER_ENV = {
    "MANTIS_FRAME_SIZE": str(FRAME),
    # Any RUL estimate opens a work order, so replays of the orchestrator are visible.
    "MANTIS_RUL_THRESHOLD_SECONDS": "1e12",
    "MANTIS_RUL_THRESHOLD_CYCLES": "1e12",
}


def chunk(asset: str, i: int, sensor: str = "VIB") -> bytes:
    rng = np.random.default_rng(hash((asset, i)) & 0xFFFF_FFFF)
    return orjson.dumps({"asset_id": asset, "sensor_id": sensor, "ts": T0 + i * CHUNK / RATE,
                         "values": rng.standard_normal(CHUNK).round(4).tolist(), "sample_rate_hz": RATE})


def scalar(asset: str, i: int) -> bytes:
    return orjson.dumps({"asset_id": asset, "sensor_id": "TMP", "ts": T0 + i, "value": 60.0 + (i % 7) * 0.1})


def expected_epochs(chunks: int) -> list[float]:
    """Frame timestamps (time of the frame's last sample) for ``chunks`` chunks of one sensor."""
    return [round(T0 + ((j + 1) * FRAME - 1) / RATE, 3) for j in range(chunks * CHUNK // FRAME)]


async def produce_keyed(bootstrap: str, messages: list[tuple[bytes, bytes]], pace: float = 0.0, per_step: int = 0) -> None:
    """Produce ``(key, value)`` to mantis.readings; keyed by asset so a plant's chunks stay in order.

    With ``pace``, sleep ``pace`` seconds after every ``per_step`` messages (a stream, not a burst).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_194_304)
    await producer.start()
    try:
        futures = []
        for n, (key, value) in enumerate(messages, 1):
            futures.append(await producer.send(names.READINGS, value, key=key))
            if pace and per_step and n % per_step == 0:
                await producer.flush()
                await asyncio.sleep(pace)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def interleave(assets: list[str], start: int, stop: int, scalars: bool = True) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, stop):
        for asset in assets:
            out.append((asset.encode(), chunk(asset, i)))
            if scalars:
                out.append((asset.encode(), scalar(asset, i)))
    return out


def check_accounting(found: dict, assets: list[str], chunks: int) -> None:
    """Every frame exactly once (up to exact repeats), every window, no conflicting work orders."""
    mine = set(assets)
    want = expected_epochs(chunks)
    vib: dict[str, list[float]] = defaultdict(list)
    tmp: dict[str, list[float]] = defaultdict(list)
    for v, _, _ in found[names.FEATURES]:
        if v["asset_id"] in mine:
            (vib if v["sensor_id"] == "VIB" else tmp)[v["asset_id"]].append(round(v["epoch"], 3))
    wrong: dict[str, dict[str, list[float]]] = {}
    for asset in assets:
        got = vib[asset]
        missing = sorted(set(want) - set(got))
        # Lost samples give fewer distinct frames; samples framed twice give more (or shifted) ones.
        assert len(set(got)) >= len(want), f"{asset}: frames lost {missing[:5]} (got {sorted(set(got))})"
        assert sorted(set(tmp[asset])) == [round(T0 + i, 3) for i in range(chunks)], f"{asset}: scalar windows lost"
        dups = {ts: n for ts, n in Counter(got).items() if n > 1}
        assert all(n <= 3 for n in dups.values()), f"{asset}: frames repeated too often {dups}"
        extra = sorted(set(got) - set(want))
        if extra or missing:
            wrong[asset] = {"unexpected": extra, "missing": missing}
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for v, _, _ in found[names.WORK_ORDERS]:
        if v["asset_id"] in mine:
            ids[(v["asset_id"], v["reason"])].add(v["work_order_id"])
    assert all(len(s) == 1 for s in ids.values()), f"work orders repeated with different ids: {dict(ids)}"
    # A replayed chunk must not be framed twice: no frame at a timestamp that does not exist.
    assert not wrong, f"frames lost or framed twice: {wrong}"


def done_when(assets: list[str], chunks: int):  # type: ignore[no-untyped-def]
    mine = set(assets)
    want = set(expected_epochs(chunks))

    def done(found: dict) -> bool:
        vib: dict[str, set[float]] = defaultdict(set)
        tmp: dict[str, set[float]] = defaultdict(set)
        for v, _, _ in found[names.FEATURES]:
            if v["asset_id"] in mine:
                (vib if v["sensor_id"] == "VIB" else tmp)[v["asset_id"]].add(round(v["epoch"], 3))
        # Done when every expected frame and window is there; extra (wrong) frames are checked after.
        return all(len(vib[a]) >= len(want) and len(tmp[a]) >= chunks for a in assets)

    return done


async def wait_for_all(bootstrap: str, assets: list[str], chunks: int, timeout: float) -> None:
    """Wait until every expected frame and window arrived (the detailed check comes after)."""
    try:
        await collect(bootstrap, (names.FEATURES,), done_when(assets, chunks), timeout=timeout)
    except TimeoutError:
        pass  # check_accounting says what is missing or wrong


async def wait_for_phase(bootstrap: str, assets: list[str], chunks: int, timeout: float = 120) -> None:
    """Wait for the first phase's output; on a stall, say which asset and sensor is short."""
    try:
        await collect(bootstrap, (names.FEATURES,), done_when(assets, chunks), timeout=timeout)
    except TimeoutError:
        found = await drain(bootstrap, (names.FEATURES,))
        counts = Counter((v["asset_id"], v["sensor_id"]) for v, _, _ in found[names.FEATURES] if v["asset_id"] in set(assets))
        raise AssertionError(f"phase stalled: want {chunks * CHUNK // FRAME} VIB and {chunks} TMP per asset; got {dict(counts)}") from None


async def drain(bootstrap: str, topics: tuple[str, ...], idle: float = 3.0, timeout: float = 60.0) -> dict:
    """Everything on ``topics`` until nothing new arrives for ``idle`` seconds."""
    last = {"n": -1, "t": time.monotonic()}

    def quiet(found: dict) -> bool:
        n = sum(len(v) for v in found.values())
        if n != last["n"]:
            last.update(n=n, t=time.monotonic())
            return False
        return time.monotonic() - last["t"] > idle

    return await collect(bootstrap, topics, quiet, timeout=timeout)


async def test_two_workers_share_partitions_and_survive_a_sigkill(broker, start_worker):
    tag = uuid.uuid4().hex[:6]
    assets = [f"SO{tag}-{n}" for n in range(8)]
    chunks = 24  # 24 * 768 = 9 frames of 2048 per asset
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"

    first = await start_worker(app_id=app_id, env=WORKER_ENV)
    second = await start_worker(app_id=app_id, env=WORKER_ENV)
    # Both members of the group: wait until the second one got partitions too.
    deadline = time.monotonic() + 60
    while "Ready" not in second.log() or "Ready" not in first.log():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)

    # Phase 1: a third of the stream, processed by both workers.
    await produce_keyed(broker.bootstrap, interleave(assets, 0, 8))
    await wait_for_phase(broker.bootstrap, assets, 8)

    # Phase 2: the rest arrives as a stream; the second worker dies in the middle of it.
    stream = asyncio.create_task(produce_keyed(broker.bootstrap, interleave(assets, 8, chunks), pace=0.25, per_step=16))
    await asyncio.sleep(1.5)
    second.kill()  # SIGKILL: no commit, no graceful leave
    await stream

    await wait_for_all(broker.bootstrap, assets, chunks, timeout=90)
    assert first.proc.poll() is None, "the surviving worker must keep running"
    found = await drain(broker.bootstrap, (names.FEATURES, names.WORK_ORDERS))
    check_accounting(found, assets, chunks)
    # The survivor took over every partition: it logged the reassignment after the kill.
    assert first.log().count("Ready") >= 1


async def test_single_worker_sigkill_mid_stream_and_restart(broker, start_worker):
    """at-least-once across a SIGKILL restart: nothing missing, only exact repeats."""
    tag = uuid.uuid4().hex[:6]
    assets = [f"KL{tag}-{n}" for n in range(4)]
    chunks = 24
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"

    worker = await start_worker(app_id=app_id, env=WORKER_ENV)
    await produce_keyed(broker.bootstrap, interleave(assets, 0, 6))
    await wait_for_phase(broker.bootstrap, assets, 6)

    stream = asyncio.create_task(produce_keyed(broker.bootstrap, interleave(assets, 6, 16), pace=0.25, per_step=8))
    await asyncio.sleep(1.0)
    worker.kill()
    await stream
    restarted = await start_worker(app_id=app_id, env=WORKER_ENV)
    await produce_keyed(broker.bootstrap, interleave(assets, 16, chunks))

    await wait_for_all(broker.bootstrap, assets, chunks, timeout=90)
    assert restarted.proc.poll() is None
    found = await drain(broker.bootstrap, (names.FEATURES, names.WORK_ORDERS))
    check_accounting(found, assets, chunks)
