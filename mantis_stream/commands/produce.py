"""``mantis-stream produce``: JSON lines on stdin, one message per line.

Like ``kafka-console-producer``: each line is sent as it is (no validation, so
bad input can be tried too), with optional key and headers.
"""

from __future__ import annotations

import asyncio
import sys

import click
from aiokafka import AIOKafkaProducer
from faust.cli import option

from .. import topics as names
from ..app import app, settings
from ..kafka import bootstrap_servers


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
)
async def produce(self: object, topic: str, header: tuple[str, ...], key: str | None) -> None:
    """Produce JSON lines from stdin to a topic, one message per line."""
    headers = parse_headers(header)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker), linger_ms=5)
    await producer.start()
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        pending = []
        while line := await loop.run_in_executor(None, sys.stdin.buffer.readline):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            pending.append(await producer.send(topic, line, key=key.encode() if key else None, headers=headers))
            sent += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(f"produced {sent} message(s) to {topic}", file=sys.stderr)
