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

__all__ = ["window_features", "window_features_many"]


def window_features(values: np.ndarray) -> dict[str, float]:
    """Mean, std (population), min, max, last, slope (least squares, per sample) and range of a 1-D window."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("window_features needs at least one value")
    return window_features_many(v[np.newaxis, :])[0]


def window_features_many(windows: np.ndarray) -> list[dict[str, float]]:
    """:func:`window_features` of each row of a 2-D array of equal-length windows, vectorised.

    The feature stage gets hundreds of scalar windows per batch; one numpy pass
    over all of them costs about what a single window costs one at a time.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] == 0:
        raise ValueError("window_features needs at least one value")
    if not np.isfinite(w).all():
        raise ValueError("window_features needs finite values")
    n = w.shape[1]
    mean = w.mean(axis=1)
    lo = w.min(axis=1)
    hi = w.max(axis=1)
    centred = w - mean[:, np.newaxis]
    if n > 1:
        t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        slope = centred @ t / (t @ t)
        std = np.sqrt(np.mean(centred**2, axis=1))
    else:
        slope = std = np.zeros(len(w))
    columns = zip(mean.tolist(), std.tolist(), lo.tolist(), hi.tolist(), w[:, -1].tolist(), slope.tolist(), (hi - lo).tolist())
    return [
        {"mean": m, "std": s, "min": a, "max": b, "last": z, "slope": k, "range": r}
        for m, s, a, b, z, k, r in columns
    ]


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
