"""Stage 3: streaming anomaly detection, one online river model per sensor.

Each (asset, sensor) has its own detector (``models.anomaly``): it scores every
feature vector, then learns from it, after a warm-up.  Scores are calibrated to
[0, 1] so one threshold means the same on every asset.
"""

from __future__ import annotations

from typing import Any

from .. import tracing
from ..app import anomalies_topic, app, assessments_topic, feature_batches_topic, settings
from ..errors import send_item_dead_letter
from ..models import records
from ..models.anomaly import AnomalyDetector
from ._batch import Item, Outbox, close_items, item_scope, open_items
from ._events import asset_key, group_by
from ._state import TableBackedCache, bytes_table

STAGE = "anomaly-detection"

detector_table = bytes_table("anomaly-detectors")
detectors: TableBackedCache[AnomalyDetector] = TableBackedCache(
    detector_table, new=lambda key: AnomalyDetector(), load=lambda key, raw: AnomalyDetector.from_bytes(raw),
    dump=AnomalyDetector.to_bytes,
)


def detector_key(message: dict[str, Any]) -> str:
    return f"{message['asset_id']}\x1f{message['sensor_id']}"


@app.agent(feature_batches_topic, name="anomaly")
async def anomaly(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        items = await open_items(STAGE, events)
        out = Outbox(assessments_topic)
        by_key = group_by(items, lambda item: detector_key(item.value))
        scored: list[tuple[Item, AnomalyDetector, Any]] = []
        failed: list[tuple[Item, Exception]] = []
        with tracing.batch_span(STAGE, "predict_anomaly", [item.trace for item in items], **{"batch.size": len(items)}):
            for key, key_items in by_key.items():
                detector = detectors.get(key)
                for item in key_items:
                    try:
                        scored.append((item, detector, detector.process_one(item.value["features"])))
                    except Exception as exc:  # noqa: BLE001 - a bad record must not stop the stage
                        failed.append((item, exc))
        for item, exc in failed:
            with item_scope(item):
                await send_item_dead_letter(item, STAGE, exc)
        for item, detector, result in scored:
            message = item.value
            with item_scope(item):
                attrs = {"asset_id": message["asset_id"], "sensor_id": message["sensor_id"],
                         "model.name": detector.name, "model.version": detector.version,
                         "prediction.result": "anomaly" if result.is_anomaly else "normal", "prediction.score": result.score}
                if result.is_anomaly:  # recorded even in an unsampled trace, in the reading's trace id
                    tracing.keep(item.trace, "anomaly", **attrs)
                else:
                    tracing.annotate(item.trace, **attrs)
                result_message = records.anomaly_message(
                    message, result.score, result.threshold, result.is_anomaly,
                    {"name": detector.name, "version": detector.version}, result.warm,
                )
                await anomalies_topic.send(key=asset_key(message["asset_id"]), value=result_message)
                out.add(item.partition, result_message)
        await out.flush()
        close_items(items)
        detectors.save((key, key_items[-1].event) for key, key_items in by_key.items())
