"""Stage 1b: assemble frames per sensor (part of the preprocessing service).

Waveform chunks are cut into fixed-size frames with the DC offset removed;
scalar readings become sliding windows of the last N values; channel readings
pass as one row each.  The partial frame of every sensor lives in a Faust table
(changelogged), so a restart or a rebalance neither drops nor repeats samples.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import numpy as np
import orjson

from ..app import app, frames_topic, readings_keyed_topic, settings
from ..dsp.framing import FrameAssembler, remove_dc
from ..errors import send_item_dead_letter
from ..models import records
from ..models.reading import InvalidReading
from ._batch import Outbox, close_items, item_scope, open_items
from ._events import event_scope
from ._replay import batches
from ._state import bytes_table

STAGE = "preprocessing"
#: Waveform state header: sample rate, number of recent chunk start times that follow.
HEADER = struct.Struct("<dI")
#: Chunk start times remembered per sensor to recognise a replayed chunk.
RECENT_CHUNKS = 64
log = logging.getLogger(__name__)

#: "asset\x1fsensor" -> framing state (FrameAssembler bytes, or the JSON window).
framing_state = bytes_table("framing-state")


def sensor_key(reading: dict[str, Any]) -> str:
    return f"{reading['asset_id']}\x1f{reading['sensor_id']}"


def chunk_samples(reading: dict[str, Any]) -> np.ndarray:
    """A keyed chunk's samples: hex float64 (``Reading.to_message``), or a JSON array (written by earlier releases)."""
    if "samples_hex" in reading:
        return np.frombuffer(bytes.fromhex(reading["samples_hex"]), dtype="<f8")
    return np.asarray(reading["values"], dtype=np.float64)


def frame_waveform(reading: dict[str, Any], state: bytes | None) -> tuple[list[dict[str, Any]], bytes]:
    """Push one chunk; return the frames it completes and the new state.

    The state is the sample rate, the start times of the sensor's last
    ``RECENT_CHUNKS`` chunks, then the assembler.  After a crash or a
    rebalance the changelog can already hold chunks whose offsets were not
    committed; when such a chunk comes again its start time is known and it is
    refused (a dead letter) instead of being framed twice.  Chunks are framed in
    the order they arrive: unkeyed producers give no order across partitions,
    so waveform producers should key by asset.  A sensor whose rate changes
    starts a new frame (pending samples of the old rate cannot share a frame
    with the new ones and are discarded, logged).  A frame's ``ts`` is the time
    of its last sample, taking a chunk's ``ts`` as the time of its first sample.
    """
    rate = float(reading["sample_rate_hz"])
    start = float(reading["ts"])
    assembler = FrameAssembler(settings.frame_size)
    recent = np.empty(0)
    if state:
        old_rate, count = HEADER.unpack_from(state)
        if old_rate == rate:
            recent = np.frombuffer(state, dtype="<f8", count=count, offset=HEADER.size)
            if np.any(recent == start):
                raise InvalidReading("ts", f"chunk at {start:.6f} is already framed (a replay or a duplicate)")
            assembler = FrameAssembler.from_bytes(state[HEADER.size + 8 * count:])
        else:
            log.warning("%s: sample rate changed %s -> %s Hz; restarting the frame", sensor_key(reading), old_rate, rate)
    pending_before = assembler.pending
    frames = remove_dc(assembler.push(chunk_samples(reading)))
    size = settings.frame_size
    out = [
        records.waveform_frame(
            reading["asset_id"], reading["sensor_id"],
            start + ((i + 1) * size - pending_before - 1) / rate,
            frame, rate, reading.get("meta"),
        )
        for i, frame in enumerate(frames)
    ]
    recent = np.append(recent, start)[-RECENT_CHUNKS:].astype("<f8")
    return out, HEADER.pack(rate, len(recent)) + recent.tobytes() + assembler.to_bytes()


def frame_scalar(reading: dict[str, Any], state: bytes | None) -> tuple[dict[str, Any], bytes]:
    """Append one value to the sensor's sliding window and emit the window."""
    window: list[float] = orjson.loads(state) if state else []
    window.append(reading["value"])
    del window[: max(0, len(window) - settings.scalar_window)]
    frame = records.window_frame(reading["asset_id"], reading["sensor_id"], reading["ts"], window, reading.get("unit"))
    return frame, orjson.dumps(window)


def frame_one(reading: dict[str, Any], state: bytes | None) -> tuple[list[dict[str, Any]], bytes | None]:
    """The frames one reading completes, and its sensor's new state (None: stateless)."""
    if "channels" in reading:
        return [records.row_frame(reading["asset_id"], reading["sensor_id"], reading["ts"], reading["channels"], reading.get("cycle"))], None
    if "samples_hex" in reading or "values" in reading:
        return frame_waveform(reading, state)
    frame, state = frame_scalar(reading, state)
    return [frame], state


@app.agent(readings_keyed_topic, name="frame")
async def frame(stream):  # type: ignore[no-untyped-def]
    async for events in batches(stream, STAGE):
        # Framing is preprocessing's second step: a record continues preprocessing's process span
        # (no second ``process`` span of the same service per reading; an error still gets one).
        items = await open_items(STAGE, events, own_span=False)
        out = Outbox(frames_topic, STAGE)
        touched: dict[str, tuple[bytes, Any]] = {}  # sensor -> (state, its event), written once per batch
        for item in items:
            reading = item.value
            with item_scope(item):
                try:
                    key = sensor_key(reading)
                    state = touched[key][0] if key in touched else framing_state.get(key)
                    frames, state = frame_one(reading, state)
                    if state is not None:
                        touched[key] = (state, item.event)
                except Exception as exc:  # noqa: BLE001 - a bad record must not stop the stage
                    await send_item_dead_letter(item, STAGE, exc)
                    continue
                for frame_ in frames:
                    out.add(item.partition, frame_, item)
        await out.flush()
        close_items(items)
        for key, (state, event) in touched.items():
            with event_scope(event):
                framing_state[key] = state
