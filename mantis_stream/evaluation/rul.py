"""RUL evaluation runs: cross-validation on C-MAPSS, leave one bearing out on FEMTO.

Why this exists: a model figure is only worth something when it is measured on
units the model was not fitted on, with the same :class:`RulTracker` the agent
runs (offline == streaming by construction). Each run fits with
:mod:`mantis_stream.training.rul` on the training part, replays the held-out
units through a fresh tracker and scores the estimates at the protocol's cuts
with the published formulas (:mod:`.scoring`, re-exported here).

Usage: ``mantis-stream evaluate cmapss|femto PATH...`` (tables and pictures), or
``python -m mantis_stream.evaluation.rul cmapss-cv|femto-loo PATH...`` (JSON);
``femto-ceiling PATH...``: the oracle's upper bound on the FEMTO cuts (:mod:`.ceiling`);
``femto-variants PATH...``: the other predictors tried, on the same cuts (:mod:`.femto_variants`).

Pure numpy; no Kafka, Faust or asyncio.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import ArrayLike

from ..datasets import cmapss, femto
from ..models.rul import (
    Bearing,
    History,
    RulEstimate,
    RulModel,
    RulTracker,
    bearing_trajectory,
    first_ts,
    run_tracker,
)
from ..training.rul import fit_cmapss, fit_femto
from .ceiling import femto_ceiling
from .femto_variants import variants
from .scoring import (
    CUT_FRACTIONS,
    best_constant,
    estimates_at_cuts,
    phm08_score,
    phm2012_accuracy,
    phm2012_errors,
    rmse,
    truncation_points,
    unit_folds,
)

__all__ = [
    "best_constant",
    "cross_validate_cmapss",
    "femto_leave_one_out",
    "femto_leave_one_out_data",
    "last_estimates",
    "phm08_score",
    "phm2012_accuracy",
    "phm2012_errors",
    "rmse",
    "score_cmapss",
    "trajectory",
    "truncation_points",
    "unit_folds",
]

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------
# Evaluation runs (the same RulTracker as the agent: offline == streaming by construction)
# --------------------------------------------------------------------------------------


def last_estimates(model: RulModel, unit: str, histories: Iterable[History]) -> list[RulEstimate | None]:
    """The tracker's last estimate for each history ``[(t, features), ...]``."""
    return [run_tracker(model, unit, hist) for hist in histories]


def score_cmapss(model: RulModel, histories: Iterable[History], truth: ArrayLike) -> dict[str, float]:
    """evaluate-rul's numbers: RMSE and PHM08 score of the last estimates.

    ``rmse``/``score`` compare with the truth capped at the model's cap (the
    published FD001 convention: a model cannot know more than "at least cap
    cycles" from a healthy engine); ``rmse_uncapped``/``score_uncapped`` with
    the raw truth.
    """
    ests = last_estimates(model, "cycles", histories)
    found = [e for e in ests if e is not None]
    if len(found) < len(ests):
        raise ValueError("a unit produced no estimate (empty history?)")
    pred = np.array([e.rul for e in found])
    true = np.asarray(truth, dtype=np.float64)
    cap = model.cmapss.cap if model.cmapss is not None else float("inf")
    capped = np.minimum(true, cap)
    return {
        "rmse": rmse(capped, pred),
        "score": phm08_score(capped, pred),
        "units": len(true),
        "rmse_uncapped": rmse(true, pred),
        "score_uncapped": phm08_score(true, pred),
        "cap": cap,
    }


def trajectory(model: RulModel, unit: str, history: History) -> list[RulEstimate | None]:
    """The tracker's estimate after every row (None where it gives none)."""
    tracker = RulTracker(model, unit)
    return [tracker.update(t, f) for t, f in history]


def cross_validate_cmapss(
    histories: Sequence[History],
    *,
    k: int = 5,
    cuts_per_unit: int = 5,
    min_history: int = 31,
    cap: float = 125.0,
    seed: int = 0,
    progress: Progress | None = None,
    on_unit: Callable[[int, list[RulEstimate | None], list[int]], None] | None = None,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """k-fold by unit: train on k-1 folds, cut each validation unit at random points.

    The estimate at a cut is the tracker's after the cut's last row (causal: the
    same as running it on the truncated rows). Truth is min(cycles left, cap).
    ``on_unit(index, trajectory, cuts)``, when given, is called for each
    validation unit with its out-of-fold estimates after every row.
    """
    say = progress or (lambda m: None)
    ids = list(range(len(histories)))
    rng = np.random.default_rng(seed + 1)
    cuts = {i: truncation_points(len(histories[i]), cuts_per_unit, min_history, rng) for i in ids}
    true_all: list[float] = []
    pred_all: list[float] = []
    lo_all: list[float] = []
    hi_all: list[float] = []
    fold_rmse: list[float] = []
    for f, (train, val) in enumerate(unit_folds(ids, k, seed)):
        model = fit_cmapss([histories[i] for i in train], cap=cap, seed=seed + f, **fit_kwargs)
        t_f: list[float] = []
        p_f: list[float] = []
        for i in val:
            traj = trajectory(model, "cycles", histories[i])
            if on_unit is not None:
                on_unit(i, traj, cuts[i])
            n = len(histories[i])
            for kept in cuts[i]:
                est = traj[kept - 1]
                if est is None:
                    raise ValueError(f"unit {i + 1}: no estimate after {kept} rows")
                t_f.append(float(min(n - kept, cap)))
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
        "cuts": len(t),
        "fold_rmse": [round(x, 3) for x in fold_rmse],
        "rmse_true_below_cap": rmse(t[near], p[near]) if near.any() else None,
        "interval_coverage": float(inside.mean()),
    }


