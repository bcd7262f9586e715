"""Per-frame cost of framing, FFT features, anomaly scoring and RUL, batched vs one frame at a time.

Why this exists
    The issue's target is >= 1 million vibration samples per second per core
    through framing, FFT features and anomaly scoring. This measures each step
    alone and the three together, on one core (one process, no threads), for
    the batched path the agents use (``waveform_features`` over a stack of
    frames, one ``process_many`` per sensor) and for the naive baseline (one
    frame at a time through every step).

Usage
    python bench/bench_models.py                 # frame 2048, batches of 64 frames
    python bench/bench_models.py --frame-size 4096 --batch 32 --seconds 3

Notes
    Rates are per CPU second of this process (``time.process_time``), so a busy
    machine slows the run but not the figures much (caches are shared, though:
    quote figures from an idle machine). numpy's FFT is single-threaded; BLAS
    threads are pinned to 1 below so "per core" means one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mantis_stream.dsp.framing import FrameAssembler  # noqa: E402
from mantis_stream.dsp.spectral import waveform_features  # noqa: E402
from mantis_stream.models.anomaly import ConditionMonitor  # noqa: E402
from mantis_stream.models.rul import RulModel, RulTracker  # noqa: E402

FS = 20_000.0
#: IMS test rig geometry (Rexnord ZA-2115), 2000 rpm: enables the defect-frequency features.
META = {"rpm": 2000, "n_balls": 16, "ball_diameter": 0.331, "pitch_diameter": 2.815, "contact_angle_deg": 15.17}


def signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return np.sin(2 * np.pi * 33.3 * t) + 0.3 * np.sin(2 * np.pi * 1200 * t) + 0.2 * rng.normal(size=n)


def timed(fn: Callable[[], int], seconds: float) -> tuple[float, int]:
    """Run ``fn`` (returns frames done) repeatedly for about ``seconds`` of CPU; (CPU seconds, frames).

    CPU time of this process, not wall-clock: on a shared machine the wall clock
    counts other processes' turns too, while one process's CPU time is the cost
    on one core.
    """
    fn()  # warm caches, build trees
    frames, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        frames += fn()
    return elapsed, frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frame-size", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64, help="frames per batch (the agent's batch, per sensor)")
    ap.add_argument("--chunk", type=int, default=1000, help="samples per incoming waveform chunk")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args(argv)
    n, b = args.frame_size, args.batch
    x = signal(n * b + args.chunk)
    chunks = [x[i : i + args.chunk] for i in range(0, n * b, args.chunk)]
    frames = x[: n * b].reshape(b, n)
    feats = waveform_features(frames, FS, META)

    warm = ConditionMonitor(seed=1)
    warm.process_many(waveform_features(signal(n * 600, seed=1).reshape(600, n), FS, META))
    state = warm.to_bytes()

    def framing() -> int:
        fa = FrameAssembler(n)
        return sum(fa.push(c).shape[0] for c in chunks)

    def features_batched() -> int:
        return len(waveform_features(frames, FS, META))

    def features_single() -> int:
        for f in frames:
            waveform_features(f[None, :], FS, META)
        return b

    det = ConditionMonitor.from_bytes(state)

    def anomaly_batched() -> int:
        return len(det.process_many(feats))

    def anomaly_single() -> int:
        for f in feats:
            det.process_one(f)
        return b

    def anomaly_with_state() -> int:  # what the agent does per batch: load, score, save
        d = ConditionMonitor.from_bytes(state)
        d.process_many(feats)
        d.to_bytes()
        return b

    model = RulModel.default()
    tracker = RulTracker(model, unit="seconds")
    clock = iter(range(10**12))

    def rul_update() -> int:
        for f in feats:
            tracker.update(float(next(clock)), f)
        return b

    def pipeline_batched() -> int:
        fa = FrameAssembler(n)
        got = [fa.push(c) for c in chunks]
        stack = np.concatenate(got)
        feats_ = waveform_features(stack, FS, META)
        det.process_many(feats_)
        for f in feats_:
            tracker.update(float(next(clock)), f)
        return stack.shape[0]

    def pipeline_single() -> int:
        fa = FrameAssembler(n)
        done = 0
        for c in chunks:
            for frame in fa.push(c):
                f = waveform_features(frame[None, :], FS, META)[0]
                det.process_one(f)
                tracker.update(float(next(clock)), f)
                done += 1
        return done

    rows = [
        ("framing (FrameAssembler.push)", framing),
        ("features, batched", features_batched),
        ("features, one frame at a time", features_single),
        ("anomaly, process_many", anomaly_batched),
        ("anomaly, process_one loop", anomaly_single),
        ("anomaly + from_bytes/to_bytes per batch", anomaly_with_state),
        ("RUL tracker update (generic vibration mode)", rul_update),
        ("framing + features + anomaly + RUL, batched", pipeline_batched),
        ("framing + features + anomaly + RUL, one frame at a time", pipeline_single),
    ]
    print(f"frame {n} samples, batch {b} frames, chunks of {args.chunk} samples, {len(feats[0])} features/frame, 1 core")
    print(f"detector state: {len(state):,} bytes pickled; FrameAssembler state: <= {26 + 8 * n:,} bytes")
    print(f"{'step':<52} {'us/frame':>10} {'frames/s':>11} {'samples/s':>13}   (per CPU second)")
    for label, fn in rows:
        elapsed, done = timed(fn, args.seconds)
        per = elapsed / done
        print(f"{label:<52} {per * 1e6:>10.1f} {1 / per:>11,.0f} {n / per:>13,.0f}")


if __name__ == "__main__":
    main()
