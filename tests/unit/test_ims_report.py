"""The IMS report per bearing: one scan gives the row and the monitor results a plot draws."""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "rul"))

import rul_synth


def test_report_bearing_is_the_report_row_and_the_scan(tmp_path):
    from mantis_stream.datasets.ims import read_ims_csv, report, report_bearing, scan_bearing

    path = tmp_path / "ims_test9_mean_abs.csv"
    path.write_text(rul_synth.ims_csv())
    test = read_ims_csv(io.StringIO(rul_synth.ims_csv()))
    rows = report(path)
    per_bearing = [report_bearing(test, b, cols) for b, cols in test.bearings().items()]
    assert rows == [row for row, _ in per_bearing]
    healthy, failing = rows
    assert healthy["work_order_hours_before_end"] is None and healthy["detect_alert_hours_before_end"] is None
    assert failing["work_order_hours_before_end"] is not None and failing["work_order_hours_before_end"] > 1.0
    assert "Bearing 2:mean" in failing["why"], "the order names the feature that left the reference"
    results = per_bearing[1][1]
    assert [r.score for r in results] == [r.score for r in scan_bearing(test, test.bearings()["Bearing 2"])]
