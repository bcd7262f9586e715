"""Vibration features of waveform frames, vectorised across frames.

Why this exists
    A rolling-element bearing that degrades first shows short impacts (higher
    kurtosis, crest factor and spectral kurtosis), then energy at its defect
    frequencies in the *envelope* spectrum, and finally a broadband rise (RMS,
    band energies). These are the features the anomaly and RUL stages learn from.
    One call handles a whole batch of frames (``rfft`` over axis 1), which is
    what makes a million samples per second per core reachable.

Usage
    >>> import numpy as np
    >>> fs = 1024.0
    >>> t = np.arange(1024) / fs
    >>> f = waveform_features(np.sin(2 * np.pi * 50 * t)[None, :], fs)[0]
    >>> round(f["rms"], 4), round(f["dominant_freq_hz"], 1), round(f["dominant_amplitude"], 3)
    (0.7071, 50.0, 1.0)

Conventions (a pure tone ``A sin(2 pi f t)``)
    ``rms = A / sqrt(2)``, ``peak = A``, ``crest_factor = sqrt(2)``,
    ``kurtosis = 1.5`` (Pearson's, 3 for Gaussian noise, not the excess),
    ``dominant_freq_hz = f`` and ``dominant_amplitude = A``: Hann window, amplitude
    corrected for the window's coherent gain and, between bins, for its scalloping
    loss (Grandke's interpolation). Power features (``band_k``, ``*_energy``) are in
    mean-square units: the eight ``band_k`` sum to ``rms ** 2`` (Parseval, Hann
    window power-normalised; exactly for tones, in expectation for noise);
    ``band_k`` covers ``[k, k+1) * nyquist / 8`` Hz.

    The frame's mean (DC offset) is removed first and reported as ``dc``.

    ``spectral_kurtosis`` is Antoni's spectral kurtosis (short-time FFT over Hann
    segments of ``SK_SEGMENT`` samples, 50 % overlap, inside the frame), its
    maximum over frequency; ``spectral_kurtosis_freq_hz`` is where. About 0 for stationary
    noise or tones, large for repetitive impacts.

    ``envelope_energy`` is the power (variance) of the envelope, from the Hilbert
    transform of the band ``ENVELOPE_BAND`` (fractions of Nyquist; override with
    ``meta["envelope_band_hz"] = [lo, hi]``): the band-pass drops shaft-rate
    content (imbalance, misalignment) that would otherwise dominate the envelope.

    With shaft speed (``meta["shaft_hz"]`` or ``meta["rpm"]``) and bearing geometry
    (``n_balls``, ``ball_diameter``, ``pitch_diameter``, ``contact_angle_deg``,
    default 0) in ``meta``, ``bpfo_energy``, ``bpfi_energy``, ``bsf_energy`` and
    ``ftf_energy`` are the envelope-spectrum power within ``+-DEFECT_TOLERANCE``
    (relative, at least one bin) of the first ``DEFECT_HARMONICS`` harmonics of each
    defect frequency, and ``*_ratio`` the same divided by ``envelope_energy``.

Notes
    Frames shorter than ``2 * SK_SEGMENT`` get ``spectral_kurtosis = 0``. Every value
    is a finite Python float (NaN/inf from degenerate frames, e.g. all zeros, become 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "N_BANDS",
    "bearing_defect_frequencies",
    "waveform_features",
    "FEATURE_NAMES",
    "BEARING_FEATURE_NAMES",
]

N_BANDS = 8
SK_SEGMENT = 64
ENVELOPE_BAND = (0.125, 1.0)
DEFECT_TOLERANCE = 0.03
DEFECT_HARMONICS = 3
_DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")

FEATURE_NAMES: tuple[str, ...] = (
    "dc",
    "rms",
    "peak",
    "crest_factor",
    "kurtosis",
    "skewness",
    "dominant_freq_hz",
    "dominant_amplitude",
    "spectral_centroid_hz",
    "spectral_kurtosis",
    "spectral_kurtosis_freq_hz",
    *(f"band_{k}" for k in range(N_BANDS)),
    "envelope_energy",
)
BEARING_FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{d}_{kind}" for d in _DEFECTS for kind in ("energy", "ratio")
)


def bearing_defect_frequencies(meta: Mapping[str, Any]) -> dict[str, float] | None:
    """BPFO, BPFI, BSF and FTF in Hz from shaft speed and geometry in ``meta``; None when missing.

    Standard kinematics: with ``r = d / D * cos(contact_angle)``,
    ``FTF = fr/2 (1 - r)``, ``BPFO = n fr/2 (1 - r)``, ``BPFI = n fr/2 (1 + r)``,
    ``BSF = D/(2d) fr (1 - r^2)``.
    """
    try:
        if meta.get("shaft_hz") is not None:
            fr = float(meta["shaft_hz"])
        elif meta.get("rpm") is not None:
            fr = float(meta["rpm"]) / 60.0
        else:
            return None
        n = float(meta["n_balls"])
        d = float(meta["ball_diameter"])
        pd = float(meta["pitch_diameter"])
        angle = math.radians(float(meta.get("contact_angle_deg", 0.0) or 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (fr, n, d, pd, angle)) or fr <= 0 or n <= 0 or d <= 0 or pd <= 0:
        return None
    r = d / pd * math.cos(angle)
    return {
        "bpfo": n * fr / 2.0 * (1.0 - r),
        "bpfi": n * fr / 2.0 * (1.0 + r),
        "bsf": pd / (2.0 * d) * fr * (1.0 - r * r),
        "ftf": fr / 2.0 * (1.0 - r),
    }


@functools.lru_cache(maxsize=32)
def _hann(n: int) -> np.ndarray:
    # Periodic Hann (DFT-even): exact coherent gain 0.5 and bin-spaced nulls.
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=32)
def _band_matrix(n: int, fs: float) -> np.ndarray:
    """(n_bins, N_BANDS) 0/1 matrix: which linear band each rfft bin belongs to."""
    freqs = np.arange(n // 2 + 1) * (fs / n)
    edges = np.linspace(0.0, fs / 2.0, N_BANDS + 1)
    band_of_bin = np.minimum(np.searchsorted(edges, freqs, side="right") - 1, N_BANDS - 1)
    onehot = np.zeros((freqs.size, N_BANDS))
    onehot[np.arange(freqs.size), band_of_bin] = 1.0
    onehot.flags.writeable = False
    return onehot


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean-removed rows -> (m2, m3, m4) central moments."""
    x2 = x * x
    m2 = x2.mean(axis=1)
    m3 = (x2 * x).mean(axis=1)
    m4 = (x2 * x2).mean(axis=1)
    return m2, m3, m4


