"""FEMTO-ST PRONOSTIA bearings (IEEE PHM 2012): acc files, readings and frame features.

Why this exists: ``replay`` streams a bearing folder into the pipeline, and
``train-rul``/``predict-rul`` must see the same per-frame features the
streaming feature stage computes from that stream. So the conversion to
readings and the offline framing live here, side by side:

- each ``acc_NNNNN.csv`` (2560 rows: hour, minute, second, microsecond,
  horizontal g, vertical g) becomes two readings, ``sensor_id`` ``acc_h`` and
  ``acc_v``, ``values`` the 2560 samples, ``sample_rate_hz`` 25600, ``meta``
  the shaft speed (``rpm``, ``shaft_hz``), radial load and the bearing
  geometry, ``asset_id`` the folder name (``Bearing1_2``);
- ``ts`` = ``start_ts`` + seconds since the folder's first file (the files
  carry a time of day only; a wrap past midnight adds a day);
- :func:`frame_features` cuts a channel into frames exactly as the
  preprocessing stage does (``dsp.framing.FrameAssembler`` of
  ``Settings.frame_size`` samples, DC removed, a frame's ``ts`` the time of its
  last sample) and calls ``dsp.spectral.waveform_features``.

A learning bearing's last file is its end of life (vibration above 20 g).

A bearing is a folder of acc files (the challenge's layout, what users have) or
a ``BearingC_N.npz`` repacking of one (``acc_milli_g`` int32 (files, rows, 2)
in g x 1000, ``time_hmsu`` int32 (files, rows, 4), ``files``): the same values,
smaller; every function taking a folder takes either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dsp.framing import FrameAssembler, remove_dc
from ..dsp.spectral import waveform_features

SAMPLE_RATE_HZ = 25_600.0
CHANNELS = ("acc_h", "acc_v")
#: Operating condition -> (shaft rpm, radial load N).
CONDITIONS = {1: (1800.0, 4000.0), 2: (1650.0, 4200.0), 3: (1500.0, 5000.0)}
#: PRONOSTIA test bearing (NSK 6804DD): 13 balls of 3.5 mm on a 25.6 mm pitch.
GEOMETRY = {"n_balls": 13, "ball_diameter": 3.5, "pitch_diameter": 25.6, "contact_angle_deg": 0.0}
DEFAULT_START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DEFAULT_FRAME_SIZE = 2048

_COND = re.compile(r"Bearing(\d)_(\d+)", re.IGNORECASE)


@dataclass
class AccFile:
    """One snapshot: ``offset_s`` since the folder's first file, samples (n, 2)."""

    path: Path
    offset_s: float
    samples: np.ndarray


