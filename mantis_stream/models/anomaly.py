"""Condition monitoring for one (asset, sensor): a protected healthy reference, a calibrated sudden-change detector and a pattern-novelty part.

:class:`ConditionMonitor` (at the end of this module) is what the anomaly
agent, ``detect`` and the evaluations run, built from the one configuration
below it: a :class:`HealthyReference` (commissioned, guarded, ISO-style alarm
levels), an :class:`AnomalyDetector`, described first, and a
:class:`~mantis_stream.models.novelty.TransitionNovelty` on a scalar sensor's reading.

Why the sudden-change detector exists
    The anomaly stage keeps one detector per (asset, sensor) and must raise an
    alarm with *one* threshold for every asset, although a pump's raw scores and
    a bearing's raw scores live on different scales. River's Half-Space Trees
    give an uncalibrated score; this class turns it into a conformal p-value
    against the detector's own recent raw scores and maps it onto [0, 1] so that,
    on data like the recent past, ``P(score >= s) ~= 10 ** (-tail_decades * s)``
    on every asset. With the defaults (``tail_decades=3``) the threshold 0.9 is a
    one-in-500 event, 0.67 one-in-100, and 1.0 "higher than every one of the last
    ``calibration_size`` scores".

Usage
    >>> det = AnomalyDetector(warmup=50, seed=1)
    >>> results = det.process_many([{"rms": 1.0 + 0.01 * (i % 7)} for i in range(700)])
    >>> results[0].warm, results[-1].warm
    (False, True)
    >>> det.process_one({"rms": 50.0}).is_anomaly
    True
    >>> det2 = AnomalyDetector.from_bytes(det.to_bytes())   # e.g. a Faust table value

Model
    features -> ``AdaptiveStandardScaler`` (exponentially weighted mean/variance,
    ``fading_factor``) -> squashed into (0, 1) with ``0.5 + 0.5 tanh(z / 4)`` ->
    ``HalfSpaceTrees`` (``n_trees``, ``height``, ``window_size``) -> raw score
    ``hst + extremeness_weight * tanh(max |z| / 8)`` (HST gives every point in an
    empty region the same top score; the largest standardised deviation ranks
    them) -> conformal p-value ``p = (1 + #{recent raw >= raw}) / (1 + #recent)``
    -> ``score = min(1, -log10(p) / tail_decades)``.

Drift
    Three forgetting mechanisms, so a new normal is absorbed and a sudden change
    still stands out: the scaler forgets with ``fading_factor`` (memory about
    ``1 / fading_factor`` points), the trees' reference masses are replaced every
    ``window_size`` points (river's HST), and the calibration set is a ring buffer
    of the last ``calibration_size`` raw scores. A run of alarms joins that set
    only when it ends (or after ``window_size`` alarms in a row): a sustained
    anomaly is judged against the normal before it, not against itself. A slow
    degradation that moves slower than these memories is absorbed too: trend it
    with the RUL stage.

Notes
    - ``process_one`` scores *then* learns: a point never explains itself.
    - The scaler learns winsorised values (``clip_sigma``, 4 by default; 0 turns it
      off): a growing excursion, e.g. a bearing that degrades over hours, must not
      inflate the variance that measures it, or it hides itself.
    - Warm-up: until ``warmup`` points have been learned and the trees have seen
      one full window (``window_size``, default ``max(warmup, 16)``), ``score`` is 0.0,
      ``warm`` and ``is_anomaly`` are False. Early after warm-up the p-value cannot
      be small (with n calibration scores, ``p >= 1 / (n + 1)``): the detector is
      conservative until its calibration set fills.
    - The feature set is fixed by the first point; later missing features count
      as 0.0, extra ones are ignored, non-finite values become 0.0.
    - State: ``to_bytes`` is a compact pickle (about 19 KB warm, with the defaults
      and 28 features: tree masses as a uint32 array, the filled part of the
      calibration buffer, the scaler); the split points are rebuilt from the seed
      and checked against a CRC, so a river that builds trees differently fails
      loudly instead of scoring wrongly.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from .._compat import river as river_compat
from .novelty import TransitionNovelty
from .pickled import Pickled

__all__ = ["AnomalyDetector", "AnomalyScore", "ConditionMonitor", "Departure", "HealthyReference", "MonitorResult", "detect_series"]


@dataclass(slots=True)
class AnomalyScore:
    """One scored point: ``score`` in [0, 1]; ``is_anomaly`` is ``warm and score >= threshold``."""

    score: float
    threshold: float
    is_anomaly: bool
    warm: bool


class AnomalyDetector(Pickled):
    """Half-Space Trees on adaptively standardised features, with conformal [0, 1] scores.

    ``to_bytes`` is compact: the trees' split points follow from ``seed`` and the
    feature names, so only their masses are stored (see ``__getstate__``).
    """

    name: str = "hst-conformal"
    version: str = "1"

    def __init__(
        self,
        warmup: int = 50,
        threshold: float = 0.9,
        seed: int = 42,
        *,
        n_trees: int = 10,
        height: int = 6,
        window_size: int | None = None,
        fading_factor: float = 0.01,
        calibration_size: int = 1000,
        tail_decades: float = 3.0,
        extremeness_weight: float = 0.3,
        clip_sigma: float = 4.0,
        features: Sequence[str] | None = None,
    ) -> None:
        if warmup < 0:
            raise ValueError("warmup must be >= 0")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        if not 0.0 < fading_factor <= 1.0:
            raise ValueError("fading_factor must be in (0, 1]")
        if calibration_size < 1 or tail_decades <= 0:
            raise ValueError("calibration_size must be >= 1 and tail_decades > 0")
        self.warmup = int(warmup)
        self.threshold = float(threshold)
        self.seed = int(seed)
        self.window_size = int(window_size) if window_size is not None else max(self.warmup, 16)
        self.fading_factor = float(fading_factor)
        self.calibration_size = int(calibration_size)
        self.tail_decades = float(tail_decades)
        self.extremeness_weight = float(extremeness_weight)
        self.clip_sigma = float(clip_sigma)
        self.features: tuple[str, ...] | None = tuple(sorted(features)) if features is not None else None
        self._scaler = river_compat.adaptive_scaler(self.fading_factor)
        self._hst = river_compat.half_space_trees(n_trees, height, self.window_size, self.seed)
        self._calib = np.zeros(self.calibration_size, dtype=np.float32)
        self._n_calib = 0
        self._calib_pos = 0
        self._episode: list[float] = []  # raw scores of the current run of alarms
        self._split_crc: int | None = None  # checksum of the trees' split points (see __getstate__)
        self.n_learned = 0

    # -- protocol --------------------------------------------------------------
    @property
    def warm(self) -> bool:
        """True once warm-up is over and the trees hold a reference window (they learn every point)."""
        return self.n_learned >= self.warmup and self.n_learned >= self.window_size

    def score_one(self, x: Mapping[str, float]) -> float:
        """Calibrated anomaly score in [0, 1] (0.0 during warm-up); does not learn."""
        if not self.warm:
            return 0.0
        return self._calibrate(self._raw(self._vector(x)))

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update scaler, trees and calibration set with one point."""
        v = self._vector(x)
        if self.warm:
            raw = self._raw(v)
            self._learn(v, raw, self._calibrate(raw))
        else:
            self._learn(v, None, 0.0)

    def process_one(self, x: Mapping[str, float]) -> AnomalyScore:
        """Score ``x`` with the model as it was, then learn it."""
        v = self._vector(x)
        warm = self.warm
        if warm:
            raw = self._raw(v)
            score = self._calibrate(raw)
        else:
            raw, score = None, 0.0
        self._learn(v, raw, score)
        return AnomalyScore(score=score, threshold=self.threshold, is_anomaly=warm and score >= self.threshold, warm=warm)

    def process_many(self, xs: Iterable[Mapping[str, float]]) -> list[AnomalyScore]:
        """``process_one`` over ``xs`` in order (same results, one call)."""
        return [self.process_one(x) for x in xs]

    def __getstate__(self) -> dict[str, object]:
        # Called for every touched detector after every batch: keep it cheap (no
        # per-node Python tuples; the split checksum is computed once per tree set).
        state = {k: v for k, v in self.__dict__.items() if k not in ("_hst", "_calib", "_split_crc")}
        hst = self._hst
        state["_calib"] = self._calib[: self._n_calib].copy()
        state["_hst_params"] = (hst.n_trees, hst.height, hst.window_size, hst.seed)
        state["_hst_counter"], masses = river_compat.forest_state(hst)
        if masses is not None:
            state["_hst_mass"] = masses
            if self._split_crc is None:
                self._split_crc = river_compat.split_checksum(hst)
            state["_hst_check"] = self._split_crc
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        params, window = state.pop("_hst_params"), state.pop("_hst_counter")
        masses, check = state.pop("_hst_mass", None), state.pop("_hst_check", None)
        calib = np.zeros(state["calibration_size"], dtype=np.float32)
        got = state.pop("_calib")
        calib[: len(got)] = got
        self.__dict__.update(state)
        self._calib = calib
        self._hst = river_compat.restore_forest(params, self.features or (), window, masses, check)
        self._split_crc = check

    # -- internals -------------------------------------------------------------
    def _vector(self, x: Mapping[str, float]) -> dict[str, float]:
        if self.features is None:
            self.features = tuple(sorted(x))
            if not self.features:
                raise ValueError("the first point has no features")
        out = {}
        for k in self.features:
            v = x.get(k, 0.0)
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = 0.0
            out[k] = v if math.isfinite(v) else 0.0
        return out

    def _winsorized(self, v: dict[str, float]) -> dict[str, float]:
        """``v`` clipped to mean +- clip_sigma * std: an excursion must not inflate the variance it is measured by."""
        means, variances, c = self._scaler.means, self._scaler.vars, self.clip_sigma
        out = {}
        for k, x in v.items():
            if k in means:
                mu, var = means[k].get(), variances[k].get()
                if var > 0.0:
                    half = c * math.sqrt(var)
                    x = min(max(x, mu - half), mu + half)
            out[k] = x
        return out

    def _squashed(self, v: dict[str, float]) -> dict[str, float]:
        z = self._scaler.transform_one(v)
        return {k: 0.5 + 0.5 * math.tanh(zk * 0.25) for k, zk in z.items()}

    def _raw(self, v: dict[str, float]) -> float:
        z = self._scaler.transform_one(v)
        raw = self._hst.score_one({k: 0.5 + 0.5 * math.tanh(zk * 0.25) for k, zk in z.items()})
        if self.extremeness_weight:
            # HST saturates: every point in an empty region gets the same top score, so a
            # sustained or growing excursion would tie with the past. The largest |z| breaks it.
            raw += self.extremeness_weight * math.tanh(max(map(abs, z.values())) / 8.0)
        return float(np.float32(raw))

    def _calibrate(self, raw: float) -> float:
        n = self._n_calib
        ge = int(np.count_nonzero(self._calib[:n] >= np.float32(raw))) if n else 0
        p = (1.0 + ge) / (1.0 + n)
        return min(1.0, -math.log10(p) / self.tail_decades)

    def _learn(self, v: dict[str, float], raw: float | None, score: float) -> None:
        if raw is not None:
            # An alarm's raw score waits until its episode ends before it joins the
            # calibration set: inside a sustained anomaly, earlier alarms would
            # otherwise make the later ones look ordinary (HST scores saturate and
            # tie). Folding them in afterwards keeps the set's upper tail, so the
            # false-alarm rate on normal data stays calibrated. An episode longer
            # than ``window_size`` is the new normal and is folded in at once.
            if score >= self.threshold:
                self._episode.append(raw)
                if len(self._episode) >= self.window_size:
                    self._fold_episode()
            else:
                self._fold_episode()
                self._remember(raw)
        if not self._hst.trees:
            river_compat.plant_trees(self._hst, self.features or ())
        # Trees see the point scaled by the statistics *before* it, like the score did.
        self._hst.learn_one(self._squashed(v))
        self._scaler.learn_one(self._winsorized(v) if self.clip_sigma else v)
        self.n_learned += 1

    def _remember(self, raw: float) -> None:
        self._calib[self._calib_pos] = raw
        self._calib_pos = (self._calib_pos + 1) % self.calibration_size
        self._n_calib = min(self._n_calib + 1, self.calibration_size)

    def _fold_episode(self) -> None:
        for r in self._episode:
            self._remember(r)
        self._episode.clear()

    def __repr__(self) -> str:
        return (
            f"AnomalyDetector(name={self.name!r}, version={self.version!r}, warm={self.warm}, "
            f"n_learned={self.n_learned}, features={len(self.features or ())})"
        )