def _spectral_kurtosis(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Antoni's SK over Hann segments with 50 % overlap: max over frequency and its frequency.

    The overlap matters: with back-to-back Hann segments an impact near a segment
    edge is weighted almost to zero and would be missed.
    """
    n_frames, n = x.shape
    seg = SK_SEGMENT
    step = seg // 2
    if n < 2 * seg:
        zeros = np.zeros(n_frames)
        return zeros, zeros
    s = sliding_window_view(x, seg, axis=1)[:, ::step] * _hann(seg)
    p = np.abs(np.fft.rfft(s, axis=2)) ** 2
    p = p[:, :, 1:-1]  # DC and Nyquist bins are real-valued: their SK is 1 for noise, not 0
    m2 = p.mean(axis=1)
    m4 = (p * p).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sk = np.where(m2 > 0, m4 / (m2 * m2) - 2.0, 0.0)
    k = sk.argmax(axis=1)
    freqs = (np.arange(1, seg // 2) * fs / seg)[k]
    return sk[np.arange(n_frames), k], freqs


def waveform_features(
    frames: np.ndarray, sample_rate_hz: float, meta: Mapping[str, Any] | None = None
) -> list[dict[str, float]]:
    """One dict of features per frame (rows of ``frames``); see the module docstring for conventions."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"frames must be 1-D or 2-D, got shape {x.shape}")
    n_frames, n = x.shape
    if n_frames == 0:
        return []
    if n < 4:
        raise ValueError(f"frames need at least 4 samples, got {n}")
    fs = float(sample_rate_hz)
    if not math.isfinite(fs) or fs <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    meta = meta or {}
    rows = np.arange(n_frames)
    out: dict[str, np.ndarray] = {}

    # --- time domain -----------------------------------------------------------
    dc = x.mean(axis=1)
    x = x - dc[:, None]
    m2, m3, m4 = _moments(x)
    rms = np.sqrt(m2)
    peak = np.abs(x).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["crest_factor"] = np.where(rms > 0, peak / rms, 0.0)
        out["kurtosis"] = np.where(m2 > 0, m4 / (m2 * m2), 0.0)
        out["skewness"] = np.where(m2 > 0, m3 / (m2 * np.sqrt(m2)), 0.0)
    out["dc"] = dc
    out["rms"] = rms
    out["peak"] = peak

    # --- spectrum (Hann, one-sided) -------------------------------------------
    w = _hann(n)
    spec = np.fft.rfft(x * w, axis=1)
    mag = np.abs(spec)
    n_bins = mag.shape[1]
    freqs = np.arange(n_bins) * (fs / n)
    power = mag * mag / (n * float(w @ w))  # two-sided mean-square per bin
    power[:, 1:] *= 2.0
    if n % 2 == 0:
        power[:, -1] *= 0.5  # Nyquist bin has no mirror
    total = power.sum(axis=1)

    # dominant peak, interpolated between bins (Grandke, Hann window)
    k = mag[:, 1:].argmax(axis=1) + 1
    mk = mag[rows, k]
    left = mag[rows, k - 1]
    right = mag[rows, np.minimum(k + 1, n_bins - 1)]
    right = np.where(k + 1 < n_bins, right, 0.0)
    side = np.where(right >= left, 1.0, -1.0)
    neighbour = np.maximum(left, right)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(mk > 0, neighbour / mk, 0.0)
    delta = np.clip((2.0 * alpha - 1.0) / (alpha + 1.0), 0.0, 0.5)
    # Hann response at offset delta (bins), relative to on-bin: sinc(d) / (1 - d^2)
    gain = np.sinc(delta) / (1.0 - delta * delta)
    out["dominant_freq_hz"] = (k + side * delta) * (fs / n)
    out["dominant_amplitude"] = 2.0 * mk / (w.sum() * gain)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["spectral_centroid_hz"] = np.where(total > 0, power @ freqs / total, 0.0)

    bands = power @ _band_matrix(n, fs)
    for b in range(N_BANDS):
        out[f"band_{b}"] = bands[:, b]

    out["spectral_kurtosis"], out["spectral_kurtosis_freq_hz"] = _spectral_kurtosis(x, fs)

    # --- envelope (Hilbert transform of a band) -------------------------------
    band_hz = meta.get("envelope_band_hz")
    if band_hz is not None:
        lo_hz, hi_hz = float(band_hz[0]), float(band_hz[1])
    else:
        lo_hz, hi_hz = ENVELOPE_BAND[0] * fs / 2.0, ENVELOPE_BAND[1] * fs / 2.0
    raw = np.fft.rfft(x, axis=1)
    keep = (freqs >= lo_hz) & (freqs <= hi_hz)
    keep[0] = False
    analytic = np.zeros((n_frames, n), dtype=np.complex128)
    analytic[:, :n_bins] = raw * (2.0 * keep)
    if n % 2 == 0 and keep[-1]:
        analytic[:, n_bins - 1] *= 0.5  # Nyquist bin is shared by both halves
    env = np.abs(np.fft.ifft(analytic, axis=1))
    env -= env.mean(axis=1, keepdims=True)
    out["envelope_energy"] = (env * env).mean(axis=1)

    defects = bearing_defect_frequencies(meta)
    if defects is not None:
        espec = np.abs(np.fft.rfft(env * w, axis=1))
        epower = espec * espec / (n * float(w @ w))
        epower[:, 1:] *= 2.0
        df = fs / n
        env_total = out["envelope_energy"]
        for name, f0 in defects.items():
            sel = np.zeros(n_bins, dtype=bool)
            for h in range(1, DEFECT_HARMONICS + 1):
                fc = h * f0
                if fc >= fs / 2.0:
                    break
                tol = max(DEFECT_TOLERANCE * fc, df)
                sel |= np.abs(freqs - fc) <= tol
            sel[0] = False
            e = epower[:, sel].sum(axis=1)
            out[f"{name}_energy"] = e
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"{name}_ratio"] = np.where(env_total > 0, e / env_total, 0.0)

    names = list(FEATURE_NAMES) + (list(BEARING_FEATURE_NAMES) if defects is not None else [])
    table = np.vstack([out[name] for name in names]).T  # (n_frames, n_features)
    table[~np.isfinite(table)] = 0.0
    return [dict(zip(names, row)) for row in table.tolist()]
