"""Training the RUL model's small network ensemble (numpy, no scikit-learn).

Why this exists: the agent only runs :class:`~mantis_stream.models.rul.MlpEnsemble`;
fitting it (Adam, cosine decay, one seed per member) is offline work and lives
here, apart from inference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..models.rul import MlpEnsemble

__all__ = ["fit_mlp_ensemble", "round_sig"]


def round_sig(a: np.ndarray, digits: int = 6) -> np.ndarray:
    """Round to ``digits`` significant digits: model files stay small (JSON), and
    the in-memory model equals the one read back from its file."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{x:.{digits}g}") for x in a.ravel()], dtype=np.float64).reshape(a.shape)


def fit_mlp_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    *,
    hidden: Sequence[int] = (64, 32),
    members: int = 5,
    epochs: int = 60,
    batch: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    y_scale: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> MlpEnsemble:
    """Adam on squared error; each member from its own seed and bootstrap order."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_mean = x.mean(axis=0)
    x_std = x.std(axis=0) + 1e-8
    ys = float(y_scale if y_scale is not None else (np.abs(y).max() or 1.0))
    xn = (x - x_mean) / x_std
    yn = y / ys
    nets = []
    for m in range(members):
        rng = np.random.default_rng(seed + 1000 * m)
        sizes = [x.shape[1], *hidden, 1]
        params = []
        for a, b in itertools.pairwise(sizes):
            params.append([rng.normal(0.0, math.sqrt(2.0 / a), (a, b)), np.zeros(b)])
        mom = [[np.zeros_like(p) for p in layer] for layer in params]
        vel = [[np.zeros_like(p) for p in layer] for layer in params]
        step = 0
        n = len(xn)
        for ep in range(epochs):
            order = rng.permutation(n)
            lr_ep = lr * (0.5 * (1 + math.cos(math.pi * ep / epochs)))  # cosine decay
            for s in range(0, n, batch):
                idx = order[s : s + batch]
                xb, yb = xn[idx], yn[idx]
                acts = [xb]
                h = xb
                for i, (w, b) in enumerate(params):
                    h = h @ w + b
                    if i < len(params) - 1:
                        h = np.maximum(h, 0.0)
                    acts.append(h)
                g = 2.0 * (h[:, 0] - yb)[:, None] / len(idx)
                step += 1
                for i in range(len(params) - 1, -1, -1):
                    w, b = params[i]
                    gw = acts[i].T @ g + weight_decay * w
                    gb = g.sum(axis=0)
                    if i > 0:
                        g = (g @ w.T) * (acts[i] > 0)
                    for j, gr in enumerate((gw, gb)):
                        mom[i][j] = 0.9 * mom[i][j] + 0.1 * gr
                        vel[i][j] = 0.999 * vel[i][j] + 0.001 * gr * gr
                        mh = mom[i][j] / (1 - 0.9**step)
                        vh = vel[i][j] / (1 - 0.999**step)
                        params[i][j] = params[i][j] - lr_ep * mh / (np.sqrt(vh) + 1e-8)
        nets.append([(round_sig(p[0]), round_sig(p[1])) for p in params])
        if progress:
            progress(f"network {m + 1}/{members} trained")
    return MlpEnsemble(round_sig(x_mean), round_sig(x_std), nets, ys)
