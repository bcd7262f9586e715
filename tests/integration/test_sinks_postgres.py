"""The PostgreSQL sink against a real server: schema, idempotence, outages, spans."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mantis_stream import topics as names
from mantis_stream.sinks.buffer import Backoff, BufferClosed, WriteBuffer
from mantis_stream.sinks.migrations import available, current_version, migrate
from mantis_stream.sinks.postgres import PostgresSink, list_work_orders
from mantis_stream.sinks.records import (
    InvalidMessage,
    from_message,
    parse_ts,
    trace_id_from_headers,
)

from servers import *  # noqa: F403  (fixtures; conftest may import them too)
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres

FAST = Backoff(initial=0.05, maximum=0.3)
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def anomaly(i: int, *, asset: str = "PUMP-7", is_anomaly: bool = True) -> dict:
    return {
        "asset_id": asset, "sensor_id": "VIB-001", "ts": iso(T0 + timedelta(seconds=i)),
        "score": 0.9, "threshold": 0.7, "is_anomaly": is_anomaly,
        "model": {"name": "hst", "version": "1"},
    }


def rul(i: int, *, asset: str = "PUMP-7") -> dict:
    return {
        "asset_id": asset, "ts": iso(T0 + timedelta(seconds=i)), "rul": 100.0 - i, "unit": "cycles",
        "lower": 90.0 - i, "upper": 110.0 - i, "health_index": 0.5, "cycle": i,
        "model": {"name": "exp-degradation", "version": "2"},
    }


def order(wo_id: str, *, asset: str = "PUMP-7", reason: str = "rul_below_threshold", rul_value: float = 20.0,
          evidence: dict | None = None, trace_id: str = TRACE) -> dict:
    value = {
        "work_order_id": wo_id, "asset_id": asset, "priority": "high", "reason": reason,
        "created_at": iso(T0), "rul": rul_value, "trace_id": trace_id,
    }
    if evidence is not None:
        value["evidence"] = evidence
    return value


def records(topic: str, values: list[dict], trace_id: str | None = None) -> list:
    return [from_message(topic, v, trace_id) for v in values]


async def count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def sink(postgres_dsn):
    s = PostgresSink(postgres_dsn, backoff=FAST)
    assert await s.start()
    yield s
    await s.close()


# -- records (pure) -----------------------------------------------------------


def test_trace_id_from_traceparent_header():
    tp = f"00-{TRACE}-00f067aa0ba902b7-01".encode()
    assert trace_id_from_headers({"traceparent": tp}) == TRACE
    assert trace_id_from_headers([(b"other", b"x"), ("traceparent", tp.decode())]) == TRACE
    assert trace_id_from_headers({"traceparent": b"garbage"}) is None
    assert trace_id_from_headers(None) is None


def test_message_trace_id_wins_over_header():
    r = from_message(names.WORK_ORDERS, order("wo-1", trace_id="aa" * 16), trace_id="bb" * 16)
    assert r.trace_id == "aa" * 16
    r = from_message(names.RUL, rul(1), trace_id="bb" * 16)
    assert r.trace_id == "bb" * 16


def test_timestamps():
    assert parse_ts("2026-11-29T10:00:00Z") == T0
    assert parse_ts("2026-11-29T10:00:00.123456789Z") == T0 + timedelta(microseconds=123456)
    assert parse_ts("2026-11-29T12:00:00+02:00") == T0
    assert parse_ts(T0.timestamp()) == T0
    with pytest.raises(InvalidMessage) as err:
        from_message(names.ANOMALIES, {**anomaly(0), "ts": "yesterday"})
    assert err.value.field == "ts"


def test_invalid_messages_name_the_field():
    with pytest.raises(InvalidMessage) as err:
        from_message(names.WORK_ORDERS, {k: v for k, v in order("x").items() if k != "reason"})
    assert err.value.field == "reason"
    with pytest.raises(InvalidMessage):
        from_message(names.RUL, b"not json")
    r = from_message(names.ANOMALIES, {**anomaly(0), "asset_id": "A\x00B"})
    assert r.asset_id == "AB"


# -- the write buffer (no server) ----------------------------------------------


async def test_buffer_retries_outages_and_stays_bounded():
    written: list[int] = []
    up = asyncio.Event()

    async def flush(rows):
        if not up.is_set():
            raise ConnectionRefusedError("down")
        written.extend(rows)

    buf = WriteBuffer(flush, is_transient=lambda e: isinstance(e, OSError), name="fake",
                      capacity=10, max_batch=4, backoff=FAST)
    puts = [asyncio.create_task(buf.put(list(range(i * 7, i * 7 + 7)))) for i in range(5)]
    await asyncio.sleep(0.5)
    assert not any(p.done() for p in puts)
    assert buf.pending <= 10
    up.set()
    await asyncio.wait_for(asyncio.gather(*puts), 10)
    assert sorted(written) == list(range(35))
    assert buf.stats.high_water <= 10
    assert buf.pending == 0


async def test_buffer_drops_only_the_refused_row():
    rejected = []

    async def flush(rows):
        if 3 in rows:
            raise ValueError("bad row")

    buf = WriteBuffer(flush, is_transient=lambda e: isinstance(e, OSError), name="fake",
                      on_reject=lambda row, exc: rejected.append(row), backoff=FAST)
    await buf.put([1, 2, 3, 4])
    assert rejected == [3]
    assert buf.stats.written == 3


async def test_buffer_close_fails_waiting_puts():
    async def flush(rows):
        raise ConnectionRefusedError("down")

    buf = WriteBuffer(flush, is_transient=lambda e: True, name="fake", backoff=FAST)
    put = asyncio.create_task(buf.put([1]))
    await asyncio.sleep(0.2)
    await buf.close()
    with pytest.raises(BufferClosed):
        await asyncio.wait_for(put, 5)


# -- schema ---------------------------------------------------------------------


async def test_migrations_are_idempotent_and_safe_concurrently(postgres_dsn):
    conns = [await asyncpg.connect(postgres_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        latest = available()[-1].version
        assert sorted(map(len, results)) == [0, 0, len(available())]  # exactly one applied them
        assert await migrate(conns[0]) == []
        assert await current_version(conns[0]) == latest
        tables = {r["tablename"] for r in await conns[0].fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"assets", "work_orders", "anomaly_events", "rul_history", "schema_migrations"} <= tables
    finally:
        for c in conns:
            await c.close()


async def test_database_enforces_one_open_work_order_per_asset_and_reason(sink, postgres_dsn):
    await sink.write(records(names.WORK_ORDERS, [order("wo-1")]))
    with pytest.raises(asyncpg.UniqueViolationError):
        await fetch(
            postgres_dsn,
            "INSERT INTO work_orders (work_order_id, asset_id, priority, reason, created_at) "
            "VALUES ('wo-x', 'PUMP-7', 'high', 'rul_below_threshold', now())",
        )


# -- writes -------------------------------------------------------------------


async def test_rows_written_and_replay_adds_nothing(sink, postgres_dsn):
    batch = (
        records(names.ANOMALIES, [anomaly(i) for i in range(50)] + [anomaly(100, is_anomaly=False)], TRACE)
        + records(names.RUL, [rul(i) for i in range(50)], TRACE)
        + records(names.WORK_ORDERS, [order("wo-1"), order("wo-2", asset="FAN-1")])
    )
    await sink.write(batch)
    assert await count(postgres_dsn, "anomaly_events") == 50  # is_anomaly false is not an event
    assert await count(postgres_dsn, "rul_history") == 50
    assert await count(postgres_dsn, "work_orders") == 2
    assert {r["asset_id"] for r in await fetch(postgres_dsn, "SELECT asset_id FROM assets")} == {"PUMP-7", "FAN-1"}
    row = (await fetch(postgres_dsn, "SELECT * FROM rul_history WHERE cycle = 3"))[0]
    assert row["rul"] == 97.0 and row["unit"] == "cycles" and row["trace_id"] == TRACE
    assert row["model_name"] == "exp-degradation" and row["sensor_id"] == ""
    assert sink.inserted["anomaly_events"] == 50

    before = await fetch(postgres_dsn, "SELECT work_order_id, updated_at, evidence FROM work_orders ORDER BY 1")
    await sink.write(batch)  # a replay after a crash
    assert await count(postgres_dsn, "anomaly_events") == 50
    assert await count(postgres_dsn, "rul_history") == 50
    assert await fetch(postgres_dsn, "SELECT work_order_id, updated_at, evidence FROM work_orders ORDER BY 1") == before
    assert sink.inserted["anomaly_events"] == 50 and sink.inserted["work_orders"] == 2


async def test_new_work_order_meeting_an_open_one_is_merged(sink, postgres_dsn):
    await sink.write(records(names.WORK_ORDERS, [order("wo-1", rul_value=25.0, evidence={"rul": 25.0})]))
    first = (await fetch(postgres_dsn, "SELECT * FROM work_orders"))[0]
    await sink.write(records(names.WORK_ORDERS, [order("wo-2", rul_value=12.0, evidence={"anomalies": 7},
                                                       trace_id="cc" * 16)]))
    rows = await fetch(postgres_dsn, "SELECT * FROM work_orders")
    assert len(rows) == 1
    merged = rows[0]
    assert merged["work_order_id"] == "wo-1" and merged["status"] == "open"
    assert merged["rul"] == 12.0
    assert merged["merged_work_order_ids"] == ["wo-2"]
    assert merged["trace_id"] == TRACE and merged["last_trace_id"] == "cc" * 16
    assert merged["updated_at"] > first["updated_at"]
    assert '"anomalies": 7' in merged["evidence"] and '"rul": 25.0' in merged["evidence"]

    # Replaying either one changes nothing.
    await sink.write(records(names.WORK_ORDERS, [order("wo-1"), order("wo-2")]))
    assert (await fetch(postgres_dsn, "SELECT * FROM work_orders")) == rows

    # Once closed, a new order for the same asset and reason opens a new row,
    # but a replay of the closed (or merged) one does not reopen anything.
    await fetch(postgres_dsn, "UPDATE work_orders SET status = 'closed', closed_at = now()")
    await sink.write(records(names.WORK_ORDERS, [order("wo-1"), order("wo-2"), order("wo-3")]))
    rows = await fetch(postgres_dsn, "SELECT work_order_id, status FROM work_orders ORDER BY 1")
    assert [tuple(r) for r in rows] == [("wo-1", "closed"), ("wo-3", "open")]


async def test_work_order_says_why_escalates_and_is_resolved(sink, postgres_dsn):
    band = {"band": "BPFO", "factor": 6.3}
    opened = {**order("wo-1", reason="persistent_anomaly", evidence={"defect_band": band}), "priority": "medium",
              "why": "VIB-1: alert for 5 scores in a row; bpfo_energy 6.30x reference"}
    await sink.write(records(names.WORK_ORDERS, [opened]))
    (row,) = await fetch(postgres_dsn, "SELECT * FROM work_orders")
    assert row["why"].startswith("VIB-1: alert") and row["defect_band"] == "BPFO" and row["priority"] == "medium"

    escalate = {**opened, "action": "escalate", "priority": "high", "why": "VIB-1: danger for 9 scores in a row"}
    await sink.write(records(names.WORK_ORDERS, [escalate, {**escalate, "priority": "medium"}]))
    (row,) = await fetch(postgres_dsn, "SELECT * FROM work_orders")
    assert row["priority"] == "high" and row["why"].startswith("VIB-1: danger"), "escalation only ever raises"
    assert sink.inserted["work_orders_escalated"] == 1

    # A merged newcomer with a higher priority raises the open order too.
    await sink.write(records(names.WORK_ORDERS, [{**opened, "work_order_id": "wo-2", "priority": "critical"}]))
    (row,) = await fetch(postgres_dsn, "SELECT * FROM work_orders")
    assert row["priority"] == "critical" and row["merged_work_order_ids"] == ["wo-2"]

    resolve = {**opened, "action": "resolve", "why": "maintenance done: bearing replaced", "created_at": iso(T0 + timedelta(hours=2))}
    await sink.write(records(names.WORK_ORDERS, [resolve, resolve]))
    (row,) = await fetch(postgres_dsn, "SELECT * FROM work_orders")
    assert row["status"] == "closed" and row["resolution"] == "maintenance done: bearing replaced"
    assert row["closed_at"] == T0 + timedelta(hours=2) and sink.inserted["work_orders_resolved"] == 1
    with pytest.raises(InvalidMessage, match="action"):
        from_message(names.WORK_ORDERS, {**opened, "action": "reopen"})


async def test_conflicting_work_orders_in_one_batch(sink, postgres_dsn):
    await sink.write(records(names.WORK_ORDERS, [order("wo-a"), order("wo-b"), order("wo-c", reason="anomaly")]))
    rows = await fetch(postgres_dsn, "SELECT work_order_id, merged_work_order_ids FROM work_orders ORDER BY 1")
    assert [(r[0], r[1]) for r in rows] == [("wo-a", ["wo-b"]), ("wo-c", [])]
    assert sink.inserted["work_orders"] == 2 and sink.inserted["work_orders_merged"] == 1


async def test_two_workers_racing_keep_one_open_work_order(postgres_dsn):
    sinks = [PostgresSink(postgres_dsn, backoff=FAST) for _ in range(2)]
    try:
        await asyncio.gather(*(s.start() for s in sinks))  # migrate together
        batches = [[order(f"wo-{k}-{i}", asset=f"A{i % 5}") for i in range(40)] for k in range(2)]
        await asyncio.gather(*(s.write(records(names.WORK_ORDERS, b)) for s, b in zip(sinks, batches)))
        await asyncio.gather(*(s.write(records(names.WORK_ORDERS, b)) for s, b in zip(sinks, reversed(batches))))
    finally:
        for s in sinks:
            await s.close()
    rows = await fetch(postgres_dsn, "SELECT asset_id, cardinality(merged_work_order_ids) AS merged FROM work_orders ORDER BY 1")
    assert [(r["asset_id"], r["merged"]) for r in rows] == [(f"A{i}", 15) for i in range(5)]


async def test_query_path(sink, postgres_dsn):
    await sink.write(records(names.WORK_ORDERS, [order("wo-1"), order("wo-2", asset="FAN-1")]))
    await fetch(postgres_dsn, "UPDATE work_orders SET status = 'closed' WHERE work_order_id = 'wo-2'")
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert [r["work_order_id"] for r in await list_work_orders(conn)] == ["wo-1", "wo-2"]
        assert [r["work_order_id"] for r in await list_work_orders(conn, open_only=True)] == ["wo-1"]
        assert [r["work_order_id"] for r in await list_work_orders(conn, asset="FAN-1")] == ["wo-2"]
    finally:
        await conn.close()


# -- outages --------------------------------------------------------------------


async def test_outage_loses_nothing_and_buffer_stays_bounded(postgres_server, postgres_dsn):
    sink = PostgresSink(postgres_dsn, backoff=FAST, capacity=200, max_batch=50)
    assert await sink.start()
    try:
        await sink.write(records(names.RUL, [rul(i) for i in range(10)]))
        await asyncio.to_thread(postgres_server.stop)
        writes = [
            asyncio.create_task(sink.write(records(names.RUL, [rul(i) for i in range(k * 100, k * 100 + 100)])))
            for k in range(1, 6)
        ] + [asyncio.create_task(sink.write(records(names.WORK_ORDERS, [order("wo-outage")])))]
        await asyncio.sleep(1.5)
        assert not any(w.done() for w in writes), "writes must wait for the database, not fail"
        assert sink.stats.pending <= 200 and sink.stats.failures > 0
        await asyncio.to_thread(postgres_server.start)
        await asyncio.wait_for(asyncio.gather(*writes), 60)
    finally:
        if not postgres_server.is_running():
            postgres_server.start()
        await sink.close()
    assert sink.stats.high_water <= 200
    assert await count(postgres_dsn, "rul_history") == 510
    assert await count(postgres_dsn, "work_orders") == 1


async def test_start_with_database_down_does_not_crash(postgres_server, postgres_dsn):
    await asyncio.to_thread(postgres_server.stop)
    sink = PostgresSink(postgres_dsn, backoff=FAST, connect_timeout=1.0)
    try:
        assert await sink.start() is False
        write = asyncio.create_task(sink.write(records(names.WORK_ORDERS, [order("wo-late")])))
        await asyncio.sleep(0.5)
        assert not write.done()
        await asyncio.to_thread(postgres_server.start)
        await asyncio.wait_for(write, 60)
    finally:
        if not postgres_server.is_running():
            postgres_server.start()
        await sink.close()
    assert await count(postgres_dsn, "work_orders") == 1


# -- spans ----------------------------------------------------------------------


async def test_spans_follow_db_conventions_without_password(postgres_server, postgres_dsn):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = PostgresSink(postgres_dsn, tracer=provider.get_tracer("test"), backoff=FAST)
    try:
        await sink.write(records(names.ANOMALIES, [anomaly(1), anomaly(2)]) + records(names.WORK_ORDERS, [order("wo-1")]))
    finally:
        await sink.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"insert anomaly_events", "insert_work_order", "insert assets"} <= set(spans)
    attrs = dict(spans["insert_work_order"].attributes)
    assert attrs["db.system.name"] == "postgresql"
    assert attrs["db.operation.name"] == "INSERT"
    assert attrs["db.collection.name"] == "work_orders"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == postgres_server.port
    assert dict(spans["insert anomaly_events"].attributes)["db.operation.batch.size"] == 2
    for span in exporter.get_finished_spans():
        assert all("s3cret" not in str(v) for v in span.attributes.values())
    assert "s3cret" in postgres_dsn and "s3cret" not in repr(sink)


# -- the work-orders command -------------------------------------------------------


def run_command(*args: str, dsn: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANTIS_")}
    if dsn is not None:
        env["MANTIS_POSTGRES_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "mantis_stream", "work-orders", *args],  # as a user runs it
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


async def test_work_orders_command_lists_a_table_with_trace_ids(sink, postgres_dsn):
    await sink.write(records(names.WORK_ORDERS, [order("wo-1"), order("wo-2", asset="FAN-1"), order("wo-3")]))
    await fetch(postgres_dsn, "UPDATE work_orders SET status = 'closed' WHERE work_order_id = 'wo-2'")
    result = await asyncio.to_thread(run_command, dsn=postgres_dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["WORK", "ORDER", "ASSET"] and "TRACE ID" in lines[0]
    assert any(line.startswith("wo-1 (+1)") and TRACE in line and "open" in line for line in lines)
    assert any(line.startswith("wo-2") and "closed" in line for line in lines)

    result = await asyncio.to_thread(run_command, "--open", dsn=postgres_dsn)
    assert "wo-1" in result.stdout and "wo-2" not in result.stdout
    result = await asyncio.to_thread(run_command, "--asset", "FAN-1", dsn=postgres_dsn)
    assert "wo-2" in result.stdout and "wo-1" not in result.stdout


async def test_work_orders_command_errors_in_one_line(postgres_server):
    result = await asyncio.to_thread(run_command, dsn=None)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mantis-stream work-orders: MANTIS_POSTGRES_DSN is not set "
        "(e.g. postgresql://user:password@localhost:5432/mantis)"
    )
    dsn = f"postgresql://mantis:s3cret-pw@127.0.0.1:{free_port()}/nowhere"
    result = await asyncio.to_thread(run_command, dsn=dsn)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach PostgreSQL" in result.stderr and "s3cret" not in result.stderr
