"""The reading parser: every shape accepted, every bad input named by field."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mantis_stream.models.reading import InvalidReading, format_timestamp, parse_reading

BASE = {"asset_id": "PUMP-7", "sensor_id": "TMP-001", "ts": "2026-11-29T10:00:00Z"}


def parse(**fields):
    return parse_reading(orjson.dumps({**BASE, **fields}), max_samples=8)


def test_the_three_shapes():
    scalar = parse(value=71.3)
    assert scalar.kind == "scalar" and scalar.value == 71.3 and scalar.ts == 1795946400.0
    wave = parse(values=[1, 2.5, -3], sample_rate_hz=25600)
    assert wave.kind == "waveform" and wave.values.tolist() == [1.0, 2.5, -3.0] and wave.sample_rate_hz == 25600.0
    rows = parse(channels={"s2": 642.1, "s3": 1585}, cycle=12)
    assert rows.kind == "channels" and rows.channels == {"s2": 642.1, "s3": 1585.0} and rows.cycle == 12


def test_timestamps_rfc3339_with_offset_and_unix_seconds_agree():
    assert parse(value=1, ts="2026-11-29T11:00:00+01:00").ts == parse(value=1, ts=1795946400).ts
    assert format_timestamp(1795946400.0) == "2026-11-29T10:00:00.000Z"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"value": "hot"}, "value"),
        ({"value": True}, "value"),
        ({"values": [], "sample_rate_hz": 10}, "values"),
        ({"values": list(range(9)), "sample_rate_hz": 10}, "values"),
        ({"values": [1, "x"], "sample_rate_hz": 10}, "values"),
        ({"values": [[1, 2]], "sample_rate_hz": 10}, "values"),
        ({"values": [1, 2]}, "sample_rate_hz"),
        ({"values": [1, 2], "sample_rate_hz": -1}, "sample_rate_hz"),
        ({"channels": {}}, "channels"),
        ({"channels": {"a": None}}, "channels.a"),
        ({"value": 1, "values": [1], "sample_rate_hz": 1}, "value"),
        ({}, "value"),
        ({"value": 1, "ts": "yesterday"}, "ts"),
        ({"value": 1, "ts": -1}, "ts"),
        ({"value": 1, "ts": 1e300}, "ts"),
        ({"value": 1, "ts": None}, "ts"),
        ({"value": 1, "asset_id": ""}, "asset_id"),
        ({"value": 1, "asset_id": 7}, "asset_id"),
        ({"value": 1, "cycle": -2}, "cycle"),
        ({"value": 1, "meta": [1]}, "meta"),
    ],
)
def test_bad_fields_are_named(fields, field):
    with pytest.raises(InvalidReading) as info:
        parse(**fields)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_missing_required_fields_and_bad_payloads():
    with pytest.raises(InvalidReading, match=r"^sensor_id: is required"):
        parse_reading(orjson.dumps({"asset_id": "a", "ts": 1790000000, "value": 1}))
    with pytest.raises(InvalidReading, match="NaN and Infinity"):
        parse_reading(b'{"asset_id": "a", "sensor_id": "s", "ts": 1790000000, "value": NaN}')
    with pytest.raises(InvalidReading, match=r"^payload: message is 20 bytes, over the limit of 10"):
        parse_reading(b"x" * 20, max_bytes=10)


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_parser(raw):
    try:
        reading = parse_reading(raw)
    except InvalidReading as exc:
        assert exc.field
    else:
        assert reading.asset_id and math.isfinite(reading.ts)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@hsettings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "asset_id": json_values, "sensor_id": json_values, "ts": json_values, "value": json_values,
    "values": json_values, "channels": json_values, "sample_rate_hz": json_values, "cycle": json_values, "meta": json_values,
}))
def test_arbitrary_json_objects_are_either_readings_or_named_errors(obj):
    try:
        reading = parse_reading(orjson.dumps(obj))
    except InvalidReading as exc:
        assert exc.field.split(".")[0] in {"payload", "asset_id", "sensor_id", "ts", "value", "values", "channels",
                                           "sample_rate_hz", "cycle", "meta", "unit", "kind", "seq"}
    else:
        assert reading.kind in ("scalar", "waveform", "channels")
