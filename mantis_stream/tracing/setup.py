"""The one place that builds the OpenTelemetry SDK: providers, sampler, processor, exporter.

Why this exists
===============

Each pipeline stage is its own service in Jaeger, so there is one
``TracerProvider`` per stage (``service.name`` from ``settings.services``), each
with the stage's :class:`~mantis_stream.tracing.sampling.StrategySampler`.
They all share ONE exporter behind ONE ``BatchSpanProcessor``: one queue, one
export thread, one connection to the collector.

The rest of the package (and the agents) only use the OpenTelemetry API and
:func:`stage_tracer`; tests call :func:`configure` with an in-memory exporter.

Environment (read by :func:`configure`)
=======================================

``OTEL_SDK_DISABLED=true``
    no spans at all (trace context still flows through the pipeline).
``OTEL_TRACES_EXPORTER``
    ``otlp`` (default), ``console``, ``none``; comma-separated for several.
``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
    ``grpc`` (default, as in OpenTelemetry Python) or ``http/protobuf``.
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``, ``..._INSECURE``
    read by the OTLP exporters themselves.
``MANTIS_TRACING_EXPORT``
    ``process`` (default): the exporters run in a child process fed compact
    span records over a pipe (:mod:`.export_process`), so OTLP encoding and
    sending take no time on the worker's interpreter; ``thread``: on the batch
    processor's thread in the worker, as OpenTelemetry does by default.
``OTEL_BSP_MAX_QUEUE_SIZE`` (2048), ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``
    the batch processor; when its queue is full new spans are dropped, counted
    (:attr:`TracingRuntime.dropped_spans`) and logged at most every 10 s.
``OTEL_PROPAGATORS``
    ``tracecontext,baggage`` (default); add ``b3``, ``b3multi``, ``jaeger``.
``OTEL_RESOURCE_ATTRIBUTES``
    merged into every stage's resource (``service.name`` stays the stage's).
``OTEL_TRACES_SAMPLER`` (+ ``_ARG``)
    when set, replaces the strategies file (e.g. ``always_on`` while debugging).
``MANTIS_SAMPLING_STRATEGIES``
    the Jaeger strategies file (``settings.sampling_strategies``).

Notes
=====

* A collector that is down or slow never slows the pipeline: the hot path only
  appends to a bounded in-memory queue; export happens on the processor's
  thread (which hands the spans to the export process), and :func:`shutdown` waits at most ``MANTIS_TRACING_SHUTDOWN_TIMEOUT``
  seconds (3), after a flush of at most 2 s when the app stops.
* :func:`configure` called again replaces the runtime (and shuts the old one
  down); tests rely on that.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PROPAGATORS
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._compat import otel as otel_compat
from ..settings import DEFAULT_SERVICES, Settings
from . import export_process, semconv
from .attributes import MAX_STRING
from .lean import LeanTracer
from .sampling import (
    SHIPPED_STRATEGIES,
    Strategies,
    StrategiesFileError,
    StrategySampler,
    load_strategies,
    parse_strategies,
)

__all__ = ["TracingRuntime", "configure", "current_runtime", "shutdown", "stage_tracer", "service_name"]

log = logging.getLogger("mantis_stream.tracing")

INSTRUMENTATION_NAME = "mantis_stream"
try:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _pkg_version

    _VERSION = _pkg_version("mantis-stream")
except PackageNotFoundError:  # running from a source tree that is not installed
    _VERSION = "0"

_DROP_LOG_INTERVAL = 10.0


class _DropCounter:
    """Counts spans lost (queue full, failed export) and logs them at most every 10 s."""

    def __init__(self) -> None:
        self.queue_full = 0
        self.export_failed = 0
        self._logged_at = 0.0
        self._logged_total = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return self.queue_full + self.export_failed

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + n)
            now = time.monotonic()
            if now - self._logged_at < _DROP_LOG_INTERVAL:
                return
            self._logged_at = now
            new, self._logged_total = self.total - self._logged_total, self.total
        log.warning(
            "tracing: %d span(s) dropped since last report (%d queue full, %d failed export in total); "
            "is the collector at OTEL_EXPORTER_OTLP_ENDPOINT up?", new, self.queue_full, self.export_failed,
        )


class _CountingExporter(SpanExporter):
    """Delegates to an exporter and counts the spans of failed exports."""

    def __init__(self, inner: SpanExporter, drops: _DropCounter) -> None:
        self.inner = inner
        self._drops = drops

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.debug("tracing: exporter raised", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._drops.add("export_failed", len(spans))
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # SpanExporter.shutdown takes no time limit; the gRPC and export-process exporters take one.
        shutdown: Callable[..., None] = self.inner.shutdown
        if "timeout_millis" in inspect.signature(shutdown).parameters:
            shutdown(timeout_millis=timeout_millis)
        else:
            shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BoundedBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that drops *new* spans when full, counting instead of warning per span."""

    def __init__(self, exporter: SpanExporter, drops: _DropCounter, max_queue_size: int | None = None) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size)
        self._drops = drops
        self._batch = otel_compat.batch_queue(self)
        self._queue, self._max = self._batch.queue, self._batch.max_size

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if len(self._queue) >= self._max:
            self._drops.add("queue_full")
            return
        self._batch.emit(span)

    def emit_record(self, record: tuple[object, ...]) -> None:
        """Queue a lean span's record (``lean``) for export, like ``on_end`` does a sampled SDK span."""
        if len(self._queue) >= self._max:
            self._drops.add("queue_full")
            return
        self._batch.emit(record)

    def shutdown_within(self, timeout_millis: int) -> None:
        self._batch.shutdown(timeout_millis)


