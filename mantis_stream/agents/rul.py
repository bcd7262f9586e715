"""Stage 4: remaining useful life, one online tracker per sensor.

The tracker (``models.rul``) turns each feature vector into a health index and
updates a degradation model extrapolated to failure, with bounds.  The unit is
``cycles`` when the readings carry ``cycle``, else ``seconds``.
"""

from __future__ import annotations

import os
from typing import Any

from .. import tracing
from ..app import app, assessments_topic, feature_batches_topic, rul_topic, settings
from ..errors import send_item_dead_letter
from ..models import records
from ..models.rul import RulModel, RulTracker
from ._batch import Item, Outbox, close_items, item_scope, open_items
from ._events import asset_key, group_by
from ._state import TableBackedCache, bytes_table

STAGE = "rul-prediction"

MODEL = RulModel.load(os.environ["MANTIS_RUL_MODEL"]) if os.environ.get("MANTIS_RUL_MODEL") else RulModel.default()
UNIT_BY_PREFIX = {"c": "cycles", "s": "seconds"}

tracker_table = bytes_table("rul-trackers")


def _life_prior(unit: str) -> bool:
    """A cycle counter is the part's age; the first reading in seconds is not its birth."""
    return unit == "cycles"


def _new(key: str) -> RulTracker:
    unit = UNIT_BY_PREFIX[key[0]]
    return RulTracker(MODEL, unit=unit, life_prior=_life_prior(unit))


def _load(key: str, raw: bytes) -> RulTracker:
    return RulTracker.from_bytes(raw, MODEL, life_prior=_life_prior(UNIT_BY_PREFIX[key[0]]))


trackers: TableBackedCache[RulTracker] = TableBackedCache(tracker_table, new=_new, load=_load, dump=RulTracker.to_bytes)


def tracker_key(message: dict[str, Any]) -> str:
    """Unit initial + asset + sensor: a sensor that ages in cycles keeps its own tracker."""
    unit = "c" if message.get("cycle") is not None else "s"
    return f"{unit}\x1f{message['asset_id']}\x1f{message['sensor_id']}"


def time_of(message: dict[str, Any]) -> float:
    return float(message["cycle"]) if message.get("cycle") is not None else float(message["epoch"])


@app.agent(feature_batches_topic, name="rul")
async def rul(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        items = await open_items(STAGE, events)
        out = Outbox(assessments_topic)
        by_key = group_by(items, lambda item: tracker_key(item.value))
        estimated: list[tuple[Item, Any]] = []
        failed: list[tuple[Item, Exception]] = []
        with tracing.batch_span(STAGE, "predict_rul", [item.trace for item in items], **{"batch.size": len(items)}):
            for key, key_items in by_key.items():
                tracker = trackers.get(key)
                for item in key_items:
                    try:
                        estimated.append((item, tracker.update(time_of(item.value), item.value["features"])))
                    except Exception as exc:  # noqa: BLE001 - a bad record must not stop the stage
                        failed.append((item, exc))
        for item, exc in failed:
            with item_scope(item):
                await send_item_dead_letter(item, STAGE, exc)
        for item, estimate in estimated:
            message = item.value
            tracing.annotate(
                item.trace, asset_id=message["asset_id"], sensor_id=message["sensor_id"],
                **{"model.name": MODEL.name, "model.version": MODEL.version},
                **({"prediction.result": estimate.rul, "rul.unit": estimate.unit} if estimate is not None else {}),
            )
            if estimate is None:  # too little history yet: the features are the output
                continue
            with item_scope(item):
                result_message = records.rul_message(
                    message, estimate.rul, estimate.unit, estimate.lower, estimate.upper, estimate.health_index,
                    {"name": MODEL.name, "version": MODEL.version},
                )
                await rul_topic.send(key=asset_key(message["asset_id"]), value=result_message)
                out.add(item.partition, result_message)
        await out.flush()
        close_items(items)
        trackers.save((key, key_items[-1].event) for key, key_items in by_key.items())
