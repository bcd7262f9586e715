"""PostgreSQL sink: work orders, anomaly events and RUL history (asyncpg).

Why: work orders must outlive Kafka's retention and be queryable by people
(``mantis-stream work-orders``); anomaly events and RUL estimates are the
evidence behind them. The worker writes them in batches, idempotently, and
keeps going through database outages.

Usage::

    sink = PostgresSink(settings.postgres_dsn)
    await sink.start()                    # connect + migrate (retried later if down)
    await sink.write(records)             # returns once the rows are committed
    await sink.close()

Notes:
- Idempotent under replay: natural primary keys with ``ON CONFLICT DO NOTHING``
  for history, the upstream ``work_order_id`` for work orders.
- At most one open work order per (asset, reason) (a partial unique index): a
  new one that meets an open one is merged into it (evidence, RUL, updated_at,
  ``merged_work_order_ids``; its priority only rises) instead of adding a row
  or raising. An ``escalate`` message raises the open order's priority, a
  ``resolve`` message (a maintenance event) closes it; both are idempotent.
- Only anomaly messages with ``is_anomaly`` true are stored as anomaly events;
  every score goes to InfluxDB.
- One transaction per batch: all of it is committed or none, then retried.
- Spans follow the database semantic conventions and never carry the password.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv.attributes import db_attributes as DB

from .buffer import Backoff, BufferedSink, RejectFn
from .migrations import migrate
from .records import AnomalyRow, Record, RulRow, WorkOrderRow
from .spans import db_attributes, db_span

log = logging.getLogger(__name__)

DB_SYSTEM = DB.DbSystemNameValues.POSTGRESQL.value
#: Most work-order trace contexts kept for writes not done yet.
MAX_CONTEXTS = 10_000

# SQLSTATE classes that mean "this row is wrong", not "the database is away".
_DATA_CLASSES = ("22", "23")

_ASSETS_SQL = """
INSERT INTO assets (asset_id, first_seen, last_seen)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
ON CONFLICT (asset_id) DO UPDATE
SET first_seen = LEAST(assets.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(assets.last_seen, EXCLUDED.last_seen)
WHERE EXCLUDED.first_seen < assets.first_seen OR EXCLUDED.last_seen > assets.last_seen
"""

_ANOMALIES_SQL = """
INSERT INTO anomaly_events
    (asset_id, sensor_id, ts, model_name, model_version, score, threshold, is_anomaly, trace_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::float8[], $7::float8[], $8::bool[], $9::text[])
ON CONFLICT DO NOTHING
"""

_RUL_SQL = """
INSERT INTO rul_history
    (asset_id, sensor_id, ts, model_name, model_version, rul, unit, lower, upper,
     health_index, cycle, trace_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::float8[], $7::text[], $8::float8[], $9::float8[], $10::float8[],
                     $11::int8[], $12::text[])
ON CONFLICT DO NOTHING
"""

# One row per work order, in order, in the batch's transaction: a replayed id
# (stored, or merged into an open order) is skipped; a new id meeting an open
# order for the same asset and reason is folded into it (its priority only rises).
_PRIORITY_RANK = "array_position(ARRAY['low', 'medium', 'high', 'critical']::text[], {})"
_WORK_ORDER_SQL = f"""
INSERT INTO work_orders AS w
    (work_order_id, asset_id, priority, reason, created_at, rul, evidence, trace_id,
     last_trace_id, updated_at, why, defect_band)
SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamptz, $6::float8, $7::jsonb,
       $8::text, $8::text, now(), $9::text, $10::text
WHERE NOT EXISTS (
    SELECT 1 FROM work_orders x
    WHERE x.work_order_id = $1::text OR x.merged_work_order_ids @> ARRAY[$1::text]
)
ON CONFLICT (asset_id, reason) WHERE status IN ('open', 'in_progress')
DO UPDATE SET
    evidence = w.evidence || EXCLUDED.evidence,
    rul = coalesce(EXCLUDED.rul, w.rul),
    last_trace_id = coalesce(EXCLUDED.last_trace_id, w.last_trace_id),
    merged_work_order_ids = w.merged_work_order_ids || EXCLUDED.work_order_id,
    priority = CASE WHEN {_PRIORITY_RANK.format("EXCLUDED.priority")} > {_PRIORITY_RANK.format("w.priority")}
                    THEN EXCLUDED.priority ELSE w.priority END,
    why = EXCLUDED.why,
    defect_band = coalesce(EXCLUDED.defect_band, w.defect_band),
    updated_at = now()
WHERE w.work_order_id <> EXCLUDED.work_order_id
RETURNING (xmax = 0) AS inserted
"""

# Escalation: the open order's priority rises (never falls), with the new evidence and why.
#: The database span of a work-order message, by its action: (span name, operation).
ORDER_SPANS = {"open": ("insert_work_order", "INSERT"), "escalate": ("update_work_order", "UPDATE"),
               "resolve": ("update_work_order", "UPDATE")}
_ESCALATE_SQL = f"""
UPDATE work_orders SET
    priority = $2::text, why = $3::text, evidence = evidence || $4::jsonb,
    rul = coalesce($5::float8, rul), defect_band = coalesce($6::text, defect_band),
    last_trace_id = coalesce($7::text, last_trace_id), updated_at = now()
WHERE work_order_id = $1::text AND status IN ('open', 'in_progress')
  AND {_PRIORITY_RANK.format("priority")} < {_PRIORITY_RANK.format("$2::text")}
"""

# A maintenance event closes the order; replays find it closed and change nothing.
_RESOLVE_SQL = """
UPDATE work_orders SET
    status = 'closed', closed_at = $2::timestamptz, resolution = $3::text,
    last_trace_id = coalesce($4::text, last_trace_id), updated_at = now()
WHERE work_order_id = $1::text AND status IN ('open', 'in_progress')
"""

WORK_ORDER_COLUMNS = (
    "work_order_id", "asset_id", "status", "priority", "reason", "rul", "created_at",
    "updated_at", "trace_id", "last_trace_id", "evidence", "merged_work_order_ids",
    "why", "defect_band", "closed_at", "resolution",
)


def is_transient(exc: BaseException) -> bool:
    """True for outages (retry later), False for rows the database refuses."""
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # client-side encoding of a value
        return False
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] not in _DATA_CLASSES
    return False


def server_of(dsn: str) -> tuple[str, int, str]:
    """(address, port, database) of a libpq-style URL DSN, for span attributes."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["localhost"])[0]
    try:
        port = parts.port or int((query.get("port") or ["5432"])[0])
    except ValueError:
        port = 5432
    database = parts.path.lstrip("/") or (query.get("dbname") or [parts.username or ""])[0]
    return host, port, database


def _column(rows: Sequence[Sequence[Any]], index: int) -> list[Any]:
    return [row[index] for row in rows]


class PostgresSink(BufferedSink[Record]):
    """Batched, idempotent, outage-tolerant writer of the maintenance tables."""

    def __init__(
        self,
        dsn: str,
        *,
        tracer: trace.Tracer | None = None,
        capacity: int = 10_000,
        max_batch: int = 1_000,
        backoff: Backoff = Backoff(),
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        on_reject: RejectFn[Record] | None = None,
    ) -> None:
        self.dsn = dsn
        self.address, self.port, self.database = server_of(dsn)
        self._tracer = tracer or trace.get_tracer(__name__)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._ready = False
        self._connect_lock = asyncio.Lock()
        #: Rows actually inserted per table (replays do not count; merged work
        #: orders count under ``work_orders_merged``).
        self.inserted: Counter[str] = Counter()
        #: Trace context of each work order waiting to be written (by id): its ``insert_work_order``
        #: span joins the work order's trace.  Set by the caller of :meth:`write`; bounded.
        self.contexts: dict[str, Context] = {}
        super().__init__(
            "PostgreSQL", dsn, f"{self.address}:{self.port}/{self.database}",
            log=log, is_transient=is_transient,
            capacity=capacity, max_batch=max_batch, backoff=backoff, on_reject=on_reject,
        )

    # -- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        await self._buffer.close()
        pool, self._pool, self._ready = self._pool, None, False
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except Exception:  # noqa: BLE001 - a pool that cannot close in time is terminated
                pool.terminate()

    async def _ensure_ready(self) -> asyncpg.Pool:
        async with self._connect_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=2,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                )
            if not self._ready:
                async with self._pool.acquire() as conn:
                    applied = await migrate(conn)
                if applied:
                    log.info("PostgreSQL schema migrated to version %d", applied[-1])
                self._ready = True
            return self._pool

    # -- writing --------------------------------------------------------------

    async def write(self, records: Iterable[Record]) -> None:
        """Store ``records`` (others than the three kinds are ignored); durable on return."""
        rows = [
            r
            for r in records
            if isinstance(r, (RulRow, WorkOrderRow)) or (isinstance(r, AnomalyRow) and r.is_anomaly)
        ]
        while len(self.contexts) > MAX_CONTEXTS:  # rows dropped as rejected leave theirs behind
            del self.contexts[next(iter(self.contexts))]
        if rows:
            await self._buffer.put(rows)

    async def _flush(self, batch: Sequence[Record]) -> None:
        pool = await self._ensure_ready()
        anomalies = [r for r in batch if isinstance(r, AnomalyRow)]
        ruls = [r for r in batch if isinstance(r, RulRow)]
        orders = [r for r in batch if isinstance(r, WorkOrderRow)]
        seen: dict[str, tuple[datetime, datetime]] = {}
        for r in batch:
            ts = r.created_at if isinstance(r, WorkOrderRow) else r.ts
            lo, hi = seen.get(r.asset_id, (ts, ts))
            seen[r.asset_id] = (min(lo, ts), max(hi, ts))
        assets = sorted(seen)  # a fixed order: no deadlock between two workers
        counts: Counter[str] = Counter()
        async with pool.acquire() as conn:
            async with conn.transaction():
                with self._span("insert assets", "INSERT", "assets", len(assets)):
                    await conn.execute(
                        _ASSETS_SQL, assets, [seen[a][0] for a in assets], [seen[a][1] for a in assets]
                    )
                if anomalies:
                    with self._span("insert anomaly_events", "INSERT", "anomaly_events", len(anomalies)):
                        status = await conn.execute(
                            _ANOMALIES_SQL, *[_column(anomalies, i) for i in range(len(AnomalyRow._fields))]
                        )
                    counts["anomaly_events"] += _affected(status)
                if ruls:
                    with self._span("insert rul_history", "INSERT", "rul_history", len(ruls)):
                        status = await conn.execute(
                            _RUL_SQL, *[_column(ruls, i) for i in range(len(RulRow._fields))]
                        )
                    counts["rul_history"] += _affected(status)
                for order in orders:
                    # In the work order's own trace (its message's context), when the agent gave it.
                    name, operation = ORDER_SPANS[order.action]
                    with self._span(name, operation, "work_orders", 1, context=self.contexts.get(order.work_order_id)):
                        if order.action == "escalate":
                            status = await conn.execute(
                                _ESCALATE_SQL, order.work_order_id, order.priority, order.why, order.evidence,
                                order.rul, order.defect_band, order.trace_id)
                            counts["work_orders_escalated"] += _affected(status)
                            continue
                        if order.action == "resolve":
                            status = await conn.execute(
                                _RESOLVE_SQL, order.work_order_id, order.created_at, order.why, order.trace_id)
                            counts["work_orders_resolved"] += _affected(status)
                            continue
                        # True: a new row; False: merged into the open one; None: a replay.
                        outcome = await conn.fetchval(
                            _WORK_ORDER_SQL, order.work_order_id, order.asset_id, order.priority, order.reason,
                            order.created_at, order.rul, order.evidence, order.trace_id, order.why,
                            order.defect_band)
                    if outcome is not None:
                        counts["work_orders" if outcome else "work_orders_merged"] += 1
        for order in orders:
            self.contexts.pop(order.work_order_id, None)
        self.inserted.update(counts)

    def _span(self, name: str, operation: str, table: str, size: int, context: Context | None = None) -> Any:
        return db_span(self._tracer, name, db_attributes(
            DB_SYSTEM, operation, collection=table, namespace=self.database,
            address=self.address, port=self.port, batch_size=size,
        ), context)

    # -- reading (the work-orders command) -------------------------------------

    async def work_orders(self, *, open_only: bool = False, asset: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Work orders, newest first, as dicts of :data:`WORK_ORDER_COLUMNS`."""
        pool = await self._ensure_ready()
        return await list_work_orders(pool, open_only=open_only, asset=asset, limit=limit)


async def list_work_orders(conn: Any, *, open_only: bool = False, asset: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Query work orders on an asyncpg connection or pool (newest first)."""
    sql = f"""
        SELECT {", ".join(WORK_ORDER_COLUMNS)} FROM work_orders
        WHERE ($1::bool IS NOT TRUE OR status IN ('open', 'in_progress'))
          AND ($2::text IS NULL OR asset_id = $2::text)
        ORDER BY created_at DESC, work_order_id
        LIMIT $3
    """
    rows = await conn.fetch(sql, open_only, asset, limit)
    return [dict(r) for r in rows]


def _affected(status: str) -> int:
    """Rows affected from a command tag such as ``INSERT 0 42``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0
