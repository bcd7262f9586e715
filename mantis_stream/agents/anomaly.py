"""Stage 3: streaming anomaly detection, one online river model per sensor.

Each (asset, sensor) has its own detector (``models.anomaly``): it scores every
feature vector, then learns from it, after a warm-up.  Scores are calibrated to
[0, 1] so one threshold means the same on every asset.
"""

from __future__ import annotations

from typing import Any

from .. import tracing
from ..app import anomalies_topic, app, assessments_topic, feature_batches_topic
from ..errors import send_item_dead_letter
from ..models import records
from ..models.anomaly import AnomalyDetector
from ._batch import Outbox, close_items, item_scope, open_items
from ._events import asset_key, dead_letter_all, group_items
from ._replay import batches
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
    async for events in batches(stream, STAGE):
        items = await open_items(STAGE, events)
        out = Outbox(assessments_topic, STAGE)
        by_key = await group_items(STAGE, items, lambda item: detector_key(item.value))
        touched: list[tuple[str, Any]] = []
        for key, key_items in by_key.items():
            try:
                detector = detectors.get(key)
            except Exception as exc:  # noqa: BLE001 - a model state that cannot be loaded: its records cannot be scored
                await dead_letter_all(STAGE, key_items, exc)
                continue
            touched.append((key, key_items[-1].event))
            for item in key_items:
                message = item.value
                with item_scope(item):
                    try:
                        with tracing.stage_tracer(STAGE).start_as_current_span(
                            "predict_anomaly",
                            attributes=tracing.span_attributes(asset_id=message["asset_id"], sensor_id=message["sensor_id"]),
                        ) as span:
                            result = detector.process_one(message["features"])
                            span.set_attributes({
                                "model.name": detector.name, "model.version": detector.version,
                                "prediction.result": "anomaly" if result.is_anomaly else "normal",
                                "prediction.score": result.score,
                            })
                        result_message = records.anomaly_message(
                            message, result.score, result.threshold, result.is_anomaly,
                            {"name": detector.name, "version": detector.version}, result.warm,
                        )
                        await anomalies_topic.send(key=asset_key(message["asset_id"]), value=result_message)
                    except Exception as exc:  # noqa: BLE001 - a bad record (or a refused send) must not stop the stage
                        await send_item_dead_letter(item, STAGE, exc)
                        continue
                    out.add(item.partition, result_message, item)
        await out.flush()
        close_items(items)
        detectors.save(touched)