def exporter_from_env() -> SpanExporter | None:
    """The exporter OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_* / MANTIS_TRACE_FILE ask for (None for ``none``)."""
    return export_process.exporter_from_env()


def _sampler_from_env(settings: Settings) -> Sampler | None:
    if not settings.otel_traces_sampler:
        return None
    # A provider built without a sampler takes the one OTEL_TRACES_SAMPLER(_ARG) names.
    sampler: Sampler = TracerProvider(shutdown_on_exit=False).sampler
    return sampler


def reload_propagators() -> None:
    """Rebuild the global propagator from OTEL_PROPAGATORS (the API reads it only at import)."""
    propagate.set_global_textmap(propagators_from_env())


def propagators_from_env() -> CompositePropagator:
    """The propagators OTEL_PROPAGATORS names, as the API builds them at import (entry points by name).

    An unknown name raises ValueError naming the variable.
    """
    names = [n.strip() for n in (os.environ.get(OTEL_PROPAGATORS) or "tracecontext,baggage").split(",")]
    if any(n.lower() == "none" for n in names):
        return CompositePropagator([])
    propagators: list[TextMapPropagator] = []
    for name in filter(None, names):
        found = entry_points(group="opentelemetry_propagator", name=name)
        if not found:
            raise ValueError(f"OTEL_PROPAGATORS: no propagator {name!r} is installed (misspelled, or a missing package?)")
        propagators.append(next(iter(found)).load()())
    return CompositePropagator(propagators)


