"""``mantis-stream evaluate {ims,femto,nab,cmapss} PATH...``: the model figures, and a picture per asset.

Why this exists: a figure in the README is only worth something if anyone can
re-run it and look at what the model did. This command runs the same code as
the pipeline's stages over a public data set, shows a progress bar, prints the
table (Markdown, stdout) and writes one PNG per asset under ``--out``:

- ``femto BEARING...`` (folders of ``acc_*.csv`` or ``.npz`` repackings): leave
  one bearing out, each cut at 30, 50, 70, 80, 90 and 95 % of its life, PHM 2012
  accuracy next to the best constant guess on the same cuts. PNG: health
  indicator, alarm level (alert: degrading, danger: RUL under the work-order
  threshold), RUL with bounds against the true RUL.
- ``cmapss TRAIN_FILE``: 5-fold cross-validation by engine, 5 random cuts per
  engine, RMSE and PHM08 score. PNG per engine: the same three panels, out of fold.
- ``ims TEST_CSV...``: the anomaly detector over each bearing (``datasets.ims``),
  hours of warning before the end. PNG per bearing: the signal, anomaly score,
  alarms.
- ``nab ROOT``: ``detect`` over a NAB tree (``evaluation.nab``), the normalised
  standard-profile score per category. PNG per file: the value, anomaly score and
  the corpus-optimised threshold, labelled windows.

Plots need matplotlib (``pip install 'mantis-stream[plots]'``); without it the
tables are still printed and the command says so.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..cli import argument, command, option
from ..datasets import cmapss, femto
from ..evaluation.rul import cross_validate_cmapss, femto_leave_one_out_data
from ..evaluation.scoring import CUT_FRACTIONS
from ..models.rul import Bearing, RulEstimate
from ..settings import current_settings

DATASETS = ("ims", "femto", "nab", "cmapss")


def _say(msg: str) -> None:
    print(f"mantis-stream: {msg}", file=sys.stderr, flush=True)


def _safe(name: str) -> str:
    """A file name from an asset id (NAB names hold slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "asset"


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, or None when not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar(items: Sequence[Any], label: str) -> Any:
    return click.progressbar(items, label=label, file=sys.stderr, show_pos=True)


def alarm_levels(estimates: Sequence[Any], threshold: float) -> np.ndarray:
    """0 ok, 1 alert (degrading), 2 danger (degrading with a RUL under the work-order
    threshold, or at end of life). "Beyond the horizon" is ok whatever its number."""
    return np.array([2 if e.health_index <= 0.0 or (e.degrading and e.rul < threshold) else 1 if e.degrading else 0 for e in estimates])


def plot_rul(plt: Any, path: Path, title: str, x: np.ndarray, estimates: Sequence[Any], truth: np.ndarray, threshold: float, xlabel: str, cuts: Sequence[float] = ()) -> None:
    """Three panels against time: health indicator, alarm level, RUL with bounds and truth."""
    rul = np.array([e.rul for e in estimates])
    lo = np.array([e.lower for e in estimates])
    hi = np.array([e.upper for e in estimates])
    top = 1.3 * max(float(truth.max()), float(np.median(rul)), threshold)
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [2, 1, 3]})
    a1.plot(x, [1.0 - e.health_index for e in estimates], lw=0.8, color="tab:blue")
    a1.axhline(1.0, color="tab:red", ls="--", lw=0.8, label="end of life")
    a1.set_ylabel("health indicator\n(0 new, 1 failed)")
    a1.set_ylim(-0.05, 1.1)
    a1.legend(loc="upper left", fontsize=8)
    a1.set_title(title)
    a2.step(x, alarm_levels(estimates, threshold), where="post", color="tab:orange")
    a2.set_yticks([0, 1, 2], ["ok", "alert", "danger"])
    a2.set_ylim(-0.3, 2.3)
    a2.set_ylabel("alarm")
    a3.fill_between(x, np.minimum(lo, top), np.minimum(hi, top), color="tab:green", alpha=0.25, step="post", label="bounds")
    a3.plot(x, np.minimum(rul, top), color="tab:green", lw=1.0, label="RUL estimate")
    a3.plot(x, truth, color="black", ls="--", lw=0.8, label="true RUL")
    a3.axhline(threshold, color="tab:red", ls=":", lw=0.8, label="work-order threshold")
    for c in cuts:
        a3.axvline(c, color="grey", lw=0.5, alpha=0.6)
    a3.set_ylim(0, top)
    a3.set_ylabel("RUL")
    a3.set_xlabel(xlabel)
    a3.legend(loc="upper right", fontsize=8)
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_scores(plt: Any, path: Path, title: str, x: np.ndarray, values: np.ndarray, labels: Sequence[str], scores: np.ndarray, threshold: float, alarms: np.ndarray, xlabel: str, windows: Sequence[tuple[Any, Any]] = (), marks: Sequence[Any] = ()) -> None:
    """Two panels against time: the signal(s) and the anomaly score with its threshold and alarms."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for j, name in enumerate(labels):
        a1.plot(x, values[:, j], lw=0.7, label=name)
    a1.set_ylabel("value")
    a1.set_title(title)
    if len(labels) > 1:
        a1.legend(loc="upper left", fontsize=8)
    a2.plot(x, scores, lw=0.7, color="tab:purple", label="anomaly score")
    a2.axhline(threshold, color="tab:red", ls="--", lw=0.8, label=f"threshold {threshold:.2f}")
    if alarms.any():
        a2.scatter(x[alarms], scores[alarms], s=8, color="tab:red", zorder=3, label="alarm")
    a2.set_ylim(-0.02, 1.02)
    a2.set_ylabel("score")
    a2.set_xlabel(xlabel)
    for a in (a1, a2):
        for w0, w1 in windows:
            a.axvspan(w0, w1, color="gold", alpha=0.3)
        for m in marks:
            a.axvline(m, color="tab:red", lw=1.0)
        a.grid(alpha=0.3)
    a2.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# one function per data set: returns the Markdown table, writes the PNGs
# --------------------------------------------------------------------------------------


def evaluate_femto(paths: Sequence[str], out: Path, plt: Any) -> str:
    if len(paths) < 2:
        raise click.UsageError("femto needs at least two bearings (leave one out)")
    data: dict[str, Bearing] = {}
    with _bar(list(paths), "frame features") as bar:
        for p in bar:
            data[femto.bearing_name(p)] = (femto.bearing_features(p), femto.life_end_ts(p))
    threshold = current_settings().rul_threshold_seconds

    def draw(name: str, traj: list[tuple[float, RulEstimate]], start: float, end: float) -> None:
        if plt is None:
            return
        t = np.array([ts for ts, _ in traj])
        cuts = [f * (end - start) / 3600.0 for f in CUT_FRACTIONS]
        plot_rul(plt, out / f"{_safe(name)}.png", f"{name}: held out, trained on the others", (t - start) / 3600.0,
                 [e for _, e in traj], end - t, threshold, "hours since the first file", cuts)

    with _bar(list(data), "leave one bearing out") as bar:
        folds = iter(bar)
        next(folds, None)

        def on_bearing(name: str, traj: list[tuple[float, RulEstimate]], start: float, end: float) -> None:
            draw(name, traj, start, end)
            next(folds, None)

        res = femto_leave_one_out_data(data, on_bearing=on_bearing)
    lines = ["| bearing | life (s) | PHM 2012 accuracy | predicted / actual RUL (s) at the cuts |", "|---|---:|---:|---|"]
    for name, b in res["bearings"].items():
        life = b["cuts"][0]["actual_s"] / (1.0 - b["cuts"][0]["fraction"]) if b["cuts"] else float("nan")
        pairs = ", ".join(f"{c['predicted_s']:.0f}/{c['actual_s']:.0f}" for c in b["cuts"])
        lines.append(f"| {name} | {life:.0f} | {b['accuracy']:.3f} | {pairs} |")
    lines.append(f"| **all {res['cuts']} cuts** | | **{res['accuracy']:.3f}** | best constant guess {res['best_constant_s']:.0f} s: {res['best_constant_accuracy']:.3f} |")
    return "\n".join(lines)


def evaluate_cmapss(paths: Sequence[str], out: Path, plt: Any, quick: bool) -> str:
    hist = [list(u.rows()) for p in paths for u in cmapss.load_units(p)]
    threshold = current_settings().rul_threshold_cycles
    kw: dict[str, Any] = {"members": 1, "epochs": 5} if quick else {"members": 3, "epochs": 40}
    cap = 125.0

    with _bar(range(len(hist)), "cross-validation (engines)") as bar:
        units = iter(bar)
        next(units, None)

        def on_unit(i: int, traj: list[RulEstimate | None], cuts: list[int]) -> None:
            if plt is not None:
                n = len(hist[i])
                x = np.array([t for t, _ in hist[i]], dtype=np.float64)
                truth = np.minimum(np.arange(n - 1, -1, -1, dtype=np.float64), cap)
                plot_rul(plt, out / f"engine_{i + 1:03d}.png", f"engine {i + 1}: out of fold", x, traj, truth, threshold, "cycle", [x[k - 1] for k in cuts])
            next(units, None)

        res = cross_validate_cmapss(hist, cap=cap, on_unit=on_unit, bound_folds=0, **kw)
    return "\n".join([
        "| engines | cuts | RMSE (cycles) | RMSE, true RUL < 125 | PHM08 score per cut | per-fold RMSE |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {len(hist)} | {res['cuts']} | {res['rmse']:.2f} | {res['rmse_true_below_cap']:.2f} | {res['score_per_unit']:.2f} | {', '.join(f'{x:.2f}' for x in res['fold_rmse'])} |",
    ])


def evaluate_ims(paths: Sequence[str], out: Path, plt: Any) -> str:
    from ..datasets import ims

    lines = ["| test | bearing | first work order (h before the end) | detect's first alert (h before the end) | why |",
             "|---|---|---:|---:|---|"]
    tests = {p: ims.read_ims_csv(p) for p in paths}
    jobs = [(p, b, cols) for p, test in tests.items() for b, cols in test.bearings().items()]

    def shown(hours: float | None) -> str:
        return "none" if hours is None else f"{hours}"

    with _bar(jobs, "bearings") as bar:
        for p, bearing, cols in bar:
            test = tests[p]
            r, res = ims.report_bearing(test, bearing, cols)
            lines.append(f"| {Path(p).stem} | {bearing} | {shown(r['work_order_hours_before_end'])} | "
                         f"{shown(r['detect_alert_hours_before_end'])} | {(r['why'] or '-')[:80]} |")
            if plt is None:
                continue
            order = ims.first_work_order(test, bearing, res, 5)
            scores = np.array([s.score for s in res])
            alarms = np.array([s.is_anomaly for s in res])
            x = np.array(test.timestamps, dtype="datetime64[s]")
            marks = [x[order[0]]] if order else []
            thr = float(np.median([s.threshold for s in res]))
            plot_scores(plt, out / f"{_safe(Path(p).stem + '_' + bearing)}.png", f"{Path(p).stem} {bearing} (red line: first work order)",
                        x, test.values[:, cols], [test.channels[c] for c in cols], scores, thr, alarms, "snapshot time", marks=marks)
    return "\n".join(lines)


def evaluate_nab(paths: Sequence[str], out: Path, plt: Any) -> str:
    from ..datasets.nab import read_nab_csv
    from ..evaluation.nab import format_table, load_corpus, parse_nab_time, score_corpus
    from ..models.anomaly import detect_series

    tables = []
    for root in paths:
        files = load_corpus(root)
        series, scores = [], []
        with _bar(files, f"{root}: NAB files") as bar:
            for f in bar:
                ts, values = read_nab_csv(Path(root) / "data" / f.name)
                series.append((ts, values))
                scores.append(detect_series(values, window=current_settings().scalar_window))
        cs = score_corpus(files, scores)
        tables.append(format_table(cs))
        if plt is None:
            continue
        with _bar(list(zip(files, series, scores)), "pictures") as bar:
            for f, (ts, values), s in bar:
                x = np.array([parse_nab_time(t) for t in ts], dtype="datetime64[s]")
                s = np.asarray(s)
                plot_scores(plt, out / f"{_safe(f.name)}.png", f"{f.name} (yellow: labelled windows)", x, np.asarray(values, dtype=np.float64)[:, None],
                            ["value"], s, cs.threshold, s >= cs.threshold, "time", windows=[(x[a], x[b]) for a, b in f.windows])
    return "\n\n".join(tables)


RUNNERS: dict[str, Callable[..., str]] = {
    "femto": lambda paths, out, plt, quick: evaluate_femto(paths, out, plt),
    "cmapss": evaluate_cmapss,
    "ims": lambda paths, out, plt, quick: evaluate_ims(paths, out, plt),
    "nab": lambda paths, out, plt, quick: evaluate_nab(paths, out, plt),
}


def run(dataset: str, paths: Sequence[str], out: str | Path, *, quick: bool = False) -> str:
    """Evaluate ``dataset`` on ``paths``; PNGs under ``out/dataset``; returns the table."""
    for p in paths:
        if not Path(p).exists():
            raise click.UsageError(f"PATH {p} does not exist")
    plt = _pyplot()
    folder = Path(out) / dataset
    if plt is None:
        _say("matplotlib is not installed (pip install 'mantis-stream[plots]'): tables only, no PNG")
    else:
        folder.mkdir(parents=True, exist_ok=True)
    table = RUNNERS[dataset](paths, folder, plt, quick)
    if plt is not None:
        _say(f"pictures in {folder}/")
    return table


@command(
    argument("dataset", type=click.Choice(DATASETS)),
    argument("paths", nargs=-1, required=True),
    option("--out", default="evaluation", show_default=True, help="Directory for the PNGs (one sub-directory per data set)."),
    option("--quick", is_flag=True, default=False, help="cmapss: one small network per fold (smoke runs, tests)."),
)
async def evaluate(self: object, dataset: str, paths: tuple[str, ...], out: str, quick: bool) -> None:
    """Score a model on a public data set: a table on stdout, a PNG per asset."""
    print(run(dataset, paths, out, quick=quick), flush=True)
