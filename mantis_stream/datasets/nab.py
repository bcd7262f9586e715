"""Numenta Anomaly Benchmark (NAB) files: ``timestamp,value`` CSVs and their labels.

Why this exists
    ``detect --format nab`` and the NAB evaluation read the same files; the
    reader keeps each row's timestamp and value *text* so the command can echo
    the input rows exactly, next to the score.

Usage
    >>> import io
    >>> ts, values, text = read_nab_rows(io.StringIO("timestamp,value\\n2015-01-01 00:00:00,1.5\\n"))
    >>> ts, values.tolist(), text
    (['2015-01-01 00:00:00'], [1.5], ['1.5'])

Notes
    The label files (``labels/combined_windows.json``) are read by
    :func:`mantis_stream.evaluation.nab.load_corpus`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["read_nab_csv", "read_nab_rows", "write_scores_csv"]


def read_nab_rows(source: str | Path | IO[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """(timestamps, values as float64, values as written) of a NAB CSV with header ``timestamp,value``."""
    if isinstance(source, (str, Path)):
        with open(source, newline="") as fh:
            return read_nab_rows(fh)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        raise ValueError("empty NAB file (no header)")
    cols = [h.strip().lower() for h in header]
    try:
        i_ts, i_val = cols.index("timestamp"), cols.index("value")
    except ValueError:
        raise ValueError(f"NAB header must name 'timestamp' and 'value', got {header}") from None
    ts: list[str] = []
    text: list[str] = []
    values: list[float] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            t, v = row[i_ts].strip(), row[i_val].strip()
            x = float(v)
        except (IndexError, ValueError):
            raise ValueError(f"line {lineno}: cannot read a timestamp and a number from {row!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"line {lineno}: value {v!r} is not finite")
        ts.append(t)
        text.append(v)
        values.append(x)
    return ts, np.asarray(values, dtype=np.float64), text


def read_nab_csv(source: str | Path | IO[str]) -> tuple[list[str], np.ndarray]:
    """(timestamps as written, values) of a NAB CSV."""
    ts, values, _ = read_nab_rows(source)
    return ts, values


def write_scores_csv(out: IO[str], timestamps: Sequence[str], values: Iterable[str], scores: Iterable[float]) -> None:
    """``timestamp,value,anomaly_score`` rows (the ``detect`` output)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("timestamp", "value", "anomaly_score"))
    for t, v, s in zip(timestamps, values, scores):
        w.writerow((t, v, f"{float(s):.6f}"))


def scores_csv(timestamps: Sequence[str], values: Iterable[str], scores: Iterable[float]) -> str:
    """:func:`write_scores_csv` into a string."""
    buf = io.StringIO()
    write_scores_csv(buf, timestamps, values, scores)
    return buf.getvalue()
