"""Per-key model state kept in a changelogged Faust table, with a local cache.

Why: the anomaly and RUL models are Python objects; (de)serialising them on
every event would dominate the stage's cost.  The cache keeps live objects
between batches and writes a touched key back at most every
``checkpoint_seconds`` (a detector is ~16 kB: at a steady rate, writing every
touched model after every small batch was the stage's largest cost).  Every
pending write is made before the partitions are handed over (revocation) and
before a graceful stop, so the state moves with its partition and survives a
restart; a crash loses at most the last interval's learning (the readings
themselves are reprocessed from the uncommitted offsets).  A revoked assignment
empties the cache so a partition that comes back is reloaded from its changelog.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from faust.types import EventT, TableT

if TYPE_CHECKING:
    from mode.types.signals import BaseSignalT

from ..app import app, settings
from ._events import event_scope

T = TypeVar("T")
R = TypeVar("R")


def bytes_table(name: str) -> TableT[Any, Any]:
    """A changelogged table of ``str`` keys and opaque ``bytes`` values.

    Faust derives the changelog's codecs from the types: ``bytes`` values are
    written raw, ``str`` keys as JSON.
    """
    return app.Table(name, default=None, partitions=settings.partitions, key_type=str, value_type=bytes)


class TableBackedCache(Generic[T]):
    def __init__(
        self, table: TableT[Any, Any], new: Callable[[str], T], load: Callable[[str, bytes], T], dump: Callable[[T], bytes],
        checkpoint_seconds: float | None = None,
    ) -> None:
        self.table = table
        self._new, self._load, self._dump = new, load, dump
        self.checkpoint_seconds = settings.checkpoint_seconds if checkpoint_seconds is None else checkpoint_seconds
        self._live: dict[str, T] = {}
        self._dirty: dict[str, EventT[Any]] = {}  # key -> the last event that changed it
        self._written: dict[str, float] = {}  # key -> monotonic time of its last write
        app = table.app
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)
        if self.checkpoint_seconds > 0:
            app.timer(self.checkpoint_seconds, name=f"checkpoint-{table.name}")(self._on_timer)

    async def _on_revoked(self, sender: object, /, *args: object, signal: BaseSignalT[object], **kwargs: object) -> None:
        if self.flush():
            await self.table.app.producer.flush()  # on the broker before the next owner recovers
        self._live.clear()
        self._written.clear()

    async def _on_shutdown(self, sender: object, /, *args: object, signal: BaseSignalT[object], **kwargs: object) -> None:
        self.flush()  # Faust flushes the producer right after this signal

    async def _on_timer(self) -> None:
        self._write_due()

    def get(self, key: str) -> T:
        obj = self._live.get(key)
        if obj is None:
            raw = self.table.get(key)
            obj = self._load(key, raw) if raw else self._new(key)
            self._live[key] = obj
        return obj

    def apply(self, by_key: Mapping[str, Sequence[Any]], step: Callable[[T, Any], R],
              ) -> tuple[list[tuple[Any, T, R]], list[tuple[Any, Exception]], list[tuple[str, EventT[Any]]]]:
        """Each record (``_batch.Item``) through its key's object, in order.

        Returns (record, object, result) for the records done, (record, error) for
        the failed ones (a state that cannot be loaded fails all its records; a
        step that raises fails one), and (key, last event) of every key used,
        ready for :meth:`save`.
        """
        done: list[tuple[Any, T, R]] = []
        failed: list[tuple[Any, Exception]] = []
        touched: list[tuple[str, EventT[Any]]] = []
        for key, items in by_key.items():
            try:
                obj = self.get(key)
            except Exception as exc:  # noqa: BLE001 - a state that cannot be loaded: its records cannot be used
                failed.extend((item, exc) for item in items)
                continue
            touched.append((key, items[-1].event))
            for item in items:
                try:
                    done.append((item, obj, step(obj, item)))
                except Exception as exc:  # noqa: BLE001 - a bad record must not stop the stage
                    failed.append((item, exc))
        return done, failed, touched

    def keys(self) -> set[str]:
        """Every key held here: live objects and this worker's table partitions."""
        return set(self._live) | set(self.table.keys())

    def save(self, last_event_by_key: Iterable[tuple[str, EventT[Any]]]) -> None:
        """Mark each touched key changed by its last event; write those not written for ``checkpoint_seconds``."""
        self._dirty.update(last_event_by_key)
        self._write_due()

    def flush(self) -> int:
        """Write every changed key now; returns how many."""
        keys = list(self._dirty)
        self._write(keys)
        return len(keys)

    def _write_due(self) -> None:
        """Write the changed keys not written for ``checkpoint_seconds``."""
        horizon = time.monotonic() - self.checkpoint_seconds
        self._write([key for key in self._dirty if self._written.get(key, float("-inf")) <= horizon])

    def _write(self, keys: Iterable[str]) -> None:
        """Each key in the scope of its last event, so it lands in that event's changelog partition."""
        now = time.monotonic()
        for key in keys:
            event = self._dirty.pop(key)
            with event_scope(event):
                self.table[key] = self._dump(self._live[key])
            self._written[key] = now
