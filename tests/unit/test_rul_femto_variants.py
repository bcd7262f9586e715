"""The other FEMTO predictors (evaluation/femto_variants.py) on generated bearings whose answer is known."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mantis_stream.evaluation.femto_variants import (
    _after_onset,
    growth_curve,
    leave_one_out,
    survival_guess,
    variants,
    weighted_best,
)
from mantis_stream.evaluation.rul import _main, femto_leave_one_out_data
from mantis_stream.evaluation.scoring import phm2012_accuracy
from mantis_stream.models.rul import Bearing

T0 = 1_767_225_600.0


def _ramp(life: float, seed: int, rise: float = 2.0) -> Bearing:
    """Frames every 10 s whose log RMS grows linearly by ``rise`` over the life (1 % noise)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(0.0, life, 10.0)
    rms = 0.5 * np.exp(rise * ts / life + rng.normal(0.0, 0.01, ts.size))
    rows = [(T0 + float(t), {"rms": float(r), "kurtosis": 3.0, "peak": 4 * float(r)}) for t, r in zip(ts, rms)]
    return {"acc_h": rows, "acc_v": rows}, T0 + life


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_best_is_the_exact_maximum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rem = rng.uniform(100.0, 5000.0, 9)
    w = rng.uniform(0.0, 1.0, 9)
    grid = np.geomspace(50.0, 6000.0, 40_001)
    er = 100.0 * (rem[None, :] - grid[:, None]) / rem[None, :]
    with np.errstate(over="ignore"):
        acc = np.where(er <= 0, 2.0 ** (er / 5.0), 2.0 ** (-er / 20.0)) @ w
    best = weighted_best(rem, w)
    got = (np.where((e := 100.0 * (rem - best) / rem) <= 0, 2.0 ** (e / 5.0), 2.0 ** (-e / 20.0)) @ w)
    assert got >= acc.max() - 1e-9
    assert weighted_best([300.0, 900.0], [0.0, 1.0]) == 900.0
    with pytest.raises(ValueError):
        weighted_best([100.0, -1.0])


def test_survival_guess_conditions_on_the_age() -> None:
    # lives 1000, 2000, 3000 s at age 1500: 500 or 1500 s left; 500 scores 0.55, 1500 scores 0.5
    assert survival_guess([1000.0, 2000.0, 3000.0], 1500.0, "empirical") == 500.0
    assert survival_guess([1000.0, 2000.0, 3000.0], 0.0, "empirical") == pytest.approx(
        max((1000.0, 2000.0, 3000.0), key=lambda g: phm2012_accuracy([1000.0, 2000.0, 3000.0], [g] * 3))
    )
    young, old = (survival_guess([5000.0, 8000.0, 16000.0, 28000.0], age) for age in (1000.0, 20000.0))
    assert young > 0 and old > 0
    with pytest.raises(ValueError, match="dist"):
        survival_guess([1000.0], 0.0, "weibull")


def test_growth_curve_is_the_log_rms_over_the_first_frames() -> None:
    curve = growth_curve(_ramp(3000.0, 0), smooth=1)
    assert curve.shape == (301, 2)  # cells of 10 s from the first frame to the failure
    # log RMS rises by 2 over the life; the baseline is the mean of the first 30 frames (t 0..290 s)
    assert curve[-1, 0] == pytest.approx(2.0 * 2990 / 3000 - 2.0 * 145 / 3000, abs=0.05)
    smoothed = growth_curve(_ramp(3000.0, 0), smooth=30)
    assert smoothed[-1, 0] == pytest.approx(curve[-15, 0], abs=0.05)  # the trailing median lags half a window


def test_leave_one_out_of_an_oracle_and_of_a_constant() -> None:
    data = {"Bearing1_1": _ramp(2000.0, 1), "Bearing1_2": _ramp(4000.0, 2)}
    lives = {"Bearing1_1": 2000.0, "Bearing1_2": 4000.0}
    exact = leave_one_out(data, lambda n, tr, age: lives[n] - age)
    assert exact["accuracy"] == pytest.approx(1.0, abs=1e-3)
    const = leave_one_out(data, lambda n, tr, age: 500.0, fractions=(0.5, 0.9))
    assert const["accuracy"] == pytest.approx(phm2012_accuracy([1000.0, 200.0, 2000.0, 400.0], [500.0] * 4), abs=1e-4)