def femto_leave_one_out_data(
    data: Mapping[str, Bearing],
    *,
    fractions: Sequence[float] | None = None,
    progress: Progress | None = None,
    on_bearing: Callable[[str, list[tuple[float, RulEstimate]], float, float], None] | None = None,
) -> dict[str, Any]:
    """:func:`femto_leave_one_out` on computed features: ``{name: (channels, failure ts)}``.

    ``on_bearing(name, trajectory, start, end)``, when given, is called after each
    held-out bearing with its (ts, estimate) trajectory (``evaluate`` plots it)."""
    say = progress or (lambda m: None)
    fr = tuple(fractions or CUT_FRACTIONS)
    per: dict[str, dict[str, Any]] = {}
    actual: list[float] = []
    pred: list[float] = []
    for name, (channels, end) in data.items():
        model = fit_femto([v for k, v in data.items() if k != name], fractions=fr, progress=say)
        start = first_ts(channels)
        traj = bearing_trajectory(model, channels)
        cuts = estimates_at_cuts(traj, start, end, fr)
        if on_bearing is not None:
            on_bearing(name, traj, start, end)
        a = [x for _, x, _ in cuts]
        p = [y for _, _, y in cuts]
        per[name] = {
            "accuracy": round(phm2012_accuracy(a, p), 4),
            "cuts": [{"fraction": f, "actual_s": round(x, 1), "predicted_s": round(y, 1)} for f, x, y in cuts],
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


def femto_leave_one_out(folders: Sequence[str], *, fractions: Sequence[float] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Leave one bearing out: fit on the others, score the held-out one cut at
    ``fractions`` of its life with the PHM 2012 accuracy (mean over all cuts),
    next to the best constant guess on the same cuts. Folders or ``.npz`` files."""
    say = progress or (lambda m: None)
    return femto_leave_one_out_data(_femto_data(folders, say), fractions=fractions, progress=say)


def _femto_data(folders: Sequence[str], say: Progress) -> dict[str, Bearing]:
    """{bearing name: (frame features per sensor, failure ts)} of folders or ``.npz`` files."""
    data: dict[str, Bearing] = {}
    for f in folders:
        say(f"{f}: computing frame features")
        data[femto.bearing_name(f)] = (femto.bearing_features(f), femto.life_end_ts(f))
    return data


def _onsets(ap: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, float | None]:
    """``--onset Bearing2_1=0.97`` (or ``=none``) as {bearing: life fraction or None}."""
    out: dict[str, float | None] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = None if value.lower() == "none" else float(value)
        except ValueError:
            ap.error(f"--onset: expected BEARING=FRACTION or BEARING=none, got {item!r}")
    return out


def _fractions(ap: argparse.ArgumentParser, text: str) -> tuple[float, ...]:
    """``--fractions 0.3,0.5`` as increasing life fractions in (0, 1)."""
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        ap.error(f"--fractions: expected comma-separated numbers, got {text!r}")
    if not out or any(not 0.0 < f < 1.0 for f in out) or list(out) != sorted(set(out)):
        ap.error(f"--fractions: expected increasing fractions of life in (0, 1), got {text!r}")
    return out


def _main(argv: list[str] | None = None) -> None:
    """``python -m mantis_stream.evaluation.rul cmapss-cv|femto-loo|femto-ceiling|femto-variants PATH...`` (docs/models-rul.md)."""
    ap = argparse.ArgumentParser(prog="python -m mantis_stream.evaluation.rul")
    ap.add_argument("what", choices=["cmapss-cv", "femto-loo", "femto-ceiling", "femto-variants"])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--fractions", default=None, metavar="F,F,...",
                    help=f"femto-*: cut at these fractions of life (default {','.join(map(str, CUT_FRACTIONS))})")
    ap.add_argument("--onset", action="append", default=[], metavar="BEARING=FRACTION",
                    help="femto-ceiling: also score these onsets (FRACTION 'none': no onset)")
    args = ap.parse_args(argv)

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    fr = _fractions(ap, args.fractions) if args.fractions else CUT_FRACTIONS

    if args.what == "cmapss-cv":
        hist = [list(u.rows()) for p in args.paths for u in cmapss.load_units(p)]
        kw = {k: v for k, v in (("members", args.members), ("epochs", args.epochs)) if v is not None}
        out = cross_validate_cmapss(hist, k=args.folds, cuts_per_unit=args.cuts, seed=args.seed, progress=say, bound_folds=0, **kw)
    elif args.what == "femto-ceiling":
        out = femto_ceiling(args.paths, given=_onsets(ap, args.onset) if args.onset else None, fractions=fr, progress=say)
    elif args.what == "femto-variants":
        out = variants(
            _femto_data(args.paths, say),
            fractions=fr,
            shipped=lambda data, f: femto_leave_one_out_data(data, fractions=f),
            progress=say,
        )
    else:
        out = femto_leave_one_out(args.paths, fractions=fr, progress=say)
    print(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY, default=float).decode())


if __name__ == "__main__":
    _main()