@dataclass
class TracingRuntime:
    """The configured SDK: one provider per stage, one processor, one exporter."""

    settings: Settings
    enabled: bool
    exporter: SpanExporter | None = None
    processor: SpanProcessor | None = None
    strategies: Strategies | None = None
    sampler_override: Sampler | Callable[[str], Sampler] | None = None
    span_limits: SpanLimits | None = None
    drops: _DropCounter = field(default_factory=_DropCounter)
    providers: dict[str, TracerProvider] = field(default_factory=dict)
    _tracers: dict[str, trace.Tracer] = field(default_factory=dict)
    _samplers: dict[str, Sampler] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    @property
    def dropped_spans(self) -> int:
        return self.drops.total

    def service_name(self, stage: str) -> str:
        return self.settings.services.get(stage) or DEFAULT_SERVICES.get(stage) or stage

    def sampler(self, stage: str) -> Sampler | None:
        self.tracer(stage)
        return self._samplers.get(stage)

    def _make_sampler(self, service: str) -> Sampler:
        override = self.sampler_override
        if override is not None:
            return override(service) if callable(override) and not isinstance(override, Sampler) else override
        assert self.strategies is not None
        return StrategySampler.for_service(service, self.strategies)

    def tracer(self, stage: str) -> trace.Tracer:
        tracer = self._tracers.get(stage)
        if tracer is not None:
            return tracer
        with self._lock:
            tracer = self._tracers.get(stage)
            if tracer is not None:
                return tracer
            if not self.enabled or self._closed:
                tracer = trace.NoOpTracer()
            else:
                service = self.service_name(stage)
                if stage not in self.settings.services:
                    log.warning("tracing: unknown stage %r, reported as service %r", stage, service)
                sampler = self._make_sampler(service)
                resource = Resource.create(
                    {
                        semconv.SERVICE_NAME: service,
                        semconv.SERVICE_NAMESPACE: "mantis",
                        semconv.SERVICE_VERSION: _VERSION,
                        "mantis.stage": stage,
                    }
                )
                self._samplers[stage] = sampler
                if isinstance(self.exporter, export_process.ProcessSpanExporter) and isinstance(
                    self.processor, _BoundedBatchSpanProcessor
                ):
                    scope = InstrumentationScope(INSTRUMENTATION_NAME, _VERSION)
                    origin = self.exporter.origin(export_process.origin_key(resource, scope))
                    assert self.span_limits is not None
                    tracer = LeanTracer(sampler, self.span_limits, origin, self.processor.emit_record)
                else:
                    provider = TracerProvider(
                        sampler=sampler, resource=resource, span_limits=self.span_limits, shutdown_on_exit=False
                    )
                    if self.processor is not None:
                        provider.add_span_processor(self.processor)
                    self.providers[stage] = provider
                    tracer = provider.get_tracer(INSTRUMENTATION_NAME, _VERSION)
            self._tracers[stage] = tracer
            return tracer

    def force_flush(self, timeout_millis: int = 5_000) -> bool:
        """Export every finished span now (through the export process too, when there is one)."""
        if self.processor is None:
            return True
        deadline = time.monotonic() + timeout_millis / 1000
        if not self.processor.force_flush(timeout_millis):
            return False
        if isinstance(self.exporter, export_process.ProcessSpanExporter):
            return self.exporter.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if timeout is None:
            timeout = self.settings.tracing_shutdown_timeout
        processor = self.processor
        if processor is None:
            return
        try:
            if isinstance(processor, _BoundedBatchSpanProcessor):
                processor.shutdown_within(int(timeout * 1000))
            else:
                processor.shutdown()
        except Exception:  # pragma: no cover - never break shutdown
            log.debug("tracing: processor shutdown failed", exc_info=True)
        if self.drops.total:
            log.warning("tracing: %d span(s) were dropped in total", self.drops.total)


_DEFAULT_STRATEGIES_PATH = Path(Settings.model_fields["sampling_strategies"].default)


def _strategies_for(settings: Settings) -> Strategies:
    path = settings.sampling_strategies
    if Path(path) == _DEFAULT_STRATEGIES_PATH and not Path(path).exists():
        # The default path is the checkout's config/; an installed wheel has no
        # such file, so the same strategies come from the package itself.
        log.debug("tracing: %s not found, using the built-in copy of the shipped strategies", path)
        return parse_strategies(SHIPPED_STRATEGIES, "<built-in>")
    return load_strategies(path)


_runtime: TracingRuntime | None = None
_pending: Settings | None = None  # set by install(): configure at first use
_runtime_lock = threading.Lock()


