"""The FEMTO accuracy ceiling (evaluation/ceiling.py) on generated data whose answer is known."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mantis_stream.evaluation.ceiling import (
    RULES,
    Cut,
    OnsetRule,
    best_scaled,
    femto_ceiling_data,
    needed_before_onset,
    oracle_ceiling,
    series_onset,
    staged_ceiling,
)
from mantis_stream.evaluation.rul import _main
from mantis_stream.evaluation.scoring import phm2012_accuracy
from mantis_stream.models.rul import Bearing

RMS_RULE = OnsetRule("rms", ("rms",), "both")


def _grid_best(actual: list[float], x: list[float]) -> float:
    a, xs = np.array(actual), np.array(x)
    lo, hi = (a / xs).min() * 0.2, (a / xs).max() * 1.5
    with np.errstate(over="ignore"):  # the formula's unused branch overflows on large over-estimates
        return max(phm2012_accuracy(a, k * xs) for k in np.linspace(lo, hi, 20_001))


def test_best_constant_by_hand() -> None:
    # guess 100: exact on 100, 50 % under on 200 (A = 2**-2.5); guess 200: 100 % over on 100 (A ~ 0)
    theta, acc = best_scaled([100.0, 200.0], [1.0, 1.0])
    assert theta == pytest.approx(100.0)
    assert acc == pytest.approx((1.0 + 2.0**-2.5) / 2.0)


@pytest.mark.parametrize("seed", range(5))
def test_best_scaled_is_the_exact_maximum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    actual = list(rng.uniform(200.0, 20_000.0, 15))
    x = list(rng.uniform(100.0, 20_000.0, 15))
    _, acc = best_scaled(actual, x)
    grid = _grid_best(actual, x)
    assert acc >= grid - 1e-12  # never below a dense search ...
    assert acc <= grid + 2e-3  # ... and only above it by the grid's resolution


def test_countdown_offset_is_exact_on_a_countdown() -> None:
    since = np.array([0.0, 100.0, 250.0, 400.0])
    actual = 500.0 - since
    theta, acc = best_scaled(actual, np.ones(4), -since)
    assert theta == pytest.approx(500.0)
    assert acc == pytest.approx(1.0)


def _series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.linspace(0.0, 1.0, n, endpoint=False), np.exp(rng.normal(0.0, 0.05, n))


def test_durable_step_is_found_where_it_starts() -> None:
    f, v = _series(2000, 1)
    v[f >= 0.4] *= 3.0
    assert series_onset(f, v, RMS_RULE) == (0.4, "up")


def test_transient_spike_is_not_an_onset_and_a_fall_counts_only_when_asked() -> None:
    f, v = _series(2000, 2)
    v[(f >= 0.2) & (f < 0.25)] *= 5.0  # a spike that settles
    assert series_onset(f, v, RMS_RULE) is None
    v[f >= 0.3] *= 0.3  # a durable fall
    assert series_onset(f, v, RMS_RULE) == (0.3, "down")
    assert series_onset(f, v, OnsetRule("up", ("rms",), "up")) is None


def test_needed_before_onset() -> None:
    assert needed_before_onset(36, 6, 0.40) == pytest.approx((14.4 - 6) / 30)
    assert needed_before_onset(4, 4, 0.40) is None


def test_oracle_is_exact_after_onset_and_best_in_sample_before() -> None:
    life = 1000.0
    cuts = [Cut(b, 1, f, f * life, (1 - f) * life) for b in ("A", "B") for f in (0.3, 0.5, 0.7, 0.9)]
    out = oracle_ceiling(cuts, {"A": 0.6, "B": None})
    before = [c.actual for c in cuts if not (c.bearing == "A" and c.fraction >= 0.6)]
    assert out["cuts_after_onset"] == 2
    _, const = best_scaled(before, [1.0] * len(before))
    assert out["families"]["constant"]["ceiling"] == pytest.approx((2 + const * 6) / 8, abs=1e-4)
    ages = [c.age for c in cuts if not (c.bearing == "A" and c.fraction >= 0.6)]
    _, kage = best_scaled(before, ages)
    assert out["families"]["k x age"]["before_onset_accuracy"] == pytest.approx(kage, abs=1e-4)
    # bearing A's countdown from its onset (600 s): c = 400 is exact at both of its cuts
    informed = out["onset_informed"]["c - time since onset"]
    assert informed["after_onset_accuracy"] == pytest.approx(1.0)
    # A and B have the same life: fitted on the other bearing, a guess is the in-sample one
    # for B's cuts; A's two pre-onset cuts get B's best constant over four cuts
    loo = out["leave_one_out"]["before onset: constant, exact after"]
    assert loo <= out["families"]["constant"]["ceiling"] + 1e-9
    g_b, _ = best_scaled(before[2:], [1.0] * 4)
    g_a, _ = best_scaled(before[:2], [1.0] * 2)
    expect = (2 + 4 * phm2012_accuracy(before[2:], [g_a] * 4) + 2 * phm2012_accuracy(before[:2], [g_b] * 2)) / 8
    assert loo == pytest.approx(expect, abs=1e-4)


def _bearing(life: float, step_at: float | None, seed: int) -> Bearing:
    """Frames every 10 s of a generated bearing: RMS ~ 0.5 g with 5 % noise, x3 from ``step_at``."""
    rng = np.random.default_rng(seed)
    t0 = 1_767_225_600.0
    ts = t0 + np.arange(0.0, life, 10.0)
    rms = 0.5 * np.exp(rng.normal(0.0, 0.05, ts.size))
    if step_at is not None:
        rms[ts - t0 >= step_at * life] *= 3.0
    kurt = 3.0 * np.exp(rng.normal(0.0, 0.05, ts.size))
    rows = [(float(t), {"rms": float(r), "kurtosis": float(k)}) for t, r, k in zip(ts, rms, kurt)]
    return {"acc_h": rows, "acc_v": rows}, t0 + life


def test_femto_ceiling_on_generated_bearings() -> None:
    data = {"Bearing1_1": _bearing(10_000.0, 0.6, 3), "Bearing2_1": _bearing(6_000.0, None, 4)}
    out = femto_ceiling_data(data)
    assert [r["rule"] for r in out["rules"]] == [r.name for r in RULES]
    for rule in out["rules"]:
        b1, b2 = rule["bearings"]["Bearing1_1"], rule["bearings"]["Bearing2_1"]
        assert 0.6 <= b1["onset"] <= 0.62  # the health indicator lags the step by its smoothing
        assert b1["cuts_after_onset"] == 4  # 70, 80, 90, 95 %
        assert b2["onset"] is None and b2["cuts_after_onset"] == 0
        assert rule["cuts"] == 12 and rule["cuts_after_onset"] == 4
        before = [(1 - f) * 10_000.0 for f in (0.3, 0.5)] + [(1 - f) * 6_000.0 for f in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)]
        grid = _grid_best(before, [1.0] * len(before))
        ceiling = rule["families"]["constant"]["ceiling"]
        assert (4 + grid * 8) / 12 - 1e-4 <= ceiling <= (4 + grid * 8) / 12 + 2e-3
        assert rule["needed_before_onset_for_target"] == pytest.approx((0.4 * 12 - 4) / 8, abs=1e-4)
        assert not math.isnan(rule["onset_informed"]["constant"]["ceiling"])


def test_given_onsets_are_scored_as_one_more_row() -> None:
    data = {"Bearing1_1": _bearing(10_000.0, 0.6, 3), "Bearing2_1": _bearing(6_000.0, None, 4)}
    out = femto_ceiling_data(data, given={"Bearing2_1": 0.5})
    row = out["rules"][-1]
    assert row["rule"] == "given onsets"
    assert row["bearings"]["Bearing2_1"] == {"onset": 0.5, "cuts_after_onset": 5}
    assert row["bearings"]["Bearing1_1"]["cuts_after_onset"] == 4  # the first rule's onset
    assert row["cuts_after_onset"] == 9
    with pytest.raises(ValueError, match="Bearing9_9"):
        femto_ceiling_data(data, given={"Bearing9_9": 0.5})


def _stepped_bearing(snapshots: int, step_at: float, seed: int) -> np.ndarray:
    """White noise of 0.5 g, x3 from ``step_at`` of life."""
    rng = np.random.default_rng(seed)
    acc = rng.normal(0.0, 0.5, (snapshots, 2560, 2))
    acc[int(step_at * snapshots) :] *= 3.0
    return acc


def test_femto_ceiling_command_on_generated_npz(write_femto_npz: Callable[[Path, np.ndarray], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "Bearing1_1.npz", tmp_path / "Bearing3_1.npz"
    write_femto_npz(one, _stepped_bearing(400, 0.6, 5))
    write_femto_npz(two, _stepped_bearing(300, 0.75, 6))
    _main(["femto-ceiling", str(one), str(two), "--onset", "Bearing3_1=none"])
    out = json.loads(capsys.readouterr().out)
    first = out["rules"][0]["bearings"]
    assert 0.59 <= first["Bearing1_1"]["onset"] <= 0.62
    assert 0.74 <= first["Bearing3_1"]["onset"] <= 0.77
    given = out["rules"][-1]
    assert given["bearings"]["Bearing3_1"] == {"onset": None, "cuts_after_onset": 0}
    assert given["cuts_after_onset"] == first["Bearing1_1"]["cuts_after_onset"] == 4
    with pytest.raises(SystemExit):
        _main(["femto-ceiling", str(one), "--onset", "Bearing1_1=soon"])


def test_staged_oracle_is_exact_only_after_the_final_rise() -> None:
    life = 1000.0
    cuts = [Cut(b, 1, f, f * life, (1 - f) * life) for b in ("A", "B") for f in (0.3, 0.5, 0.7, 0.9)]
    # A changes at 20 % (a step that stays flat), rises finally at 85 %; B never changes
    out = staged_ceiling(cuts, {"A": 0.2, "B": None}, {"A": 0.85, "B": None})
    assert (out["cuts_exact"], out["cuts_changed"], out["cuts_before"]) == (1, 3, 4)
    before = [c.actual for c in cuts if c.bearing == "B"]
    changed = [c.actual for c in cuts if c.bearing == "A" and c.fraction < 0.85]
    pre = max(best_scaled(before, x)[1] for x in ([1.0] * 4, [c.age for c in cuts if c.bearing == "B"]))
    # A's countdown from its change at 200 s: c = 800 is exact at 30, 50, 70 %
    assert out["in_sample"]["c - time since onset"] == pytest.approx((1 + 4 * pre + 3) / 8, abs=1e-4)
    _, const = best_scaled(changed, [1.0] * 3)
    assert out["in_sample"]["constant"] == pytest.approx((1 + 4 * pre + 3 * const) / 8, abs=1e-4)
    # fitted leave one bearing out, no other bearing is in A's stage: it borrows B's cuts
    assert out["leave_one_out"]["constant"] < out["in_sample"]["constant"]
    # with the final rise taken as the first change, the staged oracle is the plain one
    same = staged_ceiling(cuts, {"A": 0.85, "B": None}, {"A": 0.85, "B": None})
    plain = oracle_ceiling(cuts, {"A": 0.85, "B": None})
    assert same["cuts_changed"] == 0
    assert same["in_sample"]["constant"] == pytest.approx(max(f["ceiling"] for f in plain["families"].values()), abs=1e-4)


def test_given_onsets_add_a_staged_reading_to_each_rule() -> None:
    data = {"Bearing1_1": _bearing(10_000.0, 0.6, 3), "Bearing2_1": _bearing(6_000.0, None, 4)}
    out = femto_ceiling_data(data, given={"Bearing1_1": 0.9})
    for row in out["rules"][:-1]:
        st = row["staged"]
        # Bearing1_1: changed at 60 %, exact from 90 % (two cuts), 70/80 % in between
        assert (st["cuts_exact"], st["cuts_changed"], st["cuts_before"]) == (2, 2, 8)
    assert "staged" not in out["rules"][-1]
