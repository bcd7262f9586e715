"""InfluxDB 1.x sink: features, anomaly scores and RUL as time series (aioinflux).

Why: dashboards (Grafana, Chronograf) plot what the pipeline computes per asset
and sensor; the trace id on each point leads from a spike to its trace in Jaeger.

Usage::

    sink = InfluxSink("http://localhost:8086/mantis")   # database in the path
    await sink.start()                                  # creates the database if missing
    await sink.write(records)                           # returns once InfluxDB took the points
    await sink.close()

Measurements (tags | fields):

- ``features``: ``asset_id``, ``sensor_id`` | one field per feature, ``trace_id``
- ``anomaly_scores``: ``asset_id``, ``sensor_id``, ``model``, ``model_version`` |
  ``score``, ``threshold``, ``is_anomaly``, ``trace_id``
- ``rul``: ``asset_id``, ``sensor_id`` (when the estimate has one), ``model``,
  ``model_version``, ``unit`` | ``rul``, ``lower``, ``upper``, ``health_index``,
  ``cycle``, ``trace_id``

Notes:
- Idempotent by nature: a point is keyed by measurement, tag set and time, so a
  replayed message overwrites itself; ``trace_id`` is a field, never a tag
  (a tag per trace would explode the series count).
- Numbers are written as floats (``cycle`` as an integer) so a field never
  changes type; NaN and infinities are left out (line protocol has none).
- Outages (connection refused, timeouts, 5xx, a database dropped under us) are
  retried with backoff by :class:`~mantis_stream.sinks.buffer.WriteBuffer`;
  a 400 (bad point) drops only the refused point.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
from opentelemetry import trace

with warnings.catch_warnings():  # aioinflux warns at import when pandas is absent
    warnings.simplefilter("ignore")
    from aioinflux import InfluxDBClient
    from aioinflux.client import InfluxDBError, InfluxDBWriteError

from ..settings import mask_url
from .buffer import Backoff, BufferedSink, RejectFn
from .records import AnomalyRow, FeatureRow, Record, RulRow
from .spans import db_attributes, db_span

try:
    from opentelemetry.semconv._incubating.attributes.db_attributes import DbSystemNameValues as _Systems

    DB_SYSTEM = _Systems.INFLUXDB.value
except (ImportError, AttributeError):  # pragma: no cover - older conventions package
    DB_SYSTEM = "influxdb"

log = logging.getLogger(__name__)

FEATURES = "features"
ANOMALY_SCORES = "anomaly_scores"
RUL = "rul"


class DatabaseMissing(RuntimeError):
    """InfluxDB answered "database not found": create it and retry."""


@dataclass(frozen=True)
class InfluxTarget:
    """Where to write, parsed from ``MANTIS_INFLUXDB_URL``."""

    host: str
    port: int
    database: str
    ssl: bool = False
    path: str = "/"
    username: str | None = None
    password: str | None = None
    retention_policy: str | None = None

    @classmethod
    def from_url(cls, url: str) -> InfluxTarget:
        """``http[s]://[user:password@]host[:port][/prefix]/database[?rp=policy]``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"InfluxDB URL must be http:// or https://, not {mask_url(url)!r}")
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise ValueError(f"InfluxDB URL needs the database in its path, e.g. http://host:8086/mantis (got {mask_url(url)!r})")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (443 if parts.scheme == "https" else 8086),
            database=unquote(segments[-1]),
            ssl=parts.scheme == "https",
            path="/" + "".join(s + "/" for s in segments[:-1]),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            retention_policy=query["rp"][0] if query.get("rp") else None,
        )


# -- line protocol (pure) ------------------------------------------------------


def _escape_key(text: str) -> str:
    return (
        text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
        .replace("\n", " ").replace("\r", " ")
    )


def _escape_measurement(text: str) -> str:
    return text.replace(",", "\\,").replace(" ", "\\ ")


def _field_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return None


def line(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts_ns: int) -> str | None:
    """One point in line protocol, or None when no field is writable."""
    field_text = []
    for key, value in fields.items():
        if value is None:
            continue
        text = _field_value(value)
        if text is not None:
            field_text.append(f"{_escape_key(key)}={text}")
    if not field_text:
        return None
    tag_text = "".join(
        f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v not in (None, "")
    )
    return f"{_escape_measurement(measurement)}{tag_text} {','.join(field_text)} {ts_ns}"


def _ns(ts: datetime) -> int:
    # Exact integer arithmetic: floats would lose the microseconds.
    return (int(ts.timestamp()) * 1_000_000 + ts.microsecond) * 1000


