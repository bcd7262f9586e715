"""A busy worker joins consecutive takes into fewer, larger batches; an idle one does not wait for more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from mantis_stream.agents import _replay
from mantis_stream.app import app
from mantis_stream.settings import Settings


class Message:
    def __init__(self) -> None:
        self.refs, self.acked = 0, 0

    def incref(self) -> None:
        self.refs += 1

    def ack(self, consumer: Any) -> None:
        self.acked += 1


class FakeStream:
    """Stands in for a Faust stream: ``take_events`` yields the given takes, ``delay`` seconds apart."""

    prefix = "test-agent"

    def __init__(self, takes: list[int], delay: float = 0.0) -> None:
        self.takes, self.delay = takes, delay

    async def take_events(self, max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
        for size in self.takes:
            await asyncio.sleep(self.delay)
            yield [SimpleNamespace(message=Message()) for _ in range(size)]


def settings_with(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    monkeypatch.setattr(_replay, "settings", Settings(**values))


async def batch_sizes(stream: FakeStream) -> list[int]:
    app.finalize()
    return [len(events) async for events in _replay.batches(stream, "test")]  # type: ignore[arg-type]


def test_load_counts_cpu_seconds_per_wall_second() -> None:
    now, used = [0.0], [0.0]
    load = _replay.Load(window=1.0, clock=lambda: now[0], cpu=lambda: used[0])
    assert not load.busy()
    now[0], used[0] = 1.0, 0.6
    assert load.busy()  # 0.6 of a core
    now[0], used[0] = 1.5, 1.5
    assert load.busy()  # within the window: the last measure holds
    now[0], used[0] = 3.0, 1.4
    assert not load.busy()  # 0.8 CPU s over 2 s: 0.4 of a core
    now[0], used[0] = 4.0, 2.2
    assert load.busy()  # 0.8 of a core


async def test_a_busy_worker_joins_takes_up_to_the_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, batch_size=10, batch_within=0.0, batch_busy_within=5.0)
    monkeypatch.setattr(_replay.load, "busy", lambda: True)
    stream = FakeStream([3] * 8)
    sizes = await batch_sizes(stream)
    assert sizes == [12, 12]  # 3+3+3+3 reaches 10: each batch under twice the batch size
    assert sum(sizes) == 24  # every event once


async def test_an_idle_worker_takes_what_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, batch_size=10, batch_within=0.0, batch_busy_within=5.0)
    monkeypatch.setattr(_replay.load, "busy", lambda: False)
    assert await batch_sizes(FakeStream([3] * 4)) == [3, 3, 3, 3]


async def test_a_busy_worker_waits_no_longer_than_busy_within(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, batch_size=1000, batch_within=0.0, batch_busy_within=0.2)
    monkeypatch.setattr(_replay.load, "busy", lambda: True)
    stream = FakeStream([1] * 12, delay=0.05)
    started = time.monotonic()
    sizes = await batch_sizes(stream)
    assert len(sizes) >= 2 and all(size <= 6 for size in sizes) and sum(sizes) == 12
    assert time.monotonic() - started < 2.0


async def test_joined_events_are_held_until_the_batch_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, batch_size=10, batch_within=0.0, batch_busy_within=5.0)
    monkeypatch.setattr(_replay.load, "busy", lambda: True)
    async for events in _replay.batches(FakeStream([4, 4, 4]), "test"):  # type: ignore[arg-type]
        assert len(events) == 12
        assert all(e.message.refs == 1 and e.message.acked == 0 for e in events)  # none released mid-batch
        held = events
    assert all(e.message.acked == 1 for e in held)  # released (acked) once the batch was done


async def test_a_busy_worker_does_not_hold_a_batch_when_the_stream_goes_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_with(monkeypatch, batch_size=100, batch_within=0.0, batch_busy_within=0.2)
    monkeypatch.setattr(_replay.load, "busy", lambda: True)
    stream, quiet = FakeStream([]), FakeStream([3])

    async def takes(max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
        async for take in quiet.take_events(max_, within):
            yield take
        await asyncio.sleep(60)  # no more input for a long while
        yield []

    monkeypatch.setattr(stream, "take_events", takes)
    started = time.monotonic()
    async for events in _replay.batches(stream, "test"):  # type: ignore[arg-type]
        assert len(events) == 3
        break
    assert time.monotonic() - started < 1.0  # processed after the busy wait, not when the next input comes
    feed = _replay._feeds[stream]  # type: ignore[index]
    assert feed.pending is not None and not feed.pending.done()  # the pull goes on, for the next batch
    feed.pending.cancel()
