"""Sizes of what the worker writes, kept apart from the input limit.

Why: ``MANTIS_MAX_MESSAGE_BYTES`` bounds what a sender may send; the worker's
own records (a model checkpoint is ~16 kB, framing state, batched hops, dead
letters) are another matter.  Deriving the producer's limit from the input
limit alone made ``MANTIS_MAX_MESSAGE_BYTES=4096`` crash the worker at its first
model checkpoint.  :func:`check` refuses, in one line, settings under which the
worker could not write what it must.
"""

from __future__ import annotations

from .settings import Settings

#: Largest record the worker writes of its own accord (state, a batched hop's message): Kafka's default ``max.message.bytes``.
WORKER_RECORD_BYTES = 1_048_576
#: Room a dead letter needs besides its payload: error, source, key, headers, JSON framing.
DEAD_LETTER_OVERHEAD = 32_768
#: Smallest input limit that still admits a reading with ids of the longest allowed length.
MIN_MESSAGE_BYTES = 1024


def producer_max_request_size(settings: Settings) -> int:
    """The producer's limit: a forwarded reading may grow when re-encoded (2x), and never below what state needs."""
    return max(2 * settings.max_message_bytes, WORKER_RECORD_BYTES)


def consumer_max_fetch_size(settings: Settings) -> int:
    """Bytes fetched per partition; a larger record is still returned whole (Kafka >= 0.10.1, Tansu), alone."""
    return 4 * max(settings.max_message_bytes, WORKER_RECORD_BYTES)


def dead_letter_bytes(payload_bytes: int) -> int:
    """The largest dead letter: the kept payload, base64 in the worst case, plus the rest."""
    return 4 * -(-payload_bytes // 3) + DEAD_LETTER_OVERHEAD


def check(settings: Settings) -> None:
    """Stop with one line when a size setting leaves the worker unable to write what it must."""
    if settings.max_message_bytes < MIN_MESSAGE_BYTES:
        raise SystemExit(f"mantis-stream: MANTIS_MAX_MESSAGE_BYTES={settings.max_message_bytes}: "
                         f"use at least {MIN_MESSAGE_BYTES} (a reading may carry two 128-character ids)")
    limit = producer_max_request_size(settings)
    payload = settings.dead_letter_payload_bytes
    if payload < 0 or dead_letter_bytes(payload) > limit:
        most = (limit - DEAD_LETTER_OVERHEAD) // 4 * 3
        raise SystemExit(f"mantis-stream: MANTIS_DEAD_LETTER_PAYLOAD_BYTES={payload}: use 0 to {most} "
                         f"(a dead letter must fit the producer's {limit} bytes)")
