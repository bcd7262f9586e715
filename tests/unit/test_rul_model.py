"""RUL model, tracker and scorers (no Kafka; no ../shared/data: synthetic fixtures)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "rul"))

from mantis_stream.datasets import cmapss
from mantis_stream.dsp.stats import window_features
from mantis_stream.evaluation.rul import (
    phm08_score,
    phm2012_accuracy,
    phm2012_errors,
    rmse,
    score_cmapss,
    truncation_points,
    unit_folds,
)
from mantis_stream.models.health import GenericHealth, GenericParams
from mantis_stream.models.maintenance import AssetMaintenance
from mantis_stream.models.reading import validate_reading
from mantis_stream.models.rul import RulEstimate, RulModel, RulTracker, run_tracker
from mantis_stream.settings import Settings
from mantis_stream.training.rul import fit_cmapss

import rul_synth

# ---------------------------------------------------------------------------------------
# scorers, against hand-computed values
# ---------------------------------------------------------------------------------------


def test_rmse_hand_computed() -> None:
    # errors 3 and -4: sqrt((9 + 16) / 2)
    assert rmse([10, 20], [13, 16]) == pytest.approx(math.sqrt(12.5))


def test_phm08_score_is_asymmetric() -> None:
    # early by 10: exp(10/13) - 1 = 1.158106; late by 10: exp(1) - 1 = 1.718282
    assert phm08_score([10], [0]) == pytest.approx(1.1581055, rel=1e-6)
    assert phm08_score([20], [30]) == pytest.approx(1.7182818, rel=1e-6)
    assert phm08_score([10, 20], [0, 30]) == pytest.approx(2.8763874, rel=1e-6)
    assert phm08_score([50, 60], [50, 60]) == 0.0


def test_phm2012_accuracy_hand_computed() -> None:
    # over-estimate by 10 %: Er = -10 -> exp(ln 0.5 * 10 / 5) = 0.25
    # under-estimate by 20 %: Er = 20 -> exp(ln 0.5 * 20 / 20) = 0.5
    assert phm2012_errors([100, 100], [110, 80]).tolist() == pytest.approx([-10.0, 20.0])
    assert phm2012_accuracy([100], [110]) == pytest.approx(0.25)
    assert phm2012_accuracy([100], [80]) == pytest.approx(0.5)
    assert phm2012_accuracy([100, 100], [110, 80]) == pytest.approx(0.375)
    assert phm2012_accuracy([5730.0], [5730.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        phm2012_accuracy([0.0], [1.0])


def test_scorers_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        rmse([1, 2], [1])
    with pytest.raises(ValueError):
        phm08_score([], [])


def test_unit_folds_validate_every_unit_once() -> None:
    folds = unit_folds(range(1, 23), k=5, seed=3)
    seen = [u for _, val in folds for u in val]
    assert sorted(seen) == list(range(1, 23))
    for train, val in folds:
        assert not set(train) & set(val)
        assert len(train) + len(val) == 22


def test_truncation_points_stay_in_range() -> None:
    cuts = truncation_points(200, n=500, min_history=31, seed=1)
    assert min(cuts) >= 31 and max(cuts) <= 200
    assert len(set(cuts)) > 50
    assert truncation_points(10, n=3, min_history=31, seed=0) == [10, 10, 10]


# ---------------------------------------------------------------------------------------
# the untrained default and the generic (vibration / scalar) indicator
# ---------------------------------------------------------------------------------------


def _vibration_stream(life_s: float = 4000.0, step: float = 10.0, start: float = 1.7e9, seed: int = 0):
    """RMS flat, then growing exponentially to 6x at the end of life; kurtosis noisy."""
    rng = np.random.default_rng(seed)
    n = int(life_s / step)
    for i in range(n + 1):
        t = i * step
        growth = math.exp(1.8 * max(0.0, (t - 0.4 * life_s) / (0.6 * life_s)) ** 1.5)
        rms = 0.4 * growth * math.exp(rng.normal(0.0, 0.03))
        yield start + t, {"rms": rms, "kurtosis": 3.0 + rng.normal(0.0, 0.2), "peak": 4 * rms}


def test_default_model_tracks_vibration_features() -> None:
    model = RulModel.default()
    tracker = RulTracker(model, "seconds")
    first = None
    ests = []
    for t, feats in _vibration_stream():
        est = tracker.update(t, feats)
        if first is None:
            first = (t, est)
        if est is not None:
            ests.append(est)
    assert first[1] is None, "too little history must give None"
    assert ests, "the generic indicator must give estimates after its baseline"
    for e in ests:
        assert isinstance(e, RulEstimate)
        assert e.unit == "seconds"
        assert 0.0 <= e.health_index <= 1.0
        assert 0.0 <= e.lower <= e.rul <= e.upper
        assert all(math.isfinite(x) for x in (e.rul, e.lower, e.upper))
    # healthy at the start, clearly degraded at the end
    assert ests[0].health_index > 0.9
    assert ests[-1].health_index < 0.5
    assert ests[-1].rul < ests[len(ests) // 4].rul


def test_generic_extrapolates_to_threshold() -> None:
    # log RMS grows linearly (exponential RMS): 0.001 per second after the baseline;
    # threshold 1.0 -> from level 0.5 the remaining life is ~500 s
    params = GenericParams(baseline_n=5, tau_smooth=1.0, tau_trend=200.0, threshold=1.0, onset=0.1, max_rul=1e6)
    model = RulModel(generic={"seconds": params})
    tracker = RulTracker(model, "seconds")
    est = None
    t0 = 1.7e9
    for i in range(0, 600):
        t = t0 + i
        level = 0.0 if i < 100 else 0.001 * (i - 100)
        est = tracker.update(t, {"rms": 0.5 * math.exp(level)}) or est
    # level at i=599 is 0.499 -> ~501 s to reach 1.0
    assert est is not None
    assert est.rul == pytest.approx(501.0, rel=0.1)
    assert est.lower <= est.rul <= est.upper
    assert est.health_index == pytest.approx(0.5, abs=0.05)


def test_bearing_beyond_the_horizon_then_bayesian_degradation() -> None:
    """Vibration: healthy -> beyond the horizon and not degrading; after the onset the
    exponential model's RUL follows the truth, the bounds hold it and tighten as frames
    come in; the slope prior gives a RUL from the first degrading frames."""
    prior = 1.0 / 1000.0
    params = GenericParams(baseline_n=30, threshold=1.5, onset=0.3, slope_prior=prior, slope_prior_sd=prior, horizon=900.0, warning_min=200.0)
    model = RulModel(generic={"seconds": params})
    tracker = RulTracker(model, "seconds")
    rng = np.random.default_rng(4)
    t_on, rate, step = 4000.0, 1.0 / 2000.0, 8.0
    fail = t_on + 1.5 / rate
    out = []
    for i in range(int(fail / step)):
        t = i * step
        level = rate * max(0.0, t - t_on)
        est = tracker.update(T0 + t, {"rms": 0.3 * math.exp(level + 0.05 * rng.standard_normal())})
        if est is not None:
            out.append((t, est))
    healthy = [e for t, e in out if t < t_on]
    assert all(not e.degrading and e.rul == 900.0 and e.lower == 200.0 for e in healthy)
    late = [(t, e) for t, e in out if t > t_on + 1000.0]
    assert late and all(e.degrading for _, e in late)
    for t, e in late[::10]:
        assert e.lower <= fail - t <= e.upper or abs(e.rul - (fail - t)) < 0.25 * (fail - t), (t, e)
    widths = [(e.upper - e.lower) / e.rul for _, e in late]
    assert widths[-1] < 0.5 * widths[0]


def test_scalar_window_features_use_drift() -> None:
    model = RulModel.default()
    tracker = RulTracker(model, "seconds")
    rng = np.random.default_rng(1)
    his = []
    for i in range(300):
        mean = 70.0 + (0.0 if i < 100 else 0.05 * (i - 100)) + rng.normal(0, 0.2)
        est = tracker.update(1.7e9 + 60 * i, {"mean": mean, "std": 0.2, "slope": 0.0, "min": mean - 1, "max": mean + 1})
        if est is not None:
            his.append(est.health_index)
    assert his[0] > 0.8 and his[-1] < his[0]


#: The work-order rule's thresholds, as the orchestrator builds them from the settings.
THRESHOLDS = {unit: Settings.model_fields[f"rul_threshold_{unit}"].default for unit in ("cycles", "seconds")}
T0 = 1.79e9


def _scalar_windows(values: np.ndarray, window: int = 10):
    """(t, window features) as the feature stage emits them: one sliding window per 1-s reading."""
    for i in range(window - 1, len(values)):
        yield T0 + i, window_features(values[i - window + 1 : i + 1])


def _work_orders(rows, model: RulModel) -> tuple[list[RulEstimate], list[float]]:
    """Feed rows to a tracker and its estimates to the work-order rule: (estimates, times of orders)."""
    tracker = RulTracker(model, "seconds")
    rules = AssetMaintenance(THRESHOLDS, persistence=5)
    ests, orders = [], []
    for t, feats in rows:
        est = tracker.update(t, feats)
        if est is None:
            continue
        ests.append(est)
        if rules.on_rul({"asset_id": "P", "sensor_id": "T", "unit": "seconds", "rul": est.rul, "ts": str(t)}):
            orders.append(t - T0)
    return ests, orders


@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_stationary_scalar_noise_gives_no_rul_work_order(sigma: float, seed: int) -> None:
    """A healthy temperature (stationary noise, readings rounded as sensors send them) for
    4 hours: never a RUL under the work-order threshold, reported as beyond the horizon."""
    rng = np.random.default_rng(seed)
    values = np.round(61.0 + sigma * rng.standard_normal(4 * 3600), 2)
    model = RulModel.default()
    ests, orders = _work_orders(_scalar_windows(values), model)
    assert not orders
    horizon = model.generic_params("seconds").max_rul
    assert horizon > 5 * THRESHOLDS["seconds"]
    assert all(e.rul == e.lower == e.upper == horizon for e in ests)
    assert min(e.health_index for e in ests) > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationary_vibration_is_beyond_the_horizon(seed: int) -> None:
    """Healthy vibration RMS (log growth mode): noise never reaches the onset. A trained
    model says "beyond the horizon" (its learnt horizon, at least the shortest warning
    seen in training) whatever the age; without one, ``max_rul``."""
    rng = np.random.default_rng(seed)
    rows = [(T0 + 0.2 * i, {"rms": 0.22 * math.exp(0.02 * rng.standard_normal())}) for i in range(5 * 3600 * 2)]
    trained = RulModel.default()
    p = trained.generic_params("seconds")
    assert p.horizon is not None and 0 < p.warning_min < p.horizon
    tracker = RulTracker(trained, "seconds")
    for i, (t, feats) in enumerate(rows):
        est = tracker.update(t, feats)
        if i >= p.baseline_n - 1:
            assert est is not None and est.rul == p.horizon and est.upper == p.max_rul and est.lower == p.warning_min
    ests, orders = _work_orders(rows, RulModel())
    assert not orders and all(e.rul == GenericParams().max_rul for e in ests)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degrading_scalar_gets_a_shrinking_rul_before_failure(seed: int) -> None:
    """Healthy for an hour, then the level drifts up linearly to the indicator's end of life
    (``threshold_z`` noise sds) 3 hours later: a finite RUL appears, decreases, and crosses
    the work-order threshold before the failure time; no work order while healthy."""
    sigma, t_on, t_fail = 0.3, 3600.0, 4 * 3600.0
    model = RulModel.default()
    rate = model.generic_params("seconds").threshold_z * sigma / (t_fail - t_on)
    t = np.arange(t_fail)
    rng = np.random.default_rng(seed)
    values = np.round(61.0 + rate * np.clip(t - t_on, 0.0, None) + sigma * rng.standard_normal(t.size), 2)
    rows = list(_scalar_windows(values))
    ests, orders = _work_orders(rows, model)
    ages = np.array([r[0] - T0 for r in rows[-len(ests) :]])
    rul = np.array([e.rul for e in ests])
    horizon = model.generic_params("seconds").max_rul
    finite = np.flatnonzero(rul < horizon)
    assert finite.size and ages[finite[0]] > t_on, "no RUL while healthy"
    assert np.all(rul[finite[0] :] < horizon), "once degrading, the RUL stays on the trend"
    sampled = rul[finite[0] :: 600]
    assert np.all(np.diff(sampled) <= 0) and np.all(np.diff(sampled[sampled > 0]) < 0), sampled
    assert all(e.lower <= e.rul <= e.upper for e in ests)
    assert orders and t_on < orders[0] < t_fail - 600.0, orders


def test_tracker_state_version_1_is_migrated() -> None:
    """A generic state stored by the previous layout (no spread, interval sum, trend flag) loads and runs on."""
    tracker = RulTracker(RulModel.default(), "seconds")
    rng = np.random.default_rng(0)
    rows = list(_scalar_windows(np.round(61.0 + 0.3 * rng.standard_normal(200), 2)))
    for t, f in rows[:100]:
        tracker.update(t, f)
    old = orjson.loads(tracker.to_bytes())
    del old["s"][13:16]
    old["v"] = 1
    resumed = RulTracker.from_bytes(orjson.dumps(old), RulModel.default())
    assert len(resumed.state) == GenericHealth.HEAD
    assert all(resumed.update(t, f) is not None for t, f in rows[100:])


def test_tracker_rejects_bad_unit_and_skips_old_or_bad_messages() -> None:
    with pytest.raises(ValueError):
        RulTracker(RulModel.default(), "hours")
    tracker = RulTracker(RulModel(generic={"seconds": GenericParams(baseline_n=2)}), "seconds")
    assert tracker.update(100.0, {"rms": 1.0}) is None
    assert tracker.update(110.0, {"rms": 1.0}) is not None
    assert tracker.update(105.0, {"rms": 1.0}) is None  # older than the last message
    assert tracker.update(120.0, {"rms": float("nan")}) is None
    assert tracker.update(130.0, {"rms": 1.0}) is not None


# ---------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------


def _roundtrip_equal(model: RulModel, unit: str, rows, cut: int) -> None:
    straight = RulTracker(model, unit)
    a = [straight.update(t, f) for t, f in rows]
    resumed = RulTracker(model, unit)
    b = [resumed.update(t, f) for t, f in rows[:cut]]
    blob = resumed.to_bytes()
    assert isinstance(blob, bytes) and len(blob) < 8192
    resumed = RulTracker.from_bytes(blob, model)
    b += [resumed.update(t, f) for t, f in rows[cut:]]
    assert a == b
    assert any(x is not None for x in a[cut:])


def test_tracker_roundtrip_generic() -> None:
    rows = list(_vibration_stream(life_s=2000.0))
    _roundtrip_equal(RulModel.default(), "seconds", rows, cut=len(rows) // 2)


@pytest.fixture(scope="module")
def synth_model() -> RulModel:
    rows, _ = rul_synth.cmapss_rows(24, seed=5)
    hist = _histories(rows)
    return fit_cmapss(hist, members=2, epochs=25, bound_folds=2, hidden=(32, 16))


def _histories(rows: np.ndarray):
    out = []
    for u in np.unique(rows[:, 0]):
        block = rows[rows[:, 0] == u]
        out.append([(int(r[1]), dict(zip(cmapss.CHANNELS, map(float, r[2:])))) for r in block])
    return out


def test_tracker_roundtrip_cmapss(synth_model: RulModel) -> None:
    rows, _ = rul_synth.cmapss_rows(1, seed=11)
    hist = _histories(rows)[0]
    _roundtrip_equal(synth_model, "cycles", hist, cut=37)


def test_tracker_state_of_other_model_is_refused(synth_model: RulModel) -> None:
    rows, _ = rul_synth.cmapss_rows(1, seed=11)
    tracker = RulTracker(synth_model, "cycles")
    for t, f in _histories(rows)[0][:5]:
        tracker.update(t, f)
    with pytest.raises(ValueError):
        RulTracker.from_bytes(tracker.to_bytes(), RulModel())


def test_model_save_load_roundtrip(tmp_path: Path, synth_model: RulModel) -> None:
    path = tmp_path / "rul.json"
    synth_model.save(path)
    loaded = RulModel.load(path)
    assert (loaded.name, loaded.version) == (synth_model.name, synth_model.version)
    rows, _ = rul_synth.cmapss_rows(2, seed=12)
    for hist in _histories(rows):
        a = run_tracker(synth_model, "cycles", hist)
        b = run_tracker(loaded, "cycles", hist)
        assert a == b
    with pytest.raises(ValueError):
        path.write_bytes(orjson.dumps({"format": "something-else"}))
        RulModel.load(path)


# ---------------------------------------------------------------------------------------
# the multi-channel model learns the known degradation
# ---------------------------------------------------------------------------------------


def test_cmapss_model_learns_synthetic_degradation(tmp_path: Path, synth_model: RulModel) -> None:
    test, truth_path, truth = rul_synth.write_cmapss_test(tmp_path, n_units=12, seed=77)
    units = cmapss.load_units(test)
    got = score_cmapss(synth_model, [list(u.rows()) for u in units], cmapss.load_truth(truth_path))
    assert got["units"] == 12
    # lives 80-160 cycles; guessing the mean RUL of the set would be ~30 cycles off
    baseline = rmse(np.minimum(truth, 125), np.full(len(truth), np.minimum(truth, 125).mean()))
    assert got["rmse"] < 0.6 * baseline, (got, baseline)
    assert got["rmse"] < 20.0
    est = run_tracker(synth_model, "cycles", units[0].rows())
    assert est.unit == "cycles" and 0.0 <= est.lower <= est.rul <= est.upper
    assert est.health_index == pytest.approx(est.rul / 125.0)


def test_sensor_selection_drops_constant_channels(synth_model: RulModel) -> None:
    used = set(synth_model.cmapss.featurizer.sensors)
    assert used == {f"s{i}" for i in rul_synth.INFORMATIVE}


def test_streaming_equals_offline_through_readings(synth_model: RulModel) -> None:
    """Rows -> readings -> JSON -> validation -> channels -> tracker == evaluate-rul's path."""
    rows, _ = rul_synth.cmapss_rows(3, seed=21)
    hist = _histories(rows)
    offline = [run_tracker(synth_model, "cycles", h) for h in hist]
    trackers: dict[str, RulTracker] = {}
    last: dict[str, RulEstimate] = {}
    # interleaved like a fleet replayed by cycle
    readings = [cmapss.row_to_reading(int(r[0]), int(r[1]), r[2:], prefix="FD901-") for r in rows]
    readings.sort(key=lambda r: (r["ts"], r["asset_id"]))
    for r in readings:
        parsed = validate_reading(orjson.loads(orjson.dumps(r)))
        assert parsed.kind == "channels" and parsed.cycle == r["cycle"]
        tr = trackers.setdefault(parsed.asset_id, RulTracker(synth_model, "cycles"))
        est = tr.update(float(parsed.cycle), parsed.channels)
        if est is not None:
            last[parsed.asset_id] = est
    assert [last[f"FD901-{u}"] for u in (1, 2, 3)] == offline


