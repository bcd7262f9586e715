"""Scoring RUL predictions the way the published benchmarks do.

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

Plus the cross-validation helpers (folds by unit, random truncation points as
the official C-MAPSS test sets are made) used by the evaluation runs.

Pure numpy; no Kafka, Faust or asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "rmse",
    "phm08_score",
    "phm2012_errors",
    "phm2012_accuracy",
    "unit_folds",
    "truncation_points",
]


def _pair(true: Sequence[float], pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true, dtype=np.float64).ravel()
    p = np.asarray(pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise ValueError("no predictions to score")
    return t, p


def rmse(true: Sequence[float], pred: Sequence[float]) -> float:
    """Root mean squared error of ``pred`` against ``true``."""
    t, p = _pair(true, pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def phm08_score(true: Sequence[float], pred: Sequence[float]) -> float:
    """The PHM08 asymmetric score (lower is better; 0 is perfect).

    ``d = pred - true``; each unit costs ``exp(-d/13) - 1`` when early (d < 0)
    and ``exp(d/10) - 1`` when late (d >= 0). Summed over units, as published.
    """
    t, p = _pair(true, pred)
    d = p - t
    cost = np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))
    return float(np.sum(cost))


def phm2012_errors(actual: Sequence[float], pred: Sequence[float]) -> np.ndarray:
    """Percent errors ``Er_i = 100 (actual - pred) / actual`` (actual must be > 0)."""
    a, p = _pair(actual, pred)
    if np.any(a <= 0):
        raise ValueError("actual RUL must be positive for the PHM 2012 percent error")
    return 100.0 * (a - p) / a


def phm2012_accuracy(actual: Sequence[float], pred: Sequence[float]) -> float:
    """Mean PHM 2012 accuracy ``A_i`` in (0, 1] (higher is better).

    Over-estimates (``Er <= 0``) halve the accuracy every 5 %, under-estimates
    every 20 %: predicting a bearing lives longer than it does is what hurts.
    """
    er = phm2012_errors(actual, pred)
    ln_half = math.log(0.5)
    a = np.where(er <= 0, np.exp(-ln_half * er / 5.0), np.exp(ln_half * er / 20.0))
    return float(np.mean(a))


def unit_folds(units: Sequence[int | str], k: int = 5, seed: int = 0) -> list[tuple[list, list]]:
    """Split unit ids into ``k`` (train, validation) folds, every unit validated once."""
    ids = sorted(set(units), key=str)
    if k < 2 or k > len(ids):
        raise ValueError(f"need 2 <= k <= number of units ({len(ids)}), got k={k}")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    folds = []
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


# --------------------------------------------------------------------------------------
# Evaluation runs (the same RulTracker as the agent: offline == streaming by construction)
# --------------------------------------------------------------------------------------


def last_estimates(model, unit: str, histories):
    """The tracker's last estimate for each history ``[(t, features), ...]``."""
    from ..models.rul import run_tracker

    return [run_tracker(model, unit, hist) for hist in histories]


def score_cmapss(model, histories, truth: Sequence[float]) -> dict[str, float]:
    """evaluate-rul's numbers: RMSE and PHM08 score of the last estimates.

    ``rmse``/``score`` compare with the truth capped at the model's cap (the
    published FD001 convention: a model cannot know more than "at least cap
    cycles" from a healthy engine); ``rmse_uncapped``/``score_uncapped`` with
    the raw truth.
    """
    ests = last_estimates(model, "cycles", histories)
    if any(e is None for e in ests):
        raise ValueError("a unit produced no estimate (empty history?)")
    pred = np.array([e.rul for e in ests])
    true = np.asarray(truth, dtype=np.float64)
    cap = model.cmapss.cap if model.cmapss is not None else float("inf")
    capped = np.minimum(true, cap)
    return {
        "rmse": rmse(capped, pred),
        "score": phm08_score(capped, pred),
        "units": int(len(true)),
        "rmse_uncapped": rmse(true, pred),
        "score_uncapped": phm08_score(true, pred),
        "cap": cap,
    }


def trajectory(model, unit: str, history) -> list:
    """The tracker's estimate after every row (None where it gives none)."""
    from ..models.rul import RulTracker

    tracker = RulTracker(model, unit)
    return [tracker.update(t, f) for t, f in history]


