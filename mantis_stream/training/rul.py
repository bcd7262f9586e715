"""Training the RUL model on run-to-failure histories (offline; ``train-rul``, the evaluations).

Why this exists: the model the agent runs (:mod:`mantis_stream.models.rul`) is
fitted here, with the same featurizer and tracker code as online, so what is
scored offline is what streams:

- :func:`fit_cmapss`: operating regimes (k-means on the settings), sensors that
  follow the RUL, recursive features, a small network ensemble, bounds from
  out-of-fold residual quantiles;
- :func:`fit_femto`: the bearings' generic indicator, its failure threshold,
  slope prior and horizon from run-to-failure bearings.

Numpy only; no Kafka, Faust or asyncio.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..evaluation.scoring import CUT_FRACTIONS, phm2012_accuracy
from ..models.health import CmapssFeaturizer, GenericParams
from ..models.rul import (
    Bearing,
    Channels,
    CmapssPart,
    History,
    RulEstimate,
    RulModel,
    RulTracker,
    bearing_trajectory,
    first_ts,
)
from .mlp import fit_mlp_ensemble

__all__ = ["cmapss_targets", "featurize_histories", "find_regimes", "fit_cmapss", "fit_femto"]

# --------------------------------------------------------------------------------------
# C-MAPSS: the multi-channel model
# --------------------------------------------------------------------------------------


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
    for i in range(len(cand)):
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
            reg = fit_mlp_ensemble(
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
        for lo, hi in itertools.pairwise(edges):
            sel = (p_all >= lo) & (p_all < hi)
            rr = r_all[sel] if sel.sum() >= 30 else r_all
            qs.append((float(np.quantile(rr, 0.1)), float(np.quantile(rr, 0.9))))
    reg = fit_mlp_ensemble(x, y, hidden=hidden, members=members, epochs=epochs, seed=seed, y_scale=cap, progress=say)
    part = CmapssPart(fz, reg, cap, edges, qs)
    model = RulModel(cmapss=part, info={"cmapss_histories": len(histories), "cmapss_rows": len(x), "cmapss_cap": cap})
    model.stamp("cmapss")
    return model


# --------------------------------------------------------------------------------------
# Bearings (FEMTO/PRONOSTIA): generic indicator, parameters fitted to run-to-failure runs
# --------------------------------------------------------------------------------------


def _degrading_at(model: RulModel, channels: Channels) -> tuple[list[tuple[float, RulEstimate]], float | None]:
    """The bearing's trajectory and the first time either channel was degrading (None: never)."""
    traj = bearing_trajectory(model, channels)
    first = next((t for t, e in traj if e.degrading), None)
    return traj, first


def _phm2012_best(remaining: np.ndarray) -> float:
    """The guess with the best mean PHM 2012 accuracy over these remaining lives."""
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
    starts = [first_ts(channels) for channels, _ in bearings]
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
            level = tr.level()
            if level is not None:
                ends.append(level)
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
        f"onset at {', '.join(f'{age / life:.0%}' for age, life in zip(onset_ages, lives))} of life")
    if rates:
        slope = float(np.exp(np.mean(np.log(rates))))
        params.slope_prior, params.slope_prior_sd = slope, slope
        trajs = [bearing_trajectory(RulModel(generic={"seconds": params}), channels) for channels, _ in bearings]
    # remaining lives at the protocol's cuts where the bearing (with the prior) was not degrading
    pre = []
    for traj, start, life in zip(trajs, starts, lives):
        times = np.array([t for t, _ in traj])
        for frac in fractions:
            i = int(np.searchsorted(times, start + frac * life, side="right")) - 1
            if i >= 0 and not traj[i][1].degrading:
                pre.append((1.0 - frac) * life)
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
