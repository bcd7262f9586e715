"""Numenta Anomaly Benchmark (NAB) scoring, re-implemented on numpy arrays.

Why this exists
    ``detect --format nab`` is only useful with a number next to the NAB
    scoreboard (numenta HTM 70.1, ARTime 74.9, random 16.8 on the standard
    profile). This module computes that number the way NAB v1.1 does, without
    NAB's pandas/multiprocessing runner, so it runs in the test suite and on a
    subset of the corpus.

What NAB does (and so this module)
    - Each file's first ``min(floor(0.15 n), 0.15 * 5000)`` rows are probationary
      and not scored.
    - A row inside an anomaly window, if detected, is worth
      ``tp * S(pos) / S(-1)`` with the scaled sigmoid ``S(p) = 2 sigmoid(-5 p) - 1``
      and ``pos = -(right - i + 1) / width`` (-1 at the window's left edge, near 0
      at its right edge); only the best (earliest) detection in a window counts.
      A window without a detection costs ``-fn``.
    - Every detected row outside windows costs ``fp * S(pos)`` (negative): ``-fp``
      far from any window, less just after a window's right edge
      (``pos = (i - prev_right) / (prev_width - 1)``).
    - A row is detected when ``score >= threshold``; the threshold is the one that
      maximises the summed raw score over the *whole* corpus (``optimize_threshold``),
      trying every distinct score value.
    - Normalised score = ``100 (raw - null) / (perfect - null)`` with ``perfect =
      tp * number of windows`` (NAB's runner counts the windows file) and ``null``
      the raw score of a detector that never fires, ``-fn * number of scored
      windows``.

Usage
    >>> import numpy as np
    >>> f = NabFile("x.csv", np.arange(10.0), windows=[(6, 8)], probation=0)
    >>> round(score_file(f, np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0.0]), 0.5).raw, 5)
    0.94374

Notes
    Windows are given as inclusive row-index pairs (``NabFile``); ``load_corpus``
    builds them from NAB's ``combined_windows.json`` by exact timestamp match, as
    NAB does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = [
    "Profile",
    "PROFILES",
    "NabFile",
    "FileScore",
    "CorpusScore",
    "scaled_sigmoid",
    "probation_length",
    "row_weights",
    "score_file",
    "optimize_threshold",
    "score_corpus",
    "load_corpus",
    "parse_nab_time",
]


@dataclass(frozen=True)
class Profile:
    """NAB cost matrix."""

    tp: float = 1.0
    fn: float = 1.0
    fp: float = 0.11
    tn: float = 1.0


PROFILES: dict[str, Profile] = {
    "standard": Profile(1.0, 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile(1.0, 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile(1.0, 2.0, 0.11, 1.0),
}


def scaled_sigmoid(pos: float | np.ndarray) -> np.ndarray:
    """NAB's ``2 sigmoid(-5 pos) - 1``, and -1 beyond ``pos > 3``."""
    p = np.asarray(pos, dtype=np.float64)
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0)


def probation_length(n_rows: int, probation_percent: float = 0.15) -> float:
    """Rows ``i < probation_length`` are not scored."""
    return min(math.floor(probation_percent * n_rows), probation_percent * 5000)


@dataclass
class NabFile:
    """One data file's rows and labels: ``windows`` are inclusive (start, end) row indices."""

    name: str
    timestamps: np.ndarray | Sequence[object]
    windows: list[tuple[int, int]] = field(default_factory=list)
    probation: float | None = None  # rows before this are not scored; default NAB's 15 %
    category: str = ""

    @property
    def n_rows(self) -> int:
        return len(self.timestamps)

    def probation_rows(self, probation_percent: float = 0.15) -> float:
        return probation_length(self.n_rows, probation_percent) if self.probation is None else self.probation