#: What the fast (sudden-change) part of every :class:`ConditionMonitor` is built with.
#: Memories of a few hundred points: a daily cycle of a few hundred rows (NAB) and
#: a few days of 10-minute snapshots (IMS) both fit.
class FastParams(TypedDict):
    """The keyword arguments of :class:`AnomalyDetector` that :data:`FAST_DEFAULTS` sets."""

    warmup: int
    window_size: int
    fading_factor: float
    calibration_size: int
    tail_decades: float
    clip_sigma: float


FAST_DEFAULTS: FastParams = {
    "warmup": 300,
    "window_size": 300,
    "fading_factor": 0.002,
    "calibration_size": 3000,
    "tail_decades": 3.5,
    "clip_sigma": 0.0,
}

#: Vibration features judged as amplitudes (a factor on the reference), as powers
#: (the factor squared), upward only in noise units, or not at all (frequencies,
#: shapes and ratios move with the operating point, not with the machine's health).
AMPLITUDE_FEATURES = frozenset({"rms", "peak", "crest_factor", "kurtosis"})
DEFECT_BANDS = ("bpfo", "bpfi", "bsf", "ftf")
POWER_FEATURES = frozenset({"envelope_energy", *(f"band_{k}" for k in range(8)), *(f"{d}_energy" for d in DEFECT_BANDS)})
UPWARD_FEATURES = frozenset({"spectral_kurtosis"})
#: Scalar windows: the window mean is the level; the other statistics are the fast part's.
IGNORED_FEATURES = frozenset({
    "dc", "skewness", "dominant_freq_hz", "dominant_amplitude", "spectral_centroid_hz", "spectral_kurtosis_freq_hz",
    *(f"{d}_ratio" for d in DEFECT_BANDS), "std", "min", "max", "last", "slope", "range", "value", "diff",
})