def test_cmapss_tracker_ignores_messages_without_its_channels(synth_model: RulModel) -> None:
    rows, _ = rul_synth.cmapss_rows(1, seed=3)
    hist = _histories(rows)[0]
    tracker = RulTracker(synth_model, "cycles")
    assert tracker.update(*hist[0]) is not None
    assert tracker.mode == "cmapss"
    assert tracker.update(2, {"rms": 1.0}) is None


def test_untrained_model_handles_channels_generically() -> None:
    rows, _ = rul_synth.cmapss_rows(1, seed=3)
    hist = _histories(rows)[0]
    tracker = RulTracker(RulModel(), "cycles")
    ests = [tracker.update(t, f) for t, f in hist]
    assert tracker.mode == "generic"
    done = [e for e in ests if e is not None]
    assert done and done[-1].health_index < done[0].health_index


def test_shipped_default_model_is_trained() -> None:
    """models/data/rul-default.json ships with the package: C-MAPSS channels get the trained model."""
    model = RulModel.default()
    assert model.cmapss is not None and model.version.startswith("rul+")
    assert model.generic["seconds"].horizon is not None
    rows, _ = rul_synth.cmapss_rows(1, seed=3)
    tracker = RulTracker(model, "cycles")
    hist = _histories(rows)[0]
    est = tracker.update(*hist[0])
    assert tracker.mode == "cmapss" and est is not None and 0.0 <= est.rul <= model.cmapss.cap


