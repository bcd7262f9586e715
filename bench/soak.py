"""Soak test: run the whole pipeline for N minutes at a fixed rate and watch it.

Why this exists
    Functional tests run for seconds; leaks, growing lag and slow stalls show
    only over minutes.  This starts the local broker (or uses ``--broker``) and
    one worker (a subprocess, ``python -m mantis_stream worker``), measures a
    quick peak (a burst of readings, time until all are out), then produces at a
    fixed rate (default: half the peak) and prints every ``--interval`` seconds:
    messages in, messages out (features), dead letters, the consumer group's lag
    and the worker's RSS.  At the end it drains for at most ``--drain`` seconds
    and prints whether every reading came out (output or dead letter).

Usage
    python bench/soak.py                       # 10 minutes at half the measured peak
    python bench/soak.py --minutes 3 --rate 300
    python bench/soak.py --broker 127.0.0.1:9092 --minutes 30

Notes
    The load is scalar readings for ``--assets`` assets x 4 sensors, plus one
    waveform chunk per asset every 2 s (1024 samples, so frames of 2048 are
    cut from pairs of chunks) and 1 % malformed readings (dead letters).
    Expected output per scalar reading: one feature (its window); per two
    chunks: one feature (a frame); per malformed reading: one dead letter.
    Everything is bounded in time: peak <= 60 s, run = --minutes, drain <= --drain.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mantis_stream import topics as names
from mantis_stream.demo.broker import EmbeddedBroker, free_port, port_open

PARTITIONS = 4
CHUNK = 1024
T0 = 1_790_000_000.0


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Counters:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.produced = 0
        self.expected_out = 0  # features the produced readings should give
        self.bad = 0
        self.features = 0
        self.dead = 0


class Load:
    """Readings for ``assets`` assets: scalar sensors, a waveform chunk every 250th reading, 1 % malformed."""

    def __init__(self, prefix: str, assets: int) -> None:
        self.prefix, self.assets = prefix, assets
        self.i = 0
        self.scalars = [0] * assets
        self.chunks = [0] * assets

    def next(self, c: Counters) -> bytes:
        self.i += 1
        i = self.i
        a = i % self.assets
        asset = f"{self.prefix}-{a}"
        if i % 100 == 0:
            c.bad += 1
            return b'{"asset_id": "%s", "sensor_id": "T", "ts": "not a time", "value": 1}' % asset.encode()
        if i % 250 == 7:
            seq = self.chunks[a]
            self.chunks[a] += 1
            if seq % 2 == 1:
                c.expected_out += 1  # every second chunk of 1024 completes a frame of 2048
            return orjson.dumps({"asset_id": asset, "sensor_id": "VIB", "ts": T0 + seq * CHUNK / 10240.0,
                                 "values": [round(math.sin(0.3 * (seq * CHUNK + s)), 4) for s in range(CHUNK)],
                                 "sample_rate_hz": 10240.0})
        n = self.scalars[a]
        self.scalars[a] += 1
        c.expected_out += 1
        return orjson.dumps({"asset_id": asset, "sensor_id": f"T{n % 4}", "ts": T0 + n, "value": 20.0 + (n % 13) * 0.1})


async def count_outputs(bootstrap: str, c: Counters, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(names.FEATURES, names.DEAD_LETTERS, bootstrap_servers=bootstrap,
                                auto_offset_reset="latest", group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for r in records:
                    if c.prefix.encode() not in r.value[:400]:
                        continue
                    if tp.topic == names.FEATURES:
                        c.features += 1
                    else:
                        c.dead += 1
    finally:
        await consumer.stop()


async def group_lag(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str) -> int | None:
    """Sum over every pipeline topic of end offset minus the group's committed offset."""
    tps = [TopicPartition(t, p) for t in names.ALL_TOPICS for p in range(PARTITIONS)]
    try:
        committed = await asyncio.wait_for(admin.list_consumer_group_offsets(group, partitions=tps), 10)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
    except Exception:  # noqa: BLE001 - lag is informative only
        return None
    lag = 0
    for tp, meta in committed.items():
        if meta is not None and meta.offset >= 0:
            lag += max(0, ends.get(tp, 0) - meta.offset)
    return lag


async def produce_for(producer: AIOKafkaProducer, load: Load, c: Counters, rate: float, seconds: float) -> None:
    """Produce at ``rate`` messages/s for ``seconds`` (in 50 ms steps)."""
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(max(0, due)):
            await producer.send(names.READINGS, load.next(c))
            sent += 1
            c.produced += 1
        await asyncio.sleep(0.05)
    await producer.flush()


