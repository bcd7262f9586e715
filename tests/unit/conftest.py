"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

NpzWriter = Callable[[Path, np.ndarray], None]


@pytest.fixture
def write_femto_npz() -> NpzWriter:
    """Write generated accelerations ``(snapshots, 2560, 2)`` in g as a bearing in the
    npz layout of datasets/femto.py, one snapshot every 10 s."""

    def write(path: Path, acc: np.ndarray) -> None:
        secs = np.arange(len(acc)) * 10
        hmsu = np.zeros((len(acc), acc.shape[1], 4), dtype=np.int32)
        hmsu[:, :, 0] = (9 + secs // 3600)[:, None]
        hmsu[:, :, 1] = (secs // 60 % 60)[:, None]
        hmsu[:, :, 2] = (secs % 60)[:, None]
        files = np.array([f"acc_{i + 1:05d}.csv" for i in range(len(acc))])
        np.savez(path, acc_milli_g=np.round(acc * 1000).astype(np.int32), time_hmsu=hmsu, files=files)

    return write
