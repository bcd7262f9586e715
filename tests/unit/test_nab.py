"""NAB: the scorer against hand-computed values, the reader, and ``detect`` causality."""

from __future__ import annotations

import doctest
import io
import math
from pathlib import Path

import numpy as np
import pytest

from mantis_stream.datasets import nab as nab_data
from mantis_stream.datasets.nab import read_nab_rows, scores_csv
from mantis_stream.evaluation import nab as nab_eval
from mantis_stream.evaluation.nab import (
    PROFILES,
    NabFile,
    load_corpus,
    optimize_threshold,
    probation_length,
    row_weights,
    scaled_sigmoid,
    score_corpus,
    score_file,
)
from mantis_stream.models.anomaly import detect_series

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nab"
SPIKE_FILE = FIXTURES / "data" / "synthetic" / "spike_and_shift.csv"


def sig(p: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


# -- scorer ------------------------------------------------------------------


def test_scaled_sigmoid_matches_nab_anchor_values():
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(scaled_sigmoid(-0.5)) == pytest.approx(0.84828, abs=1e-5)
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(1.0)) == pytest.approx(-0.98661, abs=1e-5)
    assert float(scaled_sigmoid(3.5)) == -1.0


def test_probation_length():
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750.0


def test_hand_computed_file_score():
    """10 rows, window rows 6..8 (width 3), no probation; detections at rows 2, 7, 8, 9."""
    f = NabFile("tiny.csv", np.arange(10), windows=[(6, 8)], probation=0)
    scores = np.array([0, 0, 1, 0, 0, 0, 0, 1, 1, 1], dtype=float)
    res = score_file(f, scores, threshold=0.5)
    tp_row7 = sig(-2 / 3) / sig(-1.0)  # -(8 - 7 + 1) / 3; row 8 counts less and only the best counts
    fp_row2 = -0.11  # before any window: full penalty
    fp_row9 = 0.11 * sig(1 / 2)  # |8 - 9| / (3 - 1) past the window
    assert tp_row7 == pytest.approx(0.943742, abs=1e-6)
    assert res.raw == pytest.approx(tp_row7 + fp_row2 + fp_row9, abs=1e-12)
    assert (res.tp, res.fp, res.fn, res.tn, res.detected_windows) == (2, 2, 1, 5, 1)
    # normalised: null = -1 (the window missed), perfect = +1
    cs = score_corpus([f], [scores], threshold=0.5)
    assert cs.normalized == pytest.approx(100 * (res.raw + 1) / 2)
    # nothing detected: exactly the null score
    assert score_file(f, np.zeros(10), 0.5).raw == -1.0
    # low-FN profile doubles the miss
    assert score_file(f, np.zeros(10), 0.5, PROFILES["reward_low_FN_rate"]).raw == -2.0


def test_probationary_rows_are_not_scored():
    f = NabFile("p.csv", np.arange(10), windows=[(6, 8)], probation=3)
    _, wid = row_weights(f)
    assert wid[:3].tolist() == [-2, -2, -2]
    early = np.zeros(10)
    early[1] = 1.0  # a detection inside probation costs nothing
    assert score_file(f, early, 0.5).raw == -1.0


def test_optimize_threshold_equals_brute_force():
    rng = np.random.default_rng(0)
    files = [
        NabFile("a.csv", np.arange(200), windows=[(40, 60), (150, 170)], category="x"),
        NabFile("b.csv", np.arange(150), windows=[(100, 120)], category="y"),
        NabFile("c.csv", np.arange(120), windows=[], category="y"),
    ]
    scores = [np.round(rng.random(f.n_rows), 2) for f in files]  # ties on purpose
    scores[0][45] = 0.995
    thr, raw = optimize_threshold(files, scores)
    candidates = sorted({float(x) for s in scores for x in s} | {1.1})
    brute = {t: sum(score_file(f, s, t).raw for f, s in zip(files, scores)) for t in candidates}
    best = max(brute.values())
    assert raw == pytest.approx(best, abs=1e-9)
    assert brute[thr] == pytest.approx(best, abs=1e-9)
    cs = score_corpus(files, scores)
    assert set(cs.by_category) == {"x", "y", "ALL"}
    assert cs.by_category["ALL"]["raw"] == pytest.approx(best, abs=1e-9)


def test_load_corpus_from_fixture():
    (f,) = load_corpus(FIXTURES)
    assert f.name == "synthetic/spike_and_shift.csv" and f.category == "synthetic"
    assert f.windows == [(482, 518), (602, 638)]
    assert f.probation_rows() == 108


# -- reader and detect --------------------------------------------------------


def test_reader_keeps_text_and_rejects_bad_rows():
    ts, values, text = read_nab_rows(io.StringIO("timestamp,value\n2015-01-01 00:00:00,7\n2015-01-01 00:05:00,1e3\n"))
    assert ts[1] == "2015-01-01 00:05:00" and values.tolist() == [7.0, 1000.0] and text == ["7", "1e3"]
    with pytest.raises(ValueError, match="line 2"):
        read_nab_rows(io.StringIO("timestamp,value\n2015-01-01,abc\n"))
    with pytest.raises(ValueError, match="not finite"):
        read_nab_rows(io.StringIO("timestamp,value\n2015-01-01,nan\n"))


def test_detect_output_format():
    ts, values, text = read_nab_rows(SPIKE_FILE)
    scores = detect_series(values)
    out = scores_csv(ts, text, scores).splitlines()
    assert out[0] == "timestamp,value,anomaly_score"
    assert len(out) == len(ts) + 1
    assert out[1].startswith(f"{ts[0]},{text[0]},")
    assert all(0.0 <= float(line.rsplit(",", 1)[1]) <= 1.0 for line in out[1:])


def test_detect_is_causal():
    """A row's score never changes when later rows are appended."""
    _, values, _ = read_nab_rows(SPIKE_FILE)
    full = detect_series(values)
    for cut in (150, 400, 501, 650):
        np.testing.assert_array_equal(detect_series(values[:cut]), full[:cut])
    assert full.max() > 0.25  # not trivially all zeros


def test_detect_finds_the_spike_and_the_shift():
    """A daily cycle with noise, then a spike and a level shift: both scored above every normal row, and NAB credits them."""
    rng = np.random.default_rng(8)
    n = 2400
    values = 50 + 8 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.standard_normal(n)
    values[1800] += 40  # spike
    values[2100:] += 25  # level shift
    scores = detect_series(values)
    f = NabFile("synthetic.csv", np.arange(n), windows=[(1790, 1810), (2090, 2130)])
    normal = np.ones(n, dtype=bool)
    normal[: int(f.probation_rows())] = False
    for a, b in f.windows:
        normal[a : b + 1] = False
    assert scores[1800] >= 0.5 and scores[1800] > scores[normal].max()
    assert scores[2100:2110].max() >= 0.5 and scores[2100:2110].max() > scores[normal].max()
    assert (scores[2300:] >= 0.5).all(), "the shifted level becomes and stays an alert: it departs from the protected reference"
    cs = score_corpus([f], [scores])
    assert cs.by_category["ALL"]["detected_windows"] == 2 and cs.normalized > 50


@pytest.mark.parametrize("module", [nab_data, nab_eval])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_cumulative_sweep_handles_all_equal_scores():
    f = NabFile("flat.csv", np.arange(50), windows=[(20, 30)])
    thr, raw = optimize_threshold([f], [np.full(50, 0.5)])
    # firing everywhere would catch the window at its left edge but pay for every other row
    fire_all = score_file(f, np.full(50, 0.5), 0.5).raw
    assert raw == max(fire_all, -1.0)
    assert thr in (0.5, 1.1)
