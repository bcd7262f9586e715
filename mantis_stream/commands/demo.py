"""``mantis-stream demo``: broker (embedded when none answers), worker, plant, live view.

Ctrl-C (or ``--duration``) stops the plant, the worker and the embedded broker,
in that order, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.cli import option

from .. import topics as names
from ..app import app, settings
from ..demo.broker import EmbeddedBroker, broker_reachable, free_port
from ..demo.plant import Plant
from ..demo.view import DemoView
from ..kafka import bootstrap_servers

TICK = 0.1
VIEW_TOPICS = (names.ANOMALIES, names.RUL, names.WORK_ORDERS, names.DEAD_LETTERS)


def start_embedded_broker() -> EmbeddedBroker:
    first = urlsplit(settings.broker.split(",")[0] if "://" in settings.broker else f"kafka://{settings.broker}")
    port = first.port if first.hostname in ("localhost", "127.0.0.1") else None
    broker = EmbeddedBroker(port=port).start()
    broker.create_topics(list(names.ALL_TOPICS), settings.partitions)
    return broker


def start_worker(broker_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        MANTIS_BROKER=broker_url,
        MANTIS_APP_ID=os.environ.get("MANTIS_APP_ID", f"mantis-demo-{int(time.time())}"),
        MANTIS_WEB_PORT=str(free_port()),
        MANTIS_RUL_THRESHOLD_SECONDS=os.environ.get("MANTIS_RUL_THRESHOLD_SECONDS", "60"),
        MANTIS_RUL_THRESHOLD_CYCLES=os.environ.get("MANTIS_RUL_THRESHOLD_CYCLES", "30"),
        OTEL_TRACES_EXPORTER=os.environ.get("OTEL_TRACES_EXPORTER", "none"),
        MANTIS_TRACE_FILE=os.environ.get("MANTIS_TRACE_FILE", "mantis-traces.jsonl"),  # mantis-stream trace list|show
    )
    log = open(os.environ.get("MANTIS_DEMO_LOG", "mantis-demo-worker.log"), "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "mantis_stream", "worker", "-l", "info"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run_plant(producer: AIOKafkaProducer, stop: asyncio.Event, speed: float) -> None:
    plant, started, wall = Plant(), time.monotonic(), time.time()
    next_tick, ticks = started, 0
    while not stop.is_set():
        t = (time.monotonic() - started) * speed
        # The sensors' clock: one tick per TICK, so waveform chunks follow each other exactly.
        for reading in plant.tick(t, wall + ticks * TICK):
            # Keyed by asset, as waveform producers should be: one asset's chunks stay in order.
            await producer.send(names.READINGS, orjson.dumps(reading), key=reading["asset_id"].encode())
        ticks += 1
        next_tick += TICK
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def run_view(consumer: AIOKafkaConsumer, stop: asyncio.Event, header: str) -> None:
    view, last = DemoView(), 0.0
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=5000)
        for tp, records in batches.items():
            for record in records:
                view.update(tp.topic, orjson.loads(record.value))
        if time.monotonic() - last > 1.0:
            last = time.monotonic()
            sys.stdout.write("\033[H\033[2J" + view.render(header) + "\n")
            sys.stdout.flush()


@app.command(
    option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)."),
    option("--speed", type=float, default=1.0, show_default=True, help="Plant ageing speed-up."),
)
async def demo(self: object, duration: float | None, speed: float) -> None:
    """Run the whole pipeline on a simulated plant and show it live."""
    broker = None if broker_reachable(settings.broker) else start_embedded_broker()
    broker_url = broker.url if broker else settings.broker
    bootstrap = bootstrap_servers(broker_url)
    worker = start_worker(broker_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(*VIEW_TOPICS, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id=None, enable_auto_commit=False)
    header = f"broker {'embedded Tansu ' if broker else ''}{broker_url}  worker pid {worker.pid}"
    try:
        await producer.start()
        await consumer.start()
        tasks = [asyncio.create_task(run_plant(producer, stop, speed)), asyncio.create_task(run_view(consumer, stop, header))]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        print("\nstopping: plant, worker, broker ...", file=sys.stderr)
        await producer.stop()
        await consumer.stop()
        await loop.run_in_executor(None, stop_process, worker)
        if broker:
            broker.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("stopped.", file=sys.stderr)
