"""``mantis-stream produce``: JSON lines on stdin, one message per line.

Like ``kafka-console-producer``, with optional key and headers.  Each line must
be JSON (a line that is not stops the command, naming it); ``--raw`` sends
lines as they are, so bad input can be tried too.  The broker is reached with
the worker's settings (``MANTIS_BROKER``, ``MANTIS_KAFKA_*``).
"""

from __future__ import annotations

import asyncio
import sys

import click
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from faust.cli import option

from .. import topics as names
from ..app import app, settings
from ..kafka import client_options
from ._oneline import CommandError, one_line_errors

#: Longest wait for the broker's first answer (a listener speaking another protocol never answers).
CONNECT_TIMEOUT = 15.0


def parse_headers(pairs: tuple[str, ...]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use K=V", param_hint="--header")
        headers.append((key, value.encode()))
    return headers


@app.command(
    option("--topic", default=names.READINGS, show_default=True, help="Topic to produce to."),
    option("--header", "header", multiple=True, help="K=V header on every message (repeatable)."),
    option("--key", default=None, help="Message key (default: none, like kafka-console-producer)."),
    option("--raw", is_flag=True, default=False, help="Send lines as they are, JSON or not."),
)
@one_line_errors
async def produce(self: object, topic: str, header: tuple[str, ...], key: str | None, raw: bool) -> None:
    """Produce JSON lines from stdin to a topic, one message per line."""
    headers = parse_headers(header)
    producer = await start_producer(linger_ms=5)
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[RecordMetadata]] = []
        lineno = 0
        while line := await loop.run_in_executor(None, sys.stdin.buffer.readline):
            lineno += 1
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if not raw:
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    await asyncio.gather(*pending)
                    raise CommandError(f"line {lineno} is not JSON ({str(exc)[:80]}); stopped, {len(pending)} "
                                       "message(s) sent before it (--raw sends lines as they are)") from None
            pending.append(await producer.send(topic, line, key=key.encode() if key else None, headers=headers))
            sent += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(f"produced {sent} message(s) to {topic}", file=sys.stderr)


async def start_producer(**options: object) -> AIOKafkaProducer:
    """A started producer with the worker's broker and security settings, or a one-line error."""
    producer = AIOKafkaProducer(**client_options(settings.broker), **options)
    try:
        await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT)
    except TimeoutError:
        await producer.stop()
        raise CommandError(f"no answer from the Kafka broker at {settings.broker} in {CONNECT_TIMEOUT:.0f} s; does "
                           "MANTIS_KAFKA_SECURITY_PROTOCOL match its listener?") from None
    except BaseException:
        await producer.stop()
        raise
    return producer
