"""Stage 2: features per frame.

Waveform frames of a batch are stacked and transformed at once
(``dsp.spectral.waveform_features`` is vectorised across frames); scalar windows
get window statistics; channel rows pass their channels on as features.  Each
feature vector goes to ``mantis.features`` (users, sinks) and, batched, to the
anomaly and RUL stages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import orjson

from .. import tracing
from ..app import app, feature_batches_topic, features_topic, frames_topic
from ..dsp.spectral import waveform_features
from ..dsp.stats import window_features_many
from ..models import records
from ..models.schema import FeaturesMessage
from ._batch import Item
from ._runner import VectorStage

STAGE = "feature-extraction"


def compute_features(frames: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Features for each frame, in order; vectorised per group (waveforms per rate, size and meta; windows per length)."""
    out: list[dict[str, float]] = [{}] * len(frames)
    groups: dict[tuple[float, int, bytes], list[tuple[int, np.ndarray]]] = defaultdict(list)
    windows: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for i, frame in enumerate(frames):
        kind = frame["kind"]
        if kind == "waveform":
            samples = records.frame_samples(frame)
            meta = orjson.dumps(frame.get("meta") or {}, option=orjson.OPT_SORT_KEYS)
            groups[(frame["sample_rate_hz"], len(samples), meta)].append((i, samples))
        elif kind == "window":
            windows[len(frame["values"])].append((i, frame["values"]))
        elif kind == "row":
            out[i] = dict(frame["channels"])
        else:
            raise ValueError(f"frame kind {kind!r} is unknown")
    for rows in windows.values():
        for (i, _), feats in zip(rows, window_features_many(np.array([values for _, values in rows], dtype=np.float64))):
            out[i] = feats
    for (rate, _size, meta), members in groups.items():
        stack = np.stack([samples for _, samples in members])
        for (i, _), feats in zip(members, waveform_features(stack, rate, orjson.loads(meta))):
            out[i] = feats
    return out


def featured(item: Item, _: None, feats: dict[str, float]) -> FeaturesMessage:
    frame = item.value
    tracing.annotate(item.trace, asset_id=frame["asset_id"], sensor_id=frame["sensor_id"], **{"features.count": len(feats)})
    return records.features_message(frame, feats)


runner: VectorStage[dict[str, float]] = VectorStage(
    STAGE, "compute_fft", process=compute_features, emit=featured, public=features_topic, next_hop=feature_batches_topic,
)


@app.agent(frames_topic, name="features")
async def features(stream):  # type: ignore[no-untyped-def]
    await runner.run(stream)
