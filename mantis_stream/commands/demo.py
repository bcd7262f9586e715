"""``mantis-stream demo``: broker (embedded when none answers), worker, plant, live view.

Ctrl-C, closing the terminal (SIGHUP), SIGTERM or ``--duration`` stop the
plant, the worker and the embedded broker, in that order, leaving no process
behind (the children also get SIGTERM if the demo itself is killed).  Everything
the demo writes (the worker's log, its spans, Faust's data) goes to one folder,
``mantis-demo/`` (``--dir``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.cli import option

from .. import topics as names
from ..app import app, settings
from ..demo import DEMO_DIR
from ..demo.broker import EmbeddedBroker, broker_reachable, die_with_parent, free_port
from ..demo.plant import Plant
from ..demo.view import DemoView
from ..kafka import client_options
from ._oneline import one_line_errors

TICK = 0.1
VIEW_TOPICS = (names.ANOMALIES, names.RUL, names.WORK_ORDERS, names.DEAD_LETTERS)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(message: str) -> None:
    """A line on stderr; the terminal may be gone (SIGHUP), which must not stop the clean-up."""
    try:
        print(f"mantis-stream demo: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def start_embedded_broker() -> EmbeddedBroker:
    first = urlsplit(settings.broker.split(",")[0] if "://" in settings.broker else f"kafka://{settings.broker}")
    port = first.port if first.hostname in ("localhost", "127.0.0.1") else None
    broker = EmbeddedBroker(port=port).start()
    broker.create_topics(list(names.ALL_TOPICS), settings.partitions)
    return broker


def start_worker(broker_url: str, folder: Path, web_port: int, embedded: bool) -> subprocess.Popen[bytes]:
    """The worker, in ``folder`` (its log, spans and Faust data land there)."""
    env = dict(os.environ)
    if embedded:  # the embedded broker speaks plaintext: Kafka security settings are for another broker
        env = {k: v for k, v in env.items() if not k.startswith("MANTIS_KAFKA_")}
        env["MANTIS_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"  # over a settings file's too
    chosen = settings.model_fields_set  # set in the environment or the settings file: the demo keeps them
    env.update(
        MANTIS_BROKER=broker_url,
        MANTIS_APP_ID=settings.app_id if "app_id" in chosen else f"mantis-demo-{int(time.time())}",
        MANTIS_WEB_PORT=str(web_port),
        MANTIS_RUL_THRESHOLD_SECONDS=str(settings.rul_threshold_seconds if "rul_threshold_seconds" in chosen else 60),
        MANTIS_RUL_THRESHOLD_CYCLES=str(settings.rul_threshold_cycles if "rul_threshold_cycles" in chosen else 30),
        OTEL_TRACES_EXPORTER=settings.otel_traces_exporter or "none",
        MANTIS_TRACE_FILE=str(Path(settings.trace_file or folder / "mantis-traces.jsonl").resolve()),
    )
    log = open(folder / "mantis-demo-worker.log", "ab")  # the worker process owns it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mantis_stream", "worker", "-l", "info"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
    finally:
        log.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
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
    option("--dir", "folder", default=DEMO_DIR, show_default=True, help="Folder for the worker's log, spans and data."),
)
@one_line_errors
async def demo(self: object, duration: float | None, speed: float, folder: str) -> None:
    """Run the whole pipeline on a simulated plant and show it live."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    where = Path(folder)
    where.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    producer = consumer = None
    try:
        if broker_reachable(settings.broker):
            broker_url, options = settings.broker, client_options(settings.broker)
            say(f"using the broker already running at {broker_url} (not started by this demo, so it keeps running "
                "after it, with its topics and any older messages on them)")
        else:
            broker = start_embedded_broker()
            broker_url, options = broker.url, {"bootstrap_servers": [broker.bootstrap]}
            say(f"started the embedded Tansu broker at {broker_url} (pid {broker.pid})")
        web_port = free_port()
        worker = start_worker(broker_url, where, web_port, embedded=broker is not None)
        say(f"worker pid {worker.pid}, web server http://127.0.0.1:{web_port} (/health, /metrics, /api/v1/ingest); "
            f"its log, spans and data in {where}/")
        producer = AIOKafkaProducer(**options, linger_ms=5)
        consumer = AIOKafkaConsumer(*VIEW_TOPICS, **options, auto_offset_reset="latest",
                                    group_id=None, enable_auto_commit=False)
        header = (f"broker {'embedded Tansu ' if broker else '(not started by the demo) '}{broker_url}  "
                  f"worker pid {worker.pid}  web http://127.0.0.1:{web_port}")
        await producer.start()
        await consumer.start()
        tasks = [asyncio.create_task(run_plant(producer, stop, speed)), asyncio.create_task(run_view(consumer, stop, header))]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, OSError):
                raise error
    finally:
        say("stopping: plant, worker, broker ...")
        for client in (producer, consumer):
            if client is not None:
                await client.stop()
        if worker is not None:
            await loop.run_in_executor(None, stop_process, worker)
        if broker is not None:
            broker.stop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        say("stopped.")
