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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from faust.streams import _current_event
from faust.types import EventT

from .. import tracing

T = TypeVar("T")


@contextmanager
def event_scope(event: EventT) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        with tracing.use_event(event):
            yield
    finally:
        _current_event.reset(token)


def asset_key(asset_id: str) -> bytes:
    """Message key for per-asset partitioning (all stages after preprocessing)."""
    return asset_id.encode()


def group_by(things: Sequence[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """A batch's events or records by state key, each group in arrival order."""
    groups: dict[str, list[T]] = defaultdict(list)
    for thing in things:
        groups[key(thing)].append(thing)
    return groups
