"""Summary features of a window of scalar readings (temperature, pressure, a counter).

Why this exists
    Scalar sensors have no spectrum; what carries a fault is their level, spread
    and trend over the last few readings. The feature stage (per window) and the
    offline ``detect`` command (per NAB row) use this same function, so a
    detector sees the same features online and offline.

Usage
    >>> window_features(np.array([1.0, 2.0, 4.0]))["slope"]
    1.5
"""

from __future__ import annotations

import numpy as np

__all__ = ["window_features"]


def window_features(values: np.ndarray) -> dict[str, float]:
    """Mean, std (population), min, max, last, slope (least squares, per sample) and range of a 1-D window."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        raise ValueError("window_features needs at least one value")
    if not np.isfinite(v).all():
        raise ValueError("window_features needs finite values")
    mean = float(v.mean())
    lo = float(v.min())
    hi = float(v.max())
    if n > 1:
        t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        slope = float(t @ (v - mean) / (t @ t))
        std = float(np.sqrt(np.mean((v - mean) ** 2)))
    else:
        slope = 0.0
        std = 0.0
    return {
        "mean": mean,
        "std": std,
        "min": lo,
        "max": hi,
        "last": float(v[-1]),
        "slope": slope,
        "range": hi - lo,
    }


class ScalarFeaturizer:
    """Causal features of a scalar series, one row at a time.

    Why: a detector needs more than the bare value to see a level shift, a
    changed variance or a broken trend; this keeps the last ``window`` values and
    returns :func:`window_features` of them (the feature stage's window
    statistics) plus ``value`` and ``diff`` (change since the previous row).
    Only past and present rows are used, so a row's features never change when
    later rows arrive.

    >>> fz = ScalarFeaturizer(window=3)
    >>> [fz.push(v)["mean"] for v in (1.0, 2.0, 3.0, 10.0)]
    [1.0, 1.5, 2.0, 5.0]
    """

    __slots__ = ("window", "_buf", "_n", "_last")

    def __init__(self, window: int = 10) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = int(window)
        self._buf = np.zeros(self.window)
        self._n = 0
        self._last = 0.0

    def push(self, value: float) -> dict[str, float]:
        v = float(value)
        diff = v - self._last if self._n else 0.0
        self._buf[self._n % self.window] = v
        self._n += 1
        self._last = v
        k = min(self._n, self.window)
        start = self._n % self.window if self._n >= self.window else 0
        recent = np.roll(self._buf, -start)[:k] if self._n >= self.window else self._buf[:k]
        out = window_features(recent)
        out["value"] = v
        out["diff"] = diff
        return out
