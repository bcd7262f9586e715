"""Training (mantis_stream.training) apart from inference: what crosses the boundary."""

from __future__ import annotations

import math

import numpy as np
import orjson

from mantis_stream.evaluation.scoring import estimates_at_cuts
from mantis_stream.models.health import GenericParams
from mantis_stream.models.rul import MlpEnsemble, RulEstimate, RulModel, RulTracker
from mantis_stream.training.mlp import fit_mlp_ensemble


def test_a_fitted_ensemble_equals_the_one_read_back_from_its_file() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=400)
    net = fit_mlp_ensemble(x, y, hidden=(16,), members=2, epochs=100, batch=32, lr=1e-2, seed=1)
    back = MlpEnsemble.from_json(orjson.loads(orjson.dumps(net.to_json())))
    assert np.array_equal(net.predict(x), back.predict(x))
    assert np.corrcoef(net.predict(x), y)[0, 1] > 0.95  # it learnt, not just round-tripped


def test_tracker_level_is_the_smoothed_log_ratio_to_the_baseline() -> None:
    params = GenericParams(baseline_n=10, tau_smooth=5.0)
    tracker = RulTracker(RulModel(generic={"seconds": params}), "seconds")
    assert tracker.level() is None
    for i in range(10):
        tracker.update(1000.0 + i, {"rms": 0.5})
    assert tracker.level() == 0.0
    for i in range(10, 200):
        tracker.update(1000.0 + i, {"rms": 1.0})
    level = tracker.level()
    assert level is not None and math.isclose(level, math.log(2.0), rel_tol=1e-3)


def test_cuts_name_their_fraction_when_early_ones_have_no_estimate() -> None:
    est = RulEstimate(100.0, 50.0, 150.0, 1.0, "seconds")
    traj = [(float(t), est) for t in range(40, 101)]  # first estimate at 40 % of a 0..100 life
    cuts = estimates_at_cuts(traj, 0.0, 100.0, (0.3, 0.5, 0.9))
    assert [(f, round(a, 6)) for f, a, _ in cuts] == [(0.5, 50.0), (0.9, 10.0)]
