"""The shape of every message on a public topic (docs/interface.md, "Topics"), declared once.

Why TypedDicts: the stages build plain dicts (the orjson codec writes them);
a TypedDict costs nothing per message, lets mypy check each builder in
:mod:`.records` against its topic's shape, and :func:`validate` checks a
decoded value against the very same declaration (msgspec, in C) where the
sinks read it back.

Required keys are what every reader needs; ``NotRequired`` ones are those a
reader must do without (older messages, other producers); the pipeline's
builders write all of them.  Numbers that were NaN or infinite arrive as
``null`` (orjson writes them so), hence ``float | None`` where that can happen.

Usage::

    message = validate(RulMessage, value)   # raises InvalidReading naming the field
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations only.
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired, TypedDict, TypeVar

import msgspec

from .. import topics


class InvalidReading(ValueError):
    """A reading or message that does not have its topic's shape; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


#: Longest identifier, unit or kind a reading may have (characters).
MAX_ID_LENGTH = 128

#: A non-empty identifier.
Id = Annotated[str, msgspec.Meta(min_length=1)]
#: A reading's identifier.
ReadingId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
#: A reading's ``unit`` or ``kind``.
ReadingText = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
#: A reading's ``cycle`` or ``seq``.
Count = Annotated[int, msgspec.Meta(ge=0)]
#: A timestamp as it may arrive: RFC 3339 text or Unix seconds (:func:`parse_datetime` reads both).
Timestamp = str | float

FRAME_KINDS = ("waveform", "window", "row")
LEVELS = ("normal", "alert", "danger")
RUL_UNITS = ("cycles", "seconds")
WORK_ORDER_ACTIONS = ("open", "escalate", "resolve")
MAINTENANCE_ACTIONS = ("done",)
PAYLOAD_ENCODINGS = ("utf-8", "base64")


def one_of(values: tuple[str, ...]) -> msgspec.Meta:
    """A string that is one of ``values`` (words): checked when a message is read, plain ``str`` to the builders."""
    assert all(re.fullmatch(r"[\w-]+", value) for value in values)
    return msgspec.Meta(pattern=f"^(?:{'|'.join(values)})$")


FrameKind = Annotated[str, one_of(FRAME_KINDS)]
Level = Annotated[str, one_of(LEVELS)]
RulUnit = Annotated[str, one_of(RUL_UNITS)]
WorkOrderAction = Annotated[str, one_of(WORK_ORDER_ACTIONS)]
MaintenanceAction = Annotated[str, one_of(MAINTENANCE_ACTIONS)]
PayloadEncoding = Annotated[str, one_of(PAYLOAD_ENCODINGS)]


class ReadingMessage(TypedDict):
    """``mantis.readings``: one reading; exactly one of ``value``, ``values`` or ``channels``.

    :func:`mantis_stream.models.reading.validate_reading` checks it field by field
    (limits, finiteness, the one-of rule) so that each error names its field.
    """

    asset_id: ReadingId
    sensor_id: ReadingId
    ts: Timestamp
    value: NotRequired[float]
    values: NotRequired[list[float]]
    sample_rate_hz: NotRequired[float]
    channels: NotRequired[dict[str, float]]
    unit: NotRequired[ReadingText | None]
    kind: NotRequired[ReadingText | None]
    cycle: NotRequired[Count | None]
    seq: NotRequired[Count | None]
    meta: NotRequired[dict[str, Any] | None]


class FeaturesMessage(TypedDict):
    """``mantis.features``: one feature vector; ``epoch`` is ``ts`` in Unix seconds."""

    asset_id: Id
    sensor_id: NotRequired[str]
    ts: Timestamp
    features: Mapping[str, float | None]
    frame: NotRequired[FrameKind]
    epoch: NotRequired[float]
    cycle: NotRequired[int]


class ModelRef(TypedDict, total=False):
    """The model behind a result; readers take a missing name as ``unknown`` and a missing version as ``""``."""

    name: str
    version: str


class Departure(TypedDict):
    """A feature away from its healthy reference: ``factor`` is value / reference (null when the reference is 0),
    ``severity`` 1.0 at the alert level."""

    feature: str
    value: float | None
    reference: float | None
    factor: float | None
    severity: float | None


class AnomalyMessage(TypedDict):
    """``mantis.anomalies``: one calibrated anomaly score (0 to 1; 0.5 is the alert level)."""

    asset_id: Id
    sensor_id: NotRequired[str]
    ts: Timestamp
    score: float
    threshold: NotRequired[float | None]
    is_anomaly: bool
    model: NotRequired[ModelRef | str]
    warm: NotRequired[bool]
    level: NotRequired[Level]
    departures: NotRequired[list[Departure]]