def acc_files(folder: str | Path) -> list[Path]:
    """The folder's ``acc_*.csv`` in name (= time) order."""
    files = sorted(Path(folder).glob("acc_*.csv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no acc_*.csv files")
    return files


def bearing_name(folder: str | Path) -> str:
    """The bearing's name: the folder name, or the npz file's stem."""
    path = Path(folder)
    return path.stem if path.suffix == ".npz" else path.name


def bearing_meta(folder: str | Path) -> dict[str, Any]:
    """Shaft speed, load and geometry from the folder name (``BearingC_N``: condition C)."""
    meta: dict[str, Any] = dict(GEOMETRY)
    m = _COND.search(bearing_name(folder))
    if m and int(m.group(1)) in CONDITIONS:
        rpm, load = CONDITIONS[int(m.group(1))]
        meta.update({"rpm": rpm, "shaft_hz": rpm / 60.0, "load_n": load, "condition": int(m.group(1))})
    return meta


def read_acc(path: str | Path) -> tuple[float, np.ndarray]:
    """(time of day in seconds of the first row, samples (n, 2): horizontal, vertical)."""
    text = Path(path).read_text()
    sep = ";" if ";" in text.split("\n", 1)[0] else ","
    arr = np.array([line.split(sep) for line in text.split() if line], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 6:
        raise ValueError(f"{path}: expected 6 columns (h, m, s, us, horizontal, vertical)")
    h, mi, s, us = arr[0, :4]
    return h * 3600.0 + mi * 60.0 + s + us * 1e-6, arr[:, 4:6].copy()


def _npz_files(path: Path) -> Iterator[tuple[Path, float, np.ndarray]]:
    """(original file name, time of day of its first row, samples in g) per snapshot of an npz."""
    with np.load(path) as data:
        try:
            acc, hmsu, names = data["acc_milli_g"], data["time_hmsu"], data["files"]
        except KeyError as exc:
            raise ValueError(f"{path}: missing array {exc} (need acc_milli_g, time_hmsu, files)") from None
    if acc.ndim != 3 or acc.shape[2] != 2 or hmsu.shape[:2] != acc.shape[:2]:
        raise ValueError(f"{path}: acc_milli_g must be (files, rows, 2) with time_hmsu (files, rows, 4)")
    first = hmsu[:, 0, :].astype(np.float64)
    tods = first[:, 0] * 3600.0 + first[:, 1] * 60.0 + first[:, 2] + first[:, 3] * 1e-6
    for name, tod, samples in zip(names, tods, acc):
        yield path / str(name), float(tod), samples.astype(np.float64) / 1000.0


def _raw_files(folder: str | Path) -> Iterator[tuple[Path, float, np.ndarray]]:
    path = Path(folder)
    if path.suffix == ".npz":
        yield from _npz_files(path)
        return
    for p in acc_files(path):
        tod, samples = read_acc(p)
        yield p, tod, samples


def iter_files(folder: str | Path) -> Iterator[AccFile]:
    """The bearing's snapshots with offsets from the first.

    A time more than half a day before the previous one wrapped past midnight;
    any other step back is a bad stamp, placed one recording period on.
    """
    first = prev = None
    day = 0.0
    step = 10.0
    for path, tod, samples in _raw_files(folder):
        t = tod + day
        if prev is not None and t < prev - 43_200.0:  # past midnight
            day += 86_400.0
            t += 86_400.0
        elif prev is not None and t <= prev:  # a bad clock stamp (Bearing1_1 has two): one period on
            t = prev + step
        elif prev is not None:
            step = t - prev
        if first is None:
            first = t
        prev = t
        yield AccFile(path, t - first, samples)


def file_to_readings(asset_id: str, offset_s: float, samples: np.ndarray, meta: dict[str, Any], *, start_ts: float = DEFAULT_START_TS, seq: int | None = None) -> list[dict[str, Any]]:
    """One snapshot as two INTERFACE.md waveform readings (``acc_h``, ``acc_v``)."""
    out = []
    for j, sensor in enumerate(CHANNELS):
        reading: dict[str, Any] = {
            "asset_id": asset_id,
            "sensor_id": sensor,
            "ts": start_ts + float(offset_s),
            "values": [float(x) for x in samples[:, j]],
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "unit": "g",
            "kind": "vibration",
            "meta": dict(meta),
        }
        if seq is not None:
            reading["seq"] = seq
        out.append(reading)
    return out


def iter_readings(folder: str | Path, *, start_ts: float = DEFAULT_START_TS) -> Iterator[dict[str, Any]]:
    """Every snapshot of a bearing folder as readings, in time order."""
    meta = bearing_meta(folder)
    name = bearing_name(folder)
    for i, f in enumerate(iter_files(folder)):
        yield from file_to_readings(name, f.offset_s, f.samples, meta, start_ts=start_ts, seq=i)


def frame_features(
    chunks: Sequence[tuple[float, np.ndarray]],
    meta: dict[str, Any],
    *,
    frame_size: int = DEFAULT_FRAME_SIZE,
    sample_rate_hz: float = SAMPLE_RATE_HZ,
) -> list[tuple[float, dict[str, float]]]:
    """(ts, features) per frame of one channel, as the streaming stages compute them.

    ``chunks``: (ts of the chunk's first sample, samples). Same framing as the
    preprocessing stage (carry-over between chunks, DC removed, a frame's ts
    the time of its last sample), same ``waveform_features``.
    """
    asm = FrameAssembler(frame_size)
    stamped: list[float] = []
    frames: list[np.ndarray] = []
    for ts, samples in chunks:
        pending_before = asm.pending
        got = asm.push(np.asarray(samples, dtype=np.float64))
        if len(got):
            got = remove_dc(got)
            for i in range(len(got)):
                stamped.append(ts + ((i + 1) * frame_size - pending_before - 1) / sample_rate_hz)
                frames.append(got[i])
    if not frames:
        return []
    feats = waveform_features(np.stack(frames), sample_rate_hz, meta)
    return list(zip(stamped, feats))


def bearing_features(folder: str | Path, *, frame_size: int = DEFAULT_FRAME_SIZE, start_ts: float = DEFAULT_START_TS) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Per channel (``acc_h``, ``acc_v``): the frame features of a whole folder."""
    meta = bearing_meta(folder)
    files = list(iter_files(folder))
    return {
        sensor: frame_features([(start_ts + f.offset_s, f.samples[:, j]) for f in files], meta, frame_size=frame_size)
        for j, sensor in enumerate(CHANNELS)
    }


def life_end_ts(folder: str | Path, *, start_ts: float = DEFAULT_START_TS) -> float:
    """Time of the last sample of the last file: a learning bearing's failure time."""
    last = list(iter_files(folder))[-1]
    return start_ts + last.offset_s + (len(last.samples) - 1) / SAMPLE_RATE_HZ
