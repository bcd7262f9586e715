"""Per-record cost of building, reading back and validating the public messages: a baseline revision vs this tree.

Why this exists
    The message shapes are declared once (``mantis_stream/models/schema.py``);
    the builders must stay as cheap as the hand-written dicts they were (they
    run once per record on the hot path), and the sinks' and the readings'
    checks should not get dearer. This runs the baseline's modules and this
    tree's side by side, in one process, on the same inputs.

Usage
    python bench/bench_records.py                      # baseline: the parent of the commit that added schema.py
    python bench/bench_records.py --baseline main --seconds 0.5

Notes
    The baseline's ``models/records.py``, ``sinks/records.py`` and
    ``models/reading.py`` are read with ``git show`` and loaded under private
    module names. Each figure is CPU microseconds per record, the best of
    many short rounds that alternate between the baseline and this tree, so
    other load on the machine inflates the figures less than an average.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mantis_stream import topics as names  # noqa: E402
from mantis_stream.codecs import dumps  # noqa: E402
from mantis_stream.models import reading, records  # noqa: E402
from mantis_stream.sinks import records as sink_records  # noqa: E402


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def default_baseline() -> str:
    added = git("log", "--diff-filter=A", "--format=%H", "--", "mantis_stream/models/schema.py").splitlines()
    return f"{added[-1]}^" if added else "HEAD"


def load(rev: str, path: str) -> ModuleType:
    """The module at ``path`` as of ``rev``, importable beside today's (its relative imports resolve to today's)."""
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    name = f"{package}._baseline_{Path(path).stem}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    sys.modules[name] = module
    exec(compile(git("show", f"{rev}:{path}"), f"{rev}:{path}", "exec"), module.__dict__)
    return module


def side_by_side(old: Callable[[], Any], new: Callable[[], Any], rounds: int, seconds: float) -> tuple[float, float]:
    """Microseconds per call of each: the best of ``rounds`` alternating rounds of about ``seconds`` each.

    CPU time of this process (not wall time) and alternation, so that other
    work on a shared machine slows both sides alike and the best round of
    each is one the machine left alone.
    """
    timers = [timeit.Timer(fn, timer=time.process_time) for fn in (old, new)]
    numbers = []
    for timer in timers:
        n, took = timer.autorange()
        numbers.append(max(1, int(n * seconds / max(took, 1e-9))))
    best = [math.inf, math.inf]
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer.timeit(numbers[i]) / numbers[i] * 1e6)
    return best[0], best[1]


def cases(old_records: ModuleType, old_sinks: ModuleType, old_reading: ModuleType,
          ) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    frame = {"kind": "waveform", "asset_id": "PUMP-7", "sensor_id": "VIB-1", "ts": 1_795_946_400.25, "cycle": 42}
    feats = {f"f{i}": float(i) for i in range(24)}
    model = {"name": "hst", "version": "3"}
    departures = [{"feature": "rms", "value": 0.5, "reference": 0.1, "factor": 5.0, "severity": 2.0}] * 3
    features = records.features_message(frame, feats)
    wire = {
        names.FEATURES: orjson.loads(dumps(features)),
        names.ANOMALIES: orjson.loads(dumps(records.anomaly_message(features, 0.8, 0.5, True, model, True, "danger",
                                                                     departures))),
        names.RUL: orjson.loads(dumps(records.rul_message(features, 120.0, "cycles", 90.0, 150.0, 0.4, model))),
        names.WORK_ORDERS: orjson.loads(dumps(records.work_order_message(
            "wo-1", "PUMP-7", "high", "persistent_anomaly", "2026-11-29T10:00:00.250Z", 30.0, "aa" * 16,
            {"departures": departures}, "open", "rms 5x its reference"))),
    }
    scalar = orjson.dumps({"asset_id": "PUMP-7", "sensor_id": "TMP-1", "ts": "2026-11-29T10:00:00.250Z",
                           "value": 71.3, "unit": "degC"})
    numeric_ts = orjson.dumps({"asset_id": "PUMP-7", "sensor_id": "TMP-1", "ts": 1_795_946_400.25, "value": 71.3})
    chunk = orjson.dumps({"asset_id": "PUMP-7", "sensor_id": "VIB-1", "ts": 1_795_946_400.25,
                          "values": [0.001 * i for i in range(256)], "sample_rate_hz": 25_600})

    out: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []

    def both(label: str, old: Callable[[], Any], new: Callable[[], Any]) -> None:
        out.append((label, old, new))

    both("build features", lambda: old_records.features_message(frame, feats),
         lambda: records.features_message(frame, feats))
    both("build anomaly", lambda: old_records.anomaly_message(features, 0.8, 0.5, True, model, True, "danger", departures),
         lambda: records.anomaly_message(features, 0.8, 0.5, True, model, True, "danger", departures))
    both("build rul", lambda: old_records.rul_message(features, 120.0, "cycles", 90.0, 150.0, 0.4, model),
         lambda: records.rul_message(features, 120.0, "cycles", 90.0, 150.0, 0.4, model))
    order = ("wo-1", "PUMP-7", "high", "persistent_anomaly", "2026-11-29T10:00:00.250Z", 30.0, "aa" * 16,
             {"departures": departures}, "open", "rms 5x its reference")
    both("build work order", lambda: old_records.work_order_message(*order), lambda: records.work_order_message(*order))
    for topic, value in wire.items():
        both(f"sink {topic}", lambda t=topic, v=value: old_sinks.from_message(t, v, None),
             lambda t=topic, v=value: sink_records.from_message(t, v, None))
    both("reading scalar, RFC 3339 ts", lambda: old_reading.parse_reading(scalar), lambda: reading.parse_reading(scalar))
    both("reading scalar, Unix ts", lambda: old_reading.parse_reading(numeric_ts),
         lambda: reading.parse_reading(numeric_ts))
    both("reading 256-sample chunk", lambda: old_reading.parse_reading(chunk), lambda: reading.parse_reading(chunk))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, help="git revision to compare with (default: before schema.py)")
    parser.add_argument("--seconds", type=float, default=0.02, help="length of one timed round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per case and side")
    args = parser.parse_args()
    rev = args.baseline or default_baseline()
    old_records = load(rev, "mantis_stream/models/records.py")
    old_sinks = load(rev, "mantis_stream/sinks/records.py")
    old_reading = load(rev, "mantis_stream/models/reading.py")
    print(f"baseline {git('rev-parse', '--short', rev)} vs this tree ({git('rev-parse', '--short', 'HEAD')}"
          f"{'+changes' if git('status', '--porcelain', '--untracked-files=no') else ''}); "
          f"CPU µs per record, best of {args.rounds} alternating rounds")
    print(f"{'case':32} {'baseline':>9} {'now':>9} {'now/base':>9}")
    for label, old, new in cases(old_records, old_sinks, old_reading):
        before, after = side_by_side(old, new, args.rounds, args.seconds)
        print(f"{label:32} {before:9.2f} {after:9.2f} {after / before:9.2f}")


if __name__ == "__main__":
    main()