def test_similarity_is_exact_when_the_bearings_age_alike() -> None:
    data = {f"Bearing1_{i}": _ramp(3000.0, i) for i in range(1, 4)}
    out = variants(data)
    sim = [v for k, v in out["variants"].items() if k.startswith("similarity")]
    assert len(sim) == 6
    # every training bearing's curve is the held-out one's: the best match ends at the same age
    assert max(v["accuracy"] for v in sim) > 0.9
    assert out["variants"]["constant"]["accuracy"] < 0.5  # one guess for six different remaining lives
    assert out["cuts"] == 18
    assert not any(k.startswith("shipped model, indicator") for k in out["variants"])


def test_indicators_go_through_the_shipped_model() -> None:
    data = {f"Bearing{c}_1": _ramp(2000.0 + 1000.0 * c, c) for c in range(1, 4)}
    seen: list[set[str]] = []

    def shipped(d: dict[str, Bearing], fr: tuple[float, ...]) -> dict[str, object]:
        seen.append({k for rows in d["Bearing1_1"][0].values() for _, f in rows for k in f})
        return femto_leave_one_out_data(d, fractions=fr)

    out = variants(data, shipped=shipped, indicators={"rms x kurtosis": (("rms", 1.0), ("kurtosis", 1.0))})
    assert seen == [{"rms"}]
    row = out["variants"]["shipped model, indicator rms x kurtosis"]
    assert 0.0 < row["accuracy"] <= 1.0 and set(row["bearings"]) == set(data)


def _growing_bearing(snapshots: int, seed: int) -> np.ndarray:
    """Accelerations whose amplitude grows x4 over the bearing's life."""
    rng = np.random.default_rng(seed)
    grow = np.exp(np.linspace(0.0, math.log(4.0), snapshots))[:, None, None]
    return rng.normal(0.0, 0.5, (snapshots, 2560, 2)) * grow


def test_femto_variants_command_on_generated_npz(write_femto_npz: Callable[[Path, np.ndarray], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [tmp_path / f"Bearing{i}_1.npz" for i in (1, 2)]
    for i, p in enumerate(paths):
        write_femto_npz(p, _growing_bearing(150 + 50 * i, i))
    _main(["femto-variants", *map(str, paths)])
    out = json.loads(capsys.readouterr().out)
    assert out["cuts"] == 12
    assert {"constant", "survival, lognormal", "shipped model, indicator rms x kurtosis"} <= set(out["variants"])
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in out["variants"].values())


def test_countdown_after_onset_is_exact_on_bearings_that_age_alike() -> None:
    data = {f"Bearing1_{i}": _ramp(3000.0, i) for i in range(1, 4)}
    predict = _after_onset(data, (0.5, 0.7, 0.9), "countdown")
    for name in data:
        train = [m for m in data if m != name]
        # the same model flags every bearing at the same age: the countdown fitted on
        # the others' cuts after their onsets is their remaining life
        for f in (0.5, 0.7, 0.9):
            assert predict(name, train, f * 3000.0) == pytest.approx((1 - f) * 3000.0, rel=0.03)


def test_fractions_option_cuts_where_asked(write_femto_npz: Callable[[Path, np.ndarray], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [tmp_path / f"Bearing{i}_1.npz" for i in (1, 2)]
    for i, p in enumerate(paths):
        write_femto_npz(p, _growing_bearing(150 + 50 * i, i))
    _main(["femto-loo", *map(str, paths), "--fractions", "0.5,0.9"])
    out = json.loads(capsys.readouterr().out)
    assert out["fractions"] == [0.5, 0.9] and out["cuts"] == 4
    assert [c["fraction"] for c in out["bearings"]["Bearing1_1"]["cuts"]] == [0.5, 0.9]
    for bad in ("0.9,0.5", "0.5,1.2", "half"):
        with pytest.raises(SystemExit):
            _main(["femto-loo", *map(str, paths), "--fractions", bad])


def test_uncapped_exponential_follows_a_log_linear_growth() -> None:
    data = {f"Bearing1_{i}": _ramp(3000.0, i) for i in range(1, 4)}
    predict = _after_onset(data, (0.5, 0.7, 0.9), "not capped")
    # log RMS grows linearly to the threshold: the exponential model's extrapolation is the remaining life
    for f in (0.3, 0.5, 0.7):
        assert predict("Bearing1_1", ["Bearing1_2", "Bearing1_3"], f * 3000.0) == pytest.approx((1 - f) * 3000.0, rel=0.1)
    with pytest.raises(ValueError, match="mode"):
        _after_onset(data, (0.5,), "linear")
