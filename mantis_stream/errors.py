"""Dead letters: what a stage does with an event it cannot process.

Why one module: every stage must turn a failure into the same
``mantis.dead-letters`` record (INTERFACE.md) and keep running, so no reading is
ever lost silently.  Like quixstreams' ``error_callbacks``: small functions, one
concern.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from typing import Any, TypeVar

from faust.types import EventT

from . import limits, tracing
from .codecs import dumps
from .models.reading import InvalidReading, format_timestamp

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Longest error message kept in a dead letter.
MAX_ERROR_MESSAGE = 500
#: Bytes of the original key and headers a dead letter keeps (a hostile message may carry megabytes of either).
MAX_KEY_BYTES = 1024
MAX_HEADER_BYTES = 16_384


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def span_safe(exc: BaseException) -> BaseException:
    """The exception as it may go on a span: same type, no fragment of the input.

    Why: a dead letter (the data plane) keeps the full reason, which may quote
    the bad value (``cannot read timestamp 'x…'``) or name a channel from the
    input; spans go to a collector more people can read, so they get the type,
    the field's first segment and the reason with quoted parts elided.
    """
    message = _QUOTED.sub("'…'", str(exc))[:200]
    if isinstance(exc, InvalidReading):
        field = re.split(r"[.\[]", exc.field, maxsplit=1)[0] or "payload"
        reason = _QUOTED.sub("'…'", exc.reason)[:200]
        safe: BaseException = InvalidReading(field, reason)
    else:
        try:
            safe = type(exc)(message)
        except Exception:  # noqa: BLE001 - an exception type with another signature
            safe = RuntimeError(f"{type(exc).__name__}: {message}")
    return safe


def _raw_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return dumps(value)


def _as_text(raw: bytes, cut: bool = False) -> tuple[str, str]:
    """``raw`` as UTF-8 text, else base64; a character split by the cut is dropped."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data" and exc.start >= len(raw) - 3:
            return _as_text(raw[:exc.start])
        return base64.b64encode(raw).decode("ascii"), "base64"


def payload_text(value: Any) -> str:
    """The original value as text, or base64 when it is not UTF-8."""
    return _as_text(_raw_bytes(value))[0]


def payload_fields(value: Any, limit: int) -> dict[str, Any]:
    """A dead letter's payload: at most ``limit`` bytes of it, and its full length and SHA-256.

    Why: a dead letter carrying a multi-megabyte message whole would be refused
    by the producer and stop the stage.  The length, the digest and the source
    offset still identify the original on the input topic.
    """
    raw = _raw_bytes(value)
    text, encoding = _as_text(raw[:limit], cut=len(raw) > limit)
    return {"payload": text, "payload_encoding": encoding, "payload_bytes": len(raw),
            "payload_sha256": hashlib.sha256(raw).hexdigest(), "payload_truncated": len(raw) > limit}


def message_source(message: Any) -> dict[str, Any]:
    """Where a consumed message came from, as a dead letter's ``source`` names it."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def dead_letter_record(event: EventT[T], stage: str, exc: BaseException, payload_limit: int) -> dict[str, Any]:
    """The dead letter of a consumed message; its payload is the message's bytes as they were on the topic."""
    message = event.message
    raw = message.value if isinstance(message.value, (bytes, bytearray, memoryview)) else event.value
    return _record(message_source(message), raw, stage, exc, payload_limit)


def _record(source: dict[str, Any], payload: Any, stage: str, exc: BaseException, payload_limit: int) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:MAX_ERROR_MESSAGE]}
    if isinstance(exc, InvalidReading):
        error["field"] = exc.field
    return {
        "error": error,
        "stage": stage,
        "source": source,
        **payload_fields(payload, payload_limit),
        "received_at": format_timestamp(time.time()),
    }


def _header_size(key: str | bytes, value: bytes | None) -> int:
    return len(key.encode() if isinstance(key, str) else key) + len(value or b"")


def bounded_headers(headers: Any, limit: int = MAX_HEADER_BYTES) -> tuple[list[tuple[str, bytes]], int]:
    """The headers, in order, while they fit in ``limit`` bytes; and how many were left out."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    kept: list[tuple[str, bytes]] = []
    size = 0
    for key, value in items:
        size += _header_size(key, value)
        if size > limit:
            return kept, len(items) - len(kept)
        kept.append((key, value))
    return kept, 0


async def send_dead_letter(event: EventT[T], stage: str, exc: BaseException) -> None:
    """Mark the event's span failed and publish its dead letter."""
    from .app import settings

    tracing.fail_event(event, span_safe(exc))
    message = event.message
    await _publish(
        stage, exc, f"{message.topic}[{message.partition}]@{message.offset}",
        key=message.key, value=dead_letter_record(event, stage, exc, settings.dead_letter_payload_bytes),
        headers=message.headers,
    )


async def send_item_dead_letter(item: Any, stage: str, exc: BaseException) -> None:
    """The dead letter of one record of a batched message (``agents._batch.Item``).

    Its source is the batched message plus the record's ``index`` in it; its
    headers are the trace context the record carried; its key is the record's
    asset, like the stage's other output.
    """
    from .app import settings

    if item.trace is not None:
        tracing.mark_failed(item.trace, span_safe(exc))
    asset_id = item.value.get("asset_id") if isinstance(item.value, dict) else None
    await _publish(
        stage, exc, str(item.source),
        key=asset_id.encode() if isinstance(asset_id, str) else None,
        value=_record(item.source, item.value, stage, exc, settings.dead_letter_payload_bytes),
        headers=[(str(k), str(v).encode()) for k, v in item.carrier.items()],
    )


async def _publish(stage: str, exc: BaseException, where: str, *, key: bytes | None, value: dict[str, Any],
                   headers: Any) -> None:
    """Send one dead letter that fits the producer; a failure other than bad input is also logged.

    The letter is bounded: the payload by ``MANTIS_DEAD_LETTER_PAYLOAD_BYTES``
    (base64 when JSON escaping would make the text larger), the key and the
    headers by fixed limits.  When even that send fails, a letter without
    payload, key or headers is tried; when that fails too the error propagates,
    so the batch is processed again rather than lost (``agents._replay``).
    """
    from .app import dead_letters_topic, settings

    if not isinstance(exc, InvalidReading):
        log.warning("%s: dead letter for %s: %r", stage, where, exc)
    kept, dropped = bounded_headers(headers)
    if dropped:
        value["headers_dropped"] = dropped
    key = key[:MAX_KEY_BYTES] if key else key
    room = limits.dead_letter_bytes(settings.dead_letter_payload_bytes) - len(key or b"") - sum(_header_size(k, v) for k, v in kept)
    if value["payload_encoding"] == "utf-8" and len(dumps(value)) > room:
        raw = value["payload"].encode()
        value["payload"], value["payload_encoding"] = base64.b64encode(raw).decode("ascii"), "base64"
    try:
        await dead_letters_topic.send(key=key, value=value, headers=kept)
    except Exception as send_error:  # noqa: BLE001 - try the smallest letter before giving up
        log.error("%s: dead letter for %s not sent (%r); sending it without payload, key and headers", stage, where, send_error)
        await dead_letters_topic.send(value={**value, "payload": "", "payload_truncated": True})
