"""How high can the PHM 2012 accuracy go on the FEMTO leave-one-out cuts? An oracle's ceiling.

Why this exists: issue 13 asks for 0.40 on the six learning bearings cut at
30, 50, 70, 80, 90 and 95 % of life. Whether any honest predictor can get
there depends on what the vibration says before each cut. This module bounds
it from above, with hindsight everywhere:

1. **Onset per bearing**: the earliest life fraction at which *any* tracked
   condition feature (the model's health indicator, RMS, kurtosis, crest
   factor, peak, envelope and defect-band energies, spectral bands and
   spectral kurtosis, both sensors) leaves its early-life level durably: per
   1 % of life the median of the feature, as a log ratio to the median of the
   reference bins (the first 10 % of life); departed when beyond
   ``max(log(factor), z * robust spread of the reference bins)``; durable when
   the bin is departed and at least ``persist`` of the bins from there to
   failure are departed on the same side. The onset is the bin's start.
2. **Oracle**: exact (``A_i = 1``) at every cut at or after its bearing's
   onset; before onset, the best information-free guess of a family chosen
   with hindsight on those very cuts (in-sample), so no leave-one-out
   predictor of that family, given the same onsets, can score more.
3. **Onset-informed oracle** (tighter, still in-sample): after onset it knows
   the onset time but not the RUL, and guesses from a family of (time since
   onset, condition): a constant or a countdown ``c - time since onset``;
   before onset as in 2 (the best family). A step that then stays flat says
   "changed", not "how long": this bound shows what knowing that is worth.
4. The same guesses fitted **leave one bearing out** (the protocol's fitting;
   onsets still from hindsight): what a predictor of these families that
   knew every onset would score.
5. **Staged** (:func:`staged_ceiling`): exact only from the final rise; between a
   bearing's first durable change and its final rise, as in 3 (knows when the
   change came, not the RUL); before any change, as in 2. Both in-sample and
   leave one bearing out.

The families are exact maxima, not grid searches: for a guess ``theta * x_i``
each cut's accuracy is an exponential in ``theta`` on either side of
``theta = a_i / x_i``, so the mean is convex between consecutive kinks and
its maximum lies on a kink (see :func:`best_scaled`).

Usage: ``python -m mantis_stream.evaluation.rul femto-ceiling PATH...`` (JSON).

Pure numpy; no Kafka, Faust or asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..datasets import femto
from ..models.health import GenericHealth, GenericParams
from ..models.rul import Bearing, History, first_ts
from .scoring import CUT_FRACTIONS, phm2012_accuracy

__all__ = [
    "AFTER_FAMILIES",
    "FAMILIES",
    "HEALTH_KEY",
    "ONSET_FEATURES",
    "RULES",
    "Cut",
    "OnsetRule",
    "best_scaled",
    "bin_medians",
    "bearing_cuts",
    "femto_ceiling",
    "femto_ceiling_data",
    "feature_curves",
    "needed_before_onset",
    "oracle_ceiling",
    "series_onset",
    "staged_ceiling",
]

Progress = Callable[[str], None]

#: The model's health indicator (smoothed log RMS growth over the sensor's first frames).
HEALTH_KEY = "health"
#: Condition features searched for an onset (all positive; compared as log ratios).
ONSET_FEATURES: tuple[str, ...] = (
    HEALTH_KEY,
    "rms",
    "kurtosis",
    "crest_factor",
    "peak",
    "envelope_energy",
    "bpfo_energy",
    "bpfi_energy",
    "bsf_energy",
    "ftf_energy",
    *(f"band_{b}" for b in range(8)),
    "spectral_kurtosis",
)
#: Life fractions at which feature curves are reported.
CURVE_AT: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)


@dataclass(frozen=True)
class OnsetRule:
    """What counts as an onset: which features, which direction, how far from the reference.

    ``direction``: ``"up"`` (growth only: damage adds energy) or ``"both"``
    (a fall counts too). ``factor``: the smallest ratio to the reference
    median that counts; ``z``: the same in robust spreads of the reference
    bins; ``persist``: share of the bins from the onset to failure that must
    stay departed.
    """

    name: str
    keys: tuple[str, ...]
    direction: str = "both"
    factor: float = 1.5
    z: float = 4.0
    persist: float = 0.9
    reference: tuple[float, float] = (0.0, 0.1)
    bins: int = 100


#: From strict to generous. The last is the answer to "the earliest defensible onset".
RULES: tuple[OnsetRule, ...] = (
    OnsetRule("health indicator rises (RMS x1.42, the model's onset level)", (HEALTH_KEY,), "up", math.exp(0.35)),
    OnsetRule("any feature grows x1.5", ONSET_FEATURES, "up"),
    OnsetRule("any feature grows or falls x1.5", ONSET_FEATURES, "both"),
)


@dataclass(frozen=True)
class Cut:
    """One scored cut: the bearing, its operating condition, where it is cut and what is left."""

    bearing: str
    condition: int
    fraction: float
    age: float
    actual: float


def bin_medians(fraction: ArrayLike, values: ArrayLike, bins: int = 100) -> np.ndarray:
    """Median of ``values`` per ``1 / bins`` of life (NaN where a bin is empty)."""
    f = np.asarray(fraction, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if f.shape != v.shape:
        raise ValueError(f"fraction and values differ in length ({f.size} vs {v.size})")
    idx = np.clip((f * bins).astype(int), 0, bins - 1)
    out = np.full(bins, np.nan)
    for b in np.unique(idx):
        out[b] = float(np.median(v[idx == b]))
    return out


def _log_ratio(medians: np.ndarray, rule: OnsetRule) -> tuple[np.ndarray, float]:
    """(log ratio of each bin to the reference median, departure threshold)."""
    lo, hi = (round(r * rule.bins) for r in rule.reference)
    logm = np.log(np.maximum(medians, 1e-300))
    ref = logm[lo:hi][np.isfinite(logm[lo:hi])]
    if ref.size < 3:
        raise ValueError(f"reference {rule.reference} holds fewer than 3 non-empty bins")
    centre = float(np.median(ref))
    spread = 1.4826 * float(np.median(np.abs(ref - centre)))
    return logm - centre, max(math.log(rule.factor), rule.z * spread)


def series_onset(fraction: ArrayLike, values: ArrayLike, rule: OnsetRule) -> tuple[float, str] | None:
    """(life fraction, "up"/"down") where ``values`` (positive) durably leave their
    early-life level under ``rule``, or None if they never do."""
    med = bin_medians(fraction, values, rule.bins)
    ratio, thr = _log_ratio(med, rule)
    sides = [("up", 1.0)] + ([("down", -1.0)] if rule.direction == "both" else [])
    best: tuple[float, str] | None = None
    start = round(rule.reference[1] * rule.bins)
    for side, sign in sides:
        out = np.where(np.isfinite(ratio), sign * ratio > thr, False)
        have = np.isfinite(ratio)
        # share of the non-empty bins from b to failure that are departed on this side
        tail_out = np.cumsum(out[::-1])[::-1]
        tail_n = np.cumsum(have[::-1])[::-1]
        ok = out & (tail_out >= rule.persist * np.maximum(tail_n, 1))
        ok[:start] = False
        hits = np.flatnonzero(ok)
        if hits.size and (best is None or hits[0] / rule.bins < best[0]):
            best = (float(hits[0]) / rule.bins, side)
    return best


def _health_levels(rows: History) -> list[tuple[float, float]]:
    """(ts, the model's smoothed log RMS growth) per frame, as the tracker computes it."""
    hi = GenericHealth(GenericParams(), ["rms"], True)
    state = hi.init_state()
    out = []
    for t, feats in rows:
        if hi.update(state, t, feats) is not None:
            level = hi.level(state)
            if level is not None:
                out.append((t, level))
    return out


def _series(rows: History, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts, values) of one feature; the health indicator as a ratio (exp of its log growth)."""
    if key == HEALTH_KEY:
        lv = _health_levels(rows)
        return np.array([t for t, _ in lv]), np.exp(np.array([x for _, x in lv]))
    pairs = [(t, float(f[key])) for t, f in rows if key in f]
    return np.array([t for t, _ in pairs]), np.array([x for _, x in pairs])


def feature_curves(
    bearing: Bearing, keys: Sequence[str] = ONSET_FEATURES
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """{(sensor, feature): (life fraction, values)} of one bearing."""
    channels, end = bearing
    start = first_ts(channels)
    out = {}
    for sensor, rows in channels.items():
        for key in keys:
            ts, v = _series(rows, key)
            if ts.size:
                out[(sensor, key)] = ((ts - start) / (end - start), v)
    return out


def bearing_cuts(name: str, bearing: Bearing, fractions: Sequence[float] = CUT_FRACTIONS) -> list[Cut]:
    """The protocol's cuts of one bearing (condition from its name, ``BearingC_N``)."""
    channels, end = bearing
    start = first_ts(channels)
    cond = int(femto.bearing_meta(name).get("condition", 0))
    life = end - start
    return [Cut(name, cond, float(f), f * life, (1.0 - f) * life) for f in fractions]


def best_scaled(actual: ArrayLike, x: ArrayLike, offset: ArrayLike | None = None) -> tuple[float, float]:
    """(theta, mean PHM 2012 accuracy) of the best guess ``theta * x_i + offset_i`` for every cut, exactly.

    With ``r = guess / a_i``, ``A_i`` is ``2**(-5 (1 - r))`` below and ``2**(-20 (r - 1))``
    above ``r = 1``: convex in ``theta`` on each side (``r`` is affine in it), so the mean
    is convex between consecutive kinks ``(a_i - offset_i) / x_i`` and peaks on one of
    them (no grid to miss the maximum).
    """
    a = np.asarray(actual, dtype=np.float64).ravel()
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.zeros_like(a) if offset is None else np.asarray(offset, dtype=np.float64).ravel()
    if a.shape != xs.shape or a.shape != ys.shape or a.size == 0:
        raise ValueError("actual, x and offset must be non-empty and of equal length")
    if np.any(xs <= 0) or np.any(a <= 0):
        raise ValueError("actual RUL and x must be positive")
    kinks = np.unique((a - ys) / xs)
    with np.errstate(over="ignore"):  # the formula's unused branch overflows on large over-estimates
        scores = [phm2012_accuracy(a, k * xs + ys) for k in kinks]
    i = int(np.argmax(scores))
    return float(kinks[i]), float(scores[i])


def _design(cs: Sequence[Cut], family: str, onsets: Mapping[str, float | None]) -> tuple[list[float], list[float]]:
    """(x, offset) of the family's guess ``theta * x + offset`` at each cut."""
    if family.startswith("k x age"):
        return [c.age for c in cs], [0.0] * len(cs)
    if family.startswith("c - time since onset"):
        return [1.0] * len(cs), [-c.age * (1.0 - (onsets.get(c.bearing) or 0.0) / c.fraction) for c in cs]
    return [1.0] * len(cs), [0.0] * len(cs)


def _groups(cs: Sequence[Cut], family: str) -> dict[str, list[Cut]]:
    out: dict[str, list[Cut]] = {}
    for c in cs:
        out.setdefault(f"condition {c.condition}" if family.endswith("per condition") else "all", []).append(c)
    return out


def _family_score(
    cuts: Sequence[Cut], family: str, onsets: Mapping[str, float | None]
) -> tuple[float, dict[str, float]]:
    """(sum of A_i over ``cuts``, fitted parameters) of the family's best guess, in-sample."""
    total = 0.0
    params = {}
    for label, cs in _groups(cuts, family).items():
        x, off = _design(cs, family, onsets)
        theta, acc = best_scaled([c.actual for c in cs], x, off)
        total += acc * len(cs)
        params[label] = round(theta, 5)
    return total, params


def _loo_score(cuts: Sequence[Cut], family: str, onsets: Mapping[str, float | None]) -> float:
    """Sum of A_i over ``cuts``, each bearing's guess fitted on the other bearings' cuts
    (its condition's group; all of them when that group is empty; none: 0)."""
    total = 0.0
    for name in {c.bearing for c in cuts}:
        train = [c for c in cuts if c.bearing != name]
        held = [c for c in cuts if c.bearing == name]
        if not train:
            continue
        groups = _groups(train, family)
        for label, hs in _groups(held, family).items():
            fit = groups.get(label, train)
            x, off = _design(fit, family, onsets)
            theta, _ = best_scaled([c.actual for c in fit], x, off)
            hx, hoff = _design(hs, family, onsets)
            with np.errstate(over="ignore"):
                total += phm2012_accuracy([c.actual for c in hs], theta * np.array(hx) + np.array(hoff)) * len(hs)
    return total


#: Information-free guesses before onset: a constant, k x age, and each per operating condition.
FAMILIES: tuple[str, ...] = ("constant", "k x age", "constant per condition", "k x age per condition")
#: Guesses after onset for an oracle that knows the onset but not the RUL: a constant, a countdown.
AFTER_FAMILIES: tuple[str, ...] = (
    "constant",
    "c - time since onset",
    "constant per condition",
    "c - time since onset per condition",
)


def needed_before_onset(n_cuts: int, n_after: int, target: float) -> float | None:
    """Mean accuracy the pre-onset cuts need for the whole to reach ``target`` (None: no such cuts)."""
    n_before = n_cuts - n_after
    if n_before == 0:
        return None
    return (target * n_cuts - n_after) / n_before


def oracle_ceiling(cuts: Sequence[Cut], onsets: Mapping[str, float | None], target: float = 0.40) -> dict[str, Any]:
    """The oracle's mean accuracy per family: exact from each bearing's onset, the family's
    best in-sample guess before it; with what the pre-onset cuts would need for ``target``."""
    if not cuts:
        raise ValueError("no cuts")

    def after(c: Cut) -> bool:
        on = onsets.get(c.bearing)
        return on is not None and c.fraction >= on

    before = [c for c in cuts if not after(c)]
    post = [c for c in cuts if after(c)]
    n_after = len(post)
    fams = {}
    best_before = 0.0
    for fam in FAMILIES:
        s, params = _family_score(before, fam, onsets)
        best_before = max(best_before, s)
        fams[fam] = {
            "ceiling": round((n_after + s) / len(cuts), 4),
            "before_onset_accuracy": round(s / len(before), 4) if before else None,
            "guess": params,
        }
    informed = {}
    for fam in AFTER_FAMILIES:
        s, params = _family_score(post, fam, onsets)
        informed[fam] = {
            "ceiling": round((best_before + s) / len(cuts), 4),
            "after_onset_accuracy": round(s / len(post), 4) if post else None,
            "guess": params,
        }
    loo_before = {fam: _loo_score(before, fam, onsets) if before else 0.0 for fam in FAMILIES}
    best_loo_before = max(loo_before.values())
    loo = {f"before onset: {fam}, exact after": round((n_after + s) / len(cuts), 4) for fam, s in loo_before.items()}
    for fam in AFTER_FAMILIES:
        s = _loo_score(post, fam, onsets) if post else 0.0
        loo[f"best before onset, after onset: {fam}"] = round((best_loo_before + s) / len(cuts), 4)
    need = needed_before_onset(len(cuts), n_after, target)
    return {
        "cuts": len(cuts),
        "cuts_after_onset": n_after,
        "needed_before_onset_for_target": None if need is None else round(need, 4),
        "families": fams,
        "onset_informed": informed,
        "leave_one_out": loo,
    }


def staged_ceiling(
    cuts: Sequence[Cut],
    first: Mapping[str, float | None],
    final: Mapping[str, float | None],
    target: float = 0.40,
) -> dict[str, Any]:
    """The oracle between two readings: exact from each bearing's ``final`` rise; from
    its ``first`` durable change until then, it knows when the change came but not the
    RUL (:data:`AFTER_FAMILIES` on the time since ``first``); before any change, the
    best of :data:`FAMILIES`. In-sample and fitted leave one bearing out.

    Why: counting an early step that then stays flat as full RUL information is what
    lifts :func:`oracle_ceiling` above the target; this asks what knowing the step
    is worth when only the final rise tells the RUL.
    """
    if not cuts:
        raise ValueError("no cuts")

    def past(on: float | None, c: Cut) -> bool:
        return on is not None and c.fraction >= on

    exact = [c for c in cuts if past(final.get(c.bearing), c)]
    changed = [c for c in cuts if not past(final.get(c.bearing), c) and past(first.get(c.bearing), c)]
    before = [c for c in cuts if not past(final.get(c.bearing), c) and not past(first.get(c.bearing), c)]
    n = len(cuts)
    pre_in = max((_family_score(before, fam, first)[0] for fam in FAMILIES), default=0.0) if before else 0.0
    pre_loo = max(_loo_score(before, fam, first) for fam in FAMILIES) if before else 0.0
    in_sample, loo = {}, {}
    for fam in AFTER_FAMILIES:
        mid_in = _family_score(changed, fam, first)[0] if changed else 0.0
        mid_loo = _loo_score(changed, fam, first) if changed else 0.0
        in_sample[fam] = round((len(exact) + pre_in + mid_in) / n, 4)
        loo[fam] = round((len(exact) + pre_loo + mid_loo) / n, 4)
    return {
        "cuts": n,
        "cuts_exact": len(exact),
        "cuts_changed": len(changed),
        "cuts_before": len(before),
        "target": target,
        "in_sample": in_sample,
        "leave_one_out": loo,
    }


def _bearing_onset(
    curves: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], rule: OnsetRule
) -> tuple[float | None, list[dict[str, Any]]]:
    """(the bearing's onset under ``rule``, the features that reach it, earliest first).

    Features with fewer than 3 non-empty reference bins (the health indicator starts
    after its baseline frames: on a short record, after the reference) are left out."""
    found: list[dict[str, Any]] = []
    lo, hi = rule.reference
    for (sensor, key), (f, v) in curves.items():
        in_ref = f[(f >= lo) & (f < hi)]
        if key not in rule.keys or np.unique((in_ref * rule.bins).astype(int)).size < 3:
            continue
        hit = series_onset(f, v, rule)
        if hit is not None:
            found.append({"sensor": sensor, "feature": key, "onset": hit[0], "direction": hit[1]})
    found.sort(key=lambda d: (d["onset"], d["sensor"], d["feature"]))
    return (found[0]["onset"] if found else None), found


