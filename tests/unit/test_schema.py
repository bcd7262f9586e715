"""One shape per public topic (models/schema.py): the builders fill it and the sinks read it back through it.

Why: each message used to be written by hand twice, built in ``models/records.py``
and parsed again in ``sinks/records.py``; a field renamed or retyped on one side
only must fail here rather than as dead letters in a running storage stage.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mantis_stream import topics as names
from mantis_stream.codecs import dumps
from mantis_stream.errors import _record
from mantis_stream.models import records, schema
from mantis_stream.models.anomaly import Departure
from mantis_stream.models.reading import (
    FIELDS,
    InvalidReading,
    format_timestamp,
    parse_timestamp,
    validate_reading,
)
from mantis_stream.sinks.records import (
    AnomalyRow,
    FeatureRow,
    InvalidMessage,
    RulRow,
    WorkOrderRow,
    from_message,
    parse_ts,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
EPOCH = 1_795_946_400.25  # 2026-11-29T10:00:00.250Z
AT = datetime(2026, 11, 29, 10, 0, 0, 250_000, tzinfo=UTC)
MODEL: records.ModelRef = {"name": "hst", "version": "3"}
FRAME = {"kind": "row", "asset_id": "PUMP-7", "sensor_id": "VIB-1", "ts": EPOCH, "channels": {}, "cycle": 42}
FEATURES = records.features_message(FRAME, {"rms": 0.5, "kurtosis": 3.0, "crest": float("nan")})
DEPARTURES = [Departure("rms", 0.5, 0.1, 5.0, 2.0).as_dict(), Departure("peak", 1.0, 0.0, math.inf, 3.0).as_dict()]


def wire(message: Any) -> Any:
    """The message as the next stage decodes it: through the worker's own codec and back."""
    return orjson.loads(dumps(message))


def anomaly() -> dict[str, Any]:
    return records.anomaly_message(FEATURES, 0.8, 0.5, True, MODEL, True, "danger", DEPARTURES)


def rul() -> dict[str, Any]:
    return records.rul_message(FEATURES, 120.0, "cycles", 90.0, 150.0, 0.4, MODEL)


def work_order() -> dict[str, Any]:
    return records.work_order_message(
        "wo-1", "PUMP-7", "high", "persistent_anomaly", format_timestamp(EPOCH), 30.0, "aa" * 16,
        {"departures": DEPARTURES, "defect_band": {"band": "bpfo", "growth": 4.0}}, "escalate", "rms 5x its reference")


def maintenance() -> dict[str, Any]:
    return records.maintenance_message("PUMP-7", format_timestamp(EPOCH), note="bearing replaced", by="ops")


BUILT = [
    (schema.FeaturesMessage, FEATURES),
    (schema.AnomalyMessage, anomaly()),
    (schema.RulMessage, rul()),
    (schema.WorkOrderMessage, work_order()),
    (schema.MaintenanceMessage, maintenance()),
]


@pytest.mark.parametrize(("shape", "message"), BUILT, ids=lambda x: getattr(x, "__name__", ""))
def test_builders_write_every_field_of_their_shape_and_pass_its_check(shape: type[Any], message: dict[str, Any]) -> None:
    assert set(message) == schema.fields(shape)
    assert schema.validate(shape, wire(message)) == wire(message)


def test_dead_letters_have_their_shape() -> None:
    letter = _record({"topic": "t", "partition": 0, "offset": 1}, b"\xff", "preprocessing",
                     InvalidReading("ts", "cannot read"), 1024)
    assert set(letter) == schema.fields(schema.DeadLetterMessage) - {"headers_dropped"}
    checked = schema.validate(schema.DeadLetterMessage, wire(letter))
    assert checked["error"]["field"] == "ts" and checked["payload_encoding"] == "base64"


def test_features_round_trip_through_the_sink() -> None:
    row = from_message(names.FEATURES, wire(FEATURES), TRACE)
    # NaN travels as null (orjson) and is not a value to store.
    assert row == FeatureRow("PUMP-7", "VIB-1", AT, {"rms": 0.5, "kurtosis": 3.0}, TRACE)
    assert FEATURES["ts"] == "2026-11-29T10:00:00.250Z" and FEATURES["epoch"] == EPOCH and FEATURES["cycle"] == 42


