"""Stage 3: condition monitoring, one protected healthy reference per sensor.

Each (asset, sensor) has its own :class:`~mantis_stream.models.anomaly.ConditionMonitor`
(the one detector configuration ``detect`` and the evaluations use): it learns
the healthy reference while commissioning, then scores every feature vector
against it (0.5 = alert, 0.8 = danger) and catches sudden changes too. Each
score carries its alarm level and the features furthest from the reference.
A maintenance event (``mantis.maintenance``) recommissions every monitor of
its asset.
"""

from __future__ import annotations

from typing import Any

from .. import tracing
from ..app import anomalies_topic, app, assessments_topic, feature_batches_topic, maintenance_topic
from ..models import records
from ..models.anomaly import ConditionMonitor, MonitorResult
from ..models.schema import AnomalyMessage
from ._batch import Item
from ._events import maintenance_events
from ._runner import KeyedStage
from ._state import TableBackedCache, bytes_table

STAGE = "anomaly-detection"

detector_table = bytes_table("anomaly-detectors")
detectors: TableBackedCache[ConditionMonitor] = TableBackedCache(
    detector_table, new=lambda key: ConditionMonitor(), load=lambda key, raw: ConditionMonitor.from_bytes(raw),
    dump=ConditionMonitor.to_bytes,
)
#: Departures a score carries (to the orchestrator and mantis.anomalies): the most severe few.
MAX_DEPARTURES = 5


def detector_key(message: dict[str, Any]) -> str:
    return f"{message['asset_id']}\x1f{message['sensor_id']}"


def scored(item: Item, detector: ConditionMonitor, result: MonitorResult) -> AnomalyMessage:
    """The score's message; its process span gets the verdict (kept even in an unsampled trace when anomalous)."""
    message = item.value
    attrs: dict[str, Any] = {
        "asset_id": message["asset_id"], "sensor_id": message["sensor_id"],
        "model.name": detector.name, "model.version": detector.version,
        "prediction.result": "anomaly" if result.is_anomaly else "normal",
        "prediction.score": result.score, "anomaly.level": result.level,
    }
    if result.departures:
        top = result.departures[0]
        attrs.update({"anomaly.feature": top.feature[:64], "anomaly.factor": round(top.factor, 3)})
    if result.is_anomaly:  # recorded even in an unsampled trace, in the reading's trace id
        tracing.keep(item.trace, "anomaly", **attrs)
    else:
        tracing.annotate(item.trace, **attrs)
    return records.anomaly_message(
        message, result.score, result.threshold, result.is_anomaly,
        {"name": detector.name, "version": detector.version}, result.warm,
        result.level, [d.as_dict() for d in result.departures[:MAX_DEPARTURES]],
    )


runner: KeyedStage[ConditionMonitor, MonitorResult] = KeyedStage(
    STAGE, "predict_anomaly", key=detector_key, cache=detectors,
    process=lambda detector, record: detector.process_one(record["features"]),
    emit=scored, public=anomalies_topic, next_hop=assessments_topic,
)


@app.agent(feature_batches_topic, name="anomaly")
async def anomaly(stream):  # type: ignore[no-untyped-def]
    await runner.run(stream)


def monitor_keys(asset_id: str) -> list[str]:
    """The keys of every monitor of ``asset_id`` this worker holds (live or in its table partitions)."""
    prefix = f"{asset_id}\x1f"
    return sorted({k for k in detectors.keys() if k.startswith(prefix)})


@app.agent(maintenance_topic, name="maintenance-anomaly")
async def maintenance(stream):  # type: ignore[no-untyped-def]
    """Recommission every monitor of a serviced asset: its healthy reference is the new machine's."""
    async for event, asset_id in maintenance_events(stream, STAGE):
        keys = monitor_keys(asset_id)
        with tracing.stage_tracer(STAGE).start_as_current_span(
            "reset_reference", attributes=tracing.span_attributes(asset_id=asset_id, **{"monitors.count": len(keys)}),
        ):
            for key in keys:
                detectors.get(key).reset()
            detectors.save((key, event) for key in keys)