async def wait_out(c: Counters, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.features >= c.expected_out and c.dead >= c.bad:
            return True
        await asyncio.sleep(0.2)
    return False


def start_worker(broker: str, app_id: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full.update(MANTIS_BROKER=f"kafka://{broker}", MANTIS_APP_ID=app_id, MANTIS_WEB_PORT=str(free_port()),
                MANTIS_PARTITIONS=str(PARTITIONS), OTEL_TRACES_EXPORTER="none", PYTHONUNBUFFERED="1", **env)
    return subprocess.Popen([sys.executable, "-m", "mantis_stream", "worker", "-l", "warn"],
                            env=full, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def run(args: argparse.Namespace) -> int:
    embedded = None
    bootstrap = args.broker
    if not bootstrap:
        embedded = EmbeddedBroker().start()
        embedded.create_topics(list(names.ALL_TOPICS), PARTITIONS)
        bootstrap = embedded.bootstrap
    app_id = f"mantis-soak-{uuid.uuid4().hex[:6]}"
    log = Path(args.log)
    worker = start_worker(bootstrap, app_id, log, dict(e.split("=", 1) for e in args.env))
    print(f"soak: broker {bootstrap}, worker pid {worker.pid}, app {app_id}, log {log}", flush=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_194_304)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    stop = asyncio.Event()
    counter: asyncio.Task[None] | None = None
    ok = False
    try:
        await producer.start()
        await admin.start()
        await probe.start()
        # The worker is ready once a first reading comes out.
        c = Counters(f"SOAK{uuid.uuid4().hex[:4]}")
        counter = asyncio.create_task(count_outputs(bootstrap, c, stop))
        await asyncio.sleep(2)
        load = Load(c.prefix, args.assets)
        deadline = time.monotonic() + 120
        while c.features == 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                print("soak: worker did not start; see the log", flush=True)
                return 2
            await producer.send(names.READINGS, load.next(c))
            c.produced += 1
            await asyncio.sleep(1)
        await wait_out(c, 30)

        rate = args.rate
        if not rate:
            burst = args.peak_burst
            before_out, before_in = c.features, c.expected_out
            t = time.monotonic()
            for _ in range(burst):
                await producer.send(names.READINGS, load.next(c))
                c.produced += 1
            await producer.flush()
            await wait_out(c, 60)
            took = time.monotonic() - t
            peak = (c.features - before_out) / took if took > 0 else 0.0
            rate = max(10.0, round(peak / 2))
            print(f"soak: peak ~{peak:.0f} readings/s ({c.expected_out - before_in} out in {took:.1f} s); soaking at {rate:.0f}/s",
                  flush=True)

        print(f"{'t(s)':>6} {'in':>9} {'out':>9} {'dead':>6} {'expected':>9} {'lag':>7} {'rss MiB':>8}", flush=True)
        start = time.monotonic()
        total = args.minutes * 60
        while (elapsed := time.monotonic() - start) < total:
            step = min(args.interval, total - elapsed)
            await produce_for(producer, load, c, rate, step)
            lag = await group_lag(admin, probe, app_id)
            print(f"{time.monotonic() - start:6.0f} {c.produced:9d} {c.features:9d} {c.dead:6d} {c.expected_out:9d} "
                  f"{'?' if lag is None else lag:>7} {rss_mib(worker.pid):8.1f}", flush=True)
            if worker.poll() is not None:
                print(f"soak: the worker exited with {worker.returncode}", flush=True)
                return 1
        ok = await wait_out(c, args.drain)
        lag = await group_lag(admin, probe, app_id)
        print(f"drained: in {c.produced}, out {c.features} (expected {c.expected_out}), dead letters {c.dead} "
              f"(expected {c.bad}), lag {lag}, rss {rss_mib(worker.pid):.1f} MiB -> {'OK' if ok else 'MISSING OUTPUT'}",
              flush=True)
        return 0 if ok else 1
    finally:
        stop.set()
        if counter is not None:
            await asyncio.wait([counter], timeout=10)
        for client in (producer, admin, probe):
            try:
                await asyncio.wait_for(client.stop() if hasattr(client, "stop") else client.close(), 10)
            except Exception:  # noqa: BLE001
                pass
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        if embedded is not None:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="readings/s (default: half a quick peak measurement)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between reports")
    parser.add_argument("--assets", type=int, default=8)
    parser.add_argument("--peak-burst", type=int, default=4000, help="readings in the peak measurement")
    parser.add_argument("--drain", type=float, default=60.0, help="longest wait for the last outputs")
    parser.add_argument("--broker", default="", help="host:port of a running broker (default: start the local one)")
    parser.add_argument("--log", default="soak-worker.log")
    parser.add_argument("--env", action="append", default=[], help="extra worker environment, NAME=VALUE (repeatable)")
    args = parser.parse_args()
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not port_open(host or "127.0.0.1", int(port)):
            raise SystemExit(f"soak: no broker at {args.broker}")
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
