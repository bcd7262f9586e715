"""Remaining useful life: the trained model and the per-asset online tracker.

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

Notes: numpy and scipy only; no Kafka, Faust or asyncio. Model files are JSON (about
17 000 weights, 180 kB). ``RulModel.default()`` loads the shipped
``models/data/rul-default.json`` (trained on C-MAPSS FD001 and the FEMTO
learning bearings) and falls back to untrained generic parameters.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .health import CmapssFeaturizer, GenericHealth, GenericParams

__all__ = ["RulEstimate", "RulModel", "RulTracker", "MlpEnsemble", "DEFAULT_MODEL_PATH"]

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
# A small MLP ensemble in numpy (no scikit-learn at run time or training time)
# --------------------------------------------------------------------------------------


def _round_sig(a: np.ndarray, digits: int = 6) -> np.ndarray:
    """Round to ``digits`` significant digits: model files stay small (JSON), and
    the in-memory model equals the one read back from its file."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{x:.{digits}g}") for x in a.ravel()], dtype=np.float64).reshape(a.shape)


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

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        hidden: Sequence[int] = (64, 32),
        members: int = 5,
        epochs: int = 60,
        batch: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        y_scale: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> "MlpEnsemble":
        """Adam on squared error; each member from its own seed and bootstrap order."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x_mean = x.mean(axis=0)
        x_std = x.std(axis=0) + 1e-8
        ys = float(y_scale if y_scale is not None else (np.abs(y).max() or 1.0))
        xn = (x - x_mean) / x_std
        yn = y / ys
        nets = []
        for m in range(members):
            rng = np.random.default_rng(seed + 1000 * m)
            sizes = [x.shape[1], *hidden, 1]
            params = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                params.append([rng.normal(0.0, math.sqrt(2.0 / a), (a, b)), np.zeros(b)])
            mom = [[np.zeros_like(p) for p in layer] for layer in params]
            vel = [[np.zeros_like(p) for p in layer] for layer in params]
            step = 0
            n = len(xn)
            for ep in range(epochs):
                order = rng.permutation(n)
                lr_ep = lr * (0.5 * (1 + math.cos(math.pi * ep / epochs)))  # cosine decay
                for s in range(0, n, batch):
                    idx = order[s : s + batch]
                    xb, yb = xn[idx], yn[idx]
                    acts = [xb]
                    h = xb
                    for i, (w, b) in enumerate(params):
                        h = h @ w + b
                        if i < len(params) - 1:
                            h = np.maximum(h, 0.0)
                        acts.append(h)
                    g = 2.0 * (h[:, 0] - yb)[:, None] / len(idx)
                    step += 1
                    for i in range(len(params) - 1, -1, -1):
                        w, b = params[i]
                        gw = acts[i].T @ g + weight_decay * w
                        gb = g.sum(axis=0)
                        if i > 0:
                            g = (g @ w.T) * (acts[i] > 0)
                        for j, gr in enumerate((gw, gb)):
                            mom[i][j] = 0.9 * mom[i][j] + 0.1 * gr
                            vel[i][j] = 0.999 * vel[i][j] + 0.001 * gr * gr
                            mh = mom[i][j] / (1 - 0.9**step)
                            vh = vel[i][j] / (1 - 0.999**step)
                            params[i][j] = params[i][j] - lr_ep * mh / (np.sqrt(vh) + 1e-8)
            nets.append([(_round_sig(p[0]), _round_sig(p[1])) for p in params])
            if progress:
                progress(f"network {m + 1}/{members} trained")
        return cls(_round_sig(x_mean), _round_sig(x_std), nets, ys)

    def to_json(self) -> dict:
        return {
            "x_mean": self.x_mean.tolist(),
            "x_std": self.x_std.tolist(),
            "y_scale": self.y_scale,
            "layers": [[{"w": w.tolist(), "b": b.tolist()} for w, b in net] for net in self.layers],
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "MlpEnsemble":
        layers = [
            [(np.asarray(l["w"], dtype=np.float64), np.asarray(l["b"], dtype=np.float64)) for l in net]
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

    def to_json(self) -> dict:
        return {
            "featurizer": self.featurizer.to_json(),
            "regressor": self.regressor.to_json(),
            "cap": self.cap,
            "bound_edges": list(self.bound_edges),
            "bound_q": [list(q) for q in self.bound_q],
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "CmapssPart":
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
    def default(cls) -> "RulModel":
        """The shipped trained model when present, else untrained generic parameters."""
        if DEFAULT_MODEL_PATH.exists():
            try:
                return cls.load(DEFAULT_MODEL_PATH)
            except (OSError, ValueError, KeyError) as exc:  # a broken install must not stop the agent
                print(f"mantis-stream: cannot read {DEFAULT_MODEL_PATH}: {exc}; using untrained RUL defaults", file=sys.stderr)
        return cls()

    def generic_params(self, unit: str) -> GenericParams:
        return self.generic.get(unit) or self.generic.get("seconds") or GenericParams()

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "cmapss": self.cmapss.to_json() if self.cmapss else None,
            "generic": {u: p.to_json() for u, p in self.generic.items()},
            "info": self.info,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "RulModel":
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
    def load(cls, path: str | Path) -> "RulModel":
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

    __slots__ = ("model", "unit", "life_prior", "mode", "keys", "state", "_generic", "_t0", "_last_t", "_n")

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
            try:
                x = cm.featurizer.update(self.state, features, self._age(t, self._n + 1))
            except (TypeError, ValueError):
                return None
            self._n += 1
            self._last_t = t
            rul = float(min(max(cm.regressor.predict_one(x), 0.0), cm.cap))
            lo, hi = cm.bounds(rul)
            return RulEstimate(rul, lo, hi, rul / cm.cap, self.unit, rul < cm.cap)
        assert self._generic is not None
        est = self._generic.update(self.state, t, features)
        self._last_t = t
        self._n += 1
        if est is None:
            return None
        return RulEstimate(est.rul, est.lower, est.upper, est.health_index, self.unit, est.degrading)

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
    def from_bytes(cls, data: bytes, model: RulModel, *, life_prior: bool = True) -> "RulTracker":
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


# --------------------------------------------------------------------------------------
# Training (offline; the same featurizer and tracker code as online)
# --------------------------------------------------------------------------------------

History = Sequence[tuple[float, Mapping[str, float]]]


def _kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        lab = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
        new = np.array([x[lab == j].mean(0) if np.any(lab == j) else centers[j] for j in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    lab = np.argmin(((x[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
    return centers, lab


def find_regimes(settings: np.ndarray, max_k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating regimes from the settings channels: (centers, scale, labels).

    C-MAPSS FD002/FD004 run at six tight operating points, FD001/FD003 at one:
    the smallest k whose clusters are tight (mean distance < 0.05 of the overall
    spread) wins.
    """
    scale = settings.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = settings / scale
    sample = z if len(z) <= 5000 else z[np.random.default_rng(0).choice(len(z), 5000, replace=False)]
    total = float(((sample - sample.mean(0)) ** 2).sum(1).mean())
    best = (z.mean(0, keepdims=True), np.zeros(len(z), dtype=int))
    if total > 0:
        for k in range(2, max_k + 1):
            centers, _ = _kmeans(sample, k)
            lab = np.argmin(((sample[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
            within = float(((sample - centers[lab]) ** 2).sum(1).mean())
            if within < 0.0025 * total:
                full = np.argmin(((z[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
                best = (centers, full)
                break
    # one regime: all rows belong to it
    return best[0], scale, best[1]


def cmapss_targets(length: int, cap: float) -> np.ndarray:
    """Piecewise-linear RUL target of a run-to-failure history: min(cap, cycles left)."""
    return np.minimum(np.arange(length - 1, -1, -1, dtype=np.float64), cap)


def featurize_histories(fz: CmapssFeaturizer, histories: Sequence[History], unit: str = "cycles") -> list[np.ndarray]:
    """Feature rows of each history, computed exactly as :class:`RulTracker` does online."""
    out = []
    for hist in histories:
        state = fz.init_state()
        rows = np.empty((len(hist), fz.n_features))
        for i, (t, feats) in enumerate(hist):
            age = float(t) if unit == "cycles" else float(i + 1)
            rows[i] = fz.update(state, feats, age)
        out.append(rows)
    return out


def fit_cmapss(
    histories: Sequence[History],
    *,
    cap: float = 125.0,
    channels: Sequence[str] | None = None,
    settings: Sequence[str] = ("setting_1", "setting_2", "setting_3"),
    hidden: Sequence[int] = (64, 32),
    members: int = 3,
    epochs: int = 40,
    bound_folds: int = 3,
    seed: int = 0,
    featurizer_options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RulModel:
    """Train the multi-channel model on run-to-failure histories (last row = failure).

    Each history: ``[(cycle, {channel: value}), ...]`` in cycle order. Sensors
    are those (of ``channels``, default every non-setting key) that vary and
    follow the RUL (|correlation with the capped RUL| > 0.1 within regimes).
    """
    say = progress or (lambda m: None)
    keys0 = histories[0][0][1]
    settings = [s for s in settings if s in keys0]
    cand = list(channels) if channels is not None else [k for k in keys0 if k not in settings]
    all_rows = [feats for hist in histories for _, feats in hist]
    x_all = np.array([[f[c] for c in cand] for f in all_rows], dtype=np.float64)
    s_all = np.array([[f[s] for s in settings] for f in all_rows], dtype=np.float64) if settings else np.zeros((len(all_rows), 0))
    y_all = np.concatenate([cmapss_targets(len(h), cap) for h in histories])
    if settings:
        centers, s_scale, labels = find_regimes(s_all)
    else:
        centers, s_scale, labels = np.zeros((1, 0)), np.ones(0), np.zeros(len(all_rows), dtype=int)
    r = len(centers)
    mean = np.zeros((r, len(cand)))
    std = np.ones((r, len(cand)))
    for j in range(r):
        sel = labels == j
        mean[j] = x_all[sel].mean(0)
        std[j] = x_all[sel].std(0)
    zs = (x_all - mean[labels]) / np.where(std[labels] > 1e-12, std[labels], 1.0)
    keep = []
    for i, c in enumerate(cand):
        if np.all(std[:, i] <= 1e-9 * (np.abs(mean[:, i]) + 1.0)) or len(np.unique(x_all[:, i])) < 3:
            continue
        corr = np.corrcoef(zs[:, i], y_all)[0, 1]
        if np.isfinite(corr) and abs(corr) > 0.1:
            keep.append(i)
    say(f"{r} operating regime(s); sensors used: {', '.join(cand[i] for i in keep)}")
    fz = CmapssFeaturizer(
        sensors=[cand[i] for i in keep],
        settings=settings if r > 1 else [],
        centers=centers if r > 1 else np.zeros((1, 0)),
        settings_scale=s_scale if r > 1 else np.ones(0),
        mean=mean[:, keep],
        std=np.where(std[:, keep] > 1e-12, std[:, keep], 1.0),
        **dict(featurizer_options or {}),
    )
    feats = featurize_histories(fz, histories)
    ys = [cmapss_targets(len(h), cap) for h in histories]
    x = np.concatenate(feats)
    y = np.concatenate(ys)
    say(f"{len(histories)} histories, {len(x)} rows, {x.shape[1]} features")
    # bounds: out-of-fold residual quantiles per predicted-RUL bin
    edges = [0.0, 15.0, 30.0, 50.0, 75.0, 100.0, 1e9]
    qs: list[tuple[float, float]] = [(-0.2 * cap, 0.2 * cap)] * (len(edges) - 1)
    if bound_folds >= 2 and len(histories) >= bound_folds:
        rng = np.random.default_rng(seed + 7)
        order = rng.permutation(len(histories))
        res_p, res_r = [], []
        for f in range(bound_folds):
            val = set(order[f::bound_folds].tolist())
            tr = [i for i in range(len(histories)) if i not in val]
            reg = MlpEnsemble.fit(
                np.concatenate([feats[i] for i in tr]), np.concatenate([ys[i] for i in tr]),
                hidden=hidden, members=max(1, members // 2), epochs=epochs, seed=seed + 100 + f, y_scale=cap,
            )
            for i in val:
                p = np.clip(reg.predict(feats[i]), 0.0, cap)
                res_p.append(p)
                res_r.append(ys[i] - p)
            say(f"bounds fold {f + 1}/{bound_folds}")
        p_all = np.concatenate(res_p)
        r_all = np.concatenate(res_r)
        qs = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (p_all >= lo) & (p_all < hi)
            rr = r_all[sel] if sel.sum() >= 30 else r_all
            qs.append((float(np.quantile(rr, 0.1)), float(np.quantile(rr, 0.9))))
    reg = MlpEnsemble.fit(x, y, hidden=hidden, members=members, epochs=epochs, seed=seed, y_scale=cap, progress=say)
    part = CmapssPart(fz, reg, cap, edges, qs)
    model = RulModel(cmapss=part, info={"cmapss_histories": len(histories), "cmapss_rows": int(len(x)), "cmapss_cap": cap})
    model.stamp("cmapss")
    return model


# --------------------------------------------------------------------------------------
# Bearings (FEMTO/PRONOSTIA): generic indicator, parameters fitted to run-to-failure runs
# --------------------------------------------------------------------------------------

#: One bearing: ({channel: [(ts, frame features), ...]}, failure ts).
Bearing = tuple[Mapping[str, Sequence[tuple[float, Mapping[str, float]]]], float]

#: Where histories are cut when fitting/scoring bearings (fractions of the life).
CUT_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def bearing_trajectory(model: RulModel, channels: Mapping[str, Sequence[tuple[float, Mapping[str, float]]]]) -> list[tuple[float, RulEstimate]]:
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


def femto_estimate(model: RulModel, channels: Mapping[str, Sequence[tuple[float, Mapping[str, float]]]]) -> RulEstimate | None:
    """predict-rul's answer for a bearing folder: the estimate after its last frame."""
    traj = bearing_trajectory(model, channels)
    return traj[-1][1] if traj else None


def estimates_at_cuts(traj: Sequence[tuple[float, RulEstimate]], start: float, end: float, fractions: Sequence[float] = CUT_FRACTIONS) -> list[tuple[float, float]]:
    """(actual, predicted) RUL when the history is cut at each fraction of its life.

    The estimate at a cut is the last one at or before it: the tracker is causal,
    so this equals running it on the truncated history.
    """
    times = np.array([t for t, _ in traj])
    out = []
    for f in fractions:
        cut = start + f * (end - start)
        i = int(np.searchsorted(times, cut, side="right")) - 1
        if i < 0:
            continue
        out.append((end - cut, traj[i][1].rul))
    return out


def _degrading_at(model: RulModel, channels: Mapping[str, Sequence[tuple[float, Mapping[str, float]]]]) -> tuple[list[tuple[float, RulEstimate]], float | None]:
    """The bearing's trajectory and the first time either channel was degrading (None: never)."""
    traj = bearing_trajectory(model, channels)
    first = next((t for t, e in traj if e.degrading), None)
    return traj, first


def _phm2012_best(remaining: np.ndarray) -> float:
    """The guess with the best mean PHM 2012 accuracy over these remaining lives."""
    from ..evaluation.rul import phm2012_accuracy

    grid = np.geomspace(max(remaining.min() * 0.2, 1.0), remaining.max(), 200)
    scores = [phm2012_accuracy(remaining, np.full(remaining.shape, g)) for g in grid]
    return float(grid[int(np.argmax(scores))])


def fit_femto(
    bearings: Sequence[Bearing],
    *,
    fractions: Sequence[float] = CUT_FRACTIONS,
    progress: Callable[[str], None] | None = None,
) -> RulModel:
    """Learn the bearing model from run-to-failure bearings (last frame = failure).

    No search over parameters (six bearings would be overfitted): the failure
    threshold is the median end-of-life level of the bearings' worse channel;
    each bearing's onset is where the tracker first flags it; the slope prior
    is the geometric mean of the bearings' (threshold - onset level) / (time
    from onset to failure), with a standard deviation of the same size; the RUL
    caps at the horizon: the PHM 2012-optimal guess over the bearings'
    remaining lives before onset when cut at ``fractions`` of their lives; the
    lower bound before onset is the shortest time from onset to failure.
    """
    say = progress or (lambda m: None)
    starts = [min(rows[0][0] for rows in channels.values() if rows) for channels, _ in bearings]
    lives = np.array([end - s for (_, end), s in zip(bearings, starts)])
    base = GenericParams()
    probe = RulModel(generic={"seconds": base})
    finals = []
    for channels, _ in bearings:
        ends = []
        for rows in channels.values():
            tr = RulTracker(probe, "seconds")
            for t, f in rows:
                tr.update(t, f)
            if tr._generic is not None and tr._generic.level(tr.state) is not None:
                ends.append(tr._generic.level(tr.state))
        if ends:
            finals.append(max(ends))
    threshold = float(np.median(finals)) if finals else base.threshold
    params = GenericParams(**{**base.to_json(), "threshold": threshold})
    probe = RulModel(generic={"seconds": params})
    onset_ages, rates, phases = [], [], []
    trajs = []
    for (channels, end), start, life in zip(bearings, starts, lives):
        traj, t_on = _degrading_at(probe, channels)
        trajs.append(traj)
        if t_on is None:
            onset_ages.append(life)
            continue
        onset_ages.append(t_on - start)
        phases.append(end - t_on)
        y_on = threshold * (1.0 - next(e for t, e in traj if t == t_on).health_index)
        rates.append(max(threshold - y_on, 1e-3) / max(end - t_on, 1.0))
    say(f"{len(bearings)} bearings, lives {', '.join(f'{x:.0f}' for x in lives)} s; threshold {threshold:.2f}; "
        f"onset at {', '.join(f'{a / l:.0%}' for a, l in zip(onset_ages, lives))} of life")
    if rates:
        slope = float(np.exp(np.mean(np.log(rates))))
        params.slope_prior, params.slope_prior_sd = slope, slope
        trajs = [bearing_trajectory(RulModel(generic={"seconds": params}), channels) for channels, _ in bearings]
    # remaining lives at the protocol's cuts where the bearing (with the prior) was not degrading
    pre = []
    for traj, start, life in zip(trajs, starts, lives):
        times = np.array([t for t, _ in traj])
        for f in fractions:
            i = int(np.searchsorted(times, start + f * life, side="right")) - 1
            if i >= 0 and not traj[i][1].degrading:
                pre.append((1.0 - f) * life)
    params.horizon = _phm2012_best(np.asarray(pre) if pre else lives)
    warnings = [end - next(t for t, e in traj if e.degrading) for traj, (_, end) in zip(trajs, bearings) if any(e.degrading for _, e in traj)]
    params.warning_min = float(min(warnings)) if warnings else None
    params.max_rul = float(max(base.max_rul, 4.0 * lives.max()))
    say(f"horizon {params.horizon:.0f} s, slope prior {params.slope_prior} /s, degradation phases {', '.join(f'{x:.0f}' for x in phases)} s")
    model = RulModel(
        generic={"seconds": params, "cycles": RulModel().generic["cycles"]},
        info={"trained_on_femto": len(bearings)},
    )
    model.stamp("femto")
    return model
