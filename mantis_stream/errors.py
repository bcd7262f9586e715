"""Dead letters: what a stage does with an event it cannot process.

Why one module: every stage must turn a failure into the same
``mantis.dead-letters`` record (INTERFACE.md) and keep running, so no reading is
ever lost silently.  Like quixstreams' ``error_callbacks``: small functions, one
concern.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from typing import Any

from faust.types import EventT

from . import tracing
from .codecs import dumps
from .models.reading import InvalidReading, format_timestamp

log = logging.getLogger(__name__)

#: Longest error message kept in a dead letter.
MAX_ERROR_MESSAGE = 500


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


def payload_text(value: Any) -> str:
    """The original value as text, or base64 when it is not UTF-8."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    return dumps(value).decode("utf-8")


def message_source(message: Any) -> dict[str, Any]:
    """Where a consumed message came from, as a dead letter's ``source`` names it."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def dead_letter_record(event: EventT, stage: str, exc: BaseException) -> dict[str, Any]:
    message = event.message
    return _record(message_source(message), event.value if event.value is not None else message.value, stage, exc)


def _record(source: dict[str, Any], payload: Any, stage: str, exc: BaseException) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:MAX_ERROR_MESSAGE]}
    if isinstance(exc, InvalidReading):
        error["field"] = exc.field
    return {
        "error": error,
        "stage": stage,
        "source": source,
        "payload": payload_text(payload),
        "received_at": format_timestamp(time.time()),
    }


def original_headers(event: EventT) -> list[tuple[str, bytes]]:
    """The consumed message's headers, unchanged (the sensor refreshes the trace context)."""
    headers = event.message.headers or []
    if isinstance(headers, dict):
        return [(k, v) for k, v in headers.items()]
    return list(headers)


async def send_dead_letter(event: EventT, stage: str, exc: BaseException) -> None:
    """Mark the event's span failed and publish its dead letter."""
    tracing.fail_event(event, span_safe(exc))
    message = event.message
    await _publish(
        stage, exc, f"{message.topic}[{message.partition}]@{message.offset}",
        key=message.key, value=dead_letter_record(event, stage, exc), headers=original_headers(event),
    )


async def send_item_dead_letter(item: Any, stage: str, exc: BaseException) -> None:
    """The dead letter of one record of a batched message (``agents._batch.Item``).

    Its source is the batched message plus the record's ``index`` in it; its
    headers are the trace context the record carried; its key is the record's
    asset, like the stage's other output.
    """
    if item.trace is not None:
        tracing.mark_failed(item.trace, span_safe(exc))
    asset_id = item.value.get("asset_id") if isinstance(item.value, dict) else None
    await _publish(
        stage, exc, str(item.source),
        key=asset_id.encode() if isinstance(asset_id, str) else None,
        value=_record(item.source, item.value, stage, exc),
        headers=[(k, v.encode()) for k, v in item.carrier.items()],
    )


async def _publish(stage: str, exc: BaseException, where: str, *, key: bytes | None, value: dict[str, Any],
                   headers: list[tuple[str, bytes]]) -> None:
    """Send one dead letter; a failure other than bad input is also logged (bad input is expected)."""
    from .app import dead_letters_topic

    if not isinstance(exc, InvalidReading):
        log.warning("%s: dead letter for %s: %r", stage, where, exc)
    await dead_letters_topic.send(key=key, value=value, headers=headers)
