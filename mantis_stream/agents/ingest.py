"""HTTP ingest on the worker's web server: ``POST /api/v1/ingest``; ``GET /health`` and ``/health/live``.

Why here: plants without a Kafka producer can post readings over HTTP.  The
request's ``traceparent`` is continued (service ``mantis-ingestion``) and each
reading is produced to ``mantis.readings`` with that context, so the trace
starts at the HTTP call.  Readings are validated first: a bad body is a 4xx
with the reason and nothing is produced; the pipeline still validates again.

``/health`` (readiness) tells an orchestrator whether the worker can do its
job: 503 when no broker answers or no partition is assigned (ingest and
processing cannot work), 200 with ``"status": "degraded"`` when a database
sink is in an outage (rows wait in its buffer, Kafka keeps the rest) or spans
were dropped in the last minute, 200 ``"ok"`` otherwise; the body says which
check failed.  ``/health/live`` answers 200 as long as the event loop runs (a
restart helps only when it does not).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson
from faust import web

from .. import tracing
from ..app import app, readings_topic, settings
from ..codecs import dumps
from ..kafka import bootstrap_servers
from ..models.reading import InvalidReading, validate_reading
from ..settings import secret
from .sinks import SINKS

STAGE = "ingestion"
ROUTE = "/api/v1/ingest"
#: Readings accepted in one request.
MAX_BATCH = 10_000


class BodyTooLarge(Exception):
    pass


async def read_bounded(request: Any, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes without buffering them."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.content.iter_chunked(65_536):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def authorised(request: Any) -> bool:
    if not settings.ingest_token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {secret(settings.ingest_token)}".encode())


def parse_body(body: bytes) -> list[dict[str, Any]]:
    """A reading or an array of readings; raises InvalidReading naming the item and field."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidReading("body", f"not valid JSON ({str(exc)[:120]})") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items:
        raise InvalidReading("body", "an empty array holds no reading")
    if len(items) > MAX_BATCH:
        raise InvalidReading("body", f"{len(items)} readings, over the limit of {MAX_BATCH} per request")
    for i, item in enumerate(items):
        try:
            validate_reading(item, max_samples=settings.max_waveform_samples)
        except InvalidReading as exc:
            field = f"[{i}].{exc.field}" if isinstance(decoded, list) else exc.field
            raise InvalidReading(field, exc.reason) from None
    return items


@app.page(ROUTE)
class Ingest(web.View):
    async def post(self, request: web.Request) -> web.Response:
        with tracing.http_server_span(STAGE, "POST", ROUTE, request.headers) as span:
            if not authorised(request):
                span.set_attribute("http.response.status_code", 401)
                return self.json({"error": "a valid bearer token is required"}, status=401)
            try:
                body = await read_bounded(request, settings.max_message_bytes)
                items = parse_body(body)
            except BodyTooLarge:
                span.set_attribute("http.response.status_code", 413)
                return self.json({"error": f"body over {settings.max_message_bytes} bytes"}, status=413)
            except InvalidReading as exc:
                span.set_attribute("http.response.status_code", 400)
                return self.json({"error": str(exc), "field": exc.field}, status=400)
            for item in items:  # keyed by asset: one asset's chunks stay in order
                await readings_topic.send(key=item["asset_id"].encode(), value=dumps(item))
            span.set_attributes({"http.response.status_code": 202, "ingest.readings": len(items)})
            return self.json({"accepted": len(items)}, status=202)


#: Longest wait for a broker's TCP answer in a health check (orchestrators time out at a few seconds).
PROBE_TIMEOUT = 1.0
#: Spans dropped within this many seconds make the worker ``degraded``.
DROPS_RECENT = 60.0


async def broker_answers(broker: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when a bootstrap server accepts a TCP connection, else why none did."""
    reasons = []
    for hostport in bootstrap_servers(broker):
        host, _, port = hostport.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
        except (TimeoutError, OSError) as exc:
            reasons.append(f"{hostport}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
            continue
        writer.close()
        return None
    return "; ".join(reasons)


class SpanDrops:
    """Whether the tracing pipeline dropped spans lately (its counter only grows)."""

    def __init__(self) -> None:
        self.total, self.changed_at = 0, float("-inf")

    def recent(self, total: int, now: float) -> bool:
        if total != self.total:
            self.total, self.changed_at = total, now
        return now - self.changed_at < DROPS_RECENT


span_drops = SpanDrops()


async def readiness() -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the readiness checks."""
    problems, degraded = [], []
    unreachable = await broker_answers(settings.broker)
    if unreachable:
        problems.append(f"broker not reachable ({unreachable})")
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - no consumer yet (starting)
        assigned = 0
    if not assigned:
        problems.append("no partition assigned (starting, rebalancing or the group cannot join)")
    sinks = {}
    for name, sink in SINKS.items():
        stats = sink.stats
        sinks[name] = {"pending": stats.pending, "written": stats.written, "rejected": stats.rejected,
                       "outage_seconds": round(stats.outage_seconds, 1)}
        if stats.outage_seconds > 0:
            degraded.append(f"{name} sink unavailable for {stats.outage_seconds:.0f} s")
    runtime = tracing.current_runtime()
    dropped = runtime.dropped_spans if runtime is not None else 0
    if span_drops.recent(dropped, time.monotonic()):
        degraded.append("spans dropped in the last minute")
    status = "unavailable" if problems else "degraded" if degraded else "ok"
    body = {
        "status": status, "app": settings.app_id, "problems": problems + degraded,
        "broker": {"reachable": not unreachable, "partitions_assigned": assigned, "rebalancing": app.rebalancing},
        "sinks": sinks, "spans_dropped": dropped, "agents": sorted(app.agents),
    }
    return (503 if problems else 200), body


@app.page("/health")
class Health(web.View):
    async def get(self, request: web.Request) -> web.Response:
        with tracing.http_server_span(STAGE, "GET", "/health", request.headers) as span:
            status, body = await readiness()
            span.set_attribute("http.response.status_code", status)
            return self.json(body, status=status)


@app.page("/health/live")
class Live(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "alive", "app": settings.app_id})
