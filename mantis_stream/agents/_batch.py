"""Batched hops: many records in one Kafka message between the pipeline's own stages.

Why: Faust's cost is per message (a few hundred microseconds), and a reading
crosses five stages.  Between our own agents the records of a batch therefore
travel as one message per partition, ``{"items": [{"value": …, "trace": …}]}``;
each record keeps its own trace context (``trace``: W3C headers), so a reading
is still one trace across every stage.  Public topics (``mantis.features``,
``mantis.anomalies``, ``mantis.rul``, ``mantis.work-orders``) keep one message
per record, for users and the sinks.

Usage::

    async for events in batches(stream, STAGE):        # agents._replay
        items = await open_items(STAGE, events)        # records, each with its process span
        out = Outbox(frames_topic, STAGE)
        for item in items:
            with item_scope(item):
                out.add(item.partition, frame, item)   # under the record's trace
        await out.flush()                          # one message per partition
        close_items(items)

Notes:
- A batch keeps its partition: per-asset state (tables) and the records of an
  asset stay on one partition from the first hop on (:func:`partition_for`).
- A message is at most ``limits.WORKER_RECORD_BYTES`` (a larger single record goes alone),
  whatever the input limit.  A record whose message the producer refuses becomes
  the dead letter of the record (or reading) it came from; the rest go on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from faust.types import EventT, TopicT
from opentelemetry import context as otel_context

from .. import metrics, tracing
from ..app import app, settings
from ..codecs import dumps
from ..errors import message_source, send_dead_letter, send_item_dead_letter
from ..limits import WORKER_RECORD_BYTES
from ..tracing.context import EventTrace

ITEMS = b'{"items":['


def partition_for(asset_id: str, partitions: int | None = None) -> int:
    """The asset's partition: Kafka's default partitioner on the asset id (as a keyed send would)."""
    hashed: int = murmur2(asset_id.encode())
    return (hashed & 0x7FFFFFFF) % (partitions or settings.partitions)


@dataclass(slots=True, eq=False)
class Item:
    """One record of a batched message, with where it came from and its trace."""

    value: dict[str, Any]
    carrier: dict[str, str]
    event: EventT[Any]
    index: int
    trace: EventTrace | None = None

    @property
    def partition(self) -> int:
        return self.event.message.partition

    @property
    def source(self) -> dict[str, Any]:
        return {**message_source(self.event.message), "index": self.index}


class InvalidBatch(ValueError):
    """A message on a batched topic that is not ``{"items": [...]}``."""


def items_of(event: EventT[Any]) -> list[Item]:
    """The records of one batched message, in order."""
    raw = event.value
    try:
        body = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, memoryview, str)) else raw
        entries = body["items"]
        return [Item(e["value"], e.get("trace") or {}, event, i) for i, e in enumerate(entries)]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvalidBatch(f"items: not a batch of records ({type(exc).__name__})") from None


async def open_items(stage: str, events: Sequence[EventT[Any]]) -> list[Item]:
    """Every record of ``events``, each with its ``process <topic>`` span started and counted in the metrics.

    A message that is not a batch (not written by this pipeline) is a dead letter.
    """
    group = app.conf.id
    sensor = metrics.installed(app)
    out: list[Item] = []
    for event in events:
        message = event.message
        try:
            items = items_of(event)
        except Exception as exc:  # noqa: BLE001 - not a batch, or not one this pipeline can read
            await send_dead_letter(event, stage, exc)
            continue
        if sensor is not None:
            sensor.on_records(event, len(items))
        for item in items:
            item.trace = tracing.open_item(
                stage, item.carrier, topic=message.topic, partition=message.partition, offset=message.offset, group=group,
            )
            out.append(item)
    return out


def close_items(items: Sequence[Item]) -> None:
    for item in items:
        if item.trace is not None:
            item.trace.end()


@contextmanager
def item_scope(item: Item) -> Iterator[None]:
    """The record's trace context is current: child spans, sends and dead letters join its trace."""
    with tracing.use_item(item.trace, item.carrier):
        yield


@dataclass(eq=False)
class Outbox:
    """Records for one batched topic, gathered per partition, sent as one message each."""

    topic: TopicT
    stage: str
    _pending: dict[int, list[tuple[bytes, Item | EventT[Any]]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, partition: int, value: Mapping[str, Any], origin: Item | EventT[Any]) -> None:
        """Queue ``value`` for ``partition``, carrying the current record's trace context.

        ``origin`` (the record or the consumed message it came from) is what
        becomes a dead letter if the producer refuses it.
        """
        entry = dumps({"value": value, "trace": tracing.outgoing_carrier()})
        self._pending[partition].append((entry, origin))

    def discard(self, origins: set[int]) -> None:
        """Drop what came from these origins (by ``id``): e.g. records whose public output was refused."""
        for partition, entries in self._pending.items():
            self._pending[partition] = [(entry, origin) for entry, origin in entries if id(origin) not in origins]

    async def flush(self) -> None:
        """Send what is queued, outside any trace (a batch belongs to none)."""
        failed: set[int] = set()
        token = otel_context.attach(otel_context.Context())
        try:
            for partition, entries in self._pending.items():
                for chunk in _chunks(entries, WORKER_RECORD_BYTES):
                    try:
                        await self._send(partition, [entry for entry, _ in chunk])
                    except Exception as exc:  # noqa: BLE001 - find the record(s) the producer refuses
                        for entry, origin in chunk:
                            error = exc
                            if len(chunk) > 1:
                                try:
                                    await self._send(partition, [entry])
                                    continue
                                except Exception as alone:  # noqa: BLE001
                                    error = alone
                            if id(origin) not in failed:
                                failed.add(id(origin))
                                await dead_letter(origin, self.stage, error)
        finally:
            otel_context.detach(token)
        self._pending.clear()

    async def _send(self, partition: int, entries: list[bytes]) -> None:
        await self.topic.send(partition=partition, value=ITEMS + b",".join(entries) + b"]}")


async def dead_letter(origin: Item | EventT[Any], stage: str, exc: BaseException) -> None:
    """The dead letter of a record (under its trace) or of a consumed message."""
    if isinstance(origin, Item):
        with item_scope(origin):
            await send_item_dead_letter(origin, stage, exc)
    else:
        await send_dead_letter(origin, stage, exc)


def _chunks(entries: list[tuple[bytes, Any]], limit: int) -> Iterator[list[tuple[bytes, Any]]]:
    chunk: list[tuple[bytes, Any]] = []
    size = len(ITEMS) + 2
    for pair in entries:
        entry = pair[0]
        if chunk and size + len(entry) + 1 > limit:
            yield chunk
            chunk, size = [], len(ITEMS) + 2
        chunk.append(pair)
        size += len(entry) + 1
    if chunk:
        yield chunk
