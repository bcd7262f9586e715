"""The CLI refuses dead-letter and message sizes the worker cannot honour, in one line, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_cli_refuses_an_impossible_size_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANTIS_")}
    env.update(MANTIS_MAX_MESSAGE_BYTES="4096", MANTIS_DEAD_LETTER_PAYLOAD_BYTES="5000000",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-m", "mantis_stream", "config"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("mantis-stream: MANTIS_DEAD_LETTER_PAYLOAD_BYTES=5000000: use 0 to ")