def test_anomalies_round_trip_through_the_sink() -> None:
    row = from_message(names.ANOMALIES, wire(anomaly()), TRACE)
    assert row == AnomalyRow("PUMP-7", "VIB-1", AT, "hst", "3", 0.8, 0.5, True, TRACE)


def test_rul_round_trips_through_the_sink() -> None:
    row = from_message(names.RUL, wire(rul()), TRACE)
    assert row == RulRow("PUMP-7", "VIB-1", AT, "hst", "3", 120.0, "cycles", 90.0, 150.0, 0.4, 42, TRACE)


def test_work_orders_round_trip_through_the_sink() -> None:
    row = from_message(names.WORK_ORDERS, wire(work_order()), "bb" * 16)
    assert isinstance(row, WorkOrderRow)
    assert row._replace(evidence="") == WorkOrderRow(
        "wo-1", "PUMP-7", "high", "persistent_anomaly", AT, 30.0, "", "aa" * 16, "escalate", "rms 5x its reference",
        "bpfo")
    assert orjson.loads(row.evidence) == wire(work_order()["evidence"])


def test_maintenance_round_trips_through_its_reader() -> None:
    assert records.maintenance_asset(wire(maintenance())) == "PUMP-7"
    for bad, field in (({"action": "done"}, "asset_id"), ({"asset_id": "  "}, "asset_id"),
                       ({"asset_id": "P", "action": "undo"}, "action"), ([], "payload")):
        with pytest.raises(InvalidReading) as err:
            records.maintenance_asset(bad)
        assert err.value.field == field


