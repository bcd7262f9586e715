"""``train-rul``, ``evaluate-rul``, ``predict-rul``: the RUL model offline.

Why this exists: the RUL agent's model is trained and checked here, on the
public run-to-failure sets, with the *same* ``RulModel``/``RulTracker`` the
agent runs (``mantis_stream.models.rul``, fitted by ``mantis_stream.training.rul``): evaluate-rul feeds each test unit's
rows to a fresh tracker, exactly as the agent does message by message.

Usage::

    mantis-stream train-rul --format cmapss --out rul.json train_FD001.txt
    mantis-stream train-rul --format femto --from rul.json --out rul.json Learning_set/Bearing*
    mantis-stream evaluate-rul --format cmapss --model rul.json test_FD001.txt RUL_FD001.txt
    mantis-stream predict-rul --format femto --model rul.json Test_set/Bearing1_3
    MANTIS_RUL_MODEL=rul.json mantis-stream worker -l info

Notes: a trained file keeps the parts it did not train from ``--from`` (default:
the shipped model), so one file serves turbofans and bearings. Progress goes
to stderr; stdout carries only the JSON lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import click
import orjson

from ..cli import argument, command, option
from ..datasets import cmapss, femto
from ..evaluation.rul import score_cmapss
from ..models.rul import (
    Bearing,
    History,
    RulEstimate,
    RulModel,
    femto_estimate,
    run_tracker,
)
from ..settings import current_settings
from ..training.rul import fit_cmapss, fit_femto
from ._oneline import one_line_errors

FORMATS = click.Choice(["cmapss", "femto"])


def _say(msg: str) -> None:
    print(f"mantis-stream: {msg}", file=sys.stderr, flush=True)


def _print_json(obj: Mapping[str, object]) -> None:
    try:
        print(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
    except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        raise SystemExit(0) from None


def load_model(path: str | None) -> RulModel:
    """``--model``, else ``MANTIS_RUL_MODEL``, else the shipped default (as the agent does)."""
    path = path or current_settings().rul_model
    if path is None:
        return RulModel.default()
    try:
        return RulModel.load(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.UsageError(f"cannot read RUL model {path}: {exc}") from None


def cmapss_histories(paths: tuple[str, ...]) -> list[History]:
    out: list[History] = []
    for p in paths:
        units = cmapss.load_units(p)
        _say(f"{p}: {len(units)} units")
        out.extend(list(u.rows()) for u in units)
    return out


def train(fmt: str, paths: tuple[str, ...], base: RulModel, *, quick: bool = False) -> RulModel:
    """Train the part of ``base`` that ``fmt`` covers; returns the new model."""
    if fmt == "cmapss":
        hist = cmapss_histories(paths)
        kw: dict[str, Any] = {"members": 2, "epochs": 15, "bound_folds": 2} if quick else {}
        trained = fit_cmapss(hist, progress=_say, **kw)
        trained.generic = base.generic
    else:
        bearings: list[Bearing] = []
        for p in paths:
            _say(f"{p}: computing frame features")
            bearings.append((femto.bearing_features(p), femto.life_end_ts(p)))
        trained = fit_femto(bearings, progress=_say)
        trained.cmapss = base.cmapss
        trained.generic = {**base.generic, "seconds": trained.generic["seconds"]}
    trained.info = {**base.info, **trained.info}
    trained.stamp("rul")
    return trained


@command(
    option("--format", "fmt", type=FORMATS, required=True, help="Data set format."),
    option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Model file to write (JSON)."),
    option("--from", "base", default=None, type=click.Path(dir_okay=False), help="Model whose other parts to keep (default: the shipped model)."),
    option("--quick", is_flag=True, default=False, help="Few small networks, few epochs (tests, smoke runs)."),
    argument("paths", nargs=-1, required=True),
)
@one_line_errors
async def train_rul(self: object, fmt: str, out: str, base: str | None, quick: bool, paths: tuple[str, ...]) -> None:
    """Fit the RUL model on run-to-failure histories and write MODEL."""
    model = train(fmt, paths, RulModel.load(base) if base else RulModel.default(), quick=quick)
    model.save(out)
    _say(f"wrote {out} ({model.name} {model.version})")


@command(
    option("--format", "fmt", type=click.Choice(["cmapss"]), required=True, help="Data set format."),
    option("--model", "model_path", default=None, help="Model file (default: $MANTIS_RUL_MODEL, else the shipped model)."),
    argument("test_file"),
    argument("truth_file"),
)
@one_line_errors
async def evaluate_rul(self: object, fmt: str, model_path: str | None, test_file: str, truth_file: str) -> None:
    """Score the model on a C-MAPSS test file: one JSON line {rmse, score, units}."""
    model = load_model(model_path)
    units = cmapss.load_units(test_file)
    truth = cmapss.load_truth(truth_file)
    if len(truth) != len(units):
        raise click.UsageError(f"{truth_file} has {len(truth)} values for {len(units)} units in {test_file}")
    _print_json(score_cmapss(model, [list(u.rows()) for u in units], truth))


@command(
    option("--format", "fmt", type=FORMATS, required=True, help="Data set format."),
    option("--model", "model_path", default=None, help="Model file (default: $MANTIS_RUL_MODEL, else the shipped model)."),
    argument("paths", nargs=-1, required=True),
)
@one_line_errors
async def predict_rul(self: object, fmt: str, model_path: str | None, paths: tuple[str, ...]) -> None:
    """RUL at the end of each history: one JSON line per bearing folder (or C-MAPSS unit)."""
    model = load_model(model_path)
    if fmt == "cmapss":
        for p in paths:
            prefix = cmapss.file_prefix(p)
            for u in cmapss.load_units(p):
                est = run_tracker(model, "cycles", u.rows())
                _print_json(_line(f"{prefix}{u.unit}", est, "cycles"))
        return
    for p in paths:
        _say(f"{p}: computing frame features")
        est = femto_estimate(model, femto.bearing_features(p))
        _print_json(_line(femto.bearing_name(p), est, "seconds"))


def _line(asset_id: str, est: RulEstimate | None, unit: str) -> dict[str, object]:
    if est is None:
        return {"asset_id": asset_id, "rul": None, "unit": unit}
    return {
        "asset_id": asset_id,
        "rul": round(est.rul, 3),
        "unit": unit,
        "lower": round(est.lower, 3),
        "upper": round(est.upper, 3),
        "health_index": round(est.health_index, 4),
    }
