"""A Quix Streams peer doing mantis-stream's job on scalar readings, for ``bench_pipeline.py``.

    python bench/quix_app.py BOOTSTRAP GROUP STATE_DIR --detector river|mantis

Why this exists
    A user choosing a Python stream processor would compare us with Quix
    Streams; this is the same work written the Quix way, so the bench measures
    the framework path side by side: validate each raw reading (dead letters
    for bad ones); repartition by asset (``group_by``, like our keyed hop); a
    per-sensor window of the last 10 values in Quix's state store; window
    statistics; a per-sensor detector; a RUL trend; one message per record to
    ``mantis.features``, ``mantis.anomalies`` and ``mantis.rul``, keyed by asset.

Detectors
    ``river``: river's ``StandardScaler | HalfSpaceTrees``; ``mantis``:
    mantis-stream's own ``AnomalyDetector`` (imported, so both peers score with
    the same code).  Detectors live in process memory per (asset, sensor), as
    in our worker between checkpoints; the window and the trend live in the
    state store (changelogged).

Prints ``Ready`` once the consumer has its partitions.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from quixstreams import Application, State
from quixstreams.models import TopicConfig
from river import anomaly, preprocessing

READINGS = "mantis.readings"
FEATURES = "mantis.features"
ANOMALIES = "mantis.anomalies"
RUL = "mantis.rul"
DEAD_LETTERS = "mantis.dead-letters"
WINDOW = 10
#: Level at which the RUL trend reaches end of life (bench readings hover around 60).
LIFE_LIMIT = 100.0
#: Holt smoothing of the window mean (level, slope per second).
ALPHA, BETA = 0.3, 0.1
THRESHOLD = 0.9


class InvalidReading(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _identifier(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise InvalidReading(name, "must be a non-empty string of at most 256 characters")
    return value


def validate(raw: bytes) -> dict[str, Any]:
    """The reading, or ``{"error": ...}`` naming the field (routed to dead letters)."""
    try:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidReading("payload", f"not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(obj, dict):
            raise InvalidReading("payload", "a reading must be a JSON object")
        asset, sensor = _identifier(obj, "asset_id"), _identifier(obj, "sensor_id")
        ts, value = obj.get("ts"), obj.get("value")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise InvalidReading("ts", "must be a finite number (epoch seconds)")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidReading("value", "must be a finite number")
        return {"asset_id": asset, "sensor_id": sensor, "ts": float(ts), "value": float(value)}
    except InvalidReading as exc:
        return {"error": str(exc), "field": exc.field, "stage": "validate", "raw": raw[:1024].decode(errors="replace")}


def window_stats(w: list[float]) -> dict[str, float]:
    """Mean, std (population), min, max, last, least-squares slope per sample and range."""
    n = len(w)
    mean = sum(w) / n
    var = sum((x - mean) ** 2 for x in w) / n
    xm = (n - 1) / 2
    den = sum((i - xm) ** 2 for i in range(n))
    slope = sum((i - xm) * (x - mean) for i, x in enumerate(w)) / den if den else 0.0
    lo, hi = min(w), max(w)
    return {"mean": mean, "std": math.sqrt(var), "min": lo, "max": hi, "last": w[-1], "slope": slope, "range": hi - lo}


def river_detector() -> Callable[[dict[str, float]], tuple[float, bool]]:
    model = preprocessing.StandardScaler() | anomaly.HalfSpaceTrees(seed=42)

    def score(x: dict[str, float]) -> tuple[float, bool]:
        s = model.score_one(x)
        model.learn_one(x)
        return s, s >= THRESHOLD
    return score


def mantis_detector() -> Callable[[dict[str, float]], tuple[float, bool]]:
    from mantis_stream.models.anomaly import AnomalyDetector  # imported at start-up by build()

    det = AnomalyDetector(threshold=THRESHOLD)

    def score(x: dict[str, float]) -> tuple[float, bool]:
        result = det.process_one(x)
        return result.score, result.is_anomaly
    return score


def assess(make_detector: Callable[[], Callable[[dict[str, float]], tuple[float, bool]]]):  # type: ignore[no-untyped-def]
    """The stateful step: window, statistics, detector and RUL trend of one reading (state is per asset)."""
    detectors: dict[str, Callable[[dict[str, float]], tuple[float, bool]]] = {}

    def step(r: dict[str, Any], state: State) -> dict[str, Any]:
        sensor = r["sensor_id"]
        st = state.get(sensor) or {"w": [], "level": None, "slope": 0.0, "t": None}
        w = st["w"]
        w.append(r["value"])
        del w[: max(0, len(w) - WINDOW)]
        feats = window_stats(w)
        key = f"{r['asset_id']}\x1f{sensor}"
        detector = detectors.get(key) or detectors.setdefault(key, make_detector())
        score, alarm = detector(feats)
        if st["level"] is None:
            st["level"] = feats["mean"]
        else:
            dt = max(r["ts"] - st["t"], 1e-3)
            level = ALPHA * feats["mean"] + (1 - ALPHA) * (st["level"] + st["slope"] * dt)
            st["slope"] = BETA * (level - st["level"]) / dt + (1 - BETA) * st["slope"]
            st["level"] = level
        st["t"] = r["ts"]
        state.set(sensor, st)
        rul = (LIFE_LIMIT - st["level"]) / st["slope"] if st["slope"] > 0 and st["level"] < LIFE_LIMIT else None
        base = {"asset_id": r["asset_id"], "sensor_id": sensor, "ts": r["ts"]}
        return {
            "features": {**base, "features": feats, "frame": "window"},
            "anomaly": {**base, "score": score, "threshold": THRESHOLD, "is_anomaly": alarm},
            "rul": {**base, "rul": rul, "unit": "seconds", "health_index": st["level"]},
        }
    return step


class BenchApplication(Application):
    """Says ``Ready`` when the consumer is assigned its partitions (the bench starts producing then)."""

    def _on_assign(self, consumer, topic_partitions):  # type: ignore[no-untyped-def]
        super()._on_assign(consumer, topic_partitions)
        if topic_partitions:
            print("Ready", flush=True)


def build(bootstrap: str, group: str, state_dir: str, detector: str) -> Application:
    if detector == "mantis":
        import mantis_stream.models.anomaly  # noqa: F401  (a slow first import, not inside the first message)
    app = BenchApplication(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                           state_dir=state_dir, loglevel="WARNING",
                           # Our worker's local-profile settings for Tansu (see docs/): it holds a fetch for
                           # its whole wait, and a group join waits half the session timeout.
                           consumer_extra_config={"fetch.wait.max.ms": 100, "session.timeout.ms": 6000,
                                                  "heartbeat.interval.ms": 1000})
    config = TopicConfig(num_partitions=4, replication_factor=1)
    readings = app.topic(READINGS, value_deserializer="bytes", config=config)
    # Tansu's DescribeConfigs reports no retention.ms, which group_by copies to its repartition topic.
    readings.broker_config.extra_config.setdefault("retention.ms", "-1")
    out = {name: app.topic(name, value_serializer="json", key_serializer="str", config=config)
           for name in (FEATURES, ANOMALIES, RUL)}
    out[DEAD_LETTERS] = app.topic(DEAD_LETTERS, value_serializer="json", key_serializer="bytes", config=config)
    sdf = app.dataframe(readings).apply(validate)
    sdf.filter(lambda v: "error" in v).to_topic(out[DEAD_LETTERS])
    sdf = sdf.filter(lambda v: "error" not in v)
    sdf = sdf.group_by("asset_id", key_serializer="str", key_deserializer="str")
    sdf = sdf.apply(assess(river_detector if detector == "river" else mantis_detector), stateful=True)
    # Quix stamps outputs with the input's time; the bench reads the time each record was produced, as Kafka's CreateTime.
    sdf = sdf.set_timestamp(lambda value, key, ts, headers: int(time.time() * 1000))
    for name, part in ((FEATURES, "features"), (RUL, "rul"), (ANOMALIES, "anomaly")):
        sdf.apply(lambda v, part=part: v[part]).to_topic(out[name])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("state_dir")
    parser.add_argument("--detector", choices=("river", "mantis"), default="river")
    args = parser.parse_args()
    build(args.bootstrap, args.group, args.state_dir, args.detector).run()


if __name__ == "__main__":
    main()

