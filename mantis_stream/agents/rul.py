"""Stage 4: remaining useful life, one online tracker per sensor.

The tracker (``models.rul``) turns each feature vector into a health index and
updates a degradation model extrapolated to failure, with bounds.  The unit is
``cycles`` when the readings carry ``cycle``, else ``seconds``.
"""

from __future__ import annotations

import functools
from typing import Any

from .. import tracing
from ..app import app, assessments_topic, feature_batches_topic, rul_topic
from ..models import records
from ..models.rul import RulEstimate, RulModel, RulTracker
from ..models.schema import RulMessage
from ..runtime import check_at_worker_start
from ..settings import current_settings
from ..tracing import semconv
from ._batch import Item
from ._runner import KeyedStage
from ._state import TableBackedCache, bytes_table

STAGE = "rul-prediction"


@functools.cache
def model() -> RulModel:
    """``MANTIS_RUL_MODEL``, else the shipped model; read on first use, not at import.

    Why: every command imports the agents; a missing or malformed file must
    stop the worker (or the agent) in one line, never ``--help`` or ``config``.
    """
    path = current_settings().rul_model
    if not path:
        return RulModel.default()
    try:
        return RulModel.load(path)
    except OSError as exc:
        raise SystemExit(f"mantis-stream: MANTIS_RUL_MODEL={path!r}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"mantis-stream: MANTIS_RUL_MODEL={path!r}: not a RUL model file ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None


check_at_worker_start(model)

UNIT_BY_PREFIX = {"c": "cycles", "s": "seconds"}

tracker_table = bytes_table("rul-trackers")


def _life_prior(unit: str) -> bool:
    """A cycle counter is the part's age; the first reading in seconds is not its birth."""
    return unit == "cycles"


def _new(key: str) -> RulTracker:
    unit = UNIT_BY_PREFIX[key[0]]
    return RulTracker(model(), unit=unit, life_prior=_life_prior(unit))


def _load(key: str, raw: bytes) -> RulTracker:
    return RulTracker.from_bytes(raw, model(), life_prior=_life_prior(UNIT_BY_PREFIX[key[0]]))


trackers: TableBackedCache[RulTracker] = TableBackedCache(tracker_table, new=_new, load=_load, dump=RulTracker.to_bytes)


def tracker_key(message: dict[str, Any]) -> str:
    """Unit initial + asset + sensor: a sensor that ages in cycles keeps its own tracker."""
    unit = "c" if message.get("cycle") is not None else "s"
    return f"{unit}\x1f{message['asset_id']}\x1f{message['sensor_id']}"


def time_of(message: dict[str, Any]) -> float:
    return float(message["cycle"]) if message.get("cycle") is not None else float(message["epoch"])


def estimated(item: Item, tracker: RulTracker, estimate: RulEstimate | None) -> RulMessage | None:
    """The estimate's message (None while the tracker has too little history: the features are the output)."""
    message = item.value
    used = model()
    tracing.annotate(
        item.trace, asset_id=message["asset_id"], sensor_id=message["sensor_id"],
        **{"model.name": used.name, "model.version": used.version},
        **({semconv.PREDICTION_RESULT: "degrading" if estimate.degrading else "healthy",
            semconv.RUL_VALUE: estimate.rul, semconv.RUL_UNIT: estimate.unit} if estimate is not None else {}),
    )
    if estimate is None:
        return None
    return records.rul_message(
        message, estimate.rul, estimate.unit, estimate.lower, estimate.upper, estimate.health_index,
        {"name": used.name, "version": used.version},
    )


runner: KeyedStage[RulTracker, RulEstimate | None] = KeyedStage(
    STAGE, "predict_rul", key=tracker_key, cache=trackers,
    process=lambda tracker, record: tracker.update(time_of(record), record["features"]),
    emit=estimated, public=rul_topic, next_hop=assessments_topic,
)


@app.agent(feature_batches_topic, name="rul")
async def rul(stream):  # type: ignore[no-untyped-def]
    await runner.run(stream)
