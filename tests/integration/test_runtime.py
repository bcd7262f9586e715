"""The worker's garbage-collector setting applies to worker processes only."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from mantis_stream.app import app
before = (gc.get_threshold(), gc.get_freeze_count())
app.on_worker_init.send()
print(json.dumps([before, (gc.get_threshold(), gc.get_freeze_count())]))
"""


def test_a_worker_freezes_its_start_up_objects() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    (before_thresholds, before_frozen), (after_thresholds, after_frozen) = json.loads(out.stdout.splitlines()[-1])
    assert before_thresholds[0] == 700 and before_frozen == 0, "importing the app (CLI commands, tests) changes nothing"
    assert after_thresholds == before_thresholds, "CPython's thresholds: higher ones let the RSS grow"
    assert after_frozen > 10_000, "modules, Faust and OpenTelemetry objects are frozen out of collection"
