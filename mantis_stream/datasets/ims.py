"""IMS (University of Cincinnati) bearing run-to-failure tests, per-snapshot features.

Why this exists
    The shared copy of the IMS data holds one number per snapshot and channel
    (the mean absolute acceleration of a 1-s, 20 kHz snapshot taken every 10
    minutes). That is a scalar series per channel, which is what the pipeline's
    anomaly stage sees for scalar sensors; this module reads it and replays it
    through the same detector to find where degradation is first signalled.

Usage
    >>> import io
    >>> t = read_ims_csv(io.StringIO(",Bearing 1,Bearing 2\\n2004-03-04 09:27:46,0.06,0.07\\n"))
    >>> t.channels, t.values.shape
    (['Bearing 1', 'Bearing 2'], (1, 2))
    >>> t.bearings()
    {'Bearing 1': [0], 'Bearing 2': [1]}

    From a shell (prints the alarms of every bearing)::

        python -m mantis_stream.datasets.ims IMS/ims_test1_mean_abs.csv

Notes
    Known outcomes (NASA/IMS readme): test 1 ended with an inner-race defect in
    bearing 3 and a roller-element defect in bearing 4; test 3 with an outer-race
    failure in bearing 3. "First signal" below follows the orchestrator's rule:
    ``persistence`` anomalous scores in a row from one sensor.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["ImsTest", "read_ims_csv", "scan_bearing", "first_persistent", "report"]


@dataclass
class ImsTest:
    timestamps: list[datetime]
    channels: list[str]
    values: np.ndarray  # (n_snapshots, n_channels)

    def bearings(self) -> dict[str, list[int]]:
        """Bearing name -> column indices of its channels (``Bearing 1 C1`` and ``C2`` -> ``Bearing 1``)."""
        out: dict[str, list[int]] = {}
        for i, name in enumerate(self.channels):
            out.setdefault(re.sub(r"\s+C\d+$", "", name), []).append(i)
        return out


def read_ims_csv(source: str | Path | IO[str]) -> ImsTest:
    """Read ``ims_test*_mean_abs.csv``: first column the snapshot time, then one column per channel."""
    if isinstance(source, (str, Path)):
        with open(source, newline="") as fh:
            return read_ims_csv(fh)
    reader = csv.reader(source)
    header = next(reader)
    channels = [h.strip() for h in header[1:]]
    ts: list[datetime] = []
    rows: list[list[float]] = []
    for row in reader:
        if not row:
            continue
        ts.append(datetime.fromisoformat(row[0].strip()))
        rows.append([float(x) for x in row[1:]])
    return ImsTest(ts, channels, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(channels)))


def bearing_features(test: ImsTest, columns: list[int], window: int = 10) -> list[dict[str, float]]:
    """Causal features per snapshot for one bearing: each channel's :class:`ScalarFeaturizer` output."""
    from mantis_stream.dsp.stats import ScalarFeaturizer

    fz = {c: ScalarFeaturizer(window) for c in columns}
    out = []
    for row in test.values:
        x: dict[str, float] = {}
        for c in columns:
            for k, v in fz[c].push(row[c]).items():
                x[f"{test.channels[c]}:{k}"] = v
        out.append(x)
    return out


def scan_bearing(test: ImsTest, columns: list[int], window: int = 10, **detector_kwargs: Any) -> list[Any]:
    """The detector's :class:`AnomalyScore` for every snapshot of one bearing.

    Default settings: those of ``detect`` for scalar series (``SERIES_DEFAULTS``:
    memories of a few hundred snapshots) with the pipeline's winsorised scaler
    (``clip_sigma=4``), which degradation needs.
    """
    from mantis_stream.models.anomaly import SERIES_DEFAULTS, AnomalyDetector

    det = AnomalyDetector(**(dict(SERIES_DEFAULTS) | {"clip_sigma": 4.0} | detector_kwargs))
    return det.process_many(bearing_features(test, columns, window))


def first_persistent(flags: np.ndarray | list[bool], persistence: int = 5) -> int | None:
    """Index of the row that completes the first run of ``persistence`` alarms in a row, or None."""
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if run >= persistence:
            return i
    return None


def report(path: str | Path, persistence: int = 5, window: int = 30, **detector_kwargs: Any) -> list[dict[str, Any]]:
    """Per bearing: first persistent alarm, isolated alarms before it, alarm counts."""
    test = read_ims_csv(path)
    n = len(test.timestamps)
    out = []
    for bearing, cols in test.bearings().items():
        results = scan_bearing(test, cols, window, **detector_kwargs)
        flags = np.array([r.is_anomaly for r in results])
        first = first_persistent(flags, persistence)
        before = np.flatnonzero(flags[: (first - persistence + 1) if first is not None else n])
        out.append({
            "bearing": bearing,
            "snapshots": n,
            "first_signal": None if first is None else str(test.timestamps[first - persistence + 1]),
            "first_signal_index": None if first is None else first - persistence + 1,
            "hours_before_end": None if first is None else round((test.timestamps[-1] - test.timestamps[first - persistence + 1]).total_seconds() / 3600, 1),
            "alarms_before": len(before),
            "alarms_before_at": [str(test.timestamps[i]) for i in before[:10]],
            "alarms_total": int(flags.sum()),
            "first_alarm": str(test.timestamps[int(np.argmax(flags))]) if flags.any() else None,
            "last_day_alarms": int(sum(f for f, t in zip(flags, test.timestamps) if (test.timestamps[-1] - t).total_seconds() <= 86400)),
        })
    return out


if __name__ == "__main__":  # pragma: no cover - a report for docs/models-anomaly.md
    import json

    for p in sys.argv[1:]:
        print(p)
        for row in report(p):
            print("  " + json.dumps(row))
