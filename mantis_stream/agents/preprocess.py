"""Stage 1a: validate raw readings and re-key them by asset.

Input arrives without a key (``kafka-console-producer``); every per-asset state
downstream needs the asset's readings on one partition, so this agent's only
output is the validated reading keyed by ``asset_id``.  Bad input becomes a dead
letter naming the field.
"""

from __future__ import annotations

from opentelemetry.trace import Status, StatusCode

from ..app import app, readings_keyed_topic, readings_topic, settings
from ..errors import send_dead_letter, span_safe
from ..kafka import install_broker_wait
from ..models.reading import InvalidReading, parse_reading
from .. import tracing
from ._events import asset_key, event_scope

STAGE = "preprocessing"

# The worker waits (and says so) for a broker that is not up yet instead of dying.
install_broker_wait(app, settings.broker, settings.broker_wait)


@app.agent(readings_topic, name="preprocess")
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        for event in events:
            with event_scope(event):
                try:
                    # The exception is not recorded here: its message may quote the input;
                    # send_dead_letter marks the event failed with a scrubbed copy.
                    with tracing.stage_tracer(STAGE).start_as_current_span(
                        "validate_reading", record_exception=False, set_status_on_exception=False,
                    ) as span:
                        try:
                            reading = parse_reading(
                                event.value,
                                max_bytes=settings.max_message_bytes,
                                max_samples=settings.max_waveform_samples,
                            )
                        except InvalidReading as exc:
                            safe = span_safe(exc)
                            span.set_attribute("error.type", type(exc).__qualname__)
                            span.set_status(Status(StatusCode.ERROR, str(safe)))
                            raise
                        span.set_attributes(tracing.span_attributes(asset_id=reading.asset_id, sensor_id=reading.sensor_id))
                except InvalidReading as exc:
                    await send_dead_letter(event, STAGE, exc)
                    continue
                await readings_keyed_topic.send(key=asset_key(reading.asset_id), value=reading.to_message())
