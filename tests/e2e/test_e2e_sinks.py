"""End to end on the real broker: the worker's sink agents write PostgreSQL and InfluxDB.

The sink agents are tested alone (messages produced straight to their topics:
exact counts, replay, an outage, a crash) and behind the whole pipeline
(readings in, rows and points out).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from mantis_stream import topics as names

from conftest import collect, produce
from servers import *  # noqa: F403

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.influxdb]

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
# The worker's own stages also react to what these tests produce (the anomaly
# and RUL stages read mantis.features): count only the rows of these models.
ANOMALY_MODEL = "e2e-anomaly"
RUL_MODEL = "e2e-rul"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def traceparent(i: int) -> tuple[str, str]:
    trace_id = f"{i:032x}".replace("0", "a", 1)
    return trace_id, f"00-{trace_id}-00f067aa0ba902b7-01"


async def start_with_sinks(start_worker: Any, env: dict[str, str], **kwargs: Any) -> Any:
    worker = await start_worker(env=env, **kwargs)
    await eventually(
        lambda: asyncio.sleep(0, "storage: PostgreSQL sink on" in worker.log() and "storage: InfluxDB sink on" in worker.log()),
        timeout=20, what="the sink agents' start (does mantis_stream/agents/__init__.py import sinks?)",
    )
    return worker


def sink_env(postgres_dsn: str, influx_url: str) -> dict[str, str]:
    return {"MANTIS_POSTGRES_DSN": postgres_dsn, "MANTIS_INFLUXDB_URL": influx_url, "MANTIS_BATCH_WITHIN": "0.2"}


class Counts(tuple):
    """Counts not yet as expected (falsy, so ``eventually`` keeps waiting and reports them)."""

    def __bool__(self) -> bool:
        return False


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what} not reached in {timeout} s (last: {last!r})")


async def pg(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def pg_count(dsn: str, table: str, asset_prefix: str, model: str | None = None) -> int:
    sql = f"SELECT count(*) FROM {table} WHERE asset_id LIKE $1"
    if model:
        sql += f" AND model_name = '{model}'"
    rows = await pg(dsn, sql, asset_prefix + "%")
    return rows[0][0]


def influx_count(server: Any, url: str, measurement: str, field: str, asset_prefix: str, model: str | None = None) -> int:
    database = url.rsplit("/", 1)[-1]
    where = f"asset_id =~ /^{asset_prefix}/" + (f" AND model = '{model}'" if model else "")
    result = server.query(f"SELECT count(\"{field}\") FROM \"{measurement}\" WHERE {where}", database)
    series = result["results"][0].get("series")
    return series[0]["values"][0][1] if series else 0


def sink_messages(prefix: str, n: int = 20, salt: int = 0) -> dict[str, list[tuple[bytes, list[tuple[str, bytes]]]]]:
    """Messages for the sink topics, each with its own traceparent header (``traceparent(salt + ...)``)."""
    out: dict[str, list] = {names.ANOMALIES: [], names.RUL: [], names.FEATURES: [], names.WORK_ORDERS: []}
    for i in range(n):
        ts = iso(T0 + timedelta(seconds=i))
        _, header = traceparent(salt + 1000 + i)
        headers = [("traceparent", header.encode())]
        asset = f"{prefix}-PUMP"
        out[names.ANOMALIES].append((orjson.dumps({
            "asset_id": asset, "sensor_id": "VIB-1", "ts": ts, "score": 0.9, "threshold": 0.7,
            # anomalies only every 7th: too few in a row for the orchestrator to open a work order
            "is_anomaly": i % 7 == 0, "model": {"name": ANOMALY_MODEL, "version": "1"},
        }), headers))
        out[names.RUL].append((orjson.dumps({
            "asset_id": asset, "ts": ts, "rul": 500.0 - i, "unit": "cycles", "lower": 450.0, "upper": 550.0,
            "health_index": 0.9, "cycle": i, "model": {"name": RUL_MODEL, "version": "1"},
        }), headers))
        out[names.FEATURES].append((orjson.dumps({
            "asset_id": asset, "sensor_id": "VIB-1", "ts": ts, "features": {"rms": 0.1 * i, "kurtosis": 3.0},
        }), headers))
    for j in range(3):
        _trace_id, header = traceparent(salt + 2000 + j)
        out[names.WORK_ORDERS].append((orjson.dumps({
            "work_order_id": f"{prefix}-wo-{j}", "asset_id": f"{prefix}-FAN-{j}", "priority": "high",
            "reason": "rul_below_threshold", "created_at": iso(T0), "rul": 12.0,
            # the first carries its trace id in the message, the others only in the header
            **({"trace_id": "f" * 32} if j == 0 else {}),
        }), [("traceparent", header.encode())]))
    return out


async def committed_everything(bootstrap: str, group: str, topic: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return False
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def produce_all(bootstrap: str, messages: dict[str, list]) -> None:
    for topic, items in messages.items():
        await produce(bootstrap, topic, [v for v, _ in items], [h for _, h in items])


async def wait_stored(postgres_dsn: str, influx_server: Any, influx_url: str, prefix: str, n: int = 20,
                      timeout: float = 60.0) -> None:
    anomalies = len([i for i in range(n) if i % 7 == 0])

    want_pg = (n, anomalies, 3)
    want_influx = (n, n, n)

    async def pg_done() -> Any:
        got = (await pg_count(postgres_dsn, "rul_history", prefix, RUL_MODEL),
               await pg_count(postgres_dsn, "anomaly_events", prefix, ANOMALY_MODEL),
               await pg_count(postgres_dsn, "work_orders", prefix))
        return True if got == want_pg else Counts(got)

    async def influx_done() -> Any:
        got = (influx_count(influx_server, influx_url, "features", "rms", prefix),
               influx_count(influx_server, influx_url, "anomaly_scores", "score", prefix, ANOMALY_MODEL),
               influx_count(influx_server, influx_url, "rul", "rul", prefix, RUL_MODEL))
        return True if got == want_influx else Counts(got)

    await eventually(pg_done, timeout=timeout, what="PostgreSQL rows")
    await eventually(influx_done, timeout=timeout, what="InfluxDB points")


async def missing_cycles(postgres_dsn: str, prefix: str, n: int) -> list[int]:
    rows = await pg(postgres_dsn, "SELECT cycle FROM rul_history WHERE asset_id LIKE $1 AND model_name = $2",
                    prefix + "%", RUL_MODEL)
    return sorted(set(range(n)) - {r["cycle"] for r in rows})


async def test_sink_agents_store_rows_and_points_once(broker, start_worker, postgres_dsn, influx_server, influx_url):
    prefix = "E2E" + uuid.uuid4().hex[:6]
    worker = await start_with_sinks(start_worker, sink_env(postgres_dsn, influx_url))
    messages = sink_messages(prefix)
    await produce_all(broker.bootstrap, messages)
    await wait_stored(postgres_dsn, influx_server, influx_url, prefix)

    orders = {r["work_order_id"]: r for r in await pg(postgres_dsn, "SELECT * FROM work_orders WHERE asset_id LIKE $1", prefix + "%")}
    assert orders[f"{prefix}-wo-0"]["trace_id"] == "f" * 32  # the message's own trace id wins
    assert orders[f"{prefix}-wo-1"]["trace_id"] == traceparent(2001)[0]  # else the traceparent header's
    rul_row = (await pg(postgres_dsn, "SELECT trace_id FROM rul_history WHERE asset_id = $1 AND cycle = 3", f"{prefix}-PUMP"))[0]
    assert rul_row["trace_id"] == traceparent(1003)[0]

    # Replaying every message (a crash before the commit) stores nothing twice.
    await produce_all(broker.bootstrap, messages)
    marker = f"{prefix}-MARK"  # processed after the replay: when it is stored, the replay was handled
    await produce(broker.bootstrap, names.RUL, [orjson.dumps({
        "asset_id": marker, "ts": iso(T0), "rul": 900.0, "unit": "cycles", "model": {"name": "exp", "version": "1"}})])
    await eventually(lambda: pg_count(postgres_dsn, "rul_history", marker), what="marker row")
    await eventually(lambda: asyncio.sleep(0, influx_count(influx_server, influx_url, "rul", "rul", marker)),
                     what="marker point")
    await asyncio.sleep(2.0)
    await wait_stored(postgres_dsn, influx_server, influx_url, prefix)  # still exactly the same counts

    # A message a sink cannot store becomes a dead letter naming the field (one per sink).
    bad = orjson.dumps({"asset_id": f"{prefix}-BAD", "ts": iso(T0), "unit": "cycles", "model": {"name": RUL_MODEL}})
    await produce(broker.bootstrap, names.RUL, [bad])
    storage_letters = lambda found: [v for v, _, _ in found[names.DEAD_LETTERS]  # noqa: E731
                                     if v.get("stage") == "storage" and v["payload"] == bad.decode()]
    found = await collect(broker.bootstrap, (names.DEAD_LETTERS,), lambda f: len(storage_letters(f)) >= 2, timeout=60)
    letters = storage_letters(found)
    assert sorted(lt["error"]["message"] for lt in letters) == ["rul: missing (influx sink)", "rul: missing (postgres sink)"]
    assert all(lt["error"]["field"] == "rul" and lt["source"]["topic"] == names.RUL for lt in letters)

    # Acks reach Kafka: the group's committed offsets catch up with the work-orders topic
    # (a work order is read by the PostgreSQL sink alone).
    await eventually(lambda: committed_everything(broker.bootstrap, worker.app_id, names.WORK_ORDERS),
                     what="committed offsets")

    log = worker.log()
    assert "PostgreSQL sink on: postgresql://mantis:***@" in log
    assert "InfluxDB sink on:" in log
    assert "s3cret" not in log


async def test_database_outage_during_a_run_loses_nothing(broker, start_worker, postgres_server, postgres_dsn,
                                                          influx_server, influx_url):
    prefix = "OUT" + uuid.uuid4().hex[:6]
    worker = await start_with_sinks(start_worker, sink_env(postgres_dsn, influx_url))
    await asyncio.to_thread(postgres_server.stop)
    try:
        await produce_all(broker.bootstrap, sink_messages(prefix))
        await asyncio.sleep(4.0)  # the worker keeps retrying, and keeps running
        assert worker.proc.poll() is None
    finally:
        await asyncio.to_thread(postgres_server.start)
    await wait_stored(postgres_dsn, influx_server, influx_url, prefix)
    assert worker.proc.poll() is None
    assert "unavailable" in worker.log()


async def test_stop_during_outage_commits_nothing_unwritten(broker, start_worker, postgres_server, postgres_dsn,
                                                            influx_url):
    prefix = "STP" + uuid.uuid4().hex[:6]
    worker = await start_with_sinks(start_worker, sink_env(postgres_dsn, influx_url))
    await eventually(lambda: committed_everything(broker.bootstrap, worker.app_id, names.WORK_ORDERS),
                     what="earlier work orders committed")
    await asyncio.to_thread(postgres_server.stop)
    try:
        await produce_all(broker.bootstrap, {names.WORK_ORDERS: sink_messages(prefix)[names.WORK_ORDERS]})
        await asyncio.sleep(4.0)  # read, and waiting for the database
        await asyncio.to_thread(worker.stop)  # a graceful stop in the middle of the outage
        assert worker.proc.returncode is not None
        # The unwritten work orders were not committed: the next worker of the group reads them again.
        assert not await committed_everything(broker.bootstrap, worker.app_id, names.WORK_ORDERS)
    finally:
        await asyncio.to_thread(postgres_server.start)


async def test_worker_killed_mid_run_replays_without_duplicates(broker, start_worker, postgres_dsn, influx_server, influx_url):
    prefix = "KIL" + uuid.uuid4().hex[:6]
    app_id = "mantis-test-" + uuid.uuid4().hex[:8]
    env = sink_env(postgres_dsn, influx_url)
    worker = await start_with_sinks(start_worker, env, app_id=app_id)
    messages = sink_messages(prefix, n=200)
    await produce_all(broker.bootstrap, messages)
    await eventually(lambda: pg_count(postgres_dsn, "rul_history", prefix), what="first rows")
    worker.kill()  # SIGKILL: no commit of whatever was in flight
    # Same consumer group: resumes from the committed offsets, after restoring the
    # orchestrator's table (the restart path where Faust once skipped a message).
    await start_with_sinks(start_worker, env, app_id=app_id)
    await produce_all(broker.bootstrap, {names.WORK_ORDERS: messages[names.WORK_ORDERS]})  # and a replay
    try:
        # A restart on a loaded machine takes a while; a lost message never arrives.
        await wait_stored(postgres_dsn, influx_server, influx_url, prefix, n=200, timeout=120)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; RUL cycles not stored: {await missing_cycles(postgres_dsn, prefix, 200)}") from None


async def test_pipeline_readings_reach_both_databases(broker, start_worker, postgres_dsn, influx_server, influx_url):
    prefix = "PIP" + uuid.uuid4().hex[:6]
    await start_with_sinks(start_worker, sink_env(postgres_dsn, influx_url))
    asset = f"{prefix}-ENGINE"
    readings = []
    for i in range(60):
        _trace_id, header = traceparent(3000 + i)
        readings.append((orjson.dumps({
            "asset_id": asset, "sensor_id": "GAS-PATH", "ts": iso(T0 + timedelta(seconds=i)), "cycle": i + 1,
            "channels": {"s2": 642.0 + 0.01 * i, "s3": 1585.0 + 0.2 * i, "s4": 1400.0 + 0.3 * i},
        }), [("traceparent", header.encode())]))
        readings.append((orjson.dumps({
            "asset_id": asset, "sensor_id": "TMP-1", "ts": iso(T0 + timedelta(seconds=i)), "value": 60.0 + 0.1 * i,
        }), [("traceparent", header.encode())]))
    await produce(broker.bootstrap, names.READINGS, [v for v, _ in readings], [h for _, h in readings])

    await eventually(lambda: asyncio.sleep(0, influx_count(influx_server, influx_url, "features", "trace_id", prefix)),
                     what="feature points", timeout=90)
    await eventually(lambda: asyncio.sleep(0, influx_count(influx_server, influx_url, "anomaly_scores", "score", prefix)),
                     what="anomaly score points", timeout=90)
    await eventually(lambda: pg_count(postgres_dsn, "rul_history", prefix), what="RUL rows", timeout=90)
    rows = await pg(postgres_dsn, "SELECT trace_id FROM rul_history WHERE asset_id = $1", asset)
    assert all(r["trace_id"] and len(r["trace_id"]) == 32 for r in rows)
    assert await pg_count(postgres_dsn, "assets", prefix) == 1


async def test_storage_spans_in_the_storage_service(broker, start_worker, postgres_dsn, influx_url):
    from otlp_receiver import OTLPReceiver

    prefix = "TRC" + uuid.uuid4().hex[:6]
    with OTLPReceiver() as rx:
        worker = await start_with_sinks(start_worker, {
            **sink_env(postgres_dsn, influx_url),
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
        })
        # Trace ids of their own: the topics hold earlier tests' messages, which a new group reads too.
        salt = uuid.uuid4().int % 10**9 * 10**4
        await produce_all(broker.bootstrap, sink_messages(prefix, n=3, salt=salt))
        order_trace = traceparent(salt + 2001)[0]  # the second work order's header

        def ready(spans: list) -> bool:
            names_seen = {s.name for s in spans if s.service == "mantis-storage"}
            # a write ends before its batch span: both may come in different exports
            ids = {s.span_id for s in spans}
            writes_parented = all(s.parent_span_id in ids for s in spans if s.name == "write_influxdb")
            orders = {s.trace_id for s in spans if s.name == "insert_work_order"}
            # the process span ends after its insert: it may come in a later export
            processed = {s.trace_id for s in spans if s.name == f"process {names.WORK_ORDERS}"}
            return ({"insert_work_order", "insert rul_history", "write_influxdb"} <= names_seen and writes_parented
                    and order_trace in orders and order_trace in processed)

        spans = await asyncio.to_thread(rx.wait_for, ready, 60)
        worker.stop()
    storage = [s for s in spans if s.service == "mantis-storage"]
    insert = next(s for s in storage if s.name == "insert_work_order")
    assert insert.kind == "CLIENT"
    a = insert.attributes
    assert a["db.system.name"] == "postgresql" and a["db.operation.name"] == "INSERT"
    assert a["db.collection.name"] == "work_orders" and a["server.address"] == "127.0.0.1"
    assert isinstance(a["server.port"], int)
    write = next(s for s in storage if s.name == "write_influxdb")
    assert write.attributes["db.system.name"] == "influxdb"
    assert write.attributes["db.collection.name"] in ("features", "anomaly_scores", "rul")
    # A work order's write is in the work order's trace, under the storage stage's process span of its message.
    (order_insert,) = [s for s in storage if s.name == "insert_work_order" and s.trace_id == order_trace]
    (process,) = [s for s in storage if s.trace_id == order_trace and s.name == f"process {names.WORK_ORDERS}"]
    assert order_insert.parent_span_id == process.span_id
    # The batch's other writes are under its batch span, in the trace of its first message.
    batches = {s.span_id: s for s in storage if s.name in ("store postgresql", "store influxdb")}
    assert write.parent_span_id in batches
    for s in storage:
        assert all("s3cret" not in str(v) for v in s.attributes.values())


async def test_an_unsampled_readings_work_order_trace_holds_its_assessment_order_and_write(
    broker, start_worker, postgres_dsn, influx_url,
):
    """Readings whose traceparent says "not sampled": the work order they cause still leads to spans."""
    from otlp_receiver import OTLPReceiver

    prefix = "UNS" + uuid.uuid4().hex[:6]
    asset = f"{prefix}-ENGINE"
    with OTLPReceiver() as rx:
        worker = await start_with_sinks(start_worker, {
            **sink_env(postgres_dsn, influx_url),
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "MANTIS_RUL_THRESHOLD_CYCLES": "1e9",  # the engine's first RUL estimate opens a work order
        })
        readings, headers = [], []
        for i in range(40):
            trace_id = uuid.uuid4().hex
            readings.append(orjson.dumps({
                "asset_id": asset, "sensor_id": "GAS-PATH", "ts": iso(T0 + timedelta(seconds=i)), "cycle": i + 1,
                "channels": {"s2": 642.0 + 0.01 * i, "s3": 1585.0 + 0.2 * i, "s4": 1400.0 + 0.3 * i},
            }))
            headers.append([("traceparent", f"00-{trace_id}-00f067aa0ba902b7-00".encode())])
        await produce(broker.bootstrap, names.READINGS, readings, headers)
        sent_traces = {h[0][1].decode().split("-")[1] for h in headers}

        async def order_row() -> Any:
            rows = await pg(postgres_dsn, "SELECT work_order_id, trace_id FROM work_orders WHERE asset_id = $1", asset)
            return rows[0] if rows else None

        row = await eventually(order_row, timeout=90, what="the engine's work order")
        order_trace = row["trace_id"]
        assert order_trace in sent_traces  # the reading's own trace id

        def complete(spans: list) -> bool:
            names_seen = {(s.service, s.name) for s in spans if s.trace_id == order_trace}
            return {("mantis-orchestrator", "create_work_order"), ("mantis-storage", "insert_work_order"),
                    ("mantis-storage", f"process {names.WORK_ORDERS}")} <= names_seen

        spans = await asyncio.to_thread(rx.wait_for, complete, 60)
        worker.stop()
    trace = [s for s in spans if s.trace_id == order_trace]
    ids = {s.span_id: s for s in trace}
    assessment = next(s for s in trace if s.name == f"process {names.ASSESSMENTS}")
    assert assessment.service == "mantis-orchestrator" and assessment.attributes["mantis.sampling.reason"] == "work-order"
    create = next(s for s in trace if s.name == "create_work_order")
    send = next(s for s in trace if s.name == f"send {names.WORK_ORDERS}")
    stored = next(s for s in trace if s.name == f"process {names.WORK_ORDERS}")
    insert = next(s for s in trace if s.name == "insert_work_order")
    assert create.parent_span_id == assessment.span_id and send.parent_span_id == create.span_id
    assert stored.parent_span_id == send.span_id and insert.parent_span_id == stored.span_id
    assert insert.attributes["db.collection.name"] == "work_orders"
    # of the other unsampled readings only outcomes are recorded (an anomaly, an error), nothing else
    for other in sent_traces - {order_trace}:
        recorded = [s for s in spans if s.trace_id == other]
        assert not recorded or any(
            "mantis.sampling.reason" in s.attributes or "error.type" in s.attributes for s in recorded
        ), sorted(s.name for s in recorded)
    assert all(s.parent_span_id in ids or s is assessment for s in trace)
