"""train-rul / evaluate-rul / predict-rul through the CLI, on small generated fixtures.

The commands run as a user runs them (a subprocess of ``mantis-stream``), so
option parsing, model files and the one-JSON-line outputs are all covered.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "rul"))

from mantis_stream.datasets import cmapss, femto
from mantis_stream.evaluation.rul import rmse, score_cmapss
from mantis_stream.models.rul import RulModel, femto_estimate, run_tracker

import rul_synth

# Works whether or not mantis_stream.commands imports the RUL commands itself.
CLI = [sys.executable, "-c", "import mantis_stream.commands.rul, mantis_stream.commands.replay; from mantis_stream.__main__ import main; main()"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def json_lines(out: str) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rul-cli")
    rows, _ = rul_synth.cmapss_rows(24, seed=5)
    rul_synth.write_cmapss(d / "train_FD901.txt", rows)
    rul_synth.write_cmapss_test(d, n_units=10, seed=99)
    rul_synth.write_femto_bearing(d / "Bearing1_1", n_files=40, seed=0)
    rul_synth.write_femto_bearing(d / "Bearing2_1", n_files=50, seed=1)
    rul_synth.write_femto_bearing(d / "Bearing3_1", n_files=45, seed=2)
    return d


@pytest.fixture(scope="module")
def cmapss_model(workdir: Path) -> Path:
    run_cli("train-rul", "--format", "cmapss", "--quick", "--out", "cmapss.json", "train_FD901.txt", cwd=workdir)
    return workdir / "cmapss.json"


def test_train_and_evaluate_cmapss(workdir: Path, cmapss_model: Path) -> None:
    model = RulModel.load(cmapss_model)
    assert model.cmapss is not None and model.version.startswith("rul+")
    out = run_cli("evaluate-rul", "--format", "cmapss", "--model", str(cmapss_model), "test_FD901.txt", "RUL_FD901.txt", cwd=workdir)
    (line,) = json_lines(out.stdout)
    assert set(line) >= {"rmse", "score", "units"}
    assert line["units"] == 10
    truth = np.minimum(cmapss.load_truth(workdir / "RUL_FD901.txt"), 125)
    # the command prints what the library computes with the same tracker
    units = cmapss.load_units(workdir / "test_FD901.txt")
    expect = score_cmapss(model, [list(u.rows()) for u in units], truth)
    assert line["rmse"] == pytest.approx(expect["rmse"])
    assert line["score"] == pytest.approx(expect["score"])
    # it learnt the known degradation: far better than always guessing the mean
    assert line["rmse"] < 0.7 * rmse(truth, np.full(len(truth), truth.mean()))


def test_predict_cmapss_matches_tracker(workdir: Path, cmapss_model: Path) -> None:
    out = run_cli("predict-rul", "--format", "cmapss", "--model", str(cmapss_model), "test_FD901.txt", cwd=workdir)
    lines = json_lines(out.stdout)
    model = RulModel.load(cmapss_model)
    units = cmapss.load_units(workdir / "test_FD901.txt")
    assert [x["asset_id"] for x in lines] == [f"FD901-{u.unit}" for u in units]
    for line, u in zip(lines, units):
        est = run_tracker(model, "cycles", u.rows())
        assert line["unit"] == "cycles"
        assert line["rul"] == pytest.approx(est.rul, abs=1e-3)


def test_model_selected_by_environment(workdir: Path, cmapss_model: Path) -> None:
    import os

    env = dict(os.environ, MANTIS_RUL_MODEL=str(cmapss_model))
    proc = subprocess.run([*CLI, "evaluate-rul", "--format", "cmapss", "test_FD901.txt", "RUL_FD901.txt"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    explicit = run_cli("evaluate-rul", "--format", "cmapss", "--model", str(cmapss_model), "test_FD901.txt", "RUL_FD901.txt", cwd=workdir)
    assert json_lines(proc.stdout) == json_lines(explicit.stdout)


def test_train_and_predict_femto(workdir: Path, cmapss_model: Path, tmp_path: Path) -> None:
    run_cli("train-rul", "--format", "femto", "--from", str(cmapss_model), "--out", "both.json", "Bearing1_1", "Bearing2_1", cwd=workdir)
    model = RulModel.load(workdir / "both.json")
    # the C-MAPSS part is kept from --from, the bearing part is new
    assert model.cmapss is not None
    assert model.generic["seconds"].horizon is not None
    # a held-out bearing cut at 60 % of its life: the remaining life is ~40 % of it
    cut = tmp_path / "Bearing3_1"
    cut.mkdir()
    files = femto.acc_files(workdir / "Bearing3_1")
    for f in files[:27]:
        shutil.copy(f, cut / f.name)
    out = run_cli("predict-rul", "--format", "femto", "--model", str(workdir / "both.json"), str(workdir / "Bearing3_1"), str(cut), cwd=workdir)
    full, partial = json_lines(out.stdout)
    assert full["asset_id"] == "Bearing3_1" and full["unit"] == "seconds"
    assert partial["asset_id"] == "Bearing3_1"
    assert partial["rul"] > full["rul"]
    assert full["rul"] < 150.0  # at its last file the bearing has failed
    assert partial["rul"] == pytest.approx(femto_estimate(model, femto.bearing_features(cut)).rul, abs=1e-3)


def test_bad_model_file_is_a_usage_error(workdir: Path) -> None:
    (workdir / "bad.json").write_text("{}")
    proc = subprocess.run([*CLI, "evaluate-rul", "--format", "cmapss", "--model", "bad.json", "test_FD901.txt", "RUL_FD901.txt"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "bad.json" in proc.stderr


# ---------------------------------------------------------------------------------------
# replay: the row -> reading conversions (the producing itself needs a broker)
# ---------------------------------------------------------------------------------------


def test_replay_readings_are_valid_and_in_time_order(workdir: Path) -> None:
    from mantis_stream.commands.replay import nab_row_to_reading, readings_for
    from mantis_stream.models.reading import validate_reading

    cm = list(readings_for("cmapss", [str(workdir / "train_FD901.txt")]))
    assert len(cm) == len(cmapss.load_array(workdir / "train_FD901.txt"))
    assert [r["ts"] for r in cm] == sorted(r["ts"] for r in cm)
    first = validate_reading(orjson.loads(orjson.dumps(cm[0])))
    assert first.kind == "channels" and first.cycle == 1 and first.asset_id.startswith("FD901-")
    assert set(first.channels) == set(cmapss.CHANNELS)

    fe = list(readings_for("femto", [str(workdir / "Bearing1_1"), str(workdir / "Bearing2_1")]))
    assert len(fe) == 2 * (40 + 50)
    assert [r["ts"] for r in fe] == sorted(r["ts"] for r in fe)
    r = validate_reading(orjson.loads(orjson.dumps(fe[0])))
    assert r.kind == "waveform" and r.sample_rate_hz == 25600.0 and len(r.values) == 2560
    assert r.meta["rpm"] == 1800.0 and r.sensor_id in ("acc_h", "acc_v")
    b11 = [x for x in fe if x["asset_id"] == "Bearing1_1"]
    assert [x["sensor_id"] for x in b11[:2]] == ["acc_h", "acc_v"]
    assert b11[2]["ts"] - b11[0]["ts"] == pytest.approx(10.0)

    nab = nab_row_to_reading("machine_temperature", "realKnownCause", "2013-12-02 21:15:00", 73.96)
    v = validate_reading(nab)
    assert v.kind == "scalar" and v.value == 73.96 and v.ts == 1386018900.0


def test_femto_offline_framing_matches_streaming_framing(workdir: Path) -> None:
    """frame_features (offline) == FrameAssembler over the replayed chunks (the preprocessing stage)."""
    from mantis_stream.commands.replay import readings_for
    from mantis_stream.dsp.framing import FrameAssembler, remove_dc
    from mantis_stream.dsp.spectral import waveform_features

    offline = femto.bearing_features(workdir / "Bearing1_1")["acc_h"]
    asm = FrameAssembler(femto.DEFAULT_FRAME_SIZE)
    streamed = []
    for r in readings_for("femto", [str(workdir / "Bearing1_1")]):
        if r["sensor_id"] != "acc_h":
            continue
        for frame in remove_dc(asm.push(np.asarray(r["values"]))):
            streamed.append(waveform_features(frame[None, :], r["sample_rate_hz"], r["meta"])[0])
    assert len(streamed) == len(offline) == (40 * 2560) // 2048
    for (_, a), b in zip(offline, streamed):
        assert a["rms"] == pytest.approx(b["rms"], rel=1e-12)
        assert a["kurtosis"] == pytest.approx(b["kurtosis"], rel=1e-9)


def test_femto_files_past_midnight_keep_increasing_offsets(tmp_path: Path) -> None:
    folder = tmp_path / "Bearing2_7"
    folder.mkdir()
    for i, (h, m, s) in enumerate([(23, 59, 50), (0, 0, 0), (0, 0, 10)]):
        (folder / f"acc_{i + 1:05d}.csv").write_text("".join(f"{h},{m},{s},{k * 39.0:.1f},0.1,-0.2\n" for k in range(8)))
    files = list(femto.iter_files(folder))
    assert [f.offset_s for f in files] == [0.0, 10.0, 20.0]
    assert femto.bearing_meta(folder)["rpm"] == 1650.0
    readings = list(femto.iter_readings(folder, start_ts=1.8e9))
    assert [r["ts"] for r in readings] == [1.8e9, 1.8e9, 1.8e9 + 10, 1.8e9 + 10, 1.8e9 + 20, 1.8e9 + 20]


def test_femto_bad_clock_stamp_is_placed_one_period_on(tmp_path: Path) -> None:
    """A stamp hours before its neighbours (Bearing1_1 has two) is a bad clock, not a new day."""
    folder = tmp_path / "Bearing1_9"
    folder.mkdir()
    for i, (h, m, s) in enumerate([(15, 32, 39), (15, 32, 49), (9, 38, 46), (15, 33, 9)]):
        (folder / f"acc_{i + 1:05d}.csv").write_text("".join(f"{h},{m},{s},{k * 39.0:.1f},0.1,-0.2\n" for k in range(8)))
    assert [f.offset_s for f in femto.iter_files(folder)] == [0.0, 10.0, 20.0, 30.0]


def test_femto_npz_reads_as_the_csv_folder(workdir: Path, tmp_path: Path) -> None:
    """The npz repacking (acc in milli-g, hmsu stamps, file names) gives the same features,
    name, condition and end of life as the acc_*.csv folder it was made from."""
    folder = workdir / "Bearing2_1"
    files = femto.acc_files(folder)
    rows = [np.loadtxt(f, delimiter=",") for f in files]
    npz = tmp_path / "Bearing2_1.npz"
    np.savez(
        npz,
        acc_milli_g=np.stack([np.rint(r[:, 4:6] * 1000).astype(np.int32) for r in rows]),
        time_hmsu=np.stack([r[:, :4].astype(np.int32) for r in rows]),
        files=np.array([f.name for f in files]),
    )
    assert femto.bearing_name(npz) == "Bearing2_1" and femto.bearing_meta(npz) == femto.bearing_meta(folder)
    assert femto.life_end_ts(npz) == pytest.approx(femto.life_end_ts(folder), abs=1e-6)
    a, b = femto.bearing_features(folder), femto.bearing_features(npz)
    for ch in femto.CHANNELS:
        assert [t for t, _ in a[ch]] == pytest.approx([t for t, _ in b[ch]], abs=1e-6)
        assert [f["rms"] for _, f in a[ch]] == pytest.approx([f["rms"] for _, f in b[ch]], rel=1e-9)
    (tmp_path / "bad.npz").write_bytes(npz.read_bytes())
    np.savez(tmp_path / "bad.npz", acc_milli_g=np.zeros((2, 4, 2), np.int32))
    with pytest.raises(ValueError, match="time_hmsu"):
        list(femto.iter_files(tmp_path / "bad.npz"))


@pytest.mark.broker
def test_replay_produces_readings_to_the_broker(broker, workdir: Path) -> None:
    """replay through a real broker: every row arrives, keyed by its asset, as a valid reading."""
    import asyncio
    import os
    import uuid

    from aiokafka import AIOKafkaConsumer

    from mantis_stream.models.reading import parse_reading

    topic = f"rul-replay-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], 1)
    env = dict(os.environ, MANTIS_BROKER=broker.url)
    proc = subprocess.run([*CLI, "replay", "--format", "femto", "--topic", topic, "Bearing1_1"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replayed 80 reading(s)" in proc.stderr

    async def consume() -> list:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        await consumer.start()
        got = []
        try:
            while len(got) < 80:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    got.extend(msgs)
        finally:
            await consumer.stop()
        return got

    msgs = asyncio.run(consume())
    assert len(msgs) == 80
    readings = [parse_reading(m.value) for m in msgs]
    assert all(m.key == r.asset_id.encode() for m, r in zip(msgs, readings))  # chunks of one asset stay in order
    assert {r.sensor_id for r in readings} == {"acc_h", "acc_v"}
    assert all(r.kind == "waveform" and len(r.values) == 2560 for r in readings)
