"""Health indicators updated one observation at a time, with O(1) state.

Why this exists: the RUL agent sees one message per cycle (or per vibration
frame) per asset and must keep its per-asset state small enough for a Faust
table, while the offline commands must compute *exactly* the same numbers from
a whole history. So every indicator here is a recursive filter over a flat
state vector of floats: the agent stores the vector, training and evaluation
run the same ``update`` over the rows. No windows of raw history are kept.

Two indicators:

- :class:`CmapssFeaturizer`: multi-sensor channels (C-MAPSS ``s1`` .. ``s21``),
  standardised per operating regime, then fast and slow exponentially weighted
  means, an exponentially weighted linear trend per sensor, the drift from the
  asset's own first cycles, and its age. A trained regressor
  (:mod:`mantis_stream.models.rul`) maps these to RUL.
- :class:`GenericHealth`: anything else (vibration frame features such as
  ``rms``/``kurtosis``, scalar window statistics). Growth of a severity feature
  relative to the asset's own early baseline, smoothed. For vibration (log
  ratio of RMS): onset detection (level and a significant trend), then an
  exponential degradation model with a Bayesian slope (prior from the training
  bearings) extrapolated to the failure threshold, bounds from its posterior;
  before onset, "beyond the horizon". For scalar drift: a weighted linear trend
  extrapolated once significant, bounds from its standard error counted in
  independent values, not messages.

Notes: trends use exponential forgetting with *relative* time (sums of ages,
not of absolute times), so no cancellation grows with the asset's age.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import stdtrit

# --------------------------------------------------------------------------------------
# C-MAPSS-style multi-channel features
# --------------------------------------------------------------------------------------


@dataclass
class CmapssFeaturizer:
    """Per-cycle features from channel readings (parameters are learnt in training).

    ``sensors``: the channels used (K); ``settings``: the operating-setting
    channels that pick a regime; ``centers`` (R, len(settings)) regime centres
    in units of ``settings_scale``; ``mean``/``std`` (R, K) per-regime sensor
    standardisation. ``lam_fast``/``lam_slow``/``lam_trend``: forgetting
    factors per cycle; ``baseline_n``: cycles averaged as the asset's baseline.
    """

    sensors: list[str]
    settings: list[str]
    centers: np.ndarray
    settings_scale: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lam_fast: float = 0.8
    lam_slow: float = 0.9
    lam_trend: float = 0.9
    baseline_n: int = 10
    age_scale: float = 100.0
    trend_scale: float = 50.0

    # state layout: [n, S0f, S0s, S0t, Su, Suu, nb] + 5 vectors of K
    _HEAD = 7

    @property
    def k(self) -> int:
        return len(self.sensors)

    @property
    def n_features(self) -> int:
        return 4 * self.k + 1

    def feature_names(self) -> list[str]:
        names = [f"{s}_fast" for s in self.sensors] + [f"{s}_slow" for s in self.sensors]
        names += [f"{s}_trend" for s in self.sensors] + [f"{s}_drift" for s in self.sensors]
        return [*names, "age"]

    def accepts(self, features: Mapping[str, float]) -> bool:
        """True when every channel the model needs is present."""
        return all(s in features for s in self.sensors) and all(s in features for s in self.settings)

    def init_state(self) -> np.ndarray:
        return np.zeros(self._HEAD + 5 * self.k, dtype=np.float64)

    def standardise(self, features: Mapping[str, float]) -> np.ndarray:
        """Sensor values as z-scores of the nearest operating regime."""
        x = np.fromiter((features[s] for s in self.sensors), dtype=np.float64, count=self.k)
        r = 0
        if len(self.centers) > 1:
            st = np.fromiter((features[s] for s in self.settings), dtype=np.float64, count=len(self.settings))
            d = (((st / self.settings_scale) - self.centers) ** 2).sum(axis=1)
            r = int(np.argmin(d))
        z: np.ndarray = (x - self.mean[r]) / self.std[r]
        return z

    def update(self, state: np.ndarray, features: Mapping[str, float], age: float) -> np.ndarray:
        """Fold one cycle into ``state`` (in place) and return the feature vector."""
        k, h = self.k, self._HEAD
        z = self.standardise(features)
        if not np.all(np.isfinite(z)):
            raise ValueError("channel values must be finite")
        zf, zs, zt, uz, zb = (state[h + i * k : h + (i + 1) * k] for i in range(5))
        n, s0f, s0s, s0t, su, suu, nb = state[:h]
        lf, ls, lt = self.lam_fast, self.lam_slow, self.lam_trend
        # exponentially weighted means (weights sums kept: no start-up bias)
        s0f = lf * s0f + 1.0
        zf *= lf
        zf += z
        s0s = ls * s0s + 1.0
        zs *= ls
        zs += z
        # weighted trend: old points age by one cycle, then the new one at age 0
        uz *= lt
        uz += lt * zt
        zt *= lt
        zt += z
        suu = lt * (suu + 2.0 * su + s0t)
        su = lt * (su + s0t)
        s0t = lt * s0t + 1.0
        if nb < self.baseline_n:
            zb += z
            nb += 1.0
        n += 1.0
        state[:h] = (n, s0f, s0s, s0t, su, suu, nb)
        return self.features_from_state(state, age)

    def features_from_state(self, state: np.ndarray, age: float) -> np.ndarray:
        k, h = self.k, self._HEAD
        zf, zs, zt, uz, zb = (state[h + i * k : h + (i + 1) * k] for i in range(5))
        _n, s0f, s0s, s0t, su, suu, nb = state[:h]
        mean_f = zf / s0f
        mean_s = zs / s0s
        den = s0t * suu - su * su
        if den > 1e-9:
            slope = -(s0t * uz - su * zt) / den  # per cycle, forward in time
        else:
            slope = np.zeros(k)
        drift = mean_s - zb / max(nb, 1.0)
        return np.concatenate([mean_f, mean_s, slope * self.trend_scale, drift, [age / self.age_scale]])

    def to_json(self) -> dict[str, Any]:
        return {
            "sensors": list(self.sensors),
            "settings": list(self.settings),
            "centers": self.centers.tolist(),
            "settings_scale": self.settings_scale.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "lam_fast": self.lam_fast,
            "lam_slow": self.lam_slow,
            "lam_trend": self.lam_trend,
            "baseline_n": self.baseline_n,
            "age_scale": self.age_scale,
            "trend_scale": self.trend_scale,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CmapssFeaturizer:
        return cls(
            sensors=list(d["sensors"]),
            settings=list(d["settings"]),
            centers=np.asarray(d["centers"], dtype=np.float64).reshape(len(d["centers"]), len(d["settings"])),
            settings_scale=np.asarray(d["settings_scale"], dtype=np.float64),
            mean=np.asarray(d["mean"], dtype=np.float64).reshape(-1, len(d["sensors"])),
            std=np.asarray(d["std"], dtype=np.float64).reshape(-1, len(d["sensors"])),
            lam_fast=float(d.get("lam_fast", 0.8)),
            lam_slow=float(d.get("lam_slow", 0.9)),
            lam_trend=float(d.get("lam_trend", 0.9)),
            baseline_n=int(d.get("baseline_n", 10)),
            age_scale=float(d.get("age_scale", 100.0)),
            trend_scale=float(d.get("trend_scale", 50.0)),
        )


# --------------------------------------------------------------------------------------
# Generic severity-growth indicator (vibration frame features, scalar windows)
# --------------------------------------------------------------------------------------

#: Severity features, in order of preference: the first present is tracked
#: (``rms``: vibration frames; ``mean``: scalar windows, tracked as z-score drift).
SEVERITY_KEYS: tuple[str, ...] = ("rms", "mean", "std", "peak")
#: Keys that grow with damage and are positive: tracked as log ratio to baseline.
LOG_KEYS: frozenset[str] = frozenset({"rms", "std", "peak", "peak_to_peak", "envelope_energy", "energy"})


@dataclass
class GenericParams:
    """Parameters of :class:`GenericHealth` (learnt by ``train-rul --format femto``).

    Times are in the tracker's unit (seconds or cycles). ``threshold``: the
    indicator (log ratio to baseline, or z-score drift) at end of life;
    ``onset``: level above which the asset counts as degrading once its trend
    is significant; z-score modes use the same fraction of ``threshold_z``.

    Log growth (vibration RMS) after onset: an exponential degradation model,
    the log ratio rising linearly from the onset level, whose slope has a
    Gaussian prior (``slope_prior`` +- ``slope_prior_sd`` per unit of time, from
    the training bearings) updated by Bayesian linear regression on every
    message (forgetting time constant ``tau_trend``), capped at the
    horizon (a degrading bearing does not outlive a healthy one). Before onset:
    beyond the horizon, ``horizon``: the PHM 2012-optimal guess over the training
    bearings' remaining lives while they had not reached onset (reported as
    the RUL when the age is the part's age, a run-to-failure test from new,
    else as the lower bound with ``max_rul`` as the RUL: online, "at least the
    horizon" must not open a work order). Without a trained horizon, and for
    z-score drift, the RUL before onset is ``max_rul``. ``warning_min``: the
    shortest time from onset to failure in training, the lower bound before onset.
    """

    baseline_n: int = 30
    tau_smooth: float = 60.0
    tau_trend: float = 600.0
    threshold: float = 1.6
    threshold_z: float = 8.0
    onset: float = 0.35
    slope_prior: float | None = None
    slope_prior_sd: float | None = None
    horizon: float | None = None
    warning_min: float | None = None
    max_rul: float = 86_400.0
    min_rul: float = 0.0
    rul_scale: float = 1.0
    z_bounds: float = 1.645

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GenericParams:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class GenericEstimate:
    rul: float
    lower: float
    upper: float
    health_index: float
    level: float
    degrading: bool = False


@dataclass
class GenericHealth:
    """Online severity growth and its extrapolation to the failure threshold.

    State: a flat list of floats (plain Python floats: this runs once per
    vibration frame, where numpy's per-call overhead would dominate),
    ``[n, t0, t_last, b_sum, b_sq, w_l, l_sum, S0, Su, Suu, Sy, Suy, Syy, b_spread, Sdt,
    degrading]`` plus, in multi-key mode, per-key baseline
    sums and squares. ``keys``: the feature(s) tracked, fixed at the first update.

    Onset: on a healthy asset the smoothed indicator wanders, and any upward
    wander extrapolates to a finite RUL. So the asset counts as degrading only
    once the level has passed the onset *and* the slope's lower confidence bound
    is above zero; its standard error counts the independent information in the
    smoothed level (consecutive values of an exponential smoother with time
    constant ``tau_smooth`` are nearly the same number), not the number of
    messages. Log growth (vibration) then stays degrading (damage does not
    heal) and runs the Bayesian exponential model of :class:`GenericParams`;
    other modes keep the weighted trend while its slope stays positive
    (hysteresis: a level hovering at the onset must not flip the RUL, re-arming
    work orders). Before onset: beyond the horizon (see :class:`GenericParams`).
    """

    params: GenericParams
    keys: list[str] = field(default_factory=list)
    log_mode: bool = True
    #: Whether the tracker's age is the part's age (a run-to-failure test from new),
    #: so the age-dependent horizon applies; else the RUL before onset is ``max_rul``.
    life_prior: bool = True

    HEAD = 16

    @classmethod
    def for_features(cls, params: GenericParams, features: Mapping[str, float], life_prior: bool = True) -> GenericHealth:
        """Pick what to track from the first message's keys."""
        for key in SEVERITY_KEYS:
            if key in features:
                return cls(params, [key], key in LOG_KEYS, life_prior)
        keys = sorted(k for k in features)[:64]
        return cls(params, keys, False, life_prior)

    def init_state(self) -> list[float]:
        extra = 2 * len(self.keys) if len(self.keys) > 1 else 0
        return [0.0] * (self.HEAD + extra)

    def _raw(self, features: Mapping[str, float]) -> list[float] | None:
        try:
            x = [float(features[k]) for k in self.keys]
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in x):
            return None
        if self.log_mode:
            if x[0] <= 0:
                return None
            return [math.log(x[0])]
        return x

    @staticmethod
    def _spread(features: Mapping[str, float]) -> float:
        """The readings' own spread within a scalar window (``std``), 0 when absent."""
        try:
            sd = float(features.get("std", 0.0))
        except (TypeError, ValueError):
            return 0.0
        return sd if math.isfinite(sd) and sd > 0 else 0.0

    def _indicator(self, state: list[float], x: list[float], nbase: float) -> tuple[float, float, float]:
        """(growth over the asset's baseline, its end-of-life threshold, its onset level).

        z-drift of a single key is measured in units of the larger of the
        readings' within-window spread and the baseline spread of the key itself:
        the sd of a few dozen overlapping window means has only a handful of
        degrees of freedom and is often far too small, which made noise look
        like drift. The onset is the same fraction of the threshold in every mode.
        """
        p = self.params
        onset_frac = p.onset / p.threshold
        if len(self.keys) > 1:
            kk, h = len(self.keys), self.HEAD
            acc = 0.0
            for j in range(kk):
                m = state[h + j] / nbase
                sd = math.sqrt(max(state[h + kk + j] / nbase - m * m, 0.0)) + 1e-9 + 1e-6 * abs(m)
                acc += ((x[j] - m) / sd) ** 2
            return math.sqrt(acc / kk), p.threshold_z, onset_frac * p.threshold_z
        m = state[3] / nbase
        if self.log_mode:
            return x[0] - m, p.threshold, p.onset
        sd = max(math.sqrt(max(state[4] / nbase - m * m, 0.0)), state[13] / nbase) + 1e-9 + 1e-6 * abs(m)
        return abs(x[0] - m) / sd, p.threshold_z, onset_frac * p.threshold_z

    def update(self, state: list[float], t: float, features: Mapping[str, float]) -> GenericEstimate | None:
        p = self.params
        x = self._raw(features)
        if x is None:
            return None
        n, t0, t_last = state[0], state[1], state[2]
        if n == 0:
            t0 = t_last = t
        dt = max(0.0, t - t_last)
        state[1], state[2] = t0, max(t, t_last)
        state[0] = n + 1
        if n < p.baseline_n:
            # baseline: the asset's own early behaviour
            if len(self.keys) > 1:
                kk, h = len(self.keys), self.HEAD
                for j in range(kk):
                    state[h + j] += x[j]
                    state[h + kk + j] += x[j] * x[j]
            else:
                state[3] += x[0]
                state[4] += x[0] * x[0]
                state[13] += self._spread(features)
            if n + 1 < p.baseline_n:
                return None
        y, thr, onset = self._indicator(state, x, min(n + 1, p.baseline_n))
        # smoothed level (time-constant forgetting, bias-free through the weight sum)
        a_s = math.exp(-dt / p.tau_smooth) if p.tau_smooth > 0 else 0.0
        state[5] = a_s * state[5] + 1.0
        state[6] = a_s * state[6] + y
        level = state[6] / state[5]
        # weighted linear trend against time (relative ages): of the smoothed level, or
        # in log mode of the indicator itself (independent values, for the Bayesian slope)
        v = y if self.log_mode else level
        a = math.exp(-dt / p.tau_trend) if p.tau_trend > 0 else 0.0
        s0, su, suu, sy, suy, syy = state[7:13]
        suu = a * (suu + 2.0 * dt * su + dt * dt * s0)
        su = a * (su + dt * s0)
        suy = a * (suy + dt * sy)
        s0 = a * s0 + 1.0
        sy = a * sy + v
        syy = a * syy + v * v
        state[7:13] = [s0, su, suu, sy, suy, syy]
        state[14] = a * state[14] + dt  # with S0: the mean interval between messages
        if self.log_mode:
            return self._estimate_log(state, level, thr, onset)
        return self._estimate(state, level, thr, onset)

    def level(self, state: list[float]) -> float | None:
        """The smoothed indicator (None before the baseline is complete)."""
        return state[6] / state[5] if state[5] > 0 else None

    def _trend(self, state: list[float]) -> tuple[float, float, float]:
        """(slope, its standard error, effective number of independent levels) of the smoothed level.

        Consecutive smoothed levels ``dt`` apart share most of their noise:
        an AR(1) with coefficient exp(-dt / tau_smooth) carries the information
        of one independent value per coth(dt / (2 tau_smooth)) messages.
        """
        p = self.params
        s0, su, suu, sy, suy, syy = state[7:13]
        den = s0 * suu - su * su
        mean_dt = state[14] / s0 if s0 > 0 else 0.0
        if p.tau_smooth <= 0 or self.log_mode:
            kappa = 1.0
        elif mean_dt > 0:
            kappa = 1.0 / math.tanh(mean_dt / (2.0 * p.tau_smooth))
        else:
            kappa = math.inf
        n_eff = s0 / kappa
        if den <= 1e-12 or n_eff <= 3.0:
            return 0.0, math.inf, n_eff
        slope = -(s0 * suy - su * sy) / den
        var_u = den / (s0 * s0)
        var_y = max(syy / s0 - (sy / s0) ** 2, 0.0)
        resid = max(var_y - slope * slope * var_u, 0.0)
        return slope, math.sqrt(resid / ((n_eff - 2.0) * var_u)), n_eff

    def _onset_test(self, state: list[float]) -> tuple[float, float, float, bool]:
        """(slope, fast, slow, significant): the trend with its Student-t bounds."""
        p = self.params
        slope, se, n_eff = self._trend(state)
        if slope > 0 and math.isfinite(se):
            # Student-t quantile on the effective degrees of freedom, at the bounds' confidence
            q = float(stdtrit(n_eff - 2.0, 0.5 * math.erfc(-p.z_bounds / math.sqrt(2.0))))
            return slope, slope + q * se, slope - q * se, slope - q * se > 0
        return slope, math.inf, 0.0, False

    def _finish(self, rul: float, lower: float, upper: float, level: float, thr: float, degrading: bool = False) -> GenericEstimate:
        p = self.params
        hi = min(1.0, max(0.0, 1.0 - max(level, 0.0) / thr))
        rul *= p.rul_scale
        rul = min(max(rul, p.min_rul), p.max_rul)
        lower = min(max(lower, p.min_rul), rul)
        upper = max(min(upper, p.max_rul), rul)
        return GenericEstimate(rul, lower, upper, hi, level, degrading)

    def _estimate(self, state: list[float], level: float, thr: float, onset: float) -> GenericEstimate:
        """z-score drift: the weighted trend extrapolated to the threshold, else beyond the horizon."""
        p = self.params
        remaining = max(thr - level, 0.0)
        rul = lower = upper = p.max_rul
        if level >= thr:
            rul = lower = upper = p.min_rul
        elif level >= onset or state[15]:
            slope, fast, slow, significant = self._onset_test(state)
            # enter above the onset on a significant upward trend; stay while it is upward
            state[15] = 1.0 if slope > 0 and (significant or state[15]) else 0.0
            if state[15]:
                rul = min(remaining / slope, p.max_rul)
                lower = remaining / fast
                upper = remaining / slow if slow > 0 else p.max_rul
        return self._finish(rul, lower, upper, level, thr, bool(state[15]))

    def _estimate_log(self, state: list[float], level: float, thr: float, onset: float) -> GenericEstimate:
        """Log growth: beyond the horizon until onset, then the Bayesian exponential model.

        The slope of the log indicator (weighted least squares over the last
        ``tau_trend``) is combined with the trained Gaussian prior; the bearing is
        degrading while the level is past the onset and the posterior slope's
        lower bound is above zero (a step that settled is not a degradation).
        """
        p = self.params
        if level >= thr:
            state[15] = 1.0
            return self._finish(p.min_rul, p.min_rul, p.min_rul, level, thr, True)
        slope, se, _ = self._trend(state)
        prior_prec = 1.0 / p.slope_prior_sd**2 if p.slope_prior_sd else 0.0
        data_prec = 1.0 / se**2 if math.isfinite(se) and se > 0 else 0.0
        prec = prior_prec + data_prec
        mean = ((p.slope_prior or 0.0) * prior_prec + slope * data_prec) / prec if prec > 0 else 0.0
        sd = 1.0 / math.sqrt(prec) if prec > 0 else math.inf
        fast, slow = mean + p.z_bounds * sd, mean - p.z_bounds * sd
        state[15] = 1.0 if level >= onset and slow > 0 else 0.0
        horizon = p.horizon if p.horizon is not None else p.max_rul
        if not state[15]:
            lower = p.warning_min if p.warning_min is not None else horizon
            return self._finish(horizon if self.life_prior else p.max_rul, lower, p.max_rul, level, thr)
        # the fitted line's value now (the smoothed level lags a rising indicator)
        s0, su, sy = state[7], state[8], state[10]
        remaining = max(thr - (sy / s0 + mean * su / s0), 0.0)
        rul = min(remaining / mean, horizon)
        return self._finish(rul, remaining / fast, remaining / slow, level, thr, True)