def row_weights(f: NabFile, profile: Profile = PROFILES["standard"], probation_percent: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the value of a detection there, and its window id (-1: outside, -2: probationary).

    Window ids are the window's index in ``f.windows``.
    """
    n = f.n_rows
    weight = np.empty(n)
    wid = np.full(n, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    prev_right: int | None = None
    prev_width = 0.0
    cursor = 0
    for k, (start, end) in enumerate(sorted(f.windows)):
        # outside, before this window
        seg = np.arange(cursor, start)
        weight[cursor:start] = _fp_weights(seg, prev_right, prev_width) * profile.fp
        width = float(end - start + 1)
        idx = np.arange(start, end + 1)
        weight[start : end + 1] = scaled_sigmoid(-(end - idx + 1) / width) * profile.tp / max_tp
        wid[start : end + 1] = k
        prev_right, prev_width, cursor = end, width, end + 1
    seg = np.arange(cursor, n)
    weight[cursor:] = _fp_weights(seg, prev_right, prev_width) * profile.fp
    wid[np.arange(n) < f.probation_rows(probation_percent)] = -2
    return weight, wid


def _fp_weights(idx: np.ndarray, prev_right: int | None, prev_width: float) -> np.ndarray:
    if prev_right is None:
        return np.full(idx.size, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.abs(prev_right - idx) / (prev_width - 1.0)
    return scaled_sigmoid(pos)


@dataclass
class FileScore:
    name: str
    raw: float
    tp: int
    fp: int
    fn: int
    tn: int
    windows: int
    detected_windows: int
    threshold: float


def score_file(
    f: NabFile, scores: np.ndarray, threshold: float, profile: Profile = PROFILES["standard"], probation_percent: float = 0.15
) -> FileScore:
    """Raw NAB score of one file at a fixed threshold (detections: ``scores >= threshold``)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (f.n_rows,):
        raise ValueError(f"{f.name}: {s.size} scores for {f.n_rows} rows")
    weight, wid = row_weights(f, profile, probation_percent)
    scored = wid != -2
    det = (s >= threshold) & scored
    outside = wid == -1
    raw = float(weight[det & outside].sum())
    window_ids = np.unique(wid[scored & (wid >= 0)])
    detected = 0
    for k in window_ids:
        hit = det & (wid == k)
        if hit.any():
            raw += float(weight[hit].max())
            detected += 1
        else:
            raw -= profile.fn
    inside = scored & (wid >= 0)
    return FileScore(
        name=f.name,
        raw=raw,
        tp=int((det & inside).sum()),
        fp=int((det & outside).sum()),
        fn=int((~det & inside).sum()),
        tn=int((~det & outside & scored).sum()),
        windows=int(window_ids.size),
        detected_windows=detected,
        threshold=float(threshold),
    )


def optimize_threshold(
    files: Sequence[NabFile], scores: Sequence[np.ndarray], profile: Profile = PROFILES["standard"], probation_percent: float = 0.15
) -> tuple[float, float]:
    """(threshold, corpus raw score) maximising the summed raw score over all files.

    Sweeps every distinct score value at once: rows sorted by descending score,
    false positives accumulate, each window keeps its best detection so far.
    """
    ws, gs, ss = [], [], []
    n_windows = 0
    for f, sc in zip(files, scores):
        w, g = row_weights(f, profile, probation_percent)
        keep = g != -2
        g = g[keep]
        ids = np.unique(g[g >= 0])
        remap = np.full(max(len(f.windows), 1), -1, dtype=np.int64)
        remap[ids] = np.arange(n_windows, n_windows + ids.size)
        gs.append(np.where(g >= 0, remap[np.maximum(g, 0)], -1))
        n_windows += ids.size
        ws.append(w[keep])
        ss.append(np.asarray(sc, dtype=np.float64)[keep])
    w = np.concatenate(ws) if ws else np.empty(0)
    g = np.concatenate(gs) if gs else np.empty(0, dtype=np.int64)
    s = np.concatenate(ss) if ss else np.empty(0)
    base = -profile.fn * n_windows
    if s.size == 0:
        return 1.1, base
    order = np.argsort(-s, kind="stable")
    s, w, g = s[order], w[order], g[order]
    gain = np.where(g < 0, w, 0.0)  # false positives add their (negative) weight
    inside = np.flatnonzero(g >= 0)
    if inside.size:
        # running best per window, in sweep order: a row's gain is how much it raises its window's best
        by_window = inside[np.argsort(g[inside], kind="stable")]
        gw = g[by_window]
        best = w[by_window].copy()
        starts = np.r_[0, np.flatnonzero(np.diff(gw)) + 1]
        for a, b in zip(starts, np.r_[starts[1:], by_window.size]):
            best[a:b] = np.maximum.accumulate(best[a:b])
        prev = np.empty_like(best)
        prev[1:] = best[:-1]
        prev[starts] = -profile.fn
        gain[by_window] = np.maximum(best - prev, 0.0)
    # rounded so that float noise from the summation order does not break ties (NAB keeps the highest threshold)
    total = np.round(base + np.cumsum(gain), 9)
    # a threshold includes every row with an equal score: evaluate at the last row of each run
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    k = int(np.argmax(total[last]))
    if total[last][k] <= base:
        return 1.1, base  # firing never pays: NAB's starting threshold (no detection)
    return float(s[last[k]]), float(total[last[k]])


@dataclass
class CorpusScore:
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    by_category: dict[str, dict[str, float]]
    files: list[FileScore]


def _normalize(raw: float, null: float, perfect: float) -> float:
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0


def score_corpus(
    files: Sequence[NabFile],
    scores: Sequence[np.ndarray],
    profile: Profile = PROFILES["standard"],
    threshold: float | None = None,
    probation_percent: float = 0.15,
) -> CorpusScore:
    """Normalised NAB score overall and per category, at one corpus-wide threshold (optimised when None)."""
    if threshold is None:
        threshold, _ = optimize_threshold(files, scores, profile, probation_percent)
    per_file = [score_file(f, s, threshold, profile, probation_percent) for f, s in zip(files, scores)]
    cats: dict[str, list[tuple[NabFile, FileScore]]] = {}
    for f, fs in zip(files, per_file):
        cats.setdefault(f.category, []).append((f, fs))

    def summary(members: Iterable[tuple[NabFile, FileScore]]) -> dict[str, float]:
        members = list(members)
        raw = sum(fs.raw for _, fs in members)
        null = -profile.fn * sum(fs.windows for _, fs in members)
        perfect = profile.tp * sum(len(f.windows) for f, _ in members)
        return {
            "normalized": _normalize(raw, null, perfect),
            "raw": raw,
            "null": null,
            "perfect": perfect,
            "files": len(members),
            "windows": sum(fs.windows for _, fs in members),
            "detected_windows": sum(fs.detected_windows for _, fs in members),
            "fp": sum(fs.fp for _, fs in members),
        }

    overall = summary(zip(files, per_file))
    return CorpusScore(
        threshold=float(threshold),
        raw=overall["raw"],
        null=overall["null"],
        perfect=overall["perfect"],
        normalized=overall["normalized"],
        by_category={c: summary(m) for c, m in sorted(cats.items())} | {"ALL": overall},
        files=per_file,
    )


def parse_nab_time(text: str) -> datetime:
    """NAB timestamps: ``2014-04-10 07:15:00`` or with ``.ffffff``."""
    return datetime.fromisoformat(text.strip())


def load_corpus(
    root: str | Path, files: Iterable[str] | None = None, windows_path: str | Path | None = None
) -> list[NabFile]:
    """NAB files under ``root/data`` with windows from ``root/labels/combined_windows.json`` (or ``windows_path``).

    ``files``: relative names like ``realTweets/Twitter_volume_AAPL.csv`` (default:
    every file the windows JSON lists that exists under ``root/data``).
    """
    from mantis_stream.datasets.nab import read_nab_csv

    root = Path(root)
    windows_json = json.loads(Path(windows_path or root / "labels" / "combined_windows.json").read_text())
    names = list(files) if files is not None else sorted(k for k in windows_json if (root / "data" / k).exists())
    out = []
    for name in names:
        ts_text, _ = read_nab_csv(root / "data" / name)
        ts = [parse_nab_time(t) for t in ts_text]
        index = {t: i for i, t in enumerate(ts)}
        wins = []
        for start, end in windows_json.get(name, []):
            a, b = parse_nab_time(start), parse_nab_time(end)
            if a not in index or b not in index:
                raise ValueError(f"{name}: window {start} .. {end} does not start and end on a row")
            wins.append((index[a], index[b]))
        out.append(NabFile(name=name, timestamps=np.asarray(ts, dtype=object), windows=wins, category=name.split("/")[0]))
    return out


#: Normalised standard-profile scores on the whole NAB v1.1 corpus (58 files),
#: from numenta/NAB's ``results/final_results.json``.
SCOREBOARD: dict[str, float] = {"ARTime": 74.9, "numenta (HTM)": 70.1, "random": 16.8, "null": 0.0}


def _detect_file(args: tuple[str, dict[str, int]]) -> np.ndarray:
    from mantis_stream.datasets.nab import read_nab_csv
    from mantis_stream.models.anomaly import detect_series

    path, params = args
    _, values = read_nab_csv(path)
    return detect_series(values, **params)


def run_detector(root: str | Path, workers: int = 1, **params: int) -> tuple[list[NabFile], list[np.ndarray]]:
    """``detect_series`` over every labelled file under ``root/data`` (one process per worker)."""
    files = load_corpus(root)
    jobs = [(str(Path(root) / "data" / f.name), dict(params)) for f in files]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            scores = list(ex.map(_detect_file, jobs))
    else:
        scores = [_detect_file(j) for j in jobs]
    return files, scores


def format_table(cs: CorpusScore) -> str:
    """Per-category and overall normalised scores as a Markdown table."""
    lines = [
        f"threshold {cs.threshold:.6f} (optimised over the corpus), raw {cs.raw:.3f}, null {cs.null:.0f}, perfect {cs.perfect:.0f}",
        "",
        "| category | files | windows found | FP rows | NAB standard |",
        "|---|---:|---:|---:|---:|",
    ]
    for cat, d in cs.by_category.items():
        # without windows null = perfect = 0: only the raw (false-positive) cost means something
        value = f"{d['normalized']:.1f}" if d["windows"] else f"n/a (raw {d['raw']:.2f})"
        lines.append(f"| {cat} | {d['files']} | {d['detected_windows']}/{d['windows']} | {d['fp']} | {value} |")
    return "\n".join(lines)