class RulMessage(TypedDict):
    """``mantis.rul``: one remaining-useful-life estimate; ``sensor_id`` ``""`` is the whole asset."""

    asset_id: Id
    sensor_id: NotRequired[str]
    ts: Timestamp
    rul: float
    unit: NotRequired[RulUnit]
    lower: NotRequired[float | None]
    upper: NotRequired[float | None]
    health_index: NotRequired[float | None]
    model: NotRequired[ModelRef | str]
    cycle: NotRequired[int]


class WorkOrderMessage(TypedDict):
    """``mantis.work-orders``: a work order opened, escalated or resolved."""

    work_order_id: Id
    asset_id: Id
    priority: NotRequired[str]
    reason: Id
    created_at: NotRequired[Timestamp]
    rul: NotRequired[float | None]
    trace_id: NotRequired[str | None]
    evidence: NotRequired[Mapping[str, Any] | None]
    action: NotRequired[WorkOrderAction]
    why: NotRequired[str]


class MaintenanceMessage(TypedDict):
    """``mantis.maintenance``: the asset was serviced."""

    asset_id: Annotated[str, msgspec.Meta(pattern=r"\S")]
    ts: NotRequired[Timestamp]
    action: NotRequired[MaintenanceAction]
    note: NotRequired[str]
    by: NotRequired[str]


class DeadLetterError(TypedDict):
    type: str
    message: str
    field: NotRequired[str]


class DeadLetterSource(TypedDict):
    topic: str
    partition: int
    offset: int


class DeadLetterMessage(TypedDict):
    """``mantis.dead-letters``: why a stage could not process a message, and (a bounded copy of) the message."""

    error: DeadLetterError
    stage: str
    source: DeadLetterSource
    payload: str
    payload_encoding: PayloadEncoding
    payload_bytes: int
    payload_sha256: str
    payload_truncated: bool
    received_at: str
    headers_dropped: NotRequired[int]


#: Each public topic's message shape.
SCHEMAS: dict[str, type[Any]] = {
    topics.READINGS: ReadingMessage,
    topics.FEATURES: FeaturesMessage,
    topics.ANOMALIES: AnomalyMessage,
    topics.RUL: RulMessage,
    topics.WORK_ORDERS: WorkOrderMessage,
    topics.MAINTENANCE: MaintenanceMessage,
    topics.DEAD_LETTERS: DeadLetterMessage,
}

M = TypeVar("M")

_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_ONE_OF = re.compile(r"^Expected `str` matching regex '\^\(\?:(?P<alts>.*)\)\$'$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")


def fields(shape: type[Any]) -> frozenset[str]:
    """Every key a message of ``shape`` may have."""
    return frozenset(shape.__required_keys__ | shape.__optional_keys__)


def validate(shape: type[M], value: Any) -> M:
    """``value`` (decoded JSON) checked against ``shape``; keys the shape does not declare are left out.

    Raises :class:`InvalidReading` whose ``field`` is the path of the culprit
    (``model.name``, ``departures[0].value``).
    """
    try:
        return msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None


def _invalid(text: str) -> InvalidReading:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    path = (match.group("path") or "").replace("[...]", "").lstrip(".")
    reason = match.group("reason")
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
        reason = "missing"
    choice = _ONE_OF.match(reason)
    if choice:
        reason = "must be one of " + choice.group("alts").replace("|", ", ")
    return InvalidReading(path or "payload", reason)


def parse_datetime(value: Any, field: str = "ts") -> datetime:
    """RFC 3339 text (any number of fraction digits; no offset is UTC) or Unix seconds -> aware UTC datetime."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = _lenient_datetime(value, field)
        if dt.tzinfo is None:
            return dt.replace(tzinfo=UTC)
        try:
            return dt if dt.tzinfo is UTC else dt.astimezone(UTC)
        except OverflowError:  # an offset that moves year 1 or 9999 out of range
            raise InvalidReading(field, f"is out of range: {value[:40]!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidReading(field, "must be finite")
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidReading(field, f"is out of range: {value!r}") from None
    raise InvalidReading(field, f"must be an RFC 3339 string or Unix seconds, got {type(value).__name__}")


def _lenient_datetime(value: str, field: str) -> datetime:
    """RFC 3339 that ``fromisoformat`` refuses as it is: surrounding blanks, a lower-case ``z``."""
    text = value.strip()
    if text[-1:] == "z":
        text = text[:-1] + "Z"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidReading(field, f"cannot read timestamp {value[:40]!r} (RFC 3339 or Unix seconds)") from None


def format_timestamp(ts: float) -> str:
    """Unix seconds -> RFC 3339 UTC with milliseconds (how the pipeline writes every ``ts``)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
