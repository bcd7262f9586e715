"""A misspelt optional field (``"unti"``) is counted and named, not dropped without a word."""

from __future__ import annotations

import logging

import orjson
import pytest

import mantis_stream  # noqa: F401  (registers the agents)
from mantis_stream import topics as names
from mantis_stream.agents.preprocess import preprocess
from mantis_stream.app import app
from mantis_stream.metrics import MetricsSensor
from mantis_stream.models.reading import MAX_UNKNOWN_NAMES, parse_reading


def unknown_total() -> float:
    sensor = next(s for s in app.sensors if isinstance(s, MetricsSensor))
    return sensor.registry.get_sample_value("mantis_reading_unknown_fields_total") or 0.0


def test_the_parser_reports_fields_the_format_does_not_define() -> None:
    base = {"asset_id": "A", "sensor_id": "S", "ts": 1_790_000_000, "value": 1.0, "unit": "degC", "meta": {"x": 1}}
    assert parse_reading(orjson.dumps(base)).unknown_count == 0
    reading = parse_reading(orjson.dumps({**base, "unti": "degC", "sequence": 3}))
    assert reading.unknown_count == 2 and reading.unknown_fields == ("unti", "sequence")
    many = parse_reading(orjson.dumps({**base, **{f"x{i}": i for i in range(20)}}))
    assert many.unknown_count == 20 and len(many.unknown_fields) == MAX_UNKNOWN_NAMES


async def test_a_misspelt_field_is_counted_and_warned_once(sent, caplog: pytest.LogCaptureFixture) -> None:
    before = unknown_total()
    reading = {"asset_id": "UNK-1", "sensor_id": "TMP", "ts": 1_790_000_000, "value": 20.5, "unti": "degC"}
    with caplog.at_level(logging.WARNING, logger="mantis_stream.agents.preprocess"):
        async with preprocess.test_context() as agent:
            for i in range(3):
                await agent.put(orjson.dumps({**reading, "ts": 1_790_000_000 + i}))
    assert unknown_total() - before == 3
    warnings = [r.getMessage() for r in caplog.records if "does not define" in r.getMessage()]
    assert len(warnings) == 1 and "'unti'" in warnings[0] and "UNK-1/TMP" in warnings[0]
    # the reading itself is accepted and passed on
    assert len([t for t, _ in sent if t == names.READINGS_KEYED]) >= 1
    assert not [t for t, _ in sent if t == names.DEAD_LETTERS]
