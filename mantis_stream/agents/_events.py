"""Per-event scope inside batch agents.

Why: ``stream.take_events()`` hands the agent a list of events, but Faust's
tables write their changelog to the partition of the *current* event and the
tracing sensor's process span is per event.  ``event_scope`` makes one event
current for both while the agent handles it, so table state lands in the right
changelog partition (it moves with its partition on rebalance) and sends carry
that event's trace context.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event
from faust.types import EventT, StreamT

from .. import tracing
from ..errors import send_dead_letter, send_item_dead_letter
from ..models.records import maintenance_asset
from ..models.reading import InvalidReading


@contextmanager
def event_scope(event: EventT[Any]) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        with tracing.use_event(event):
            yield
    finally:
        _current_event.reset(token)


def asset_key(asset_id: str) -> bytes:
    """Message key for per-asset partitioning (all stages after preprocessing)."""
    return asset_id.encode()


async def group_items(stage: str, items: Sequence[Any], key: Callable[[Any], str]) -> dict[str, list[Any]]:
    """A batch's records (``_batch.Item``) by state key; a record whose key cannot be read is a dead letter."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        try:
            groups[key(item)].append(item)
        except Exception as exc:  # noqa: BLE001 - e.g. a record without asset_id written by another producer
            await dead_letter_all(stage, [item], exc)
    return groups


async def dead_letter_all(stage: str, items: Sequence[Any], exc: BaseException) -> None:
    """Each record's dead letter, under its own trace."""
    for item in items:
        with tracing.use_item(item.trace, item.carrier):
            await send_item_dead_letter(item, stage, exc)


async def maintenance_events(stream: StreamT[Any], stage: str) -> AsyncIterator[tuple[EventT[Any], str]]:
    """Each valid ``mantis.maintenance`` event and its asset, yielded inside the event's scope.

    An event that names no valid asset or action becomes a dead letter. The
    caller's work between two yields runs in the event's scope (its trace, its
    changelog partition), like a batch agent's work under ``event_scope``.
    """
    async for event in stream.events():
        with event_scope(event):
            try:
                asset_id = maintenance_asset(event.value)
            except InvalidReading as exc:
                await send_dead_letter(event, stage, exc)
                continue
            yield event, asset_id
