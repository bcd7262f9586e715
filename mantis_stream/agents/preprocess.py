"""Stage 1a: validate raw readings and re-key them by asset.

Input arrives without a key (``kafka-console-producer``); every per-asset state
downstream needs the asset's readings on one partition, so this agent's only
output is the validated reading on its asset's partition, batched (one message
per partition and batch, each reading with its own trace context: see
``_batch``), a batch's readings in time order.  Bad input becomes a dead letter naming the field.
"""

from __future__ import annotations

from faust.types import EventT

from ..app import app, readings_keyed_topic, readings_topic, settings
from ..errors import send_dead_letter
from ..kafka import install_broker_wait
from ..models.reading import InvalidReading, Reading, parse_reading
from .. import tracing
from ._batch import Outbox, partition_for
from ._events import event_scope

STAGE = "preprocessing"

# The worker waits (and says so) for a broker that is not up yet instead of dying.
install_broker_wait(app, settings.broker, settings.broker_wait)


@app.agent(readings_topic, name="preprocess")
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        valid: list[tuple[Reading, EventT]] = []
        bad: list[tuple[EventT, InvalidReading]] = []
        with tracing.batch_span(STAGE, "validate_reading", events, **{"batch.size": len(events)}):
            for event in events:
                try:
                    reading = parse_reading(
                        event.value, max_bytes=settings.max_message_bytes, max_samples=settings.max_waveform_samples,
                    )
                except InvalidReading as exc:
                    bad.append((event, exc))
                    continue
                tracing.annotate(event, asset_id=reading.asset_id, sensor_id=reading.sensor_id)
                valid.append((reading, event))
        for event, exc in bad:  # the event's span gets ERROR with a scrubbed copy (the message may quote the input)
            with event_scope(event):
                await send_dead_letter(event, STAGE, exc)
        # Unkeyed producers spread a sensor's readings over partitions and Kafka keeps
        # no order across partitions: within a batch, pass them on in time order.
        valid.sort(key=lambda pair: pair[0].ts)
        out = Outbox(readings_keyed_topic)
        for reading, event in valid:
            with event_scope(event):
                out.add(partition_for(reading.asset_id), reading.to_message())
        await out.flush()
