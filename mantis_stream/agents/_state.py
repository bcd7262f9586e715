"""Per-key model state kept in a changelogged Faust table, with a local cache.

Why: the anomaly and RUL models are Python objects; (de)serialising them on
every event would dominate the stage's cost.  The cache keeps live objects
between batches, each batch writes every touched key back once (so the state
survives a restart and moves with its partition on rebalance), and a revoked
assignment empties the cache so a partition that comes back is reloaded from
its changelog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from faust.types import EventT, TableT

from ..app import app, settings
from ._events import event_scope

T = TypeVar("T")


def bytes_table(name: str) -> TableT:
    """A changelogged table of ``str`` keys and opaque ``bytes`` values.

    Faust derives the changelog's codecs from the types: ``bytes`` values are
    written raw, ``str`` keys as JSON.
    """
    return app.Table(name, default=None, partitions=settings.partitions, key_type=str, value_type=bytes)


class TableBackedCache(Generic[T]):
    def __init__(
        self, table: TableT, new: Callable[[str], T], load: Callable[[str, bytes], T], dump: Callable[[T], bytes],
    ) -> None:
        self.table = table
        self._new, self._load, self._dump = new, load, dump
        self._live: dict[str, T] = {}
        table.app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_revoked(self, sender: object, revoked: object, **kwargs: object) -> None:
        self._live.clear()

    def get(self, key: str) -> T:
        obj = self._live.get(key)
        if obj is None:
            raw = self.table.get(key)
            obj = self._load(key, raw) if raw else self._new(key)
            self._live[key] = obj
        return obj

    def save(self, last_event_by_key: Iterable[tuple[str, EventT]]) -> None:
        """Write each touched key once, in the scope of an event of its partition."""
        for key, event in last_event_by_key:
            with event_scope(event):
                self.table[key] = self._dump(self._live[key])
