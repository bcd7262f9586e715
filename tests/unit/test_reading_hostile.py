"""Hostile input to the reading parser: property-based, and the fuzz corpus.

Why: anything a plant or an attacker sends must end as a named error (then a
dead letter or a 4xx), never as a crash.  The corpus in ``tests/fuzz`` holds one
raw message per file: ``bad-*`` are rejected, ``ok-*`` accepted.  The same
corpus goes through the worker's HTTP ingest and Kafka input in
``tests/e2e/test_ingest_http.py``.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mantis_stream.agents.ingest import parse_body
from mantis_stream.errors import payload_text
from mantis_stream.models.reading import TS_MAX, TS_MIN, InvalidReading, parse_reading

FUZZ = Path(__file__).parents[1] / "fuzz"
CORPUS = sorted(p for p in FUZZ.iterdir() if p.name.startswith(("bad-", "ok-")))
MAX_BYTES = 65_536
MAX_SAMPLES = 4096
FIELDS = {"payload", "asset_id", "sensor_id", "ts", "value", "values", "sample_rate_hz", "channels",
          "unit", "kind", "cycle", "seq", "meta", "body"}

# --------------------------------------------------------------------- parser


def check_parse(raw: bytes) -> None:
    """parse_reading either returns a sane reading or raises InvalidReading naming a known field."""
    try:
        r = parse_reading(raw, max_bytes=MAX_BYTES, max_samples=MAX_SAMPLES)
    except InvalidReading as exc:
        assert exc.field.split(".")[0].split("[")[0] in FIELDS, exc.field
        assert exc.reason
        return
    assert r.asset_id and r.sensor_id and TS_MIN <= r.ts < TS_MAX
    if r.kind == "scalar":
        assert math.isfinite(r.value)
    elif r.kind == "waveform":
        assert 0 < len(r.values) <= MAX_SAMPLES and r.sample_rate_hz > 0
        assert all(math.isfinite(v) for v in r.values.tolist())
    else:
        assert r.channels and all(math.isfinite(v) for v in r.channels.values())
    orjson.dumps(r.to_message(), option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_fuzz_corpus_through_the_parser(path: Path) -> None:
    raw = path.read_bytes()
    assert len(raw) < 16_384, "keep corpus files small"
    if path.name.startswith("ok-"):
        parse_reading(raw, max_bytes=MAX_BYTES, max_samples=MAX_SAMPLES)
    else:
        with pytest.raises(InvalidReading):
            parse_reading(raw, max_bytes=MAX_BYTES, max_samples=MAX_SAMPLES)
    check_parse(raw)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    check_parse(raw)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                          max_leaves=30)
field_value = st.one_of(json_value, st.sampled_from([
    "2026-11-29T10:00:00Z", "2026-11-29T10:00:00+14:00", "1999-12-31T23:59:59Z", "2200-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "", "NaN"]),
    st.floats(), st.integers(min_value=-(2**70), max_value=2**70),
    st.lists(st.floats(), max_size=50), st.lists(st.integers(min_value=-(2**64), max_value=2**64), max_size=10))


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={name: field_value for name in (
    "asset_id", "sensor_id", "ts", "value", "values", "sample_rate_hz", "channels", "unit", "kind", "cycle", "seq", "meta")}))
def test_readings_with_arbitrary_field_types(obj: dict) -> None:
    # The standard library writes integers over 64 bits and NaN/Infinity tokens, as hostile senders do.
    raw = json.dumps(obj).encode()
    check_parse(raw)


@hsettings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_extreme_and_negative_timestamps(ts: float) -> None:
    raw = orjson.dumps({"asset_id": "A", "sensor_id": "S", "ts": ts, "value": 1.0})
    if TS_MIN <= ts < TS_MAX:
        assert parse_reading(raw).ts == ts
    else:
        with pytest.raises(InvalidReading) as info:
            parse_reading(raw)
        assert info.value.field == "ts"


def test_huge_arrays_are_refused_by_size_before_decoding() -> None:
    big = b'{"asset_id":"A","sensor_id":"S","ts":1790000000,"sample_rate_hz":1,"values":[' + b"0," * 200_000 + b"0]}"
    with pytest.raises(InvalidReading) as info:
        parse_reading(big, max_bytes=MAX_BYTES)
    assert info.value.field == "payload" and "over the limit" in info.value.reason
    many = orjson.dumps({"asset_id": "A", "sensor_id": "S", "ts": 1_790_000_000, "sample_rate_hz": 1, "values": [0] * (MAX_SAMPLES + 1)})
    with pytest.raises(InvalidReading) as info:
        parse_reading(many, max_samples=MAX_SAMPLES)
    assert info.value.field == "values"


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_ingest_body_parser_only_raises_invalid_reading(raw: bytes) -> None:
    try:
        items = parse_body(raw)
    except InvalidReading as exc:
        assert exc.field == "body" or exc.field.startswith("[") or exc.field.split(".")[0] in FIELDS
    else:
        assert items


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_dead_letter_payload_keeps_the_original_bytes(raw: bytes) -> None:
    text = payload_text(raw)
    try:
        assert text == raw.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(text, validate=True) == raw


def test_booleans_in_a_waveform_are_refused() -> None:
    raw = orjson.dumps({"asset_id": "A", "sensor_id": "S", "ts": 1_790_000_000, "values": [True, 1.0], "sample_rate_hz": 10})
    with pytest.raises(InvalidReading):
        parse_reading(raw)
