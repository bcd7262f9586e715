"""A batch in flight when its agent crashed is processed again by the restarted agent.

Why: ``take_events`` acks a batch in a ``finally``; when an agent died on a
batch (a bug, ``MemoryError``, a dead letter that could not be sent), the
closing generator acked the batch unprocessed, its offsets were committed and
its readings were lost, and the event the stream was feeding it at that moment
was stranded in the dead generator's buffer.  Here each batch's messages keep
an extra reference until the agent body is done with them, and the stream's
``take_events`` generator outlives the agent: Faust restarts a crashed agent on
the same stream, and :func:`batches` hands the restarted agent the crashed
batch first, then carries on with the same generator (which then acks).

A batch that crashes the agent again is retried one message at a time; a
message that crashes the agent on its own becomes a dead letter
(:class:`StageCrashed`), so a poison message cannot make the agent restart for
ever.

Usage::

    async for events in batches(stream, STAGE):
        ...  # as with stream.take_events(settings.batch_size, within=settings.batch_within)

``MANTIS_TEST_FAULT=<agent>:<text>[:<times>][,...]`` (tests only) makes the
named agent crash on a batch holding a message whose value contains ``text``,
the first ``times`` times (default 1) it is handed one.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from faust import Stream
from faust.types import EventT

from ..app import app, settings
from ..errors import send_dead_letter

log = logging.getLogger(__name__)

#: Crashes on one message, alone, before it becomes a dead letter.
MAX_CRASHES = 2


class StageCrashed(RuntimeError):
    """A message on which the agent crashed, alone, ``MAX_CRASHES`` times."""


class InjectedFault(RuntimeError):
    """The crash ``MANTIS_TEST_FAULT`` asks for."""


@dataclass(eq=False)
class _Batch:
    events: list[EventT[Any]]
    crashes: int = 0


class _Feed:
    """One agent stream's batches, across restarts of its agent."""

    def __init__(self, stream: Stream[Any]) -> None:
        self.taken: AsyncIterator[Sequence[EventT[Any]]] = stream.take_events(settings.batch_size, within=settings.batch_within)
        self.in_flight: _Batch | None = None
        self.retry: deque[_Batch] = deque()


_feeds: weakref.WeakKeyDictionary[Stream[Any], _Feed] = weakref.WeakKeyDictionary()


def _faults() -> dict[str, dict[bytes, int]]:
    out: dict[str, dict[bytes, int]] = {}
    for spec in filter(None, (settings.test_fault or "").split(",")):
        agent, _, rest = spec.partition(":")
        text, _, times = rest.partition(":")
        out.setdefault(agent, {})[text.encode()] = int(times or 1)
    return out


_FAULTS = _faults()


def _inject_fault(agent: str, events: Sequence[EventT[Any]]) -> None:
    faults = _FAULTS.get(agent, {})
    for text, left in faults.items():
        if left and any(isinstance(e.message.value, bytes) and text in e.message.value for e in events):
            faults[text] = left - 1
            raise InjectedFault(f"{agent}: crash injected by MANTIS_TEST_FAULT on {text!r}")


def _hold(events: Sequence[EventT[Any]]) -> None:
    for event in events:
        event.message.incref()


def _release(events: Sequence[EventT[Any]]) -> None:
    for event in events:
        event.message.ack(app.consumer)


def _after_crash(batch: _Batch) -> list[_Batch]:
    """What to retry: the whole batch after its first crash, then its messages one by one."""
    batch.crashes += 1
    if batch.crashes < MAX_CRASHES or len(batch.events) == 1:
        return [batch]
    return [_Batch([event], crashes=1) for event in batch.events]


async def batches(stream: Stream[Any], stage: str) -> AsyncIterator[list[EventT[Any]]]:
    """The agent's batches: first any batch its previous run crashed on, then the stream's."""
    feed = _feeds.get(stream)
    if feed is None:
        feed = _feeds[stream] = _Feed(stream)
    agent = stream.prefix or stage
    if feed.in_flight is not None:
        crashed, feed.in_flight = feed.in_flight, None
        log.error("%s: the agent was restarted after a crash; processing its batch of %d message(s) again (crash %d)",
                  agent, len(crashed.events), crashed.crashes + 1)
        feed.retry.extendleft(reversed(_after_crash(crashed)))
    while feed.retry:
        batch = feed.retry.popleft()
        assigned = app.consumer.assignment()
        batch.events = [e for e in batch.events if e.message.tp in assigned]  # else another worker has them now
        if not batch.events:
            continue
        if batch.crashes >= MAX_CRASHES:
            [event] = batch.events
            await send_dead_letter(event, stage, StageCrashed(
                f"the {agent} agent crashed {batch.crashes} times on this message alone (see the worker log)"))
        else:
            feed.in_flight = batch
            _inject_fault(agent, batch.events)
            yield batch.events
            feed.in_flight = None
        _release(batch.events)
    async for events in feed.taken:
        batch = _Batch(list(events))
        _hold(batch.events)
        feed.in_flight = batch
        _inject_fault(agent, batch.events)
        yield batch.events
        feed.in_flight = None
        _release(batch.events)
