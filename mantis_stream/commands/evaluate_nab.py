"""``mantis-stream evaluate-nab [DATA_ROOT]``: the NAB standard-profile score of ``detect``.

Runs :func:`mantis_stream.models.anomaly.detect_series` (what ``detect --format
nab`` runs) over every labelled file of a NAB tree (``data/`` and
``labels/combined_windows.json``) and prints the normalised score per category
and overall, with the corpus-wide optimised threshold, as NAB does. With
``--results DIR`` it also writes NAB-style result files
(``DIR/<category>/mantis_<name>.csv``) that numenta/NAB's own scorer can read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..cli import argument, command, option
from ..evaluation.nab import SCOREBOARD, format_table, run_detector, score_corpus
from ..settings import current_settings
from ._oneline import CommandError, one_line_errors

#: The labels file every NAB tree holds.
LABELS = "labels/combined_windows.json"


@command(
    argument("root", default=None, required=False),
    option("--workers", type=int, default=os.cpu_count() or 1, show_default=True, help="Processes (one file each)."),
    option("--results", default=None, help="Also write NAB-style result CSVs under this directory."),
)
@one_line_errors
async def evaluate_nab(self: object, root: str | None, workers: int, results: str | None) -> None:
    """NAB standard-profile score of the anomaly detector, per category and overall."""
    if root is None:
        raise CommandError("give the NAB folder (the one holding data/ and labels/), e.g. "
                           "mantis-stream evaluate-nab ~/data/NAB")
    if not (Path(root) / LABELS).is_file():
        raise CommandError(f"{root}: not a NAB folder (no {LABELS}); give the one holding data/ and labels/")
    files, scores = run_detector(root, workers=workers, window=current_settings().scalar_window)
    cs = score_corpus(files, scores)
    print(format_table(cs))
    print()
    print("scoreboard (whole corpus, 58 files): " + ", ".join(f"{k} {v}" for k, v in SCOREBOARD.items()))
    if results:
        from ..datasets.nab import read_nab_rows

        for f, s in zip(files, scores):
            cat, name = f.name.split("/", 1)
            out = Path(results) / cat / f"mantis_{name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            ts, _, text = read_nab_rows(Path(root) / "data" / f.name)
            with open(out, "w", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(("timestamp", "value", "anomaly_score", "label"))
                for t, v, sc in zip(ts, text, s):
                    w.writerow((t, v, f"{sc:.6f}", 0))
