"""The methods of Faust, mode and aiokafka that the worker replaces or reaches into.

Why: the fixes in :mod:`mantis_stream.recovery`, :func:`mantis_stream.kafka.limit_fetch_wait`
and :func:`mantis_stream.runtime.bound_stop_time` change behaviour that none of
these libraries exposes: the table recovery's resume of the streams and its
changelog highwaters (``faust.tables.recovery.Recovery``), the fetch wait Faust
hard-codes when it builds the worker's consumer, what happens on the first
stop signal (``mode.worker.Worker``), and the app's aiokafka producer, which
bulk publishing hands whole record batches to (``agents._publish``).  Each shim replaces one method once
(installing it again is a no-op) and says what it needs when it is missing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Set
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, ConsumerT
from mode.worker import Worker

from .versions import Tested, UntestedVersion, installed_version

__all__ = ["TESTED", "after_highwaters", "aiokafka_producer", "before_stream_resume", "on_first_stop_signal",
           "worker_fetch_max_wait"]

#: The versions these shims were tested with.
TESTED = (
    Tested("faust-streaming", ">=0.15.3,<0.16"),
    Tested("mode-streaming", ">=0.7.1,<0.8"),
    Tested("aiokafka", ">=0.14,<0.15"),
)

#: Recovery's two ways to resume the stream partitions (after recovering tables, and with none to recover).
_RESUMES = ("on_recovery_completed", "_resume_streams")


#: Each installed replacement and the library's method it wraps.
_REPLACED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _original(owner: type, name: str, distribution: str) -> Callable[..., Any]:
    """``owner.name`` as the library defines it (also when a shim already replaced it)."""
    method: Callable[..., Any] | None = getattr(owner, name, None)
    if method is None:
        raise UntestedVersion(f"{distribution} {installed_version(distribution)}: {owner.__qualname__}.{name} is gone; "
                              f"tested with {_tested(distribution)}")
    return _REPLACED.get(method, method)


def _tested(distribution: str) -> str:
    return next(f"{t.distribution}{t.versions}" for t in TESTED if t.distribution == distribution)


def _install(owner: type, name: str, original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
    functools.update_wrapper(replacement, original)  # its name, and __wrapped__ for inspect.signature
    _REPLACED[replacement] = original
    setattr(owner, name, replacement)


def before_stream_resume(hook: Callable[[Recovery], None]) -> None:
    """Call ``hook(recovery)`` just before Faust resumes the stream partitions after a recovery."""
    for name in _RESUMES:
        resume = _original(Recovery, name, "faust-streaming")

        async def resumed(self: Recovery, generation_id: int = 0, _resume: Callable[..., Any] = resume) -> None:
            hook(self)
            await _resume(self, generation_id)

        _install(Recovery, name, resume, resumed)


HighwaterFix = Callable[[Recovery, Set[TP], Counter[TP]], Awaitable[None]]


def after_highwaters(fix: HighwaterFix) -> None:
    """Await ``fix(recovery, tps, highwaters)`` after Faust reads the changelog highwaters it recovers up to.

    ``highwaters`` maps each changelog partition to the offset of its last record
    (Faust's ``Recovery._build_highwaters`` destination); ``fix`` may raise it.
    """
    build = _original(Recovery, "_build_highwaters", "faust-streaming")

    async def _build_highwaters(self: Recovery, consumer: ConsumerT, tps: Set[TP], destination: Counter[TP],
                                title: str) -> None:
        await build(self, consumer, tps, destination, title)
        await fix(self, tps, destination)

    _install(Recovery, "_build_highwaters", build, _build_highwaters)


def worker_fetch_max_wait(max_wait_ms: int) -> None:
    """Make the worker's consumer ask for ``max_wait_ms`` per fetch instead of the 1500 Faust hard-codes.

    aiokafka reads the value when the consumer starts, after Faust builds it.
    """
    create = _original(AIOKafkaConsumerThread, "_create_worker_consumer", "faust-streaming")

    def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise UntestedVersion(f"aiokafka {installed_version('aiokafka')}: AIOKafkaConsumer has no "
                                  f"_fetch_max_wait_ms; tested with {_tested('aiokafka')}")
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    _install(AIOKafkaConsumerThread, "_create_worker_consumer", create, _create_worker_consumer)


def on_first_stop_signal(callback: Callable[[], None]) -> None:
    """Call ``callback()`` when the worker gets its first SIGTERM or SIGINT, before its stop begins."""
    schedule = _original(Worker, "_schedule_shutdown", "mode-streaming")

    def _schedule_shutdown(self: Worker, signal: Any) -> None:
        if not self._signal_stop_time:
            callback()
        schedule(self, signal)

    _install(Worker, "_schedule_shutdown", schedule, _schedule_shutdown)



def aiokafka_producer(producer: Any) -> Any:
    """The aiokafka producer behind the app's Faust producer (started on first use), with the app's settings.

    Faust's aiokafka driver keeps it as ``Producer._producer`` and offers no public accessor.
    """
    ensure = getattr(producer, "_ensure_producer", None)
    if ensure is None:
        raise UntestedVersion(f"faust-streaming {installed_version('faust-streaming')}: Producer._ensure_producer "
                              f"is gone; tested with {_tested('faust-streaming')}")
    return ensure()
