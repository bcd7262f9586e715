"""The model cache's checkpoint policy: a changed model is written at most every N seconds,
and every pending change is written on a timer, before a hand-over and before a stop.

The Faust table here is a dict (the cache only assigns keys); the broker-level
behaviour (state back after a graceful restart and a rebalance) is in
``test_e2e_restart.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.streams import current_event

from mantis_stream.agents import _state
from mantis_stream.agents._state import TableBackedCache


class Hooks:
    """What the cache connects to on the app: two signals, a timer and the producer."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.timers: list[tuple[float, Any]] = []
        self.producer_flushes = 0

    def signal(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(connect=lambda fn: self.handlers.__setitem__(name, fn))

    def timer(self, interval: float, name: str) -> Any:
        return lambda fn: self.timers.append((interval, fn)) or fn

    async def flush(self) -> None:
        self.producer_flushes += 1


class Event:
    """Stands for the Faust event whose partition the write goes to."""


class Table(dict):
    name = "models"

    def __init__(self, hooks: Hooks) -> None:
        super().__init__()
        self.writes: list[tuple[str, bytes]] = []
        self.scopes: list[object] = []  # the current event at each write
        self.app = SimpleNamespace(
            on_partitions_revoked=hooks.signal("revoked"), on_before_shutdown=hooks.signal("shutdown"),
            timer=hooks.timer, producer=SimpleNamespace(flush=hooks.flush),
        )

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes.append((key, value))
        self.scopes.append(current_event())
        super().__setitem__(key, value)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(_state.time, "monotonic", lambda: now[0])
    return now


def make(interval: float) -> tuple[TableBackedCache[list[int]], Table, Hooks]:
    hooks = Hooks()
    table = Table(hooks)
    cache: TableBackedCache[list[int]] = TableBackedCache(
        table, new=lambda key: [], load=lambda key, raw: list(raw), dump=bytes, checkpoint_seconds=interval,
    )
    return cache, table, hooks


def touch(cache: TableBackedCache[list[int]], key: str, value: int) -> Event:
    cache.get(key).append(value)
    event = Event()
    cache.save([(key, event)])
    return event


async def test_a_changed_model_is_written_at_most_every_interval_and_on_the_timer(clock: list[float]) -> None:
    cache, table, hooks = make(10.0)
    touch(cache, "a", 1)
    assert table.writes == [("a", bytes([1]))], "a model never written is written at once"
    clock[0] += 4
    last = touch(cache, "a", 2)
    assert len(table.writes) == 1, "written 4 s ago: waits"
    [(interval, on_timer)] = hooks.timers
    assert interval == 10.0
    await on_timer()
    assert len(table.writes) == 1
    clock[0] += 6
    await on_timer()
    assert table.writes[-1] == ("a", bytes([1, 2])), "the timer writes the latest state once due"
    assert table.scopes[-1] is last, "in the scope of the last event that changed it (its changelog partition)"
    await on_timer()
    assert len(table.writes) == 2, "nothing changed since: nothing written"


async def test_a_hand_over_writes_every_pending_change_and_flushes_the_producer(clock: list[float]) -> None:
    cache, table, hooks = make(10.0)
    touch(cache, "a", 1)
    touch(cache, "b", 1)
    clock[0] += 1
    touch(cache, "a", 2)
    touch(cache, "b", 2)
    assert len(table.writes) == 2
    await hooks.handlers["revoked"](None, set(), signal=None)  # as mode calls a receiver
    assert table.writes[2:] == [("a", bytes([1, 2])), ("b", bytes([1, 2]))]
    assert hooks.producer_flushes == 1, "on the broker before the partition's next owner recovers"
    assert cache.get("a") == [1, 2], "a revoked partition's models are reloaded from the table"


async def test_a_graceful_stop_writes_every_pending_change(clock: list[float]) -> None:
    cache, table, hooks = make(10.0)
    touch(cache, "a", 1)
    touch(cache, "a", 2)
    await hooks.handlers["shutdown"](None, signal=None)
    assert table.writes[-1] == ("a", bytes([1, 2]))


def test_interval_zero_writes_after_every_batch(clock: list[float]) -> None:
    cache, table, hooks = make(0.0)
    for value in range(3):
        touch(cache, "a", value)
    assert [value for _, value in table.writes] == [bytes([0]), bytes([0, 1]), bytes([0, 1, 2])]
    assert hooks.timers == [], "no timer needed"


def test_apply_steps_each_record_through_its_keys_state_and_collects_failures() -> None:
    def load(key: str, raw: bytes) -> list[int]:
        if raw == b"\xff":
            raise ValueError("bad state")
        return list(raw)

    table = Table(Hooks())
    dict.__setitem__(table, "corrupt", b"\xff")  # a stored state the loader refuses
    cache: TableBackedCache[list[int]] = TableBackedCache(table, new=lambda key: [], load=load, dump=bytes,
                                                          checkpoint_seconds=0.0)
    record = lambda value: SimpleNamespace(value=value, event=Event())  # noqa: E731
    a1, a2, bad, c1, c2 = record(1), record("x"), record(2), record(3), record(4)

    def step(state: list[int], item: Any) -> int:
        state.append(int(item.value))
        return sum(state)

    done, failed, touched = cache.apply({"a": [a1, a2], "corrupt": [bad], "c": [c1, c2]}, step)
    assert [(item, result) for item, _, result in done] == [(a1, 1), (c1, 3), (c2, 7)]
    assert all(state is cache.get(key) for (_, state, _), key in zip(done, ("a", "c", "c")))
    assert [(item, type(exc)) for item, exc in failed] == [(a2, ValueError), (bad, ValueError)]
    assert touched == [("a", a2.event), ("c", c2.event)], "keys whose state was used, with their last event"
