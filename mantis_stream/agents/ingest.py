"""HTTP ingest on the worker's web server: ``POST /api/v1/ingest``, ``GET /health``.

Why here: plants without a Kafka producer can post readings over HTTP.  The
request's ``traceparent`` is continued (service ``mantis-ingestion``) and each
reading is produced to ``mantis.readings`` with that context, so the trace
starts at the HTTP call.  Readings are validated first: a bad body is a 4xx
with the reason and nothing is produced; the pipeline still validates again.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from faust import web

from .. import tracing
from ..app import app, readings_topic, settings
from ..codecs import dumps
from ..models.reading import InvalidReading, validate_reading

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
    return hmac.compare_digest(given.encode(), f"Bearer {settings.ingest_token}".encode())


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


@app.page("/health")
class Health(web.View):
    async def get(self, request: web.Request) -> web.Response:
        with tracing.http_server_span(STAGE, "GET", "/health", request.headers):
            return self.json({"status": "ok", "app": settings.app_id, "agents": sorted(app.agents)})
