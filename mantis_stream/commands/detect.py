"""``mantis-stream detect --format nab FILE.csv``: anomaly scores for a scalar series.

Runs the pipeline's anomaly detector (``models.anomaly``) over a NAB-style
``timestamp,value`` CSV, row by row and causally (a row's score uses only the
rows up to it), and writes ``timestamp,value,anomaly_score`` to stdout, score in
[0, 1]. The logic lives in :func:`mantis_stream.models.anomaly.detect_series`;
this module only wires it to the CLI. The detector and its settings are the
anomaly agent's (one configuration, ``models.anomaly``; the window is
``MANTIS_SCALAR_WINDOW``, as in the feature stage); a score >= 0.5 is an alert. No broker is contacted. A file that
cannot be read gives one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

import click

from ..cli import argument, command, option
from ..datasets.nab import read_nab_rows, write_scores_csv
from ..models.anomaly import detect_series
from ..settings import current_settings
from ._oneline import one_line_errors


@command(
    option("--format", "fmt", type=click.Choice(["nab"]), default="nab", show_default=True, help="Input format."),
    argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True)),
)
@one_line_errors
async def detect(self: object, fmt: str, path: str) -> None:
    """Score every row of a NAB-style CSV (timestamp,value) with the anomaly detector."""
    try:
        ts, values, text = read_nab_rows(sys.stdin if path == "-" else path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"mantis-stream detect: {path}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    scores = detect_series(values, window=current_settings().scalar_window)
    try:
        write_scores_csv(sys.stdout, ts, text, scores)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        raise SystemExit(0) from None
