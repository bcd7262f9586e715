"""A bounded write buffer that retries with backoff while a database is down.

Why: a sink agent must neither lose rows nor crash when PostgreSQL or InfluxDB
goes away for a while. ``WriteBuffer.put`` returns only once its rows are
written, so the agent acknowledges its Kafka batch only after that (at-least
once; the writes are idempotent). While the database is down, ``put`` waits and
retries with exponential backoff; the rows held in memory never exceed
``capacity`` (callers beyond it wait: back-pressure, and Kafka keeps the rest).

Usage::

    buffer = WriteBuffer(write_rows, is_transient=my_classifier, name="postgres")
    await buffer.put(rows)       # durable when it returns
    await buffer.close()         # pending puts raise BufferClosed (not acked)

:class:`BufferedSink` is what the PostgreSQL and InfluxDB sinks share on top of
it: the buffer, and a ``start`` that survives an outage.

Notes:
- Group commit: concurrent ``put`` calls share flushes of up to ``max_batch`` rows.
- A non-transient error (bad data) on a batch is retried row by row; rows that
  still fail go to ``on_reject`` and are dropped, so one bad row cannot loop.
- Transient errors retry forever (until ``close``): losing a work order is worse
  than waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..settings import mask_url

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds between the warnings of a lasting outage.
REMIND_EVERY = 60.0

#: Writes a batch of rows; raises on failure.
FlushFn = Callable[[Sequence[T]], Awaitable[None]]
#: True when an exception means "try again later" (outage), False for bad data.
TransientFn = Callable[[BaseException], bool]
#: Told about a row dropped after a non-transient error.
RejectFn = Callable[[T, BaseException], None]


class BufferClosed(RuntimeError):
    """The buffer was closed before these rows could be written."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor**n``, at most ``maximum`` seconds."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        return base * (1.0 - self.jitter * random.random())


@dataclass
class BufferStats:
    pending: int = 0
    high_water: int = 0
    written: int = 0
    rejected: int = 0
    failures: int = 0
    #: Seconds the current outage has lasted (0 when writes succeed).
    outage_seconds: float = 0.0


def _default_reject(row: object, exc: BaseException) -> None:
    log.error("dropping a row the database refuses: %s: %r", exc, row)