def _set(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``message`` with ``path`` (``a.b``, ``a.0.b``) set to ``value``, or removed for ``...``."""
    out = orjson.loads(orjson.dumps(message))
    *parents, last = path.split(".")
    target = out
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return out


@pytest.mark.parametrize(("topic", "message", "path", "value", "field"), [
    (names.ANOMALIES, anomaly(), "score", "high", "score"),
    (names.ANOMALIES, anomaly(), "score", None, "score"),
    (names.ANOMALIES, anomaly(), "is_anomaly", ..., "is_anomaly"),
    (names.ANOMALIES, anomaly(), "is_anomaly", 1, "is_anomaly"),
    (names.ANOMALIES, anomaly(), "model.version", 2, "model.version"),
    (names.ANOMALIES, anomaly(), "level", "panic", "level"),
    (names.ANOMALIES, anomaly(), "departures.1.feature", 7, "departures[1].feature"),
    (names.ANOMALIES, anomaly(), "ts", "yesterday", "ts"),
    (names.ANOMALIES, anomaly(), "asset_id", "", "asset_id"),
    (names.RUL, rul(), "unit", "hours", "unit"),
    (names.RUL, rul(), "cycle", 1.5, "cycle"),
    (names.RUL, rul(), "rul", ..., "rul"),
    (names.FEATURES, FEATURES, "features.rms", "loud", "features"),
    (names.FEATURES, FEATURES, "frame", "chunk", "frame"),
    (names.WORK_ORDERS, work_order(), "action", "reopen", "action"),
    (names.WORK_ORDERS, work_order(), "evidence", [], "evidence"),
    (names.WORK_ORDERS, work_order(), "created_at", "soon", "created_at"),
    (names.WORK_ORDERS, work_order(), "reason", ..., "reason"),
])
def test_a_bad_field_is_named(topic: str, message: dict[str, Any], path: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        from_message(topic, _set(message, path, value))
    assert err.value.field == field
    assert err.value.reason and "$" not in err.value.reason


def test_older_messages_without_the_optional_fields_are_stored() -> None:
    required = {topic: {k: v for k, v in wire(message).items() if k in shape.__required_keys__}
                for topic, (shape, message) in zip((names.FEATURES, names.ANOMALIES, names.RUL, names.WORK_ORDERS),
                                                   BUILT)}
    assert from_message(names.RUL, required[names.RUL]) == RulRow(
        "PUMP-7", "", AT, "unknown", "", 120.0, "cycles", None, None, None, None, None)
    assert from_message(names.ANOMALIES, required[names.ANOMALIES]).threshold is None
    named_only = from_message(names.ANOMALIES, {**required[names.ANOMALIES], "model": {"name": "hst"}})
    assert isinstance(named_only, AnomalyRow) and (named_only.model_name, named_only.model_version) == ("hst", "")
    assert from_message(names.FEATURES, required[names.FEATURES]).sensor_id == ""
    order = from_message(names.WORK_ORDERS, required[names.WORK_ORDERS])
    assert isinstance(order, WorkOrderRow)
    assert (order.priority, order.action, order.evidence, order.why) == ("medium", "open", "{}", "")


# -- one timestamp parser ------------------------------------------------------

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC))


@given(instants, st.integers(-14 * 60, 14 * 60), st.sampled_from(["Z", "z", "offset", "naive"]),
       st.sampled_from(["", "000", "789"]))
@settings(max_examples=300, deadline=None)
def test_readings_and_sinks_read_a_timestamp_alike(at: datetime, minutes: int, zone: str, extra: str) -> None:
    local = at.astimezone(timezone(timedelta(minutes=minutes)))
    if zone == "offset":
        text = local.isoformat(timespec="microseconds")
        text = text[:-6] + extra + text[-6:]
    else:
        text = at.replace(tzinfo=None).isoformat(timespec="microseconds") + extra + ("" if zone == "naive" else zone)
    assert parse_ts(text) == at
    assert parse_timestamp(text) == at.timestamp()
    assert parse_ts(at.timestamp()) == at
    assert parse_ts(format_timestamp(at.timestamp())) == at.replace(microsecond=at.microsecond // 1000 * 1000)


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", True, None,
                                   [], math.nan, math.inf, 1e300])
def test_unreadable_timestamps_name_the_field(value: Any) -> None:
    with pytest.raises(InvalidReading) as err:
        schema.parse_datetime(value, "created_at")
    assert err.value.field == "created_at"


# -- readings: the validator and the declared shape agree ------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=140),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)

COMMON = ("asset_id", "sensor_id", "ts", "unit", "kind", "cycle", "seq", "meta")
SHAPES = {
    "value": ({"value": 71.3}, ("value",)),
    "values": ({"values": [0.1, -0.2, 3], "sample_rate_hz": 25600}, ("values", "sample_rate_hz")),
    "channels": ({"channels": {"T24": 642.1, "P30": 1589}}, ("channels",)),
}
BASE = {"asset_id": "PUMP-7", "sensor_id": "VIB-1", "ts": "2026-11-29T10:00:00Z", "unit": "g", "kind": "vibration",
        "cycle": 3, "seq": 9, "meta": {"rpm": 1800}}


@given(st.sampled_from(sorted(SHAPES)), st.data(), json_value)
@settings(max_examples=400, deadline=None)
def test_a_reading_the_validator_accepts_has_the_declared_shape(shape: str, data: st.DataObject, value: Any) -> None:
    extra, own = SHAPES[shape]
    field = data.draw(st.sampled_from(COMMON + own))
    reading = {**BASE, **extra, field: value}
    try:
        schema.validate(schema.ReadingMessage, reading)
    except InvalidReading as declared:
        with pytest.raises(InvalidReading) as err:
            validate_reading(reading)
        assert err.value.field.split(".")[0] == declared.field.split("[")[0] == field
    else:
        try:
            validate_reading(reading)
        except InvalidReading as err:
            assert err.field.split(".")[0] == field  # a limit the shape does not state (length, finiteness, rate)


def test_the_reading_fields_are_the_declared_ones() -> None:
    assert FIELDS == schema.fields(schema.ReadingMessage)
    assert schema.SCHEMAS[names.READINGS] is schema.ReadingMessage
