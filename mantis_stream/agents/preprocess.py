"""Stage 1a: validate raw readings and re-key them by asset.

Input arrives without a key (``kafka-console-producer``); every per-asset state
downstream needs the asset's readings on one partition, so this agent's only
output is the validated reading on its asset's partition, batched (one message
per partition and batch, each reading with its own trace context: see
``_batch``), a batch's readings in time order.  Bad input becomes a dead letter naming the field.
"""

from __future__ import annotations
from typing import Any

import logging

from faust.types import EventT

from .. import metrics
from ..app import app, readings_keyed_topic, readings_topic, settings
from ..errors import send_dead_letter
from ..kafka import install_broker_wait
from ..models.reading import Reading, parse_reading
from .. import tracing
from ._batch import Outbox, partition_for
from ._events import event_scope
from ._replay import batches

STAGE = "preprocessing"
#: Distinct unknown field names warned about; later ones are only counted.
MAX_WARNED_FIELDS = 256
log = logging.getLogger(__name__)
_warned_fields: set[str] = set()

# The worker waits (and says so) for a broker that is not up yet instead of dying.
install_broker_wait(app, settings.broker, settings.broker_wait)


def report_unknown_fields(reading: Reading) -> None:
    """Count a reading's fields the format does not define, and warn once per name: a misspelt ``unti`` is ignored."""
    metrics.count_unknown_fields(app, reading.unknown_count)
    new = [name for name in reading.unknown_fields if name not in _warned_fields]
    if new and len(_warned_fields) < MAX_WARNED_FIELDS:
        _warned_fields.update(new)
        log.warning("%s: a reading of %s/%s has field(s) the format does not define, ignored: %s "
                    "(warned once per name; all are counted in mantis_reading_unknown_fields_total)",
                    STAGE, reading.asset_id, reading.sensor_id, ", ".join(map(repr, new)))


@app.agent(readings_topic, name="preprocess")
async def preprocess(stream):  # type: ignore[no-untyped-def]
    async for events in batches(stream, STAGE):
        valid: list[tuple[Reading, EventT[Any]]] = []
        bad: list[tuple[EventT[Any], Exception]] = []
        with tracing.batch_span(STAGE, "validate_reading", events, **{"batch.size": len(events)}):
            for event in events:
                try:
                    reading = parse_reading(
                        event.value, max_bytes=settings.max_message_bytes, max_samples=settings.max_waveform_samples,
                    )
                except Exception as error:  # noqa: BLE001 - InvalidReading, or anything else this input provokes
                    bad.append((event, error))
                    continue
                tracing.annotate(event, asset_id=reading.asset_id, sensor_id=reading.sensor_id)
                valid.append((reading, event))
                if reading.unknown_count:
                    report_unknown_fields(reading)
        for event, exc in bad:  # the event's span gets ERROR with a scrubbed copy (the message may quote the input)
            with event_scope(event):
                await send_dead_letter(event, STAGE, exc)
        # Unkeyed producers spread a sensor's readings over partitions and Kafka keeps
        # no order across partitions: within a batch, pass them on in time order.
        valid.sort(key=lambda pair: pair[0].ts)
        out = Outbox(readings_keyed_topic, STAGE)
        for reading, event in valid:
            with event_scope(event):
                out.add(partition_for(reading.asset_id), reading.to_message(), event)
        await out.flush()
