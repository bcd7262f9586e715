"""Prometheus metrics of the pipeline, served at the worker's ``GET /metrics``.

Why this exists
===============

Jaeger shows one reading's journey; an operator also needs the rates: how many
events each stage takes in and puts out, how many dead letters it writes, how
long an event waits and is processed in a stage, how far the consumer lags
behind the topics, what the anomaly scores and RUL of each asset are now, and
whether the tracing pipeline is losing spans.  :class:`MetricsSensor` collects
these from Faust's sensor hooks (the same ones the tracing sensor uses) into a
``prometheus_client`` registry, and :func:`install` serves that registry on
Faust's own web server.

Usage
=====

.. sourcecode:: python

    metrics.install(app, settings)          # once, in mantis_stream/app.py
    # curl localhost:6066/metrics

Notes
=====

* Stages come from ``mantis_stream.stages.AGENT_STAGES`` (the tracing
  sensor's :class:`~mantis_stream.tracing.stage_map.StageMap`); a message produced outside any stage (HTTP ingest) counts
  under ``ingestion``; a table's changelog under ``state``.
* Records, not messages: on the batched hops (``topics.BATCHED``) a message
  carries many records; ``agents._batch.open_items`` reports how many
  (:meth:`MetricsSensor.on_records`), so ``mantis_events_in`` and the latency
  count records; ``mantis_messages_in`` counts the Kafka messages.
* Label values are bounded: stages and topics are the app's own; asset ids are
  capped at :data:`MAX_ASSETS` (later assets are reported as ``_other``).
* Anomaly scores and RUL are observed where they are *consumed* (the first
  agent that reads ``mantis.anomalies`` / ``mantis.rul``), from the already
  decoded value: no extra decoding on the producing side.
* Consumer lag and dropped spans are computed at scrape time (a custom
  collector): nothing is done per message for them.
* Every hook swallows its own errors: metrics never break message processing.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any

from faust.agents.agent import current_agent
from faust.sensors.base import Sensor
from opentelemetry import context as otel_context
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from . import topics as names
from .stages import AGENT_STAGES
from .tracing.context import STAGE_KEY
from .tracing.stage_map import StageMap

__all__ = ["MAX_ASSETS", "MetricsSensor", "install", "installed", "render"]

log = logging.getLogger("mantis_stream.metrics")

#: Most distinct ``asset_id`` label values; later assets are reported as ``_other``.
MAX_ASSETS = 1000
OTHER_ASSET = "_other"
#: Most events in flight (received, not yet acked) whose start time is kept.
MAX_IN_FLIGHT = 65_536
#: Stage-latency buckets (seconds): batching adds ``MANTIS_BATCH_WITHIN`` (50 ms) by default.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class _ScrapeCollector:
    """Consumer lag and dropped spans, read when Prometheus scrapes."""

    def __init__(self, sensor: MetricsSensor) -> None:
        self.sensor = sensor

    def describe(self) -> Iterable[Any]:  # no auto-describe at registration (it would call collect)
        return []

    def collect(self) -> Iterable[Any]:
        lag = GaugeMetricFamily(
            "mantis_consumer_lag",
            "Messages in the partition not yet committed by this worker (highwater - committed offset)",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(self.sensor.consumer_lag().items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        dropped = CounterMetricFamily(
            "mantis_spans_dropped", "Spans lost by the tracing pipeline (queue full or failed export)", labels=["reason"]
        )
        for reason, value in self.sensor.dropped_spans().items():
            dropped.add_metric([reason], value)
        yield dropped


class _RecordLatency:
    """``mantis_stage_latency_seconds``: one observation per record, fed once per message.

    Why not a ``prometheus_client.Histogram``: the records of a batched message
    share its latency, and ``observe`` has no count (one call per record, each
    taking a lock, was a measurable cost per record).  Here a message adds its
    record count to one bucket: constant work per message.  Hooks and scrapes
    run on the worker's event loop, so no lock is needed.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        self._labels = [*map(floatToGoString, buckets), "+Inf"]
        #: stage -> [count per bucket (the last: over every bound)..., sum of seconds]
        self._series: dict[str, list[float]] = {}

    def observe(self, stage: str, seconds: float, records: int) -> None:
        series = self._series.get(stage)
        if series is None:
            series = self._series[stage] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, seconds)] += records
        series[-1] += seconds * records

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        family = HistogramMetricFamily(
            "mantis_stage_latency_seconds",
            "Time from a record's message entering a stage's stream to its ack (queueing, batching and processing), "
            "per record", labels=["stage"])
        for stage, series in sorted(self._series.items()):
            cumulative = list(accumulate(series[:-1]))
            family.add_metric([stage], list(zip(self._labels, cumulative, strict=True)), sum_value=series[-1])
        yield family