def point(record: Record) -> tuple[str, str] | None:
    """``(measurement, line)`` for a record, or None when it has no time series."""
    if isinstance(record, FeatureRow):
        fields: dict[str, Any] = {name: float(v) for name, v in record.features.items() if name != "trace_id"}
        fields["trace_id"] = record.trace_id
        tags = {"asset_id": record.asset_id, "sensor_id": record.sensor_id}
        return _pair(FEATURES, tags, fields, record)
    if isinstance(record, AnomalyRow):
        tags = {"asset_id": record.asset_id, "sensor_id": record.sensor_id,
                "model": record.model_name, "model_version": record.model_version}
        fields = {"score": record.score, "threshold": record.threshold,
                  "is_anomaly": record.is_anomaly, "trace_id": record.trace_id}
        return _pair(ANOMALY_SCORES, tags, fields, record)
    if isinstance(record, RulRow):
        tags = {"asset_id": record.asset_id, "sensor_id": record.sensor_id, "model": record.model_name,
                "model_version": record.model_version, "unit": record.unit}
        fields = {"rul": record.rul, "lower": record.lower, "upper": record.upper,
                  "health_index": record.health_index, "cycle": record.cycle, "trace_id": record.trace_id}
        return _pair(RUL, tags, fields, record)
    return None


def _pair(measurement: str, tags: dict[str, str], fields: dict[str, Any],
          record: FeatureRow | AnomalyRow | RulRow) -> tuple[str, str] | None:
    text = line(measurement, tags, fields, _ns(record.ts))
    return None if text is None else (measurement, text)


# -- errors ---------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Outages retry; a 4xx on write (bad point, type conflict) does not."""
    if isinstance(exc, InfluxDBWriteError):
        return exc.status >= 500 or exc.status in (401, 403, 404, 408, 429)
    if isinstance(exc, (OSError, asyncio.TimeoutError, aiohttp.ClientError, InfluxDBError, DatabaseMissing)):
        return True
    return False


# -- the sink ---------------------------------------------------------------------


class InfluxSink(BufferedSink[tuple[str, str]]):
    """Batched, outage-tolerant writer of the pipeline's time series."""

    def __init__(
        self,
        url: str,
        *,
        tracer: trace.Tracer | None = None,
        capacity: int = 50_000,
        max_batch: int = 5_000,
        backoff: Backoff = Backoff(),
        timeout: float = 10.0,
        on_reject: RejectFn[tuple[str, str]] | None = None,
    ) -> None:
        self.url = url
        self.target = InfluxTarget.from_url(url)
        self._tracer = tracer or trace.get_tracer(__name__)
        self._timeout = timeout
        self._client: InfluxDBClient | None = None
        self._ready = False
        self._connect_lock = asyncio.Lock()
        #: Points accepted by InfluxDB per measurement (replays count again).
        self.points: dict[str, int] = defaultdict(int)
        super().__init__(
            "InfluxDB", url, f"{self.target.host}:{self.target.port}/{self.target.database}",
            log=log, is_transient=is_transient,
            capacity=capacity, max_batch=max_batch, backoff=backoff, on_reject=on_reject,
        )

    async def close(self) -> None:
        await self._buffer.close()
        client, self._client, self._ready = self._client, None, False
        if client is not None:
            await client.close()

    async def _ensure_ready(self) -> InfluxDBClient:
        async with self._connect_lock:
            if self._client is None:
                t = self.target
                headers = {}
                if t.username:  # aioinflux's username= uses aiohttp's deprecated BasicAuth
                    token = base64.b64encode(f"{t.username}:{t.password or ''}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                self._client = InfluxDBClient(
                    host=t.host, port=t.port, path=t.path, db=t.database, ssl=t.ssl,
                    timeout=self._timeout, headers=headers,
                )
            if not self._ready:
                try:
                    with self._span("create_database", "CREATE DATABASE", None, 0):
                        await self._client.create_database(self.target.database)  # a no-op when it exists
                except InfluxDBError as exc:
                    if "privilege" not in str(exc):
                        raise
                    # A writer without admin rights: the database must exist already.
                    log.warning("InfluxDB: cannot create database %r (%s); assuming it exists",
                                self.target.database, exc)
                self._ready = True
            return self._client

    async def write(self, records: Iterable[Record]) -> None:
        """Write the records' points; returns once InfluxDB accepted them (or refused them as bad)."""
        lines = [p for p in map(point, records) if p is not None]
        if lines:
            await self._buffer.put(lines)

    async def _flush(self, batch: Sequence[tuple[str, str]]) -> None:
        client = await self._ensure_ready()
        by_measurement: dict[str, list[str]] = defaultdict(list)
        for measurement, text in batch:
            by_measurement[measurement].append(text)
        for measurement, lines in by_measurement.items():
            with self._span("write_influxdb", "write", measurement, len(lines)):
                try:
                    await client.write("\n".join(lines).encode(), rp=self.target.retention_policy)
                except InfluxDBWriteError as exc:
                    if exc.status == 404 or "database not found" in str(exc):
                        self._ready = False  # dropped under us: create it again on retry
                        raise DatabaseMissing(str(exc)) from exc
                    raise
            self.points[measurement] += len(lines)

    def _span(self, name: str, operation: str, measurement: str | None, size: int) -> Any:
        t = self.target
        return db_span(self._tracer, name, db_attributes(
            DB_SYSTEM, operation, collection=measurement, namespace=t.database,
            address=t.host, port=t.port, batch_size=size,
        ))
