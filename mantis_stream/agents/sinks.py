"""Storage stage: the thin Faust agents that feed PostgreSQL and InfluxDB.

Why: work orders, anomaly events and RUL history must outlive Kafka's
retention (PostgreSQL), and what the pipeline computes must be plotted
(InfluxDB). The database work lives in :mod:`mantis_stream.sinks`; these agents
only read batches, turn messages into records and wait for the write.

Usage: set ``MANTIS_POSTGRES_DSN`` and/or ``MANTIS_INFLUXDB_URL``; each agent is
registered only when its sink is configured:

- ``sink-postgres`` reads mantis.anomalies, mantis.rul, mantis.work-orders;
- ``sink-influx`` reads mantis.features, mantis.anomalies, mantis.rul.

Notes:
- At least once: ``take_events`` acks a batch after the agent's body, and the
  body returns only once the rows are written; the writes are idempotent, so a
  replay after a crash stores nothing twice.
- While a database is down the write waits (retry with backoff, bounded
  buffer) and the agent stops taking new batches; Kafka holds the rest.
- ``take_events`` acks in a ``finally``, even when the body is cancelled by a
  shutdown mid-outage; :func:`._replay.batches` keeps an extra reference on each
  message until the body is done with its batch, so such a batch is not
  committed and is read again (and a batch an agent crashed on is written by
  the restarted agent).
- A message the sinks cannot store (missing field, bad timestamp) becomes a
  dead letter (stage ``storage``); the batch goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

from .. import topics as names
from .. import tracing
from ..app import app, settings
from ..errors import send_dead_letter
from ..runtime import check_at_worker_start
from ..settings import check_postgres_dsn, mask_url, secret
from ..sinks.buffer import BufferedSink
from ..sinks.influx import InfluxSink, InfluxTarget
from ..sinks.postgres import PostgresSink
from ..sinks.records import InvalidMessage, Record, from_message, trace_id_from_headers
from ._replay import batches

STAGE = "storage"
log = logging.getLogger(__name__)

POSTGRES_TOPICS = (names.ANOMALIES, names.RUL, names.WORK_ORDERS)
INFLUX_TOPICS = (names.FEATURES, names.ANOMALIES, names.RUL)


def event_trace_id(event: Any) -> str | None:
    """The trace id of the ``traceparent`` header, else of the event's span context."""
    found = trace_id_from_headers(getattr(event.message, "headers", None) or getattr(event, "headers", None))
    if found:
        return found
    ctx = tracing.context_of(event)
    if ctx is not None:
        sc = trace.get_current_span(ctx).get_span_context()
        if sc.is_valid:
            return format(sc.trace_id, "032x")
    return None


async def to_records(events: Sequence[Any], sink_name: str) -> list[Record]:
    """Records of ``events``; a message that cannot be stored goes to the dead letters."""
    out: list[Record] = []
    for event in events:
        try:
            out.append(from_message(event.message.topic, event.value, event_trace_id(event)))
        except InvalidMessage as exc:
            await send_dead_letter(event, STAGE, InvalidMessage(exc.field, f"{exc.reason} ({sink_name} sink)"))
        except Exception as exc:  # noqa: BLE001 - a message the sinks cannot read must not stop them
            await send_dead_letter(event, STAGE, exc)
    return out


async def store(sink: Any, events: Sequence[Any], sink_name: str, span_name: str) -> None:
    records = await to_records(events, sink_name)
    if isinstance(sink, PostgresSink):  # a work order's write goes in the work order's trace
        for event in events:
            if event.message.topic == names.WORK_ORDERS and isinstance(event.value, dict):
                ctx = tracing.context_of(event)
                order_id = event.value.get("work_order_id")
                if ctx is not None and isinstance(order_id, str):
                    sink.contexts[order_id] = ctx
    with tracing.batch_span(STAGE, span_name, events):
        await sink.write(records)


#: The sinks running in this worker, by name (``/health`` reports their state).
SINKS: dict[str, BufferedSink[Any]] = {}


def _reject(sink_name: str):  # type: ignore[no-untyped-def]
    def on_reject(row: Any, exc: BaseException) -> None:
        log.error("%s sink: the database refused a row, dropped: %s: %r", sink_name, exc, row)

    return on_reject


@app.task  # type: ignore[untyped-decorator]  # Faust's decorator is untyped
async def log_sinks() -> None:
    """Say at worker start which sinks are on (passwords masked)."""
    if settings.postgres_dsn:
        log.info("storage: PostgreSQL sink on: %s", mask_url(secret(settings.postgres_dsn)))
    else:
        log.info("storage: PostgreSQL sink off (MANTIS_POSTGRES_DSN unset)")
    if settings.influxdb_url:
        log.info("storage: InfluxDB sink on: %s", mask_url(secret(settings.influxdb_url)))
    else:
        log.info("storage: InfluxDB sink off (MANTIS_INFLUXDB_URL unset)")


@check_at_worker_start
def refuse_bad_dsn() -> None:
    """Stop ``worker`` in one line on a DSN asyncpg would refuse (``config`` names it too)."""
    if settings.postgres_dsn and (problem := check_postgres_dsn(secret(settings.postgres_dsn) or "")):
        raise SystemExit(f"mantis-stream: MANTIS_POSTGRES_DSN: {problem}")

if settings.postgres_dsn:
    postgres_source = app.topic(*POSTGRES_TOPICS, value_serializer="orjson", key_serializer="raw")

    @app.agent(postgres_source, name="sink-postgres")
    async def sink_postgres(stream):  # type: ignore[no-untyped-def]
        dsn = secret(settings.postgres_dsn)
        assert dsn is not None  # the agent exists only when it is set
        sink = PostgresSink(
            dsn, tracer=tracing.stage_tracer(STAGE), on_reject=_reject("postgres"),
        )
        SINKS["postgres"] = sink
        await sink.start()
        try:
            async for events in batches(stream, STAGE):
                await store(sink, events, "postgres", "store postgresql")
        finally:
            await sink.close()


@check_at_worker_start
def refuse_bad_influx_url() -> None:
    """Stop ``worker`` in one line on an InfluxDB URL the sink cannot use (``config`` names it too)."""
    if settings.influxdb_url:
        try:
            InfluxTarget.from_url(secret(settings.influxdb_url) or "")
        except ValueError as exc:
            raise SystemExit(f"mantis-stream: MANTIS_INFLUXDB_URL: {exc}") from None


if settings.influxdb_url:
    influx_source = app.topic(*INFLUX_TOPICS, value_serializer="orjson", key_serializer="raw")

    @app.agent(influx_source, name="sink-influx")
    async def sink_influx(stream):  # type: ignore[no-untyped-def]
        url = secret(settings.influxdb_url)
        assert url is not None  # the agent exists only when it is set
        sink = InfluxSink(url, tracer=tracing.stage_tracer(STAGE), on_reject=_reject("influx"))
        SINKS["influx"] = sink
        await sink.start()
        try:
            async for events in batches(stream, STAGE):
                await store(sink, events, "influx", "store influxdb")
        finally:
            await sink.close()
