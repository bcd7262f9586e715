"""The IMS report per bearing: one scan gives the row and the monitor results a plot draws."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import numpy as np


def _test_csv() -> str:
    """Two bearings, 10-minute snapshots; bearing 2's level climbs 7 % per snapshot over its last 70."""
    rng = np.random.default_rng(0)
    n = 400
    t0 = datetime(2004, 2, 12, 10, 32, 39)
    level = np.where(np.arange(n) > 330, 0.06 + 0.004 * (np.arange(n) - 330), 0.06)
    lines = [",Bearing 1,Bearing 2"]
    for i in range(n):
        ts = t0 + timedelta(minutes=10 * i)
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S},{0.06 + 0.002 * rng.standard_normal():.5f},{level[i] + 0.002 * rng.standard_normal():.5f}")
    return "\n".join(lines) + "\n"


def test_report_bearing_is_the_report_row_and_the_scan(tmp_path):
    from mantis_stream.datasets.ims import read_ims_csv, report, report_bearing, scan_bearing

    path = tmp_path / "ims_test9_mean_abs.csv"
    path.write_text(_test_csv())
    test = read_ims_csv(io.StringIO(_test_csv()))
    rows = report(path)
    per_bearing = [report_bearing(test, b, cols) for b, cols in test.bearings().items()]
    assert rows == [row for row, _ in per_bearing]
    healthy, failing = rows
    assert healthy["work_order_hours_before_end"] is None and healthy["detect_alert_hours_before_end"] is None
    assert failing["work_order_hours_before_end"] is not None and failing["work_order_hours_before_end"] > 1.0
    assert "Bearing 2:mean" in failing["why"], "the order names the feature that left the reference"
    results = per_bearing[1][1]
    assert [r.score for r in results] == [r.score for r in scan_bearing(test, test.bearings()["Bearing 2"])]