class MetricsSensor(Sensor):
    """Faust sensor: per-stage counters and latencies, anomaly/RUL gauges, lag at scrape time."""

    def __init__(
        self,
        *,
        stages: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        app: Any = None,
        max_assets: int = MAX_ASSETS,
        default_stage: str = "ingestion",
        batched_topics: Iterable[str] = names.BATCHED,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stages = StageMap(AGENT_STAGES if stages is None else stages, default_stage)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.app = app
        self.max_assets = max_assets
        self.default_stage = default_stage
        #: Topics whose messages carry many records: their records are counted by :meth:`on_records`.
        self.batched_topics = frozenset(batched_topics)
        #: event -> (stage, when it came in, records it carries).
        self._in_flight: dict[Any, tuple[str, float, int]] = {}
        self._assets: set[str] = set()
        #: (metric, label values) -> child: ``labels()`` takes a lock and builds a tuple on every call.
        self._labelled: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        self.events_in = Counter("mantis_events_in", "Records a stage received (each record of a batched message)",
                                 ["stage", "topic"], registry=r)
        self.messages_in = Counter("mantis_messages_in",
                                   "Kafka messages a stage received (on the batched hops one carries many records)",
                                   ["stage", "topic"], registry=r)
        self.events_out = Counter("mantis_events_out", "Messages a stage produced", ["stage", "topic"], registry=r)
        self.dead_letters = Counter("mantis_dead_letters", "Dead letters written, by the stage that wrote them",
                                    ["stage"], registry=r)
        self.unknown_fields = Counter(
            "mantis_reading_unknown_fields", "Fields of accepted readings that the reading format does not define (ignored)",
            registry=r)
        self.send_errors = Counter("mantis_send_errors", "Messages the producer failed to send", ["topic"], registry=r)
        self.latency = _RecordLatency(LATENCY_BUCKETS)
        r.register(self.latency)
        self.anomaly_score = Histogram("mantis_anomaly_score", "Calibrated anomaly scores in [0, 1]",
                                       buckets=SCORE_BUCKETS, registry=r)
        self.anomalies = Counter("mantis_anomalies", "Scores over the threshold", ["asset_id"], registry=r)
        self.asset_score = Gauge("mantis_asset_anomaly_score", "Latest anomaly score of the asset (any sensor)",
                                 ["asset_id"], registry=r)
        self.asset_rul = Gauge("mantis_asset_rul", "Latest remaining useful life of the asset", ["asset_id", "unit"],
                               registry=r)
        self.asset_health = Gauge("mantis_asset_health_index", "Latest health index of the asset", ["asset_id"],
                                  registry=r)
        self.assets_capped = Counter("mantis_metrics_assets_over_cap",
                                     f"Observations of assets beyond the label cap, reported as {OTHER_ASSET}",
                                     registry=r)
        self.registry.register(_ScrapeCollector(self))

    # -- helpers -------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(*labels)
        return child

    def _sending_stage(self, topic: str) -> str:
        stage = otel_context.get_current().get(STAGE_KEY)
        if stage:
            return str(stage)
        agent = current_agent()
        if agent is not None:
            return self.stages.of_agent(getattr(agent, "name", "") or "")
        if topic.endswith("-changelog"):
            return "state"
        return self.default_stage

    def asset_label(self, asset_id: Any) -> str:
        asset = str(asset_id)
        if asset in self._assets:
            return asset
        if len(self._assets) < self.max_assets:
            self._assets.add(asset)
            return asset
        self.assets_capped.inc()
        return OTHER_ASSET

    def _observe_value(self, topic: str, value: Any) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            import orjson

            value = orjson.loads(value)
        if not isinstance(value, dict) or "asset_id" not in value:
            return
        asset = self.asset_label(value["asset_id"])
        if topic == names.ANOMALIES:
            score = value.get("score")
            if isinstance(score, (int, float)):
                self.anomaly_score.observe(float(score))
                self._child(self.asset_score, asset).set(float(score))
            if value.get("is_anomaly"):
                self._child(self.anomalies, asset).inc()
        else:
            rul = value.get("rul")
            if isinstance(rul, (int, float)):
                self._child(self.asset_rul, asset, str(value.get("unit") or "")).set(float(rul))
            health = value.get("health_index")
            if isinstance(health, (int, float)):
                self._child(self.asset_health, asset).set(float(health))

    # -- scrape-time values --------------------------------------------------------

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> highwater - committed offset, for the partitions assigned here."""
        app = self.app
        if app is None:
            return {}
        try:
            monitor = app.monitor
            committed: Mapping[Any, int] = dict(monitor.tp_committed_offsets)
            read: Mapping[Any, int] = dict(monitor.tp_read_offsets)
            ends: dict[Any, int] = dict(monitor.tp_end_offsets)
            consumer = app.consumer
            try:
                assigned = set(consumer.assignment())
            except Exception:  # noqa: BLE001 - a scrape never fails on the consumer's state: the known ends stand in
                assigned = set(ends)
            for tp in assigned:
                try:
                    hw = consumer.highwater(tp)
                except Exception:  # noqa: BLE001 - no high-water mark yet: the monitor's end offset stands
                    hw = None
                if isinstance(hw, int) and hw >= 0:
                    ends[tp] = hw
        except Exception:  # noqa: BLE001 - not started, no consumer yet
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp in assigned:
            end = ends.get(tp)
            if end is None:
                continue
            position = committed.get(tp)
            if position is None:
                last = read.get(tp)
                position = last + 1 if last is not None else None
            if position is None:
                continue
            out[(tp.topic, tp.partition)] = max(0, int(end) - int(position))
        return out

    def dropped_spans(self) -> dict[str, int]:
        try:
            from .tracing import setup

            rt = setup._runtime or setup.current_runtime()
        except Exception:  # noqa: BLE001 - tracing not set up: nothing dropped to report
            rt = None
        if rt is None:
            return {"queue_full": 0, "export_failed": 0}
        return {"queue_full": rt.drops.queue_full, "export_failed": rt.drops.export_failed}

    # -- Faust hooks ---------------------------------------------------------------

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        try:
            stage = self.stages.of_stream(stream)
            topic = tp.topic
            self._child(self.messages_in, stage, topic).inc()
            records = 0
            if topic not in self.batched_topics:
                records = 1
                self._child(self.events_in, stage, topic).inc()
            flight = self._in_flight
            if len(flight) >= MAX_IN_FLIGHT:
                flight.pop(next(iter(flight)))
            flight[event] = (stage, time.monotonic(), records)
        except Exception as exc:  # pragma: no cover - metrics must never break processing
            log.debug("metrics: on_stream_event_in: %r", exc, exc_info=True)
        return None

    def on_records(self, event: Any, count: int) -> None:
        """``event``, a message of a batched hop, carries ``count`` records: each counts as received and waits."""
        try:
            started = self._in_flight.get(event)
            if started is not None:
                stage, t0, _ = started
                self._in_flight[event] = (stage, t0, count)
                self._child(self.events_in, stage, event.message.topic).inc(count)
        except Exception as exc:  # pragma: no cover
            log.debug("metrics: on_records: %r", exc, exc_info=True)

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        try:
            started = self._in_flight.pop(event, None)
            if started is not None:
                stage, t0, records = started
                if records:
                    self.latency.observe(stage, time.monotonic() - t0, records)
        except Exception as exc:  # pragma: no cover
            log.debug("metrics: on_stream_event_out: %r", exc, exc_info=True)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        try:
            stage = self._sending_stage(topic)
            self._child(self.events_out, stage, topic).inc()
            if topic == names.ANOMALIES or topic == names.RUL:  # what the pipeline publishes, once
                self._observe_value(topic, getattr(message, "value", None))
            if topic == names.DEAD_LETTERS:
                self._child(self.dead_letters, stage).inc()
        except Exception as exc:  # pragma: no cover
            log.debug("metrics: on_send_initiated: %r", exc, exc_info=True)
        return topic

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        try:
            self.send_errors.labels(str(state) if isinstance(state, str) else "unknown").inc()
        except Exception:  # noqa: BLE001  # pragma: no cover - a metric never raises into the producer's error path
            pass


def installed(app: Any) -> MetricsSensor | None:
    """The app's metrics sensor, if :func:`install` registered one."""
    for sensor in app.sensors:
        if isinstance(sensor, MetricsSensor):
            return sensor
    return None


def count_unknown_fields(app: Any, count: int) -> None:
    """Count fields of an accepted reading that the reading format does not define."""
    sensor = installed(app)
    if sensor is not None:
        sensor.unknown_fields.inc(count)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(registry)


def install(app: Any, settings: Any = None, *, route: str = "/metrics") -> MetricsSensor:
    """Register :class:`MetricsSensor` on ``app`` and serve its registry at ``route``. Idempotent."""
    existing = installed(app)
    if existing is not None:
        return existing
    sensor = MetricsSensor(app=app)
    app.sensors.add(sensor)

    from faust import web

    @app.page(route)
    class Metrics(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.bytes(render(sensor.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return sensor
