"""Fixes for Faust's recovery: no message skipped and no table record missed when a worker restarts with table state.

Why a module of its own: it changes Faust's behaviour for every agent of the
worker, so ``app.py`` installs them once, before any agent starts (the
methods they replace are in :mod:`._compat.faust`).  The
first is tied to faust-streaming 0.15.3 (upstream issue #596): drop it when
Faust fixes the race; the second to the local broker (Tansu 0.6.0), installed
on the ``local`` profile only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Set
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables.recovery import Recovery
from faust.types import TP

from ._compat import faust as faust_compat
from .kafka import client_options

log = logging.getLogger(__name__)


def hold_deliveries_until_seek() -> None:
    """Hold deliveries to the agents while Faust resumes the stream partitions after a recovery.

    Why: after a restart with table state, Faust (0.15.3) reads the changelogs
    with the fetcher running, then resumes the stream partitions, awaits the seek
    to the committed offsets and only then clears the agents' queues
    (``flow_control.resume()``). A message fetched meanwhile is queued, cleared
    and never read again (its read offset has moved on); the later ones are
    acked and ``Consumer._new_offset`` commits past the one-message hole (it
    only stops at ``min(acked) - committed > 1``), so the message is lost (a
    missing ``rul_history`` row after a SIGKILL and restart under load).
    Suspending the flow first makes the conductor wait instead of queueing;
    Faust's own ``flow_control.resume()`` at the end releases it.
    """
    faust_compat.before_stream_resume(lambda recovery: recovery.app.flow_control.suspend())


def read_highwaters_from_fetch() -> None:
    """Take each changelog partition's highwater from a fetch, not only from ``ListOffsets``.

    Why: Faust (0.15.3) reads a changelog only up to the highwater that
    ``ListOffsets`` (``consumer.highwaters()``) reports at the start of a
    recovery.  The local broker (Tansu 0.6.0) sometimes reports the latest offset
    one record short (a produce's update of its watermark is lost; the records
    are stored and a fetch returns them, with the right high watermark), and the
    partition stays short until the next write.  The recovery then stops one
    record early: after a graceful restart the ``framing-state`` of a sensor
    came back from the record before its last one (the pending samples gone).
    A short fetch from the reported end of each changelog partition reads the
    broker's high watermark; the larger of the two wins.  If the fetch fails,
    the ``ListOffsets`` values stand.
    """
    faust_compat.after_highwaters(_check_highwaters_by_fetch)


async def _check_highwaters_by_fetch(recovery: Recovery, tps: Set[TP], destination: Counter[TP]) -> None:
    """Raise each of ``destination``'s highwaters to what a fetch reports, when that is higher."""
    if not tps:
        return
    try:
        fetched = await _fetch_highwaters(recovery.app, {tp: destination[tp] + 1 for tp in tps})
    except Exception as exc:  # noqa: BLE001 - ListOffsets' values stand
        log.warning("changelog highwaters not checked by a fetch (%r); using ListOffsets'", exc)
        return
    for tp, highwater in fetched.items():
        if highwater - 1 > destination[tp]:
            log.warning("%s: the broker's ListOffsets said highwater %s, a fetch says %s; recovering up to %s",
                        tp, destination[tp], highwater - 1, highwater - 1)
            destination[tp] = highwater - 1


async def _fetch_highwaters(app: Any, start: dict[Any, int], timeout: float = 5.0) -> dict[Any, int]:
    """The high watermark (next offset) of each partition as a fetch from ``start[tp]`` reports it."""
    conf = app.conf
    probe = AIOKafkaConsumer(
        **client_options(",".join(str(url) for url in conf.broker)),
        client_id=f"{conf.broker_client_id}-highwaters",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
    )
    await probe.start()
    try:
        partitions = {TopicPartition(tp.topic, tp.partition): tp for tp in start}
        probe.assign(list(partitions))
        for part, tp in partitions.items():
            probe.seek(part, max(start[tp], 0))
        deadline = time.monotonic() + timeout
        while any(probe.highwater(p) is None for p in partitions) and time.monotonic() < deadline:
            await probe.getmany(timeout_ms=200)
        return {tp: hw for part, tp in partitions.items() if (hw := probe.highwater(part)) is not None}
    finally:
        await probe.stop()
