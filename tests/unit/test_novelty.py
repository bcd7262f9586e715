"""TransitionNovelty: level-transition novelty, reported at onsets; and its part in the ConditionMonitor."""

import copy

import numpy as np
import pytest

from mantis_stream.models.novelty import TransitionNovelty


def _cycle(n: int, period: int = 24) -> np.ndarray:
    """A triangle wave between 0 and 10: every level is visited in order, up then down."""
    phase = np.arange(n) % period
    return 10.0 * np.minimum(phase, period - phase) / (period / 2)


def _scores(det: TransitionNovelty, values: np.ndarray) -> np.ndarray:
    return np.array([det.process_one(float(v)) for v in values])


def test_a_learned_cycle_is_quiet_and_a_new_pattern_inside_its_range_is_an_onset():
    values = _cycle(2000)
    det = TransitionNovelty(warmup=300, rest=50)
    quiet = _scores(det, values)
    assert quiet[:300].max() == 0.0, "nothing is scored while the range is commissioned"
    assert quiet[400:].max() < det.alert
    # bottom and top in turn: both values were seen, never the one right after the other
    onset = _scores(det, np.tile([0.0, 10.0], 20))
    assert onset.max() >= det.alert
    assert (onset >= det.alert).sum() == 1, "reported once"


def test_an_onset_is_reported_once_per_rest_period():
    det = TransitionNovelty(warmup=300, rest=100)
    values = _cycle(1600)
    _scores(det, values[:1000])
    tail = values[1000:].copy()
    tail[[10, 60, 200]] = [40.0, -30.0, -40.0]  # each never seen before
    raws, scores = [], []
    for x in tail:
        raws.append(det.raw_one(float(x)))
        scores.append(det.process_one(float(x)))
    assert scores[10] >= det.alert
    assert raws[60] >= det.alert and scores[60] == 0.0, "within the rest period of the first event"
    assert scores[200] >= det.alert, "the rest period counts from the last event (60)"
    assert sum(s >= det.alert for s in scores) == 2


def test_score_one_is_the_score_process_one_gives_and_learns_nothing():
    det = TransitionNovelty(warmup=50, rest=10)
    _scores(det, _cycle(400))
    for x in (0.0, 7.5, 40.0, -20.0, 5.0):
        before = det.to_bytes()
        s = det.score_one(x)
        assert det.to_bytes() == before
        assert det.process_one(x) == s


def test_state_round_trip_gives_identical_next_scores():
    rng = np.random.default_rng(4)
    det = TransitionNovelty(warmup=100, rest=20)
    _scores(det, _cycle(600))
    copy = TransitionNovelty.from_bytes(det.to_bytes())
    tail = rng.uniform(-5.0, 15.0, 200)
    np.testing.assert_array_equal(_scores(copy, tail), _scores(det, tail))
    with pytest.raises(TypeError):
        TransitionNovelty.from_bytes(b"\x80\x05N.")


@pytest.mark.parametrize("kwargs", [{"warmup": 1}, {"levels": 1}, {"order": 0}, {"alert": 0.0}, {"rest": -1}, {"margin": -0.1}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="TransitionNovelty"):
        TransitionNovelty(**kwargs)


def test_the_monitor_publishes_a_novelty_onset_of_the_reading():
    """Bottom and top in turn, each a usual value: the first new transition reaches the alert level, through the novelty part."""
    from mantis_stream.models.anomaly import ALERT_SCORE, ConditionMonitor

    values = _cycle(3000)
    values[2500:] = np.tile([0.0, 10.0], 250)

    def run(monitor: ConditionMonitor) -> np.ndarray:
        # a steady window mean, so the reference commissions; the reading itself is judged by the other parts
        return np.array([monitor.process_one({"last": float(v), "mean": 5.0}).score for v in values])

    scores = run(ConditionMonitor())
    blind = ConditionMonitor()
    blind.novelty = TransitionNovelty(warmup=10**6)  # never commissioned: the other parts alone
    without = run(blind)
    assert scores[400:2500].max() < ALERT_SCORE
    first = int(np.argmax(scores[2500:] >= ALERT_SCORE)) + 2500
    assert first <= 2502 and scores[first] > without[first]
    assert without[2500:2503].max() < ALERT_SCORE


def test_a_version_3_monitor_state_gains_a_novelty_part():
    from mantis_stream.models.anomaly import ConditionMonitor

    m = ConditionMonitor(seed=5)
    for v in _cycle(400):
        m.process_one({"last": float(v), "mean": float(v)})
    del m.novelty
    m.state_version = 3
    migrated = ConditionMonitor.from_bytes(m.to_bytes())
    assert migrated.state_version == ConditionMonitor.STATE_VERSION and migrated.warm
    assert not migrated.novelty.warm
    migrated.process_one({"last": 1.0, "mean": 1.0})


def test_doctests():
    import doctest

    from mantis_stream.models import novelty

    assert doctest.testmod(novelty).failed == 0


def test_a_value_far_beyond_the_range_is_novel_and_recuts_the_levels():
    nov = TransitionNovelty(warmup=40, rest=5, keep=60)
    for v in _cycle(300):
        nov.process_one(float(v))
    low, step = nov.low, nov.step
    assert nov.process_one(50.0) >= nov.alert  # scored on the old levels before the range grows
    assert (nov.seen_low, nov.seen_high) == (0.0, 50.0) and nov.step > step and nov.low < low
    later = [nov.process_one(float(v)) for v in _cycle(400)]
    assert max(later[200:]) < nov.alert  # the cycle is learned again on the wider levels


def test_a_state_pickled_before_the_range_could_grow_is_loaded():
    nov = TransitionNovelty(warmup=40)
    for v in _cycle(100):
        nov.process_one(float(v))
    old = {k: v for k, v in copy.deepcopy(nov.__dict__).items() if k not in ("keep", "_kept", "seen_low", "seen_high")}
    restored = TransitionNovelty.__new__(TransitionNovelty)
    restored.__setstate__(old)
    assert (restored.seen_low, restored.seen_high) == pytest.approx((nov.seen_low, nov.seen_high))
    for v in _cycle(100):
        assert restored.process_one(float(v)) == nov.process_one(float(v))
