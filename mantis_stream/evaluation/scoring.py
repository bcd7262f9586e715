"""Scoring RUL predictions the way the published benchmarks do (formulas and cuts only).

Why this exists: figures in docs/models-rul.md are only comparable with the
literature if they are computed with the benchmarks' own formulas, so the
formulas live in one place, with tests against hand-computed values:

- RMSE, in the data set's unit (C-MAPSS: cycles, with the true RUL usually
  capped at 125 cycles by the papers we compare with);
- the PHM08 challenge's asymmetric score, ``sum(exp(-d/13) - 1)`` for early
  predictions (``d = predicted - true < 0``) and ``sum(exp(d/10) - 1)`` for
  late ones: a late prediction (an engine that fails before we said) costs more;
- the IEEE PHM 2012 (FEMTO/PRONOSTIA) accuracy: the mean of
  ``A_i = exp(-ln(0.5) * Er_i / 5)`` when ``Er_i <= 0`` (over-estimate) and
  ``exp(ln(0.5) * Er_i / 20)`` when ``Er_i > 0``, with
  ``Er_i = 100 * (actual_i - predicted_i) / actual_i``.

Plus the protocols' cuts (folds by unit, random truncation points as the
official C-MAPSS test sets are made; FEMTO bearings cut at fractions of their
life) and the best constant guess, used by the evaluation runs
(:mod:`.rul`) and by training (:mod:`mantis_stream.training.rul`).

Pure numpy; no Kafka, Faust or asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike

from ..models.rul import RulEstimate

#: A unit id (C-MAPSS unit numbers, or names).
U = TypeVar("U", int, str)

__all__ = [
    "CUT_FRACTIONS",
    "best_constant",
    "estimates_at_cuts",
    "phm08_score",
    "phm2012_accuracies",
    "phm2012_accuracy",
    "phm2012_errors",
    "rmse",
    "truncation_points",
    "unit_folds",
]


def _pair(true: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise ValueError("no predictions to score")
    return t, p


def rmse(true: ArrayLike, pred: ArrayLike) -> float:
    """Root mean squared error of ``pred`` against ``true``."""
    t, p = _pair(true, pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def phm08_score(true: ArrayLike, pred: ArrayLike) -> float:
    """The PHM08 asymmetric score (lower is better; 0 is perfect).

    ``d = pred - true``; each unit costs ``exp(-d/13) - 1`` when early (d < 0)
    and ``exp(d/10) - 1`` when late (d >= 0). Summed over units, as published.
    """
    t, p = _pair(true, pred)
    d = p - t
    cost = np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))
    return float(np.sum(cost))


def phm2012_errors(actual: ArrayLike, pred: ArrayLike) -> np.ndarray:
    """Percent errors ``Er_i = 100 (actual - pred) / actual`` (actual must be > 0)."""
    a, p = _pair(actual, pred)
    if np.any(a <= 0):
        raise ValueError("actual RUL must be positive for the PHM 2012 percent error")
    er: np.ndarray = 100.0 * (a - p) / a
    return er


def phm2012_accuracy(actual: ArrayLike, pred: ArrayLike) -> float:
    """Mean PHM 2012 accuracy ``A_i`` in (0, 1] (higher is better).

    Over-estimates (``Er <= 0``) halve the accuracy every 5 %, under-estimates
    every 20 %: predicting a bearing lives longer than it does is what hurts.
    """
    return float(np.mean(phm2012_accuracies(phm2012_errors(actual, pred))))


def phm2012_accuracies(er: np.ndarray) -> np.ndarray:
    """Per-cut PHM 2012 accuracy ``A_i`` of percent errors ``er`` (any shape): an over-estimate
    (``Er <= 0``) halves it every 5 %, an under-estimate every 20 %."""
    ln_half = math.log(0.5)
    a: np.ndarray = np.where(er <= 0, np.exp(-ln_half * er / 5.0), np.exp(ln_half * er / 20.0))
    return a


def unit_folds(units: Sequence[U], k: int = 5, seed: int = 0) -> list[tuple[list[U], list[U]]]:
    """Split unit ids into ``k`` (train, validation) folds, every unit validated once."""
    ids = sorted(set(units), key=str)
    if k < 2 or k > len(ids):
        raise ValueError(f"need 2 <= k <= number of units ({len(ids)}), got k={k}")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    folds: list[tuple[list[U], list[U]]] = []
    for f in range(k):
        val = sorted(shuffled[f::k], key=str)
        val_set = set(val)
        folds.append(([u for u in ids if u not in val_set], val))
    return folds


def truncation_points(length: int, n: int = 1, min_history: int = 31, seed: int | np.random.Generator = 0) -> list[int]:
    """Random cut lengths for a history of ``length`` rows (the rows kept).

    The official C-MAPSS test histories stop at a random cycle before failure;
    validation units are cut the same way: a uniform draw in
    ``[min(min_history, length), length]`` rows kept, so the true RUL at the cut
    is ``length - kept`` cycles.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lo = min(min_history, length)
    return [int(x) for x in rng.integers(lo, length + 1, size=n)]

def best_constant(actual: ArrayLike) -> tuple[float, float]:
    """(guess, accuracy): the one RUL for every cut with the best PHM 2012 accuracy,
    the floor a model must beat on the same cuts (found with hindsight)."""
    a = np.asarray(actual, dtype=np.float64)
    grid = np.geomspace(a.min() * 0.1, a.max(), 400)
    scores = np.array([phm2012_accuracy(a, np.full(a.shape, g)) for g in grid])
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


#: Where histories are cut when fitting/scoring bearings (fractions of the life).
CUT_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def estimates_at_cuts(
    traj: Sequence[tuple[float, RulEstimate]], start: float, end: float, fractions: Sequence[float] = CUT_FRACTIONS
) -> list[tuple[float, float, float]]:
    """(fraction, actual, predicted RUL) when the history is cut at each fraction of its life
    (fractions before the first estimate are left out).

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
        out.append((float(f), float(end - cut), float(traj[i][1].rul)))
    return out