def test_duplicates_are_ignored_and_a_restarted_counter_is_a_new_life(synth_model: RulModel) -> None:
    rows, _ = rul_synth.cmapss_rows(1, seed=8)
    hist = _histories(rows)[0]
    tracker = RulTracker(synth_model, "cycles")
    ests = [tracker.update(t, f) for t, f in hist[:50]]
    assert tracker.update(*hist[49]) is None  # redelivered message: no double counting
    bad = dict(hist[50][1], s2=float("nan"))
    assert tracker.update(hist[50][0], bad) is None
    assert tracker.update(*hist[50]) is not None
    # replayed from cycle 1: the same estimates as a fresh tracker
    again = [tracker.update(t, f) for t, f in hist[:50]]
    assert again == ests


def test_streaming_agent_gives_a_healthy_vibration_no_life_prior() -> None:
    """Online, the first reading in seconds is not the part's birth: a healthy bearing is
    beyond the horizon, not "typical FEMTO life minus time since the worker started"."""
    from mantis_stream.agents import rul as rul_agent

    rng = np.random.default_rng(3)
    rows = [(T0 + 0.2 * i, {"rms": 0.22 * math.exp(0.02 * rng.standard_normal())}) for i in range(3600 * 5)]
    online = rul_agent._new("s\x1fPUMP-1\x1fVIB-1")
    p = online.model.generic_params("seconds")
    assert p.horizon is not None  # the shipped model has a horizon...
    ests = [online.update(t, feats) for t, feats in rows]
    # ...which the agent reports as "at least", not as a RUL a work order would act on
    assert all(e.rul == e.upper == p.max_rul and e.lower == p.warning_min for e in ests if e is not None)
    restored = rul_agent._load("s\x1fPUMP-1\x1fVIB-1", online.to_bytes())
    assert restored.update(rows[-1][0] + 1.0, rows[-1][1]).rul == p.max_rul
    assert rul_agent._new("c\x1fENGINE-1\x1fGAS").life_prior  # a cycle counter is the part's age