class WriteBuffer(Generic[T]):
    def __init__(
        self,
        flush: FlushFn[T],
        *,
        is_transient: TransientFn,
        name: str,
        capacity: int = 10_000,
        max_batch: int = 1_000,
        backoff: Backoff = Backoff(),
        on_reject: RejectFn[T] | None = None,
    ) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError("capacity and max_batch must be positive")
        self._flush = flush
        self._is_transient = is_transient
        self.name = name
        self.capacity = capacity
        self.max_batch = min(max_batch, capacity)
        self.backoff = backoff
        self._on_reject = on_reject or _default_reject
        self._pending: list[T] = []
        self._enqueued = 0  # rows ever accepted
        self._done = 0  # rows written or rejected (all rows before this index are settled)
        self._lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._outage_since: float | None = None
        self._last_warning = 0.0
        self.stats = BufferStats()

    # -- public ---------------------------------------------------------------

    async def put(self, rows: Sequence[T]) -> None:
        """Write ``rows``; returns when they are written (or rejected as bad data)."""
        for start in range(0, len(rows), self.capacity):
            chunk = rows[start : start + self.capacity]
            # Room for the chunk: flush what is pending first (back-pressure).
            while True:
                self._check_open()
                if len(self._pending) + len(chunk) <= self.capacity:
                    break
                await self._flush_until(self._enqueued)
            self._pending.extend(chunk)
            self._enqueued += len(chunk)
            mark = self._enqueued
            self.stats.pending = len(self._pending)
            self.stats.high_water = max(self.stats.high_water, len(self._pending))
            await self._flush_until(mark)

    async def close(self) -> None:
        """Stop retrying: waiting ``put`` calls raise :class:`BufferClosed`."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- internals ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise BufferClosed(f"{self.name}: closed with {len(self._pending)} rows unwritten")

    async def _flush_until(self, mark: int) -> None:
        async with self._lock:
            while self._done < mark:
                self._check_open()
                batch = self._pending[: self.max_batch]
                await self._write(batch)
                del self._pending[: len(batch)]
                self._done += len(batch)
                self.stats.pending = len(self._pending)

    async def _write(self, batch: Sequence[T]) -> None:
        """Write one batch, retrying outages; split it when the data is refused."""
        attempt = 0
        while True:
            try:
                await self._flush(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any driver error is classified below: retried, or split to find the bad row
                self.stats.failures += 1
                if not self._is_transient(exc):
                    await self._write_rows_one_by_one(batch, exc)
                    return
                await self._wait_outage(exc, attempt)
                attempt += 1
                continue
            self.stats.written += len(batch)
            self._recovered()
            return

    async def _write_rows_one_by_one(self, batch: Sequence[T], exc: BaseException) -> None:
        if len(batch) == 1:
            self.stats.rejected += 1
            try:
                self._on_reject(batch[0], exc)
            except Exception:  # a reject hook must not stop the sink
                log.exception("%s: reject hook failed", self.name)
            return
        log.warning("%s: batch of %d refused (%s); writing row by row", self.name, len(batch), exc)
        for row in batch:
            await self._write([row])

    async def _wait_outage(self, exc: BaseException, attempt: int) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = self._last_warning = now
            log.warning(
                "%s unavailable (%s: %s); holding %d rows (capacity %d), retrying with backoff",
                self.name, type(exc).__name__, exc, len(self._pending), self.capacity,
            )
        elif now - self._last_warning >= REMIND_EVERY:
            self._last_warning = now
            log.warning(
                "%s still unavailable after %.0f s (%s: %s); holding %d rows",
                self.name, now - self._outage_since, type(exc).__name__, exc, len(self._pending),
            )
        else:
            log.debug("%s still unavailable (attempt %d): %s", self.name, attempt + 1, exc)
        self.stats.outage_seconds = now - self._outage_since
        delay = self.backoff.delay(attempt)
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=delay)
        except TimeoutError:
            return
        self._check_open()

    def _recovered(self) -> None:
        if self._outage_since is not None:
            log.warning(
                "%s available again after %.1f s; %d rows pending",
                self.name, time.monotonic() - self._outage_since, len(self._pending),
            )
            self._outage_since = None
            self.stats.outage_seconds = 0.0


class BufferedSink(ABC, Generic[T]):
    """A database sink whose rows go through a :class:`WriteBuffer`.

    Why: both sinks must start alike: a database that is down at start is
    logged and left to the buffer's retries; any other error raises.
    """

    def __init__(
        self,
        system: str,
        url: str,
        where: str,
        *,
        log: logging.Logger,
        is_transient: TransientFn,
        capacity: int,
        max_batch: int,
        backoff: Backoff,
        on_reject: RejectFn[T] | None,
    ) -> None:
        self._system = system  # "PostgreSQL", "InfluxDB": the logs' first word
        self._url = url
        self._log = log
        self._is_transient = is_transient
        self._buffer: WriteBuffer[T] = WriteBuffer(
            self._flush,
            is_transient=is_transient,
            name=f"{system} {where}",
            capacity=capacity,
            max_batch=max_batch,
            backoff=backoff,
            on_reject=on_reject,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url(self._url)!r})"

    @property
    def stats(self) -> BufferStats:
        return self._buffer.stats

    async def start(self) -> bool:
        """Get ready to write; on an outage log and return False (writes retry)."""
        try:
            await self._ensure_ready()
        except Exception as exc:
            if not self._is_transient(exc):
                raise
            self._log.warning(
                "%s %s not reachable at start (%s); will retry on write", self._system, mask_url(self._url), exc
            )
            return False
        return True

    @abstractmethod
    async def _ensure_ready(self) -> object:
        """Connect and prepare the database (schema, database) once; return the connection."""

    @abstractmethod
    async def _flush(self, batch: Sequence[T]) -> None:
        """Write one batch; the buffer retries it when this raises an outage."""