def _curve_numbers(f: np.ndarray, v: np.ndarray, rule: OnsetRule) -> dict[str, float]:
    """The feature's bin median as a ratio to its reference, at :data:`CURVE_AT` of life."""
    ratio, _ = _log_ratio(bin_medians(f, v, rule.bins), rule)
    out = {}
    for at in CURVE_AT:
        b = min(int(at * rule.bins), rule.bins - 1)
        if np.isfinite(ratio[b]):
            out[f"{at:g}"] = round(float(np.exp(ratio[b])), 2)
    return out


def femto_ceiling_data(
    data: Mapping[str, Bearing],
    *,
    rules: Sequence[OnsetRule] = RULES,
    given: Mapping[str, float | None] | None = None,
    fractions: Sequence[float] = CUT_FRACTIONS,
    target: float = 0.40,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`femto_ceiling` on computed features ``{name: (channels, failure ts)}``.

    ``given``: onsets to try instead of the first rule's, by bearing (None: no onset);
    scored as one more row, the first rule's onsets for bearings it does not name; each
    rule's row then also gets ``staged``: :func:`staged_ceiling` with the rule's onsets as
    the first change and the given ones as the final rise."""
    say = progress or (lambda m: None)
    keys = tuple(sorted({k for r in rules for k in r.keys}))
    curves = {}
    for name, bearing in data.items():
        say(f"{name}: feature curves")
        curves[name] = feature_curves(bearing, keys)
    cuts = [c for name, b in data.items() for c in bearing_cuts(name, b, fractions)]

    def after(name: str, on: float | None) -> int:
        return sum(1 for c in cuts if c.bearing == name and on is not None and c.fraction >= on)

    out_rules = []
    first_onsets: dict[str, float | None] = {}
    for rule in rules:
        onsets: dict[str, float | None] = {}
        per: dict[str, Any] = {}
        for name in data:
            on, found = _bearing_onset(curves[name], rule)
            onsets[name] = on
            first = found[0] if found else None
            per[name] = {
                "onset": on,
                "by": None if first is None else f"{first['sensor']} {first['feature']} ({first['direction']})",
                "curve": None
                if first is None
                else _curve_numbers(*curves[name][(first["sensor"], first["feature"])], rule),
                "earliest": [f"{d['sensor']} {d['feature']} {d['onset']:g}" for d in found[:4]],
                "features_departed": len(found),
                "cuts_after_onset": after(name, on),
            }
        first_onsets = first_onsets or onsets
        out_rules.append({"rule": rule.name, "bearings": per, **oracle_ceiling(cuts, onsets, target)})
    if given is not None:
        unknown = set(given) - set(data)
        if unknown:
            raise ValueError(f"given onsets for unknown bearings: {sorted(unknown)}")
        onsets = {name: given.get(name, first_onsets.get(name)) for name in data}
        per = {name: {"onset": on, "cuts_after_onset": after(name, on)} for name, on in onsets.items()}
        for row in out_rules:
            first = {name: b["onset"] for name, b in row["bearings"].items()}
            row["staged"] = staged_ceiling(cuts, first, onsets, target)
        out_rules.append({"rule": "given onsets", "bearings": per, **oracle_ceiling(cuts, onsets, target)})
    return {"target": target, "fractions": list(fractions), "rules": out_rules}


def femto_ceiling(
    folders: Sequence[str],
    *,
    given: Mapping[str, float | None] | None = None,
    fractions: Sequence[float] = CUT_FRACTIONS,
    target: float = 0.40,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The oracle's ceiling on the FEMTO cuts of ``folders`` (bearing folders or ``.npz``
    files), under each onset rule of :data:`RULES` from strict to generous (and ``given``)."""
    say = progress or (lambda m: None)
    data: dict[str, Bearing] = {}
    for f in folders:
        say(f"{f}: computing frame features")
        data[femto.bearing_name(f)] = (femto.bearing_features(f), femto.life_end_ts(f))
    return femto_ceiling_data(data, given=given, fractions=fractions, target=target, progress=say)
