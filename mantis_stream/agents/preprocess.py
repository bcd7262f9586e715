"""Stage 1a: validate raw readings and re-key them by asset.

Input arrives without a key (``kafka-console-producer``); every per-asset state
downstream needs the asset's readings on one partition, so this agent's only
output is the validated reading keyed by ``asset_id``.  Bad input becomes a dead
letter naming the field.
"""

from __future__ import annotations

from ..app import app, readings_keyed_topic, readings_topic, settings
from ..errors import send_dead_letter
from ..models.reading import InvalidReading, parse_reading
from .. import tracing
from ._events import asset_key, event_scope

STAGE = "preprocessing"


@app.agent(readings_topic, name="preprocess")
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        for event in events:
            with event_scope(event):
                try:
                    with tracing.stage_tracer(STAGE).start_as_current_span("validate_reading") as span:
                        reading = parse_reading(
                            event.value,
                            max_bytes=settings.max_message_bytes,
                            max_samples=settings.max_waveform_samples,
                        )
                        span.set_attributes(tracing.span_attributes(asset_id=reading.asset_id, sensor_id=reading.sensor_id))
                except InvalidReading as exc:
                    await send_dead_letter(event, STAGE, exc)
                    continue
                await readings_keyed_topic.send(key=asset_key(reading.asset_id), value=reading.to_message())