def configure(
    settings: Settings,
    exporter: SpanExporter | None = None,
    *,
    sampler_override: Sampler | Callable[[str], Sampler] | None = None,
    batch: bool | None = None,
) -> TracingRuntime:
    """Build (or rebuild) the SDK for every stage service; see the module docstring for the env.

    ``exporter``: use it instead of the environment's (tests: ``InMemorySpanExporter``).
    It is then behind a ``SimpleSpanProcessor`` (spans visible at once) unless
    ``batch=True``.  ``sampler_override``: a Sampler for every stage, or a
    function ``service_name -> Sampler``; the strategies file is then not read.
    Raises :class:`~mantis_stream.tracing.sampling.StrategiesFileError` (one line,
    naming MANTIS_SAMPLING_STRATEGIES) when the strategies file is unusable, and
    ValueError for an unknown exporter or protocol.
    """
    global _runtime, _pending
    reload_propagators()
    enabled = not settings.otel_sdk_disabled
    if sampler_override is None:
        sampler_override = _sampler_from_env(settings)
    strategies = None
    if enabled and sampler_override is None:
        strategies = _strategies_for(settings)
    drops = _DropCounter()
    processor: SpanProcessor | None = None
    if enabled:
        if exporter is None:
            if batch is None:
                batch = True
            if not export_process.exporter_names():
                exporter = None
            elif settings.tracing_export == "process":
                exporter = export_process.ProcessSpanExporter(partial(drops.add, "export_failed"))
            else:
                exporter = exporter_from_env()
        if exporter is not None:
            counted = _CountingExporter(exporter, drops)
            if batch:
                processor = _BoundedBatchSpanProcessor(counted, drops, **export_process.processor_options(exporter))
            else:
                processor = SimpleSpanProcessor(counted)
    links, length = settings.otel_span_link_count_limit, settings.otel_attribute_value_length_limit
    limits = SpanLimits(
        max_span_attributes=settings.otel_span_attribute_count_limit,
        max_events=settings.otel_span_event_count_limit,
        max_links=max(128, settings.batch_size) if links is None else links,
        max_attribute_length=4 * MAX_STRING if length is None else length,
    )
    runtime = TracingRuntime(
        settings=settings,
        enabled=enabled,
        exporter=exporter,
        processor=processor,
        strategies=strategies,
        sampler_override=sampler_override,
        span_limits=limits,
        drops=drops,
    )
    with _runtime_lock:
        old, _runtime, _pending = _runtime, runtime, None
    if old is not None:
        old.shutdown()
    return runtime


def set_pending(settings: Settings | None) -> None:
    """Remember settings to configure from at first use (install())."""
    global _pending
    _pending = settings


def current_runtime() -> TracingRuntime | None:
    """The runtime, configuring it now when install() asked for lazy configuration."""
    rt = _runtime
    if rt is not None:
        return rt
    pending = _pending
    if pending is None:
        return None
    with _runtime_lock:
        if _runtime is not None:
            return _runtime
    try:
        return configure(pending)
    except (StrategiesFileError, ValueError) as exc:
        # Never break message processing: report once, go without tracing.
        log.error("tracing disabled: %s", exc)
        set_pending(None)
        return None


def stage_tracer(stage: str) -> trace.Tracer:
    """The tracer of ``stage``'s service (a no-op tracer until tracing is configured)."""
    rt = _runtime or current_runtime()
    if rt is None:
        return trace.get_tracer(INSTRUMENTATION_NAME, _VERSION)
    return rt.tracer(stage)


def service_name(stage: str) -> str:
    rt = _runtime
    if rt is not None:
        return rt.service_name(stage)
    return DEFAULT_SERVICES.get(stage, stage)


def shutdown() -> None:
    """Flush and shut down the runtime (worker stop). Bounded in time; safe to call twice."""
    global _runtime, _pending
    with _runtime_lock:
        rt, _runtime, _pending = _runtime, None, None
    if rt is not None:
        rt.shutdown()
