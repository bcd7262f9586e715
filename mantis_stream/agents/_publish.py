"""Public records published in bulk: one produce batch per topic partition and agent batch.

Why: ``Topic.send`` costs Faust's whole per-message path (future, callbacks,
serialisation, the producer's accumulator) for every record on
``mantis.features``, ``mantis.anomalies``, ``mantis.rul`` and
``mantis.work-orders``: measured 38 % of the worker's busy time.  Here the
records of a batch are appended to one aiokafka ``BatchBuilder`` per partition
and handed to the app's producer at once.  The contract is unchanged: one
Kafka record per public record, keyed by asset (so on the partition a keyed
send would pick), with its own headers and trace context, written by the same
sensor hooks ``Topic.send`` calls (spans, metrics).

Usage::

    public = Publisher(STAGE)
    for item in items:
        with item_scope(item):
            public.add(anomalies_topic, asset_id, message, item)  # may raise: that record's dead letter
    refused = await public.flush()     # every record delivered (or dead-lettered) before the batch is acked

Notes:
- ``flush`` waits for the broker's acknowledgement of every batch, so the input
  events are acknowledged only after their outputs are stored (at-least-once).
- A record the producer refuses (too large, or the broker rejects its batch and
  then the record alone) becomes the dead letter of the record or event it came
  from; the others go on.  A transient failure (timeout, retriable broker error)
  propagates instead, so the batch is processed again (``_replay``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition
from faust.exceptions import ProducerSendError
from faust.types import EventT, TopicT
from faust.types.tuples import PendingMessage
from opentelemetry import context as otel_context

from .._compat import faust as faust_compat
from ..app import app
from ..codecs import dumps
from ._batch import Item, dead_letter
from ._events import asset_key


@dataclass(slots=True, eq=False)
class _Record:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    origin: Item | EventT[Any]
    state: Any


def _kafka_producer() -> AIOKafkaProducer:
    """The worker's aiokafka producer: same connection and settings (security, acks, sizes) as every send."""
    producer: AIOKafkaProducer = faust_compat.aiokafka_producer(app.producer)
    return producer


def _transient(exc: BaseException) -> bool:
    """A failure of the broker or the connection, not of the record: the batch is processed again, not dead-lettered."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


@dataclass(eq=False)
class Publisher:
    """The public records of one agent batch, sent as one produce batch per topic partition."""

    stage: str
    _pending: dict[str, list[_Record]] = field(default_factory=lambda: defaultdict(list))

    def add(self, topic: TopicT, asset_id: str, value: Mapping[str, Any], origin: Item | EventT[Any]) -> None:
        """Queue ``value`` for ``topic``, keyed by ``asset_id``, with the current context's trace headers.

        Raises (for the caller to dead-letter the record) when the value cannot
        be encoded or is larger than the producer accepts, as ``Topic.send`` does.
        """
        name = topic.get_topic_name()
        key = asset_key(asset_id)
        raw = dumps(value)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, raw, [])
        if size > app.conf.producer_max_request_size:
            raise ProducerSendError(f"Error while sending: {MessageSizeTooLargeError(f'{size} bytes')!r}")
        headers: list[tuple[str, bytes]] = []
        message = PendingMessage(topic, key, value, None, None, headers, None, None, None, topic=name)
        state = app.sensors.on_send_initiated(app.producer, name, message, len(key), len(raw))
        self._pending[name].append(_Record(key, raw, headers, origin, state))

    async def flush(self) -> set[int]:
        """Send and await everything queued; return the ``id`` of each origin that became a dead letter."""
        if not self._pending:
            return set()
        producer = _kafka_producer()
        sent: list[tuple[TopicPartition, list[_Record], asyncio.Future[RecordMetadata]]] = []
        for name, records in self._pending.items():
            for tp, run, builder in _batches(producer, name, await _partitioned(producer, name, records)):
                sent.append((tp, run, await producer.send_batch(builder, name, partition=tp.partition)))
        self._pending = defaultdict(list)
        results = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
        refused: set[int] = set()
        for (tp, run, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                await self._one_by_one(producer, tp, run, result, refused)
            else:
                for offset, record in enumerate(run, start=result.offset):
                    self._completed(record, result, offset)
        return refused

    async def _one_by_one(self, producer: AIOKafkaProducer, tp: TopicPartition, records: list[_Record],
                          error: BaseException, refused: set[int]) -> None:
        """A refused batch: each record again alone; the ones refused alone become dead letters."""
        if _transient(error):
            raise error
        for record in records:
            exc = error
            if len(records) > 1:
                try:
                    [(_, _, builder)] = _batches(producer, tp.topic, {tp.partition: [record]})
                    metadata = await (await producer.send_batch(builder, tp.topic, partition=tp.partition))
                    self._completed(record, metadata, metadata.offset)
                    continue
                except Exception as alone:
                    if _transient(alone):
                        raise
                    exc = alone
            app.sensors.on_send_error(app.producer, exc, record.state)
            if id(record.origin) not in refused:
                refused.add(id(record.origin))
                token = otel_context.attach(otel_context.Context())
                try:
                    await dead_letter(record.origin, self.stage, ProducerSendError(f"Error while sending: {exc!r}"))
                finally:
                    otel_context.detach(token)

    @staticmethod
    def _completed(record: _Record, batch: RecordMetadata, offset: int) -> None:
        app.sensors.on_send_completed(app.producer, record.state, RecordMetadata(
            batch.topic, batch.partition, batch.topic_partition, offset, batch.timestamp, batch.timestamp_type,
            batch.log_start_offset))


async def _partitioned(producer: AIOKafkaProducer, topic: str, records: list[_Record]) -> dict[int, list[_Record]]:
    """``records`` by the partition their key picks, with the app's partitioner (as a keyed send would)."""
    partitions = sorted(await producer.partitions_for(topic))
    by_key: dict[bytes, int] = {}
    out: dict[int, list[_Record]] = defaultdict(list)
    partitioner = app.producer.partitioner or DefaultPartitioner()  # Faust sets it when its producer starts
    for record in records:
        partition = by_key.get(record.key)
        if partition is None:
            partition = by_key[record.key] = partitioner(record.key, partitions, partitions)
        out[partition].append(record)
    return out


def _batches(producer: AIOKafkaProducer, topic: str,
             by_partition: dict[int, list[_Record]]) -> list[tuple[TopicPartition, list[_Record], BatchBuilder]]:
    """Each partition's records in closed batches of the producer's batch size (a larger record goes alone)."""
    out: list[tuple[TopicPartition, list[_Record], BatchBuilder]] = []
    for partition, records in by_partition.items():
        tp = TopicPartition(topic, partition)
        builder, run = producer.create_batch(), list[_Record]()
        for record in records:
            if builder.append(timestamp=None, key=record.key, value=record.value, headers=record.headers) is None:
                out.append((tp, run, builder))
                builder, run = producer.create_batch(), []
                builder.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
            run.append(record)
        builder.close()  # complete: sent at once, not lingering for more records
        out.append((tp, run, builder))
    return out
