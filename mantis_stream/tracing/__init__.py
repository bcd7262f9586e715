"""Tracing for mantis-stream: one reading's journey across every stage, in Jaeger.

Why this exists
===============

Each pipeline stage (preprocessing, feature extraction, anomaly detection, RUL,
orchestrator, storage, and the HTTP ingestion) is reported as its own service,
with a ``process <topic>`` span per message (OpenTelemetry messaging
conventions 1.44), child spans for the stage's work, and the trace context
carried in Kafka headers from stage to stage, so that one trace shows a
reading from ``POST /api/v1/ingest`` (or a producer's ``traceparent``) to the
work order it caused.

Usage
=====

.. sourcecode:: python

    tracing.install(app, settings)          # once, in mantis_stream/app.py

    # in a batch agent
    async for events in stream.take_events(n, within=t):
        with tracing.batch_span("feature-extraction", "compute_fft", events):
            results = compute(...)
        for event, result in zip(events, results):
            with tracing.use_event(event):
                await features_topic.send(value=result)   # carries this event's context

Tests call :func:`configure` with an ``InMemorySpanExporter`` instead.

Notes
=====

* Libraries and agents use the OpenTelemetry API and these helpers only;
  :mod:`.setup` is the one place that builds the SDK (lazily, from settings and
  the ``OTEL_*`` environment, at worker start or first use).
* Sampling is parent-based with the Jaeger strategies file deciding at roots
  (:mod:`.sampling`); anomalies, work orders and errors are recorded in
  unsampled traces too (:func:`keep`, :func:`fail_event`).
* Between our own stages records travel many to a Kafka message
  (``agents._batch``); the sensor skips those messages and :mod:`.items` gives
  each record the ``process`` span a message of its own would get (a batch is
  one Kafka send, so a record has no ``send`` span: the next stage's process
  span is the child of this one).
* Span attributes go through :func:`span_attributes`: identifiers and small
  numbers, never payloads or secrets.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from typing import Any

from .attributes import DEFAULT_DENYLIST, set_denylist, span_attributes
from .context import context_of, use_event
from .items import carried, open_item, outgoing_carrier, use_item
from .logs import LOG_FORMAT, install_log_correlation
from .sampling import StrategiesFileError, StrategySampler, load_strategies
from .sensor import TracingSensor
from .setup import TracingRuntime, configure, current_runtime, shutdown, stage_tracer
from .spans import annotate, batch_span, fail_event, http_server_span, keep, mark_failed, set_http_status

__all__ = [
    "LOG_FORMAT", "StrategiesFileError", "StrategySampler", "TracingRuntime", "TracingSensor",
    "annotate", "batch_span", "carried", "configure", "context_of", "current_runtime", "fail_event", "http_server_span",
    "install", "keep", "load_strategies", "mark_failed", "open_item", "outgoing_carrier", "set_denylist", "set_http_status",
    "shutdown", "span_attributes", "stage_tracer", "use_event", "use_item",
]

log = logging.getLogger("mantis_stream.tracing")
_atexit_registered = False


def install(app: Any, settings: Any) -> None:
    """Register the tracing sensor on ``app`` and arrange for the SDK to be configured.

    Idempotent per app.  Configuration happens at worker start
    (``app.on_worker_init``: a bad strategies file stops the worker with one line
    naming MANTIS_SAMPLING_STRATEGIES) or at first use, whichever comes first;
    importing the app configures nothing.  Spans are flushed when the app stops
    (bounded wait) and the SDK shut down at process exit.
    """
    global _atexit_registered
    from .. import stages, topics
    from . import setup

    if any(isinstance(s, TracingSensor) for s in app.sensors):
        return
    if any(type(s).__name__ == "OpenTelemetrySensor" for s in app.sensors):
        log.warning("tracing: faust's OpenTelemetrySensor is also registered; every message gets two process spans")
    app.sensors.add(TracingSensor(
        stages=stages.AGENT_STAGES, dead_letter_topics=(topics.DEAD_LETTERS,), batched_topics=topics.BATCHED,
        default_stage="ingestion",
    ))
    install_log_correlation()
    set_denylist(DEFAULT_DENYLIST + settings.trace_deny_attributes)
    if setup._runtime is None:
        setup.set_pending(settings)

    def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
        if setup._runtime is not None:
            return
        try:
            configure(settings)
        except (StrategiesFileError, ValueError) as exc:
            raise SystemExit(f"mantis-stream: {exc}") from None

    async def _on_before_shutdown(sender: Any = None, **kwargs: Any) -> None:
        rt = setup._runtime
        if rt is None:
            return
        loop = asyncio.get_running_loop()
        try:  # flush in a thread: a down collector must not block the loop
            await asyncio.wait_for(loop.run_in_executor(None, rt.force_flush), timeout=2.0)
        except Exception:
            log.debug("tracing: flush at shutdown did not finish", exc_info=True)

    app.on_worker_init.connect(_on_worker_init, weak=False)
    app.on_before_shutdown.connect(_on_before_shutdown, weak=False)
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
