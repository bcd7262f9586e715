"""Stage 1a: validate raw readings and re-key them by asset.

Input arrives without a key (``kafka-console-producer``); every per-asset state
downstream needs the asset's readings on one partition, so this agent's only
output is the validated reading on its asset's partition, batched (one message
per partition and batch, each reading with its own trace context: see
``_batch``), a batch's readings in time order.  Bad input becomes a dead letter naming the field.
"""

from __future__ import annotations

from faust.types import EventT
from opentelemetry.trace import Status, StatusCode

from ..app import app, readings_keyed_topic, readings_topic, settings
from ..errors import send_dead_letter, span_safe
from ..kafka import install_broker_wait
from ..models.reading import InvalidReading, Reading, parse_reading
from .. import tracing
from ._batch import Outbox, partition_for
from ._events import event_scope
from ._replay import batches

STAGE = "preprocessing"

# The worker waits (and says so) for a broker that is not up yet instead of dying.
install_broker_wait(app, settings.broker, settings.broker_wait)


@app.agent(readings_topic, name="preprocess")
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for events in batches(stream, STAGE):
        valid: list[tuple[Reading, EventT]] = []
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
                except Exception as exc:  # noqa: BLE001 - InvalidReading, or anything else this input provokes
                    await send_dead_letter(event, STAGE, exc)
                    continue
                valid.append((reading, event))
        # Unkeyed producers spread a sensor's readings over partitions and Kafka keeps
        # no order across partitions: within a batch, pass them on in time order.
        valid.sort(key=lambda pair: pair[0].ts)
        out = Outbox(readings_keyed_topic, STAGE)
        for reading, event in valid:
            with event_scope(event):
                out.add(partition_for(reading.asset_id), reading.to_message(), event)
        await out.flush()
