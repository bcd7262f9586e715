"""The worker's aiokafka producer, for the stages that hand it whole record batches.

Why: ``Topic.send`` costs Faust's per-message path (future, callbacks, the
producer buffer's task, the accumulator) for every message; the public records
(:mod:`._publish`) and the batched hops (:class:`._batch.Outbox`) instead append
to aiokafka batches themselves and await their delivery.  Both reach the
producer and classify its failures here, in one place.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from .._compat import faust as faust_compat
from ..app import app


def kafka_producer() -> AIOKafkaProducer:
    """The worker's aiokafka producer: same connection and settings (security, acks, sizes) as every send."""
    producer: AIOKafkaProducer = faust_compat.aiokafka_producer(app.producer)
    return producer


def transient(exc: BaseException) -> bool:
    """A failure of the broker or the connection, not of the record: the batch is processed again, not dead-lettered."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)
