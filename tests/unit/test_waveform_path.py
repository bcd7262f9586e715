"""The waveform chunk's path through validation and the keyed hop: exact samples, bad samples refused by field."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from mantis_stream.agents.framing import chunk_samples, frame_one
from mantis_stream.models import records
from mantis_stream.models.reading import InvalidReading, parse_reading, validate_reading


def reading(values: list) -> dict:
    return {"asset_id": "A", "sensor_id": "V", "ts": 1790000000.0, "values": values, "sample_rate_hz": 1000.0}


def chunk(values: list) -> bytes:
    return orjson.dumps(reading(values))


def test_keyed_message_carries_exactly_the_validated_samples() -> None:
    values = [*np.random.default_rng(3).standard_normal(2560).tolist(), 7, -2]
    message = parse_reading(chunk(values)).to_message()
    assert "values" not in message
    decoded = chunk_samples(orjson.loads(orjson.dumps(message)))
    assert decoded.dtype == np.float64 and decoded.tolist() == [float(v) for v in values]


def test_keyed_chunk_frames_like_a_json_array() -> None:
    values = np.random.default_rng(4).standard_normal(5000).tolist()
    message = orjson.loads(orjson.dumps(parse_reading(chunk(values)).to_message()))
    legacy = {k: v for k, v in message.items() if k != "samples_hex"} | {"values": values}
    frames, state = frame_one(message, None)
    legacy_frames, legacy_state = frame_one(legacy, None)
    assert len(frames) == 5000 // 2048 == len(legacy_frames)
    assert frames == legacy_frames and state == legacy_state


@pytest.mark.parametrize("values, reason", [
    ([1.0, True, 2.0], "flat array"),
    ([1.0, [2.0]], "flat array"),
    ([1.0, "2"], "flat array"),
    ([1.0, None], "flat array"),
    ([1.0, 10**400], "finite"),
])
def test_bad_samples_are_refused_naming_values(values: list, reason: str) -> None:
    with pytest.raises(InvalidReading) as err:
        validate_reading(reading(values))
    assert err.value.field == "values" and reason in err.value.reason


def test_integer_and_float_samples_are_accepted() -> None:
    raw = b'{"asset_id": "A", "sensor_id": "V", "ts": 1790000000.0, "sample_rate_hz": 1000.0, "values": [1, 2.5, -3, 1e3, 18446744073709551615]}'
    assert parse_reading(raw).values.tolist() == [1.0, 2.5, -3.0, 1000.0, float(2**64 - 1)]


def test_frame_samples_round_trip_and_read_earlier_base64_frames() -> None:
    samples = np.random.default_rng(5).standard_normal(2048)
    frame = orjson.loads(orjson.dumps(records.waveform_frame("A", "V", 1.0, samples, 1000.0, None)))
    as_f4 = samples.astype("<f4").astype(np.float64)
    assert records.frame_samples(frame).tolist() == as_f4.tolist()
    earlier = {k: v for k, v in frame.items() if k != "samples_hex"} | {
        "samples": base64.b64encode(samples.astype("<f4").tobytes()).decode("ascii")}
    assert records.frame_samples(earlier).tolist() == as_f4.tolist()
