"""NASA C-MAPSS turbofan files: reading them, and turning rows into readings.

Why this exists: the offline commands (train-rul, evaluate-rul) and ``replay``
must see a C-MAPSS row under the same channel names, or the model trained
offline would not recognise the stream. This module is the one place that
names them:

- ``setting_1`` .. ``setting_3``: the three operational settings;
- ``s1`` .. ``s21``: the 21 sensor measurements (NASA's order).

A row becomes a reading with ``asset_id`` ``<prefix><unit>`` (``FD001-7``),
``sensor_id`` ``engine``, ``cycle`` the row's cycle and ``channels`` the 24
values above (see :func:`row_to_reading`).

Files: 26 whitespace-separated columns (unit, cycle, 3 settings, 21 sensors;
rows end with trailing spaces). Truth files (``RUL_FD00x.txt``): one integer per
test unit, in unit order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS = ("setting_1", "setting_2", "setting_3")
SENSORS = tuple(f"s{i}" for i in range(1, 22))
CHANNELS = SETTINGS + SENSORS
#: Seconds between cycles in replayed timestamps (C-MAPSS has no clock).
CYCLE_SECONDS = 60.0
#: Replayed timestamps start here (2026-01-01T00:00:00Z) unless told otherwise.
DEFAULT_START_TS = 1_767_225_600.0


@dataclass
class Unit:
    """One engine's history: ``cycles`` (n,) and ``values`` (n, 24) in CHANNELS order."""

    unit: int
    cycles: np.ndarray
    values: np.ndarray

    def rows(self) -> Iterator[tuple[int, dict[str, float]]]:
        """(cycle, channels) per row, the shape the RUL tracker is fed."""
        for c, v in zip(self.cycles, self.values):
            yield int(c), dict(zip(CHANNELS, (float(x) for x in v)))

    def truncated(self, n: int) -> Unit:
        return Unit(self.unit, self.cycles[:n], self.values[:n])


def load_array(path: str | Path) -> np.ndarray:
    """The file as an (n, 26) float array (whitespace-separated, trailing spaces ok)."""
    arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if arr.shape[1] != 2 + len(CHANNELS):
        raise ValueError(f"{path}: expected {2 + len(CHANNELS)} columns, got {arr.shape[1]}")
    return arr


def load_units(path: str | Path) -> list[Unit]:
    """Units of a C-MAPSS train or test file, in unit order, rows in cycle order."""
    arr = load_array(path)
    units = []
    for u in np.unique(arr[:, 0]).astype(int):
        block = arr[arr[:, 0] == u]
        block = block[np.argsort(block[:, 1], kind="stable")]
        units.append(Unit(int(u), block[:, 1].astype(np.int64), block[:, 2:].copy()))
    return units


def load_truth(path: str | Path) -> np.ndarray:
    """RUL truth file: one number per test unit, in unit order."""
    return np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()


def row_to_reading(
    unit: int,
    cycle: int,
    values: Any,
    *,
    prefix: str = "FD001-",
    start_ts: float = DEFAULT_START_TS,
) -> dict[str, Any]:
    """One C-MAPSS row as an INTERFACE.md reading (``channels`` with ``cycle``).

    ``ts`` is ``start_ts + cycle * CYCLE_SECONDS``: C-MAPSS has no clock, the
    model ages in cycles, and increasing timestamps keep time-based stages sane.
    """
    vals = [float(x) for x in values]
    if len(vals) != len(CHANNELS):
        raise ValueError(f"expected {len(CHANNELS)} values, got {len(vals)}")
    return {
        "asset_id": f"{prefix}{int(unit)}",
        "sensor_id": "engine",
        "ts": start_ts + int(cycle) * CYCLE_SECONDS,
        "cycle": int(cycle),
        "kind": "turbofan",
        "channels": dict(zip(CHANNELS, vals)),
    }


def file_prefix(path: str | Path) -> str:
    """Asset id prefix from a file name: ``train_FD001.txt`` -> ``FD001-``."""
    stem = Path(path).stem
    for part in stem.split("_"):
        if part.upper().startswith("FD"):
            return part.upper() + "-"
    return stem + "-"


def iter_readings(path: str | Path, *, start_ts: float = DEFAULT_START_TS) -> Iterator[dict[str, Any]]:
    """Every row of a file as a reading, in file order (units one after another)."""
    prefix = file_prefix(path)
    for row in load_array(path):
        yield row_to_reading(int(row[0]), int(row[1]), row[2:], prefix=prefix, start_ts=start_ts)
