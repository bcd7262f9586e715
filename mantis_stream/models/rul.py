"""Remaining useful life: the trained model and the per-asset online tracker (inference only).

Why this exists: the RUL agent (``mantis_stream.agents.rul``) and the offline
commands (``train-rul``, ``evaluate-rul``, ``predict-rul``) must give the same
answer on the same rows, so there is one model and one tracker, used by both:
the agent calls :meth:`RulTracker.update` once per feature message of an asset
and keeps :meth:`RulTracker.to_bytes` in a Faust table; ``evaluate-rul`` runs
the very same ``update`` over a test unit's rows and scores the last estimate.

Usage::

    model = RulModel.load(path) if path else RulModel.default()
    tracker = RulTracker(model, unit="cycles")
    est = tracker.update(cycle, {"setting_1": ..., "s1": ..., ..., "s21": ...})
    blob = tracker.to_bytes(); tracker = RulTracker.from_bytes(blob, model)

What the tracker does with a message depends on its keys, decided at the
first message of the asset:

- all the channels of the trained multi-sensor model (C-MAPSS naming,
  ``setting_1..3``, ``s1..s21``; see :mod:`mantis_stream.datasets.cmapss`):
  recursive features (:class:`~mantis_stream.models.health.CmapssFeaturizer`)
  and an ensemble of small neural networks trained on run-to-failure
  histories, RUL capped at ``cap`` (125 cycles, as published). Bounds: the
  10 % / 90 % out-of-fold residual quantiles for the predicted RUL's range.
  ``health_index = rul / cap``.
- anything else (vibration frame features ``rms``, ``kurtosis``, ...; scalar
  window statistics): :class:`~mantis_stream.models.health.GenericHealth`,
  growth relative to the asset's own baseline; for vibration RMS, onset
  detection, then an exponential degradation model with a Bayesian slope
  extrapolated to a failure threshold, all learnt from run-to-failure bearings
  (``train-rul --format femto``); before onset, "beyond the horizon".

Training (``fit_cmapss``, ``fit_femto``, the networks' fit) lives in
:mod:`mantis_stream.training.rul`; this module only reads and runs a model.

Notes: numpy and scipy only; no Kafka, Faust or asyncio. Model files are JSON (about
17 000 weights, 180 kB). ``RulModel.default()`` loads the shipped
``models/data/rul-default.json`` (trained on C-MAPSS FD001 and the FEMTO
learning bearings) and falls back to untrained generic parameters.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .health import CmapssFeaturizer, GenericHealth, GenericParams

__all__ = [
    "DEFAULT_MODEL_PATH",
    "Bearing",
    "Channels",
    "CmapssPart",
    "History",
    "MlpEnsemble",
    "RulEstimate",
    "RulModel",
    "RulTracker",
    "bearing_trajectory",
    "femto_estimate",
    "first_ts",
    "run_tracker",
]

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "data" / "rul-default.json"
FORMAT = "mantis-rul/1"
#: Layout of RulTracker.to_bytes (2: generic state with baseline spread, interval sum, trend flag).
STATE_VERSION = 2


@dataclass
class RulEstimate:
    """One RUL estimate: ``rul`` with ``lower``/``upper`` bounds, in ``unit``."""

    rul: float
    lower: float
    upper: float
    health_index: float
    unit: str  # "cycles" or "seconds"
    #: degradation seen: past the onset with a rising trend (generic), under the cap (multi-channel)
    degrading: bool = False


# --------------------------------------------------------------------------------------
# A small MLP ensemble in numpy (no scikit-learn; fitted by mantis_stream.training.mlp)
# --------------------------------------------------------------------------------------


@dataclass
class MlpEnsemble:
    """Mean of several ReLU networks over standardised inputs.

    ``layers[m]``: list of (W, b) of network m. Output is in units of ``y_scale``.
    """

    x_mean: np.ndarray
    x_std: np.ndarray
    layers: list[list[tuple[np.ndarray, np.ndarray]]]
    y_scale: float = 1.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for rows of ``x`` (n, d) -> (n,)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        h0 = (x - self.x_mean) / self.x_std
        out = np.zeros(len(x))
        for net in self.layers:
            h = h0
            for i, (w, b) in enumerate(net):
                h = h @ w + b
                if i < len(net) - 1:
                    np.maximum(h, 0.0, out=h)
            out += h[:, 0]
        return out / len(self.layers) * self.y_scale

    def predict_one(self, x: np.ndarray) -> float:
        return float(self.predict(x[None, :])[0])


    def to_json(self) -> dict[str, Any]:
        return {
            "x_mean": self.x_mean.tolist(),
            "x_std": self.x_std.tolist(),
            "y_scale": self.y_scale,
            "layers": [[{"w": w.tolist(), "b": b.tolist()} for w, b in net] for net in self.layers],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MlpEnsemble:
        layers = [
            [(np.asarray(layer["w"], dtype=np.float64), np.asarray(layer["b"], dtype=np.float64)) for layer in net]
            for net in d["layers"]
        ]
        return cls(np.asarray(d["x_mean"], dtype=np.float64), np.asarray(d["x_std"], dtype=np.float64), layers, float(d["y_scale"]))


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


@dataclass
class CmapssPart:
    """Multi-channel model: features, regressor, cap and residual quantiles for bounds."""

    featurizer: CmapssFeaturizer
    regressor: MlpEnsemble
    cap: float = 125.0
    #: predicted-RUL bin edges and the (q_low, q_high) residual (true - predicted) per bin
    bound_edges: list[float] = field(default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0, 1e9])
    bound_q: list[tuple[float, float]] = field(default_factory=lambda: [(-15.0, 15.0)] * 5)

    def bounds(self, rul: float) -> tuple[float, float]:
        i = int(np.searchsorted(self.bound_edges, rul, side="right")) - 1
        i = min(max(i, 0), len(self.bound_q) - 1)
        lo, hi = self.bound_q[i]
        return max(0.0, rul + lo), max(rul, rul + hi)

    def to_json(self) -> dict[str, Any]:
        return {
            "featurizer": self.featurizer.to_json(),
            "regressor": self.regressor.to_json(),
            "cap": self.cap,
            "bound_edges": list(self.bound_edges),
            "bound_q": [list(q) for q in self.bound_q],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CmapssPart:
        return cls(
            CmapssFeaturizer.from_json(d["featurizer"]),
            MlpEnsemble.from_json(d["regressor"]),
            float(d.get("cap", 125.0)),
            [float(x) for x in d["bound_edges"]],
            [(float(a), float(b)) for a, b in d["bound_q"]],
        )


@dataclass
class RulModel:
    """The trained part of RUL estimation, shared by the agent and the offline commands.

    ``cmapss``: the multi-channel model (None when untrained: such assets then
    get the generic indicator). ``generic``: the per-unit parameters of the
    generic indicator (``"seconds"`` and ``"cycles"``).
    """

    name: str = "mantis-rul"
    version: str = "0-untrained"
    cmapss: CmapssPart | None = None
    generic: dict[str, GenericParams] = field(
        default_factory=lambda: {
            "seconds": GenericParams(),
            "cycles": GenericParams(baseline_n=10, tau_smooth=3.0, tau_trend=30.0, max_rul=1000.0),
        }
    )
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls) -> RulModel:
        """The shipped trained model when present, else untrained generic parameters."""
        if DEFAULT_MODEL_PATH.exists():
            try:
                return cls.load(DEFAULT_MODEL_PATH)
            except (OSError, ValueError, KeyError) as exc:  # a broken install must not stop the agent
                print(f"mantis-stream: cannot read {DEFAULT_MODEL_PATH}: {exc}; using untrained RUL defaults", file=sys.stderr)
        return cls()

    def generic_params(self, unit: str) -> GenericParams:
        return self.generic.get(unit) or self.generic.get("seconds") or GenericParams()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "cmapss": self.cmapss.to_json() if self.cmapss else None,
            "generic": {u: p.to_json() for u, p in self.generic.items()},
            "info": self.info,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RulModel:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} model file (format={d.get('format')!r})")
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            cmapss=CmapssPart.from_json(d["cmapss"]) if d.get("cmapss") else None,
            generic={u: GenericParams.from_json(p) for u, p in d.get("generic", {}).items()},
            info=dict(d.get("info", {})),
        )

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (atomic rename, so a reader never sees half a file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_SERIALIZE_NUMPY))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> RulModel:
        return cls.from_json(orjson.loads(Path(path).read_bytes()))

    def stamp(self, tag: str) -> None:
        """Set ``version`` to ``tag`` plus a digest of the parameters (identifies a file)."""
        body = orjson.dumps({k: v for k, v in self.to_json().items() if k not in ("version", "info")}, option=orjson.OPT_SERIALIZE_NUMPY)
        self.version = f"{tag}+{hashlib.sha256(body).hexdigest()[:10]}"


# --------------------------------------------------------------------------------------
# The per-asset online tracker
# --------------------------------------------------------------------------------------


class RulTracker:
    """Online RUL of one asset: fed every feature message, returns an estimate.

    ``unit``: ``"cycles"`` (``t`` is the cycle number) or ``"seconds"`` (``t``
    is Unix seconds). The mode (multi-channel model or generic indicator) is
    fixed by the first message; later messages without the needed keys are
    skipped (``update`` returns None), as are messages not newer than the last
    one (duplicates from at-least-once delivery, reordering). In cycles, a
    counter that restarts (``t <= 1`` after later cycles) starts a new life.
    """

    __slots__ = ("_generic", "_last_t", "_n", "_t0", "keys", "life_prior", "mode", "model", "state", "unit")

    def __init__(self, model: RulModel, unit: str, *, life_prior: bool = True) -> None:
        if unit not in ("cycles", "seconds"):
            raise ValueError(f"unit must be 'cycles' or 'seconds', got {unit!r}")
        self.model = model
        self.unit = unit
        #: Whether the time since the first message is the part's age (a run-to-failure
        #: test from new): then a bearing before onset reports the trained horizon as
        #: its RUL; otherwise ``max_rul`` with the horizon as lower bound (the streaming
        #: agent turns it off for ``seconds``: "at least the horizon" opens no work order).
        self.life_prior = life_prior
        self.mode: str | None = None
        self.keys: list[str] = []
        self.state: np.ndarray | list[float] = []
        self._generic: GenericHealth | None = None
        self._t0 = 0.0
        self._last_t = -math.inf
        self._n = 0

    # -- mode selection -------------------------------------------------------------
    def _start(self, t: float, features: Mapping[str, float]) -> None:
        cm = self.model.cmapss
        if cm is not None and cm.featurizer.accepts(features):
            self.mode = "cmapss"
            self.state = cm.featurizer.init_state()
        else:
            self.mode = "generic"
            self._generic = GenericHealth.for_features(self.model.generic_params(self.unit), features, self.life_prior)
            self.keys = list(self._generic.keys)
            self.state = self._generic.init_state()
        self._t0 = float(t)

    def _age(self, t: float, n: int) -> float:
        """Age for the multi-channel model: the cycle number itself in cycles (C-MAPSS
        cycles start at 1); in seconds, the number of messages seen (``n``)."""
        return float(t) if self.unit == "cycles" else float(n)

    def _reset(self) -> None:
        self.mode = None
        self.keys = []
        self.state = []
        self._generic = None
        self._last_t = -math.inf
        self._n = 0

    def update(self, t: float, features: Mapping[str, float]) -> RulEstimate | None:
        """Fold one message in; None while there is too little history or it is unusable."""
        t = float(t)
        if not math.isfinite(t):
            return None
        if self.unit == "cycles" and t <= 1.0 < self._last_t:
            self._reset()  # the cycle counter restarted: a new life (engine overhauled, data replayed)
        if t <= self._last_t:  # a duplicate (at-least-once delivery) or out of order
            return None
        if self.mode is None:
            self._start(t, features)
        if self.mode == "cmapss":
            cm = self.model.cmapss
            assert cm is not None
            if not cm.featurizer.accepts(features):
                return None
            assert isinstance(self.state, np.ndarray)
            try:
                x = cm.featurizer.update(self.state, features, self._age(t, self._n + 1))
            except (TypeError, ValueError):
                return None
            self._n += 1
            self._last_t = t
            rul = float(min(max(cm.regressor.predict_one(x), 0.0), cm.cap))
            lo, hi = cm.bounds(rul)
            return RulEstimate(rul, lo, hi, rul / cm.cap, self.unit, rul < cm.cap)
        assert self._generic is not None and isinstance(self.state, list)
        est = self._generic.update(self.state, t, features)
        self._last_t = t
        self._n += 1
        if est is None:
            return None
        return RulEstimate(est.rul, est.lower, est.upper, est.health_index, self.unit, est.degrading)

    def level(self) -> float | None:
        """The generic indicator's current smoothed level (None in multi-channel mode or
        before the baseline is known): training reads a bearing's end-of-life level."""
        if self._generic is None or not isinstance(self.state, list):
            return None
        return self._generic.level(self.state)

    # -- persistence ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact state for a Faust table (JSON, a few hundred bytes to ~2 kB)."""
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "u": self.unit,
                "m": self.mode,
                "k": self.keys,
                "l": self._generic.log_mode if self._generic else None,
                "t0": self._t0,
                "tl": self._last_t if math.isfinite(self._last_t) else None,
                "n": self._n,
                "s": self.state.tolist() if isinstance(self.state, np.ndarray) else list(self.state),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, model: RulModel, *, life_prior: bool = True) -> RulTracker:
        d = orjson.loads(data)
        if d.get("v") not in (1, STATE_VERSION):
            raise ValueError(f"unknown RulTracker state version {d.get('v')!r}")
        tr = cls(model, d["u"], life_prior=life_prior)
        tr.mode = d["m"]
        tr.keys = list(d["k"])
        tr._t0 = float(d["t0"])
        tr._last_t = float(d["tl"]) if d["tl"] is not None else -math.inf
        tr._n = int(d["n"])
        tr.state = [float(x) for x in d["s"]]
        if tr.mode == "generic":
            tr._generic = GenericHealth(model.generic_params(tr.unit), tr.keys, bool(d["l"]), life_prior)
            if d["v"] == 1:  # version 1 had no baseline spread, interval sum nor trend flag: start them at 0
                tr.state[13:13] = [0.0, 0.0, 0.0]
        elif tr.mode == "cmapss":
            if model.cmapss is None or len(tr.state) != len(model.cmapss.featurizer.init_state()):
                raise ValueError("tracker state does not match the model (different RUL model file?)")
            tr.state = np.asarray(tr.state, dtype=np.float64)
        return tr