#: The alert distance is never under this fraction of the alert margin (a quiet sensor's noise is not its repeatability).
FLOOR_FRACTION = 0.1
#: Severity (departure / alert margin) from which a departure is in the danger zone.
DANGER_SEVERITY = 4.0


def feature_kind(name: str) -> str | None:
    """How the reference judges a rise of ``name``: as an amplitude, a power, in noise units (upward, level), or not (None)."""
    if name in AMPLITUDE_FEATURES:
        return "amplitude"
    if name in POWER_FEATURES:
        return "power"
    if name in UPWARD_FEATURES:
        return "upward"
    if name in IGNORED_FEATURES:
        return None
    return "level"  # the window mean of a scalar sensor, a channel of a row (C-MAPSS)


@dataclass(frozen=True, slots=True)
class Departure:
    """One feature away from its reference: ``factor = value / reference``, ``severity`` 1.0 at the alert level."""

    feature: str
    value: float
    reference: float
    factor: float
    severity: float

    def as_dict(self) -> dict[str, float | str]:
        return {"feature": self.feature, "value": round(self.value, 6), "reference": round(self.reference, 6),
                "factor": round(self.factor, 3), "severity": round(self.severity, 2)}


class HealthyReference:
    """A protected healthy reference per feature, learned at commissioning, guarded afterwards.

    Why: a detector that keeps learning calls a slow degradation the new normal.
    This one learns the machine's healthy level during ``warmup`` points
    (commissioning) and afterwards only lets *normal* points move it, slowly
    (memory ``tau``) and never further than ``max_drift`` of the alert distance
    from the commissioned baseline, so a sustained departure stays flagged for as
    long as it lasts. Only :meth:`reset` (a maintenance event) recommissions it.

    Run-in: the first half of commissioning is discarded; the baseline is the
    median of the second half and its noise the MAD, so a machine that settles
    to a new level during its first hours is judged against the settled level.

    Alarm, rises only (a fall is left to the sudden-change detector: vibration
    and temperature faults rise):

    - *Alert distance* ``d``: whichever comes first of ``z_alert`` noise units
      (a statistically clear departure; on a quiet channel a few per cent) and,
      for a positive amplitude or level, ``alert_factor`` times the reference
      (powers: its square; ISO 20816's "alert = baseline + 25 %"), but never
      under ``FLOOR_FRACTION`` of that margin (2.5 %: a very quiet sensor's
      noise is not the machine's repeatability).
    - *Sustained departure*: Page's CUSUM of the rise in alert distances,
      ``S <- min(max(0, S + (x - ref) / d - 1), 1.5 sustain)``; the feature is in
      alarm while ``S >= sustain``. A departure of twice the alert distance alarms
      after ``sustain`` points, one of eleven times after a tenth of that, and a
      short burst that decays (a transient) does not accumulate enough; a
      departure that lasts keeps ``S`` up, so it stays flagged.
    - *Danger*: ``DANGER_SEVERITY`` times ``z_alert`` noise units up and, with a
      margin, as many alert margins (twice the reference RMS), at once.

    A :class:`Departure`'s ``severity`` is ``S / sustain`` (1.0: alert), or the
    danger-zone factor severity when that is reached.
    """

    def __init__(self, warmup: int = 300, alert_factor: float = 1.25, z_alert: float = 8.0,
                 tau: float = 3000.0, max_drift: float = 0.5, sustain: float = 175.0) -> None:
        if (warmup < 2 or alert_factor <= 1.0 or z_alert <= 0 or tau < 1 or not 0 <= max_drift < 1
                or sustain <= 0):
            raise ValueError("HealthyReference: warmup >= 2, alert_factor > 1, z_alert > 0, tau >= 1, "
                             "0 <= max_drift < 1, sustain > 0")
        self.warmup, self.alert_factor, self.z_alert = int(warmup), float(alert_factor), float(z_alert)
        self.tau, self.max_drift, self.sustain = float(tau), float(max_drift), float(sustain)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next ``warmup`` points commission the reference again."""
        self.n_seen = 0
        self._commissioning: dict[str, list[float]] = {}
        # feature -> (median, noise, relative alert margin: 0 when judged in noise units only)
        self.baseline: dict[str, tuple[float, float, float]] = {}
        self.reference: dict[str, float] = {}
        self.cusum: dict[str, float] = {}

    @property
    def commissioned(self) -> bool:
        return bool(self.reference)

    def _distance(self, ref: float, noise: float, margin: float) -> float:
        """The alert distance above ``ref``: the nearer of ``z_alert`` noise units and the alert factor, floored."""
        d = self.z_alert * noise
        if not margin:
            return d
        rel = abs(ref) * margin
        return min(max(d, rel * FLOOR_FRACTION), rel)

    def assess(self, x: Mapping[str, float]) -> tuple[list[Departure], dict[str, float]]:
        """Every judged feature's departure, most severe first, and the CUSUM after ``x`` (both empty while commissioning).

        Pure: hand the CUSUM to :meth:`learn_one` to keep it, so a point is judged once.
        """
        out, cusum = [], {}
        z_alert, sustain, distance = self.z_alert, self.sustain, self._distance
        for name, ref in self.reference.items():
            v = x.get(name)
            if v is None or not math.isfinite(v):
                continue
            _, noise, margin = self.baseline[name]
            s = min(max(0.0, self.cusum.get(name, 0.0) + (v - ref) / distance(ref, noise, margin) - 1.0), 1.5 * sustain)
            cusum[name] = s
            sev = s / sustain
            zone = (v - ref) / noise / z_alert
            if margin:
                zone = min(zone, (v / ref - 1.0) / margin)
            if zone >= DANGER_SEVERITY:
                sev = max(sev, zone)
            out.append(Departure(name, float(v), ref, v / ref if ref else math.inf, sev))
        out.sort(key=lambda d: d.severity, reverse=True)
        return out, cusum

    def departures(self, x: Mapping[str, float]) -> list[Departure]:
        """Every judged feature's departure from the reference, most severe first (empty while commissioning)."""
        return self.assess(x)[0]

    def severity(self, x: Mapping[str, float]) -> float:
        d = self.departures(x)
        return d[0].severity if d else 0.0

    def learn_one(self, x: Mapping[str, float], normal: bool = True, cusum: Mapping[str, float] | None = None) -> None:
        """Commission with ``x``; afterwards keep its CUSUM (``assess(x)``'s, computed if not given), and let it move the reference if ``normal``."""
        self.n_seen += 1
        if not self.commissioned:
            for name, value in x.items():
                if feature_kind(name.rpartition(":")[2]) is not None and math.isfinite(value):
                    self._commissioning.setdefault(name, []).append(float(value))
            if self.n_seen >= self.warmup:
                self._commission()
            return
        self.cusum.update(self.assess(x)[1] if cusum is None else cusum)
        if not normal:
            return
        for name, ref in self.reference.items():
            v = x.get(name)
            if v is None or not math.isfinite(v):
                continue
            base, noise, margin = self.baseline[name]
            half = self._distance(base, noise, margin) * self.max_drift
            self.reference[name] = min(max(ref + (v - ref) / self.tau, base - half), base + half)

    def _commission(self) -> None:
        for name, values in self._commissioning.items():
            settled = np.asarray(values[len(values) // 2 :])
            if settled.size == 0:
                continue
            med = float(np.median(settled))
            noise = 1.4826 * float(np.median(np.abs(settled - med)))
            noise = max(noise, 1e-6 * abs(med), 1e-12)
            kind = feature_kind(name.rpartition(":")[2])
            margin = 0.0  # judged in noise units only
            if settled.min() > 0.0 and kind != "upward":  # also as a factor on the reference
                margin = self.alert_factor ** 2 - 1.0 if kind == "power" else self.alert_factor - 1.0
            self.baseline[name] = (med, noise, margin)
            self.reference[name] = med
            self.cusum[name] = 0.0
        self._commissioning = {}


#: The one detector configuration: ``detect``, the evaluations and the anomaly
#: agent all build :class:`ConditionMonitor` from it.
class ReferenceParams(TypedDict):
    """The keyword arguments of :class:`HealthyReference`."""

    warmup: int
    alert_factor: float
    z_alert: float
    tau: float
    max_drift: float
    sustain: float


REFERENCE_DEFAULTS: ReferenceParams = {
    "warmup": 300, "alert_factor": 1.25, "z_alert": 8.0, "tau": 3000.0, "max_drift": 0.5, "sustain": 175.0,
}
#: The fast part's calibrated score that counts as an alert: 0.8 = one point in ~600 on data like the recent past.
FAST_ALERT = 0.8
ALERT_SCORE = 0.5
#: Points over which a continuing alarm is reported at the alert level (0.5) unless it gets worse.
ONSET_HOLD = 200


def _over_alert(value: float, alert: float) -> float:
    """A part's score at or above its own ``alert`` level (up to 1), mapped linearly onto the published [0.5, 1]."""
    return ALERT_SCORE + (1.0 - ALERT_SCORE) * (value - alert) / (1.0 - alert)


class NoveltyParams(TypedDict):
    """The keyword arguments of :class:`~mantis_stream.models.novelty.TransitionNovelty`."""

    warmup: int
    levels: int
    order: int
    alert: float
    rest: int
    margin: float
    keep: int


NOVELTY_DEFAULTS: NoveltyParams = {"warmup": 300, "levels": 3, "order": 4, "alert": 0.75, "rest": 150, "margin": 0.25,
                                   "keep": 300}
#: The feature whose level transitions the novelty part watches: a scalar window's last value, i.e. the raw
#: reading (the feature stage's sliding windows and ``detect``'s ``ScalarFeaturizer`` both carry it).
NOVELTY_FEATURE = "last"


@dataclass(slots=True)
class MonitorResult:
    """One scored point. ``score`` in [0, 1]: 0.5 is the alert level, 0.8 the danger zone; ``level`` names it."""

    score: float
    threshold: float
    is_anomaly: bool
    warm: bool
    level: str
    departures: list[Departure]


class ConditionMonitor(Pickled):
    """Condition monitoring for one (asset, sensor): a protected healthy reference plus a sudden-change detector.

    The reference (:class:`HealthyReference`) catches sustained departures,
    however slowly they came; the fast part (:class:`AnomalyDetector`, Half-Space
    Trees with a conformal score) catches sudden changes in any feature, also
    ones the reference does not judge.

    Published score, in [0, 1], 0.5 at the alert level (``is_anomaly``):

    - the reference's part, ``min(severity / (1 + severity), 0.5)``: how close
      the worst feature is to its alert level, 0.5 for as long as a departure
      lasts (the zone, alert or danger, is ``level``; the features ``departures``);
    - replaced by the fast part's *surprise* when that is an alert and beats
      every one of the last ``ONSET_HOLD`` points: its calibrated score ``f``
      mapped linearly from ``FAST_ALERT`` (0.5) to 1.0 ("more extreme than every
      recent point"). A sudden change is an event, reported once (and again
      if it worsens): persistence rules (work orders, ``detect``'s runs) count
      sustained departures from the reference and growing surprises, and an
      event-level scorer (NAB) sees onsets;
    - or by the novelty part's onset if that is higher: when the features carry
      the raw reading (``NOVELTY_FEATURE``, scalar sensors), a :class:`TransitionNovelty`
      watches its level transitions; an onset at or above its alert level is
      mapped linearly from 0.5 to 1.0 and reported once per ``rest`` points.

    Points at or above the alert level do not move the reference.
    """

    name: str = "guarded-reference"
    version: str = "4"
    #: Layout of :meth:`to_bytes`; older layouts are migrated in :meth:`from_bytes`.
    STATE_VERSION = 4

    def __init__(self, seed: int = 42) -> None:
        self.state_version = self.STATE_VERSION
        self.seed = int(seed)
        self.reference = HealthyReference(**REFERENCE_DEFAULTS)
        self.fast = AnomalyDetector(threshold=FAST_ALERT, seed=self.seed, **FAST_DEFAULTS)
        self.novelty = TransitionNovelty(**NOVELTY_DEFAULTS)
        self._recent = np.zeros(ONSET_HOLD, dtype=np.float32)  # the last ONSET_HOLD condition scores (ring)
        self._n_recent = 0

    @property
    def warm(self) -> bool:
        return self.reference.commissioned

    def reset(self) -> None:
        """A maintenance event: commission afresh (both parts)."""
        self.reference.reset()
        self.fast = AnomalyDetector(threshold=FAST_ALERT, seed=self.seed, **FAST_DEFAULTS)
        self.novelty.reset()
        self._recent[:] = 0.0
        self._n_recent = 0

    def score_one(self, x: Mapping[str, float]) -> float:
        """The published score of ``x`` (0.0 while commissioning); does not learn."""
        if not self.warm:
            return 0.0
        condition, surprise = self._parts(self.reference.departures(x), self.fast.score_one(x))
        value = x.get(NOVELTY_FEATURE)
        novel = self.novelty.score_one(value) if value is not None else 0.0
        return max(self._published(condition, surprise), self._novelty_part(novel))

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.process_one(x)

    def process_one(self, x: Mapping[str, float]) -> MonitorResult:
        """Score ``x`` against the state before it, then learn it (the reference only if it is normal)."""
        warm = self.warm
        fast = self.fast.process_one(x).score
        value = x.get(NOVELTY_FEATURE)
        novel = self.novelty.process_one(value) if value is not None else 0.0
        departures: list[Departure] = []
        score = 0.0
        cusum = None
        if warm:
            departures, cusum = self.reference.assess(x)
            condition, surprise = self._parts(departures, fast)
            score = max(self._published(condition, surprise), self._novelty_part(novel))
            self._recent[self._n_recent % ONSET_HOLD] = max(condition, surprise)
            self._n_recent += 1
        is_anomaly = warm and score >= ALERT_SCORE
        self.reference.learn_one(x, normal=not is_anomaly, cusum=cusum)
        level = "normal"
        if is_anomaly:
            level = "danger" if departures and departures[0].severity >= DANGER_SEVERITY else "alert"
        return MonitorResult(score, ALERT_SCORE, is_anomaly, warm, level, departures)

    def process_many(self, xs: Iterable[Mapping[str, float]]) -> list[MonitorResult]:
        """``process_one`` over ``xs`` in order."""
        return [self.process_one(x) for x in xs]

    def _published(self, condition: float, surprise: float) -> float:
        """The surprise if it is an alert and beats the last ``ONSET_HOLD`` points, else the reference's part."""
        n = min(self._n_recent, ONSET_HOLD)
        if surprise >= ALERT_SCORE and (not n or np.float32(surprise) > self._recent[:n].max()):
            return surprise
        return condition

    def _novelty_part(self, novel: float) -> float:
        """A novelty onset at or above its alert level, mapped from 0.5 to 1.0; 0 otherwise."""
        return _over_alert(novel, self.novelty.alert) if novel >= self.novelty.alert else 0.0

    def _parts(self, departures: list[Departure], fast: float) -> tuple[float, float]:
        """(the reference's part, the fast part's surprise), both 0.5 at their alert level."""
        sev = departures[0].severity if departures else 0.0
        condition = min(sev / (1.0 + sev), ALERT_SCORE)
        if fast >= FAST_ALERT:
            surprise = _over_alert(fast, FAST_ALERT)
        else:
            surprise = ALERT_SCORE * fast / FAST_ALERT
        return condition, surprise

    # -- persistence -----------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> ConditionMonitor:
        """Inverse of :meth:`to_bytes`; older states are migrated.

        Version 1 (an :class:`AnomalyDetector` alone) forgot its healthy reference
        on purpose, so none can be recovered from it: the monitor starts
        commissioning again. Version 2 (a reference without the CUSUM) keeps its
        commissioned baseline and takes this release's alarm settings, the CUSUM
        starting at zero. Versions 2 and 3 gain a novelty part that commissions
        over the next points.
        """
        obj = pickle.loads(data)
        if isinstance(obj, AnomalyDetector):
            return cls(seed=obj.seed)
        if not isinstance(obj, cls):
            raise TypeError(f"not a {cls.__name__} state: {type(obj).__name__}")
        if getattr(obj, "state_version", 0) > cls.STATE_VERSION:
            raise ValueError(f"monitor state version {obj.state_version} is newer than this release's {cls.STATE_VERSION}")
        if obj.state_version < 3:
            ref, d = obj.reference, REFERENCE_DEFAULTS
            ref.alert_factor, ref.z_alert, ref.tau = d["alert_factor"], d["z_alert"], d["tau"]
            ref.max_drift, ref.sustain = d["max_drift"], d["sustain"]
            ref.cusum = dict.fromkeys(ref.reference, 0.0)
        if obj.state_version < 4:
            obj.novelty = TransitionNovelty(**NOVELTY_DEFAULTS)
            obj.state_version = cls.STATE_VERSION
        return obj


def detect_series(values: Sequence[float] | np.ndarray, *, window: int = 10) -> np.ndarray:
    """Causal published scores in [0, 1] for a scalar series, one per value (0.5: alert).

    Each value is turned into features by :class:`~mantis_stream.dsp.stats.ScalarFeaturizer`
    (the window statistics the feature stage computes for scalar sensors, plus the
    value and its change), then scored and learned by one :class:`ConditionMonitor`.
    Row ``i``'s score depends on rows ``0..i`` only.
    """
    from mantis_stream.dsp.stats import ScalarFeaturizer

    monitor = ConditionMonitor()
    fz = ScalarFeaturizer(window)
    return np.array([monitor.process_one(fz.push(v)).score for v in values], dtype=np.float64)
