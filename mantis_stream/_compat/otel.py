"""The OpenTelemetry SDK's batch processor internals that tracing/setup.py needs.

Why: the public ``BatchSpanProcessor`` drops the *oldest* span when its queue is
full and offers no count of the drops, no way to queue anything but an SDK
span, and no shutdown bounded in time.  The worker drops *new* spans instead,
counts them (:attr:`mantis_stream.tracing.setup.TracingRuntime.dropped_spans`),
queues the lean tracer's span records beside the SDK's spans, and stops within
``MANTIS_TRACING_SHUTDOWN_TIMEOUT``: all of that needs the processor's
``BatchProcessor`` (``_batch_processor``: ``_queue``, ``_max_queue_size``,
``emit``, ``shutdown(timeout_millis)``), private in the SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import cast

from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .versions import Tested, UntestedVersion, installed_version

__all__ = ["TESTED", "BatchQueue", "batch_queue"]

#: The SDK versions whose ``BatchSpanProcessor._batch_processor`` these shims were tested with.
TESTED = (Tested("opentelemetry-sdk", ">=1.45,<1.46"),)


@dataclass(frozen=True, slots=True)
class BatchQueue:
    """The queue behind a ``BatchSpanProcessor``: its fill, its bound, how to add to it and stop it."""

    queue: Sized
    max_size: int
    #: appends one item (an SDK span or a lean span record) for the export thread
    emit: Callable[[object], None]
    #: stops the export thread and the exporter within ``timeout_millis``
    shutdown: Callable[[int], None]


def batch_queue(processor: BatchSpanProcessor) -> BatchQueue:
    """The queue of ``processor`` (raises :class:`UntestedVersion` when this SDK keeps it elsewhere)."""
    inner = getattr(processor, "_batch_processor", None)
    queue = getattr(inner, "_queue", None)
    max_size = getattr(inner, "_max_queue_size", None)
    if inner is None or not isinstance(queue, Sized) or not isinstance(max_size, int):
        raise UntestedVersion(
            f"opentelemetry-sdk {installed_version('opentelemetry-sdk')}: BatchSpanProcessor has no "
            f"_batch_processor._queue/_max_queue_size; tested with opentelemetry-sdk{TESTED[0].versions}"
        )
    # The SDK types emit() for spans; the export process's exporter takes lean span records too.
    emit = cast("Callable[[object], None]", inner.emit)
    return BatchQueue(queue, max_size, emit, inner.shutdown)
