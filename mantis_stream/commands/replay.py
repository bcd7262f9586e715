"""``mantis-stream replay``: a public data set's rows into ``mantis.readings``.

Why this exists: the pipeline is judged on public run-to-failure and anomaly
data; replaying them as ordinary readings exercises exactly the path a plant's
sensors take (JSON values, validation in the preprocessing stage; keyed by asset,
as waveform producers should be, so an asset's chunks stay in order), and
the RUL the agents publish can be compared with ``evaluate-rul`` on the same rows.

Usage::

    mantis-stream replay --format cmapss CMAPSS/train_FD001.txt
    mantis-stream replay --format femto --speed 10 FEMTO/Learning_set/Bearing1_2
    mantis-stream replay --format nab NAB/data/realTraffic/*.csv

Shapes (the conversions are in ``datasets.cmapss`` / ``datasets.femto`` and
:func:`nab_row_to_reading`): C-MAPSS rows as ``channels`` with ``cycle``
(asset ``FD001-<unit>``), FEMTO snapshots as two ``values`` chunks (``acc_h``,
``acc_v``) at 25.6 kHz with shaft speed in ``meta``, NAB rows as ``value``.
Several files are merged in time order (a fleet replays side by side).

Notes: ``--speed X`` paces by the readings' ``ts`` at X times real time
(C-MAPSS: one cycle = 60 s); without it, as fast as the broker takes them.
Progress on stderr.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from aiokafka.structs import RecordMetadata
from faust.cli import argument, option

from .. import topics as names
from ..app import app, settings
from ._oneline import one_line_errors
from .produce import start_producer

IN_FLIGHT = 500


def nab_row_to_reading(asset_id: str, sensor_id: str, timestamp: str, value: float) -> dict[str, Any]:
    """A NAB row (``timestamp,value``; naive timestamps are UTC) as a scalar reading."""
    dt = datetime.fromisoformat(timestamp.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return {"asset_id": asset_id, "sensor_id": sensor_id, "ts": dt.timestamp(), "value": float(value)}


def nab_readings(path: str | Path) -> Iterator[dict[str, Any]]:
    from ..datasets.nab import read_nab_csv

    path = Path(path)
    stamps, values = read_nab_csv(path)
    for ts, v in zip(stamps, values):
        yield nab_row_to_reading(path.stem, path.parent.name or "value", ts, float(v))


def cmapss_readings(path: str | Path, start_ts: float | None) -> Iterator[dict[str, Any]]:
    from ..datasets import cmapss

    kw = {} if start_ts is None else {"start_ts": start_ts}
    rows = list(cmapss.iter_readings(path, **kw))
    rows.sort(key=lambda r: (r["cycle"], r["asset_id"]))  # the fleet side by side, cycle by cycle
    return iter(rows)


def femto_readings(path: str | Path, start_ts: float | None) -> Iterator[dict[str, Any]]:
    from ..datasets import femto

    kw = {} if start_ts is None else {"start_ts": start_ts}
    return femto.iter_readings(path, **kw)


def readings_for(fmt: str, paths: Iterable[str], start_ts: float | None = None) -> Iterator[dict[str, Any]]:
    """All readings of ``paths`` merged in ``ts`` order (each source is in order)."""
    sources: list[Iterator[dict[str, Any]]] = []
    for p in paths:
        if fmt == "cmapss":
            sources.append(cmapss_readings(p, start_ts))
        elif fmt == "femto":
            sources.append(femto_readings(p, start_ts))
        else:
            sources.append(nab_readings(p))
    return heapq.merge(*sources, key=lambda r: r["ts"])


def parse_start(value: str | None) -> float | None:
    if value is None:
        return None
    if value == "now":
        return time.time()
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: Unix seconds or 'now'", param_hint="--start") from None


@app.command(
    option("--format", "fmt", type=click.Choice(["cmapss", "femto", "nab"]), required=True, help="Data set format."),
    option("--speed", type=float, default=None, help="X times real time (default: as fast as possible)."),
    option("--topic", default=names.READINGS, show_default=True, help="Topic to produce to."),
    option("--start", "start", default=None, help="ts of the first row, Unix seconds or 'now' (C-MAPSS, FEMTO; default 2026-01-01T00:00:00Z)."),
    argument("paths", nargs=-1, required=True),
)
@one_line_errors
async def replay(self: object, fmt: str, speed: float | None, topic: str, start: str | None, paths: tuple[str, ...]) -> None:
    """Produce a data set's rows to mantis.readings as readings."""
    if speed is not None and speed <= 0:
        raise click.BadParameter("must be positive", param_hint="--speed")
    readings = readings_for(fmt, paths, parse_start(start))
    producer = await start_producer(linger_ms=5, max_request_size=settings.max_message_bytes * 2)
    sent = 0
    t_wall0 = time.monotonic()
    ts0: float | None = None
    pending: list[asyncio.Future[RecordMetadata]] = []
    try:
        for reading in readings:
            if speed is not None:
                ts0 = reading["ts"] if ts0 is None else ts0
                delay = (reading["ts"] - ts0) / speed - (time.monotonic() - t_wall0)
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, orjson.dumps(reading), key=reading["asset_id"].encode()))
            sent += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
            if sent % 10_000 == 0:
                print(f"mantis-stream: replay: {sent} readings", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(f"mantis-stream: replayed {sent} reading(s) to {topic}", file=sys.stderr, flush=True)
