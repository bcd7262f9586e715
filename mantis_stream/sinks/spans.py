"""One helper for the sinks' database spans.

Why: both sinks open a CLIENT span per write with the database semantic
conventions and, on failure, the error type and the server's status code.
Attribute names come from ``opentelemetry.semconv``; the caller passes the
server address and port, never the DSN (which may hold a password).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv.attributes import db_attributes as DB
from opentelemetry.semconv.attributes import error_attributes as ERR
from opentelemetry.semconv.attributes import server_attributes as SERVER


def db_attributes(
    system: str, operation: str, *, collection: str | None, namespace: str, address: str, port: int, batch_size: int
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        DB.DB_SYSTEM_NAME: system,
        DB.DB_OPERATION_NAME: operation,
        DB.DB_NAMESPACE: namespace,
        SERVER.SERVER_ADDRESS: address,
        SERVER.SERVER_PORT: port,
    }
    if collection:
        attributes[DB.DB_COLLECTION_NAME] = collection
    if batch_size > 1:  # the conventions set it only for real batches
        attributes[DB.DB_OPERATION_BATCH_SIZE] = batch_size
    return attributes


@contextmanager
def db_span(
    tracer: trace.Tracer, name: str, attributes: dict[str, Any], context: Context | None = None,
) -> Iterator[trace.Span]:
    """A CLIENT span under ``context`` (default: the current one)."""
    with tracer.start_as_current_span(name, context=context, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                span.set_attribute(ERR.ERROR_TYPE, type(exc).__qualname__)
                code = getattr(exc, "sqlstate", None) or getattr(exc, "status", None)
                if code:
                    span.set_attribute(DB.DB_RESPONSE_STATUS_CODE, str(code))
            raise
