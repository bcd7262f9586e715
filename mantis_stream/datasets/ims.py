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

    From a shell (per bearing: the first work order and ``detect``'s first alert)::

        python -m mantis_stream.datasets.ims IMS/ims_test1_mean_abs.csv

Notes
    Known outcomes (NASA/IMS readme): test 1 ended with an inner-race defect in
    bearing 3 and a roller-element defect in bearing 4; test 3 with an outer-race
    failure in bearing 3. Everything here runs the pipeline's one detector
    configuration (``models.anomaly.ConditionMonitor``) and its work-order rules.
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

__all__ = ["ImsTest", "read_ims_csv", "scan_bearing", "first_persistent", "first_work_order", "report", "report_bearing"]


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


def scan_bearing(test: ImsTest, columns: list[int], window: int = 10, **monitor_kwargs: Any) -> list[Any]:
    """The pipeline's :class:`~mantis_stream.models.anomaly.ConditionMonitor` result for every snapshot of one bearing.

    One monitor per bearing, its channels' window features side by side (a
    vibration sensor with two axes), with the one detector configuration.
    """
    from mantis_stream.models.anomaly import ConditionMonitor

    monitor = ConditionMonitor(**monitor_kwargs)
    return [monitor.process_one(x) for x in bearing_features(test, columns, window)]


def first_persistent(flags: np.ndarray | list[bool], persistence: int = 5) -> int | None:
    """Index of the row that completes the first run of ``persistence`` alarms in a row, or None."""
    run = 0
    for i, f in enumerate(flags):
        run = run + 1 if f else 0
        if run >= persistence:
            return i
    return None


def first_work_order(test: ImsTest, bearing: str, results: list[Any], persistence: int) -> tuple[int, str] | None:
    """(snapshot, why) of the orchestrator's first work order on one bearing's scores, or None."""
    from mantis_stream.models.maintenance import AssetMaintenance

    rules = AssetMaintenance({"cycles": 30.0, "seconds": 3600.0}, persistence)
    for i, r in enumerate(results):
        decision = rules.on_anomaly({
            "asset_id": "ims", "sensor_id": bearing, "ts": str(test.timestamps[i]), "score": r.score,
            "threshold": r.threshold, "is_anomaly": r.is_anomaly, "level": r.level,
            "departures": [d.as_dict() for d in r.departures[:5]],
        })
        if decision is not None:
            return i, decision.why
    return None


def report_bearing(test: ImsTest, bearing: str, columns: list[int], persistence: int = 5, window: int = 10,
                   detect_run: int = 3) -> tuple[dict[str, Any], list[Any]]:
    """One bearing's row of :func:`report`, and its monitor results (for a plot: one scan serves both)."""
    from mantis_stream.models.anomaly import ALERT_SCORE, detect_series

    end = test.timestamps[-1]

    def hours(i: int | None) -> float | None:
        return None if i is None else round((end - test.timestamps[i]).total_seconds() / 3600, 1)

    results = scan_bearing(test, columns, window)
    order = first_work_order(test, bearing, results, persistence)
    detect_first = []
    for c in columns:
        done = first_persistent(detect_series(test.values[:, c], window=window) >= ALERT_SCORE, detect_run)
        if done is not None:
            detect_first.append(done - detect_run + 1)
    first_alert = min(detect_first) if detect_first else None
    row = {
        "bearing": bearing,
        "snapshots": len(test.timestamps),
        "work_order_hours_before_end": hours(order[0] if order else None),
        "work_order_at": str(test.timestamps[order[0]]) if order else None,
        "why": order[1] if order else None,
        "detect_alert_hours_before_end": hours(first_alert),
        "detect_alert_at": str(test.timestamps[first_alert]) if first_alert is not None else None,
    }
    return row, results


def report(path: str | Path, persistence: int = 5, window: int = 10, detect_run: int = 3) -> list[dict[str, Any]]:
    """Per bearing: hours before the end of the first work order (pipeline rules) and of ``detect``'s first alert.

    ``detect``'s alert: ``detect_run`` scores >= 0.5 in a row on one channel's
    series (``detect --format nab`` of that channel); the work order: the
    orchestrator's rule (``persistence`` alert scores in a row) on the bearing's
    monitor (both channels).
    """
    test = read_ims_csv(path)
    return [report_bearing(test, bearing, cols, persistence, window, detect_run)[0] for bearing, cols in test.bearings().items()]


if __name__ == "__main__":  # pragma: no cover - a report for docs/models-anomaly.md
    import json

    for p in sys.argv[1:]:
        print(p)
        for row in report(p):
            print("  " + json.dumps(row))
