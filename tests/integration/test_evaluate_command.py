"""``mantis-stream evaluate {femto,cmapss,ims,nab}`` through the CLI, on small generated fixtures.

Each run is a subprocess as a user runs it: the table must reach stdout, the
progress bar stderr, and one readable PNG per asset must be written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "rul"))

import rul_synth

NAB_FIXTURE = Path(__file__).parents[1] / "fixtures" / "nab"
CLI = [sys.executable, "-c", "import mantis_stream.commands.evaluate; from mantis_stream.__main__ import main; main()"]


def evaluate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, "evaluate", *args, "--out", str(tmp_path / "png")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_pngs(folder: Path, names: list[str]) -> None:
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{n}.png" for n in names)
    for n in names:
        img = matplotlib.image.imread(folder / f"{n}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500
        assert img[..., :3].std() > 0.05, f"{n}.png is blank"


def test_evaluate_femto_leave_one_out(tmp_path: Path) -> None:
    for name, n, seed in (("Bearing1_1", 40, 0), ("Bearing2_1", 50, 1), ("Bearing3_1", 45, 2)):
        rul_synth.write_femto_bearing(tmp_path / name, n_files=n, seed=seed)
    proc = evaluate(tmp_path, "femto", "Bearing1_1", "Bearing2_1", "Bearing3_1")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| Bearing")]
    assert [r.split("|")[1].strip() for r in rows] == ["Bearing1_1", "Bearing2_1", "Bearing3_1"]
    # short fixtures: cuts before the end of a bearing's baseline have no estimate yet
    cuts = int(re.search(r"all (\d+) cuts", proc.stdout).group(1))
    assert 6 <= cuts <= 18 and "best constant guess" in proc.stdout
    assert "leave one bearing out" in proc.stderr  # the progress bar's label
    assert_pngs(tmp_path / "png" / "femto", ["Bearing1_1", "Bearing2_1", "Bearing3_1"])


def test_evaluate_femto_needs_two_bearings(tmp_path: Path) -> None:
    rul_synth.write_femto_bearing(tmp_path / "Bearing1_1", n_files=40, seed=0)
    proc = subprocess.run([*CLI, "evaluate", "femto", "Bearing1_1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "at least two bearings" in proc.stderr


def test_evaluate_cmapss_cross_validation(tmp_path: Path) -> None:
    rows, _ = rul_synth.cmapss_rows(10, seed=5)
    rul_synth.write_cmapss(tmp_path / "train_FD901.txt", rows)
    proc = evaluate(tmp_path, "cmapss", "--quick", "train_FD901.txt")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("| 10 |"))
    assert float(line.split("|")[3]) > 0  # an RMSE
    assert_pngs(tmp_path / "png" / "cmapss", [f"engine_{i:03d}" for i in range(1, 11)])


def test_evaluate_ims_bearings(tmp_path: Path) -> None:
    (tmp_path / "ims_test9_mean_abs.csv").write_text(rul_synth.ims_csv())
    proc = evaluate(tmp_path, "ims", "ims_test9_mean_abs.csv")
    assert "| ims_test9_mean_abs | Bearing 1 |" in proc.stdout and "| ims_test9_mean_abs | Bearing 2 |" in proc.stdout
    assert_pngs(tmp_path / "png" / "ims", ["ims_test9_mean_abs_Bearing_1", "ims_test9_mean_abs_Bearing_2"])


def test_evaluate_nab_tree(tmp_path: Path) -> None:
    proc = evaluate(tmp_path, "nab", str(NAB_FIXTURE))
    assert "| ALL |" in proc.stdout
    assert_pngs(tmp_path / "png" / "nab", ["synthetic_spike_and_shift.csv"])


def test_evaluate_rejects_a_missing_path(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "evaluate", "ims", "nowhere.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "nowhere.csv does not exist" in proc.stderr


@pytest.mark.parametrize(
    "rul,degrading,health,level",
    [(5000.0, False, 0.5, 0), (100.0, False, 0.5, 0), (5000.0, True, 0.5, 1), (100.0, True, 0.5, 2), (0.0, True, 0.0, 2)],
)
def test_alarm_levels(rul: float, degrading: bool, health: float, level: int) -> None:
    from mantis_stream.commands.evaluate import alarm_levels
    from mantis_stream.models.rul import RulEstimate

    est = RulEstimate(rul, rul, rul, health, "seconds", degrading)
    assert alarm_levels([est], 3600.0).tolist() == [level]