def run_tracker(model: RulModel, unit: str, rows: Iterable[tuple[float, Mapping[str, float]]]) -> RulEstimate | None:
    """Feed rows (t, features) to a fresh tracker; the last estimate (evaluate-rul's answer)."""
    tracker = RulTracker(model, unit)
    last = None
    for t, feats in rows:
        est = tracker.update(t, feats)
        if est is not None:
            last = est
    return last


#: One history: ``[(t, {channel: value}), ...]`` in time order.
History = Sequence[tuple[float, Mapping[str, float]]]

# --------------------------------------------------------------------------------------
# Bearings (FEMTO/PRONOSTIA): one tracker per channel, the bearing's RUL the lowest
# --------------------------------------------------------------------------------------

#: A bearing's channels: ``{sensor: [(ts, frame features), ...]}``.
Channels = Mapping[str, History]
#: One run-to-failure bearing: (channels, failure ts).
Bearing = tuple[Channels, float]


def first_ts(channels: Channels) -> float:
    """When a bearing's recording starts: its earliest channel's first frame."""
    return min(rows[0][0] for rows in channels.values() if rows)


def bearing_trajectory(model: RulModel, channels: Channels) -> list[tuple[float, RulEstimate]]:
    """(ts, estimate) after every frame, the most pessimistic channel at each time.

    Each channel (sensor) has its own tracker, as in the agent (trackers are
    per asset and sensor); the bearing's RUL is the lowest of the channels'
    latest estimates: either sensor seeing the damage is enough.
    """
    events = sorted((t, ch, f) for ch, rows in channels.items() for t, f in rows)
    trackers = {ch: RulTracker(model, "seconds") for ch in channels}
    latest: dict[str, RulEstimate] = {}
    out = []
    for t, ch, f in events:
        est = trackers[ch].update(t, f)
        if est is not None:
            latest[ch] = est
        if latest:
            out.append((t, min(latest.values(), key=lambda e: e.rul)))
    return out


def femto_estimate(model: RulModel, channels: Channels) -> RulEstimate | None:
    """predict-rul's answer for a bearing folder: the estimate after its last frame."""
    traj = bearing_trajectory(model, channels)
    return traj[-1][1] if traj else None