def cross_validate_cmapss(
    histories,
    *,
    k: int = 5,
    cuts_per_unit: int = 5,
    min_history: int = 31,
    cap: float = 125.0,
    seed: int = 0,
    progress=None,
    on_unit=None,
    **fit_kwargs,
) -> dict:
    """k-fold by unit: train on k-1 folds, cut each validation unit at random points.

    The estimate at a cut is the tracker's after the cut's last row (causal: the
    same as running it on the truncated rows). Truth is min(cycles left, cap).
    ``on_unit(index, trajectory, cuts)``, when given, is called for each
    validation unit with its out-of-fold estimates after every row.
    """
    from ..models.rul import fit_cmapss

    say = progress or (lambda m: None)
    ids = list(range(len(histories)))
    rng = np.random.default_rng(seed + 1)
    cuts = {i: truncation_points(len(histories[i]), cuts_per_unit, min_history, rng) for i in ids}
    true_all, pred_all, lo_all, hi_all, fold_rmse = [], [], [], [], []
    for f, (train, val) in enumerate(unit_folds(ids, k, seed)):
        model = fit_cmapss([histories[i] for i in train], cap=cap, seed=seed + f, **fit_kwargs)
        t_f, p_f = [], []
        for i in val:
            traj = trajectory(model, "cycles", histories[i])
            if on_unit is not None:
                on_unit(i, traj, cuts[i])
            n = len(histories[i])
            for kept in cuts[i]:
                est = traj[kept - 1]
                t_f.append(min(n - kept, cap))
                p_f.append(est.rul)
                lo_all.append(est.lower)
                hi_all.append(est.upper)
        fold_rmse.append(rmse(t_f, p_f))
        true_all += t_f
        pred_all += p_f
        say(f"fold {f + 1}/{k}: RMSE {fold_rmse[-1]:.2f} on {len(t_f)} cuts")
    t = np.asarray(true_all)
    p = np.asarray(pred_all)
    inside = (t >= np.asarray(lo_all)) & (t <= np.asarray(hi_all))
    near = t < cap  # cuts in the degradation phase (the official test truths mostly are)
    return {
        "rmse": rmse(t, p),
        "score": phm08_score(t, p),
        "score_per_unit": phm08_score(t, p) / len(t),
        "cuts": int(len(t)),
        "fold_rmse": [round(x, 3) for x in fold_rmse],
        "rmse_true_below_cap": rmse(t[near], p[near]) if near.any() else None,
        "interval_coverage": float(inside.mean()),
    }


def best_constant(actual: Sequence[float]) -> tuple[float, float]:
    """(guess, accuracy): the one RUL for every cut with the best PHM 2012 accuracy,
    the floor a model must beat on the same cuts (found with hindsight)."""
    a = np.asarray(actual, dtype=np.float64)
    grid = np.geomspace(a.min() * 0.1, a.max(), 400)
    scores = np.array([phm2012_accuracy(a, np.full(a.shape, g)) for g in grid])
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


def femto_leave_one_out_data(data, *, fractions: Sequence[float] | None = None, progress=None, on_bearing=None) -> dict:
    """:func:`femto_leave_one_out` on computed features: ``{name: (channels, failure ts)}``.

    ``on_bearing(name, trajectory, start, end)``, when given, is called after each
    held-out bearing with its (ts, estimate) trajectory (``evaluate`` plots it)."""
    from ..models.rul import CUT_FRACTIONS, bearing_trajectory, estimates_at_cuts, fit_femto

    say = progress or (lambda m: None)
    fr = tuple(fractions or CUT_FRACTIONS)
    per, actual, pred = {}, [], []
    for name, (channels, end) in data.items():
        model = fit_femto([v for k, v in data.items() if k != name], fractions=fr, progress=say)
        start = min(rows[0][0] for rows in channels.values() if rows)
        traj = bearing_trajectory(model, channels)
        pairs = estimates_at_cuts(traj, start, end, fr)
        if on_bearing is not None:
            on_bearing(name, traj, start, end)
        a = [x for x, _ in pairs]
        p = [y for _, y in pairs]
        per[name] = {
            "accuracy": round(phm2012_accuracy(a, p), 4),
            "cuts": [{"fraction": f, "actual_s": round(x, 1), "predicted_s": round(y, 1)} for f, (x, y) in zip(fr, pairs)],
        }
        actual += a
        pred += p
        say(f"{name}: accuracy {per[name]['accuracy']}")
    guess, guess_acc = best_constant(actual)
    return {
        "accuracy": phm2012_accuracy(actual, pred),
        "best_constant_s": round(guess, 1),
        "best_constant_accuracy": guess_acc,
        "cuts": len(actual),
        "fractions": list(fr),
        "bearings": per,
    }


def femto_leave_one_out(folders: Sequence[str], *, fractions: Sequence[float] | None = None, progress=None) -> dict:
    """Leave one bearing out: fit on the others, score the held-out one cut at
    ``fractions`` of its life with the PHM 2012 accuracy (mean over all cuts),
    next to the best constant guess on the same cuts. Folders or ``.npz`` files."""
    from ..datasets import femto

    say = progress or (lambda m: None)
    data = {}
    for f in folders:
        say(f"{f}: computing frame features")
        data[femto.bearing_name(f)] = (femto.bearing_features(f), femto.life_end_ts(f))
    return femto_leave_one_out_data(data, fractions=fractions, progress=say)


def _main(argv: list[str] | None = None) -> None:
    """``python -m mantis_stream.evaluation.rul cmapss-cv|femto-loo PATH...`` (docs/models-rul.md)."""
    import argparse
    import sys

    import orjson

    ap = argparse.ArgumentParser(prog="python -m mantis_stream.evaluation.rul")
    ap.add_argument("what", choices=["cmapss-cv", "femto-loo"])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    if args.what == "cmapss-cv":
        from ..datasets import cmapss

        hist = [list(u.rows()) for p in args.paths for u in cmapss.load_units(p)]
        kw = {k: v for k, v in (("members", args.members), ("epochs", args.epochs)) if v is not None}
        out = cross_validate_cmapss(hist, k=args.folds, cuts_per_unit=args.cuts, seed=args.seed, progress=say, bound_folds=0, **kw)
    else:
        out = femto_leave_one_out(args.paths, progress=say)
    print(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY, default=float).decode())


if __name__ == "__main__":
    _main()
