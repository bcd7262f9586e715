"""DSP core: framing, vibration features, scalar window features."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mantis_stream.dsp import framing, spectral, stats
from mantis_stream.dsp.framing import FrameAssembler, remove_dc
from mantis_stream.dsp.spectral import FEATURE_NAMES, bearing_defect_frequencies, waveform_features
from mantis_stream.dsp.stats import window_features, window_features_many

FS = 20_000.0
N = 2048


def tone(amp: float, freq: float, n: int = N, fs: float = FS, phase: float = 0.3) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / fs + phase)


# -- framing -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    frame_size=st.integers(1, 50),
    hop=st.none() | st.integers(1, 60),
    chunks=st.lists(st.integers(0, 120), max_size=25),
    roundtrip_every=st.integers(1, 5),
)
def test_assembler_never_drops_or_duplicates(frame_size, hop, chunks, roundtrip_every):
    """Frames equal the offline framing of the concatenated stream, whatever the chunking."""
    total = sum(chunks)
    stream = np.arange(total, dtype=np.float64)
    fa = FrameAssembler(frame_size, hop)
    got, start = [], 0
    for i, size in enumerate(chunks):
        out = fa.push(stream[start : start + size])
        start += size
        assert out.ndim == 2 and out.shape[1] == frame_size
        got.append(out)
        if i % roundtrip_every == 0:
            fa = FrameAssembler.from_bytes(fa.to_bytes())
    frames = np.concatenate(got) if got else np.empty((0, frame_size))
    h = hop or frame_size
    n_expected = 0 if total < frame_size else (total - frame_size) // h + 1
    expected = np.array([stream[i * h : i * h + frame_size] for i in range(n_expected)]).reshape(-1, frame_size)
    np.testing.assert_array_equal(frames, expected)
    # what is pending is exactly the tail not yet framed (after any skipped gap)
    next_start = n_expected * h
    assert fa.pending == max(0, total - next_start)
    if h == frame_size:  # no overlap: every sample exactly once, in order
        np.testing.assert_array_equal(np.concatenate([frames.ravel(), stream[total - fa.pending :]]), stream)


def test_assembler_state_is_compact_and_float32_option():
    fa = FrameAssembler(8, dtype=np.float32)
    fa.push(np.arange(13.0))
    blob = fa.to_bytes()
    assert len(blob) == 26 + 5 * 4
    fb = FrameAssembler.from_bytes(blob)
    assert fb.pending == 5 and fb.push(np.arange(13.0, 16.0)).tolist() == [list(map(float, range(8, 16)))]
    with pytest.raises(ValueError):
        FrameAssembler.from_bytes(blob[:-1])


def test_assembler_empty_output_shape():
    out = FrameAssembler(16).push(np.ones(3))
    assert out.shape == (0, 16)


def test_remove_dc():
    f = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]])
    np.testing.assert_allclose(remove_dc(f), [[-1, 0, 1], [-1, -1, 2]])


# -- vibration features -----------------------------------------------------


@pytest.mark.parametrize("freq", [1000.0, 1003.3, 987.6, 55.5])
@pytest.mark.parametrize("amp", [0.5, 3.0])
def test_pure_tone(freq, amp):
    f = waveform_features(tone(amp, freq)[None, :] + 2.0, FS)[0]
    assert f["rms"] == pytest.approx(amp / np.sqrt(2), rel=2e-3)
    assert f["dominant_freq_hz"] == pytest.approx(freq, abs=0.5)
    assert f["dominant_amplitude"] == pytest.approx(amp, rel=5e-3)
    assert f["dc"] == pytest.approx(2.0, abs=0.05 * amp)  # a non-integer number of periods has a mean
    assert f["kurtosis"] == pytest.approx(1.5, abs=0.02)
    assert f["crest_factor"] == pytest.approx(np.sqrt(2), rel=0.01 if freq > 500 else 0.05)
    bands = [f[f"band_{k}"] for k in range(8)]
    assert sum(bands) == pytest.approx(amp**2 / 2, rel=2e-3)
    assert int(np.argmax(bands)) == int(freq // (FS / 2 / 8))
    assert f["spectral_centroid_hz"] == pytest.approx(freq, rel=0.02)


def test_impulse_train_kurtosis_and_crest():
    period = 100
    x = np.zeros(N)
    x[::period] = 1.0
    f = waveform_features(x, FS)[0]
    # exact Pearson kurtosis of a 0/1 train with p = 1/period ones: (1 - 3p + 3p^2) / (p (1 - p))
    p = np.count_nonzero(x) / N
    assert f["kurtosis"] == pytest.approx((1 - 3 * p + 3 * p * p) / (p * (1 - p)), rel=1e-9)
    assert f["kurtosis"] > 50
    assert f["crest_factor"] > 9
    noise = waveform_features(np.random.default_rng(0).normal(size=(50, N)), FS)
    assert np.mean([r["kurtosis"] for r in noise]) == pytest.approx(3.0, abs=0.1)
    # spectral kurtosis: impacts sparser than the SK segment stand out against noise
    sparse = np.zeros(N)
    sparse[5::512] = 1.0
    sk = waveform_features(sparse + 0.01 * np.random.default_rng(1).normal(size=N), FS)[0]["spectral_kurtosis"]
    assert sk > 3 * max(1.0, np.mean([r["spectral_kurtosis"] for r in noise]))


def test_vectorised_rows_match_single_frames():
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(5, 512))
    batch = waveform_features(frames, FS)
    for i in range(5):
        single = waveform_features(frames[i], FS)[0]
        assert single == pytest.approx(batch[i], rel=1e-9, abs=1e-12)


def test_bearing_defect_energy_tracks_the_fault():
    """Impacts at BPFO, exciting a 6 kHz resonance, put envelope energy at BPFO, not BPFI."""
    meta = {"shaft_hz": 33.3, "n_balls": 16, "ball_diameter": 0.331, "pitch_diameter": 2.815, "contact_angle_deg": 15.17}
    freqs = bearing_defect_frequencies(meta)
    assert freqs["bpfo"] == pytest.approx(236.4, rel=0.01)  # IMS Rexnord ZA-2115 figures
    assert freqs["bpfi"] == pytest.approx(296.9, rel=0.01)
    n = 8192
    t = np.arange(n) / FS
    rng = np.random.default_rng(2)
    x = 0.1 * rng.normal(size=n)
    for t0 in np.arange(0, n / FS, 1 / freqs["bpfo"]):
        m = t >= t0
        x[m] += np.exp(-(t[m] - t0) * 800) * np.sin(2 * np.pi * 6000 * (t[m] - t0))
    faulty = waveform_features(x, FS, meta)[0]
    healthy = waveform_features(0.1 * rng.normal(size=n), FS, meta)[0]
    assert faulty["bpfo_ratio"] > 3 * faulty["bpfi_ratio"]
    assert faulty["bpfo_energy"] > 100 * healthy["bpfo_energy"]
    assert faulty["envelope_energy"] > 10 * healthy["envelope_energy"]


def test_meta_without_geometry_gives_base_features_only():
    f = waveform_features(tone(1, 100), FS, {"rpm": 1800})[0]
    assert tuple(f) == FEATURE_NAMES


def test_degenerate_frames_are_finite_floats():
    for x in (np.zeros((2, 256)), np.full((1, 256), 7.0)):
        for f in waveform_features(x, FS, {"shaft_hz": 10, "n_balls": 9, "ball_diameter": 1, "pitch_diameter": 5}):
            assert all(type(v) is float and np.isfinite(v) for v in f.values())
            assert f["rms"] == 0.0
    assert waveform_features(np.empty((0, 64)), FS) == []


# -- scalar windows ---------------------------------------------------------


def test_window_features():
    f = window_features(np.array([2.0, 4.0, 6.0, 8.0]))
    assert f == {"mean": 5.0, "std": pytest.approx(np.sqrt(5.0)), "min": 2.0, "max": 8.0, "last": 8.0, "slope": 2.0, "range": 6.0}
    assert window_features(np.array([3.0]))["slope"] == 0.0
    with pytest.raises(ValueError):
        window_features(np.array([]))


@pytest.mark.parametrize("module", [framing, spectral, stats])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_window_features_many_matches_one_window_at_a_time():
    rng = np.random.default_rng(4)
    windows = 60 + rng.standard_normal((50, 10)) * rng.uniform(0.1, 5, size=(50, 1))
    windows[3] = np.linspace(0, 9, 10)  # a pure trend: slope 1, the rows are not all alike
    many = window_features_many(windows)
    one_by_one = [window_features(row) for row in windows]
    for got, want in zip(many, one_by_one, strict=True):  # equal up to summation order
        assert got.keys() == want.keys() and got == {k: pytest.approx(v, rel=1e-12, abs=1e-12) for k, v in want.items()}
    assert many[3]["slope"] == pytest.approx(1.0) and many[3]["range"] == pytest.approx(9.0)
    expected_std = [float(np.std(row)) for row in windows]
    assert [f["std"] for f in many] == pytest.approx(expected_std)
    with pytest.raises(ValueError, match="finite"):
        window_features_many(np.array([[1.0, np.nan]]))
