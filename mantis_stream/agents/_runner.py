"""The skeleton of a batched stage, written once: a stage module gives only what is its own.

Why: every stage behind a batched hop does the same thing around its model:
take a batch (:func:`._replay.batches`), open each record's trace
(:func:`._batch.open_items`), compute under one batch span, then per record in
its own trace: build the output, publish it (:class:`._publish.Publisher`) and
pass it on (:class:`._batch.Outbox`), a dead letter for any record that fails;
flush, close the records' spans and checkpoint the state.  Only a few lines of
that differ between stages; those are what a stage module gives.

Usage (a stage with state per key)::

    runner = KeyedStage(
        "anomaly-detection", "predict_anomaly",
        key=detector_key, cache=detectors, process=lambda detector, record: detector.process_one(record["features"]),
        emit=scored, public=anomalies_topic, next_hop=assessments_topic,
    )

    @app.agent(feature_batches_topic, name="anomaly")
    async def anomaly(stream):
        await runner.run(stream)

Notes:
- ``process`` runs in the batch span, once per record in order, with the
  record's key's state; it should compute, not publish.
- ``emit(item, state, result)`` runs in the record's trace (annotate its span
  there); it returns the output message, or None when the record has none.
  ``state`` is its key's state after the whole batch: what belongs to this
  record is in ``result``.
  The output is published keyed by the record's ``asset_id`` and passed on to
  the record's partition of ``next_hop``.
- An output the producer refuses is not passed on (its record is a dead letter).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from faust import Stream
from faust.types import EventT, TopicT

from .. import tracing
from ..errors import send_item_dead_letter
from ..stages import by_name
from ._batch import Item, Outbox, close_items, item_scope, open_items
from ._events import group_items
from ._publish import Publisher
from ._replay import batches
from ._state import TableBackedCache

__all__ = ["BatchedStage", "KeyedStage", "VectorStage"]

S = TypeVar("S")
R = TypeVar("R")

Record = dict[str, Any]
#: What a stage emits for a record: its public message (a topic's schema TypedDict), also forwarded on the next hop.
Output = Mapping[str, Any]
#: (record, state, result) of each record computed, in order.
Done = list[tuple[Item, S, R]]
#: (record, error) of each record that could not be computed.
Failed = list[tuple[Item, Exception]]
#: (key, its last event) of each state the batch changed: what a checkpoint saves.
Touched = list[tuple[str, EventT[Any]]]


class BatchedStage(ABC, Generic[S, R]):
    """One agent's loop over its batches; subclasses say how a batch is computed."""

    def __init__(self, stage: str, span: str, *, emit: Callable[[Item, S, R], Output | None],
                 public: TopicT | None = None, next_hop: TopicT | None = None) -> None:
        self.stage = by_name(stage).name
        self.span = span
        self.emit = emit
        self.public = public
        self.next_hop = next_hop

    @abstractmethod
    async def compute(self, items: Sequence[Item]) -> tuple[Done[S, R], Failed, Touched]:
        """The batch's results, its failures, and what :meth:`checkpoint` needs once the batch is out."""

    def checkpoint(self, touched: Touched) -> None:
        """Save what the batch changed (nothing, for a stateless stage)."""

    async def run(self, stream: Stream[Any]) -> None:
        """The agent's body: every batch of ``stream``, for ever."""
        async for events in batches(stream, self.stage):
            await self.run_batch(events)

    async def run_batch(self, events: Sequence[EventT[Any]]) -> None:
        """One batch, start to checkpoint. A method of its own so that its records and their tracing
        state are freed when it returns, not kept alive while the stage waits for the next batch."""
        stage, emit, public_topic = self.stage, self.emit, self.public
        items = await open_items(stage, events)
        done, failed, touched = await self.compute(items)
        for item, exc in failed:
            with item_scope(item):
                await send_item_dead_letter(item, stage, exc)
        public = Publisher(stage)
        out = Outbox(self.next_hop, stage) if self.next_hop is not None else None
        for item, state, result in done:
            with item_scope(item):
                try:
                    message = emit(item, state, result)
                    if message is None:
                        continue
                    if public_topic is not None:
                        public.add(public_topic, item.value["asset_id"], message, item)
                except Exception as exc:  # noqa: BLE001 - a record whose output cannot be made or sent
                    await send_item_dead_letter(item, stage, exc)
                    continue
                if out is not None:
                    out.add(item.partition, message, item)
        refused = await public.flush()
        if out is not None:
            out.discard(refused)
            await out.flush()
        close_items(items)
        self.checkpoint(touched)


class KeyedStage(BatchedStage[S, R]):
    """State per key (``cache``): a batch's records grouped by ``key``, each through its key's state in order.

    A record whose key cannot be read, whose state cannot be loaded, or that
    ``process`` raises on is a dead letter; the others go on.
    """

    def __init__(self, stage: str, span: str, *, key: Callable[[Record], str], cache: TableBackedCache[S],
                 process: Callable[[S, Record], R], emit: Callable[[Item, S, R], Output | None],
                 public: TopicT | None = None, next_hop: TopicT | None = None) -> None:
        super().__init__(stage, span, emit=emit, public=public, next_hop=next_hop)
        self.key = key
        self.cache = cache
        self.process = process

    async def compute(self, items: Sequence[Item]) -> tuple[Done[S, R], Failed, Touched]:
        key, process = self.key, self.process
        by_key = await group_items(self.stage, items, lambda item: key(item.value))
        with tracing.batch_span(self.stage, self.span, [item.trace for item in items], **{"batch.size": len(items)}):
            return self.cache.apply(by_key, lambda state, item: process(state, item.value))

    def checkpoint(self, touched: Touched) -> None:
        self.cache.save(touched)


class VectorStage(BatchedStage[None, R]):
    """No state: ``process`` maps the batch's records to their results at once (vectorised).

    When it raises, each record is computed alone to find the one(s) it fails on.
    """

    def __init__(self, stage: str, span: str, *, process: Callable[[list[Record]], Sequence[R]],
                 emit: Callable[[Item, None, R], Output | None],
                 public: TopicT | None = None, next_hop: TopicT | None = None) -> None:
        super().__init__(stage, span, emit=emit, public=public, next_hop=next_hop)
        self.process = process

    async def compute(self, items: Sequence[Item]) -> tuple[Done[None, R], Failed, Touched]:
        process = self.process
        try:
            with tracing.batch_span(self.stage, self.span, [item.trace for item in items], **{"batch.size": len(items)}):
                results = process([item.value for item in items])
            return [(item, None, result) for item, result in zip(items, results, strict=True)], [], []
        except Exception:  # noqa: BLE001 - find the bad record(s) one at a time
            done: Done[None, R] = []
            failed: Failed = []
            for item in items:
                try:
                    done.append((item, None, process([item.value])[0]))
                except Exception as exc:  # noqa: BLE001
                    failed.append((item, exc))
            return done, failed, []

