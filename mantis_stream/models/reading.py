"""Parsing and validating one reading (docs/interface.md, "A reading"; its shape: :class:`.schema.ReadingMessage`).

Every rejection raises :class:`InvalidReading` naming the offending field, so a
dead letter tells the sender exactly what to fix; that is why the checks are
written out field by field rather than left to a generic validator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from .schema import MAX_ID_LENGTH as MAX_ID_LENGTH
from .schema import InvalidReading as InvalidReading
from .schema import ReadingMessage, fields, parse_datetime
from .schema import format_timestamp as format_timestamp

Kind = Literal["scalar", "waveform", "channels"]

#: Timestamps outside [2000-01-01, 2200-01-01) are rejected as unreadable.
TS_MIN = 946_684_800.0
TS_MAX = 7_258_118_400.0
MAX_CHANNELS = 256
MAX_META_KEYS = 64
#: The fields a reading may have; others are ignored and reported (a misspelt ``unti`` must not vanish unseen).
FIELDS = fields(ReadingMessage)
#: Unknown field names kept per reading (each cut to MAX_ID_LENGTH characters).
MAX_UNKNOWN_NAMES = 8


@dataclass(slots=True)
class Reading:
    asset_id: str
    sensor_id: str
    ts: float  # Unix seconds, UTC
    kind: Kind
    value: float | None = None
    values: np.ndarray | None = None
    sample_rate_hz: float | None = None
    channels: dict[str, float] | None = None
    unit: str | None = None
    sensor_kind: str | None = None
    cycle: int | None = None
    seq: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: How many fields the format does not define the reading had, and the first names.
    unknown_count: int = 0
    unknown_fields: tuple[str, ...] = ()

    def to_message(self) -> dict[str, Any]:
        """The validated reading as an internal message (numbers normalised)."""
        out: dict[str, Any] = {"asset_id": self.asset_id, "sensor_id": self.sensor_id, "ts": self.ts}
        if self.kind == "scalar":
            out["value"] = self.value
        elif self.kind == "waveform":
            # Hex of little-endian float64: exact, and ~10x cheaper to encode and decode than a JSON array
            # (and than base64, whose CPython decoder is byte by byte).
            out["samples_hex"] = np.asarray(self.values, dtype="<f8").tobytes().hex()
            out["sample_rate_hz"] = self.sample_rate_hz
        else:
            out["channels"] = self.channels
        for name in ("unit", "cycle", "seq"):
            val = getattr(self, name)
            if val is not None:
                out[name] = val
        if self.sensor_kind is not None:
            out["kind"] = self.sensor_kind
        if self.meta:
            out["meta"] = self.meta
        return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite_number(obj: dict[str, Any], name: str) -> float:
    x = obj[name]
    if not _is_number(x):
        raise InvalidReading(name, f"must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise InvalidReading(name, "must be finite")
    return x


def _identifier(obj: dict[str, Any], name: str) -> str:
    if name not in obj:
        raise InvalidReading(name, "is required")
    x = obj[name]
    if not isinstance(x, str):
        raise InvalidReading(name, f"must be a string, got {type(x).__name__}")
    if not x or len(x) > MAX_ID_LENGTH:
        raise InvalidReading(name, f"must be 1 to {MAX_ID_LENGTH} characters")
    return x


def parse_timestamp(x: Any, name: str = "ts") -> float:
    """RFC 3339 string or Unix seconds -> Unix seconds (UTC)."""
    ts = float(x) if _is_number(x) else parse_datetime(x, name).timestamp()
    if not math.isfinite(ts) or not TS_MIN <= ts < TS_MAX:
        raise InvalidReading(name, "is out of range (2000-01-01 to 2200-01-01)")
    return ts


_SAMPLE_TYPES = {float, int}


def _waveform(obj: dict[str, Any], max_samples: int) -> tuple[np.ndarray, float]:
    values = obj["values"]
    if not isinstance(values, list):
        raise InvalidReading("values", f"must be an array of numbers, got {type(values).__name__}")
    if not values:
        raise InvalidReading("values", "must not be empty")
    if len(values) > max_samples:
        raise InvalidReading("values", f"has {len(values)} samples, over the limit of {max_samples}")
    # One C-level pass over the item types (a bool is not a number, a list is not flat), then one conversion:
    # a chunk of thousands of samples costs a few microseconds per thousand, not a Python loop.
    if not set(map(type, values)) <= _SAMPLE_TYPES:
        raise InvalidReading("values", "must be a flat array of numbers")
    try:
        arr = np.fromiter(values, dtype=np.float64, count=len(values))
    except OverflowError:
        raise InvalidReading("values", "must hold finite numbers only") from None
    if not np.isfinite(arr).all():
        raise InvalidReading("values", "must hold finite numbers only")
    if "sample_rate_hz" not in obj:
        raise InvalidReading("sample_rate_hz", "is required with values")
    rate = _finite_number(obj, "sample_rate_hz")
    if rate <= 0:
        raise InvalidReading("sample_rate_hz", "must be positive")
    return arr, rate


def _channels(obj: dict[str, Any]) -> dict[str, float]:
    channels = obj["channels"]
    if not isinstance(channels, dict):
        raise InvalidReading("channels", f"must be an object of name -> number, got {type(channels).__name__}")
    if not channels or len(channels) > MAX_CHANNELS:
        raise InvalidReading("channels", f"must hold 1 to {MAX_CHANNELS} channels")
    out: dict[str, float] = {}
    for name, x in channels.items():
        if not _is_number(x) or not math.isfinite(x):
            raise InvalidReading(f"channels.{name[:64]}", "must be a finite number")
        out[name] = float(x)
    return out


def _optional_int(obj: dict[str, Any], name: str) -> int | None:
    x = obj.get(name)
    if x is None:
        return None
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise InvalidReading(name, "must be a non-negative integer")
    return x


def _optional_str(obj: dict[str, Any], name: str) -> str | None:
    x = obj.get(name)
    if x is None:
        return None
    if not isinstance(x, str) or len(x) > MAX_ID_LENGTH:
        raise InvalidReading(name, f"must be a string of at most {MAX_ID_LENGTH} characters")
    return x


def validate_reading(obj: Any, *, max_samples: int = 65_536) -> Reading:
    """Validate a decoded JSON value as a reading."""
    if not isinstance(obj, dict):
        raise InvalidReading("payload", f"a reading must be a JSON object, got {type(obj).__name__}")
    asset_id = _identifier(obj, "asset_id")
    sensor_id = _identifier(obj, "sensor_id")
    if "ts" not in obj:
        raise InvalidReading("ts", "is required")
    ts = parse_timestamp(obj["ts"])
    shapes = [k for k in ("value", "values", "channels") if k in obj]
    if len(shapes) != 1:
        raise InvalidReading("value", "exactly one of value, values or channels is required" + (f" (got {', '.join(shapes)})" if shapes else ""))
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or len(meta) > MAX_META_KEYS:
        raise InvalidReading("meta", f"must be an object of at most {MAX_META_KEYS} keys")
    reading = Reading(
        asset_id=asset_id,
        sensor_id=sensor_id,
        ts=ts,
        kind="scalar",
        unit=_optional_str(obj, "unit"),
        sensor_kind=_optional_str(obj, "kind"),
        cycle=_optional_int(obj, "cycle"),
        seq=_optional_int(obj, "seq"),
        meta=meta,
    )
    if len(obj) > len(FIELDS.intersection(obj)):
        unknown = [name for name in obj if name not in FIELDS]
        reading.unknown_count = len(unknown)
        reading.unknown_fields = tuple(name[:MAX_ID_LENGTH] for name in unknown[:MAX_UNKNOWN_NAMES])
    if shapes[0] == "value":
        reading.value = _finite_number(obj, "value")
    elif shapes[0] == "values":
        reading.kind = "waveform"
        reading.values, reading.sample_rate_hz = _waveform(obj, max_samples)
    else:
        reading.kind = "channels"
        reading.channels = _channels(obj)
    return reading


def parse_reading(raw: bytes, *, max_bytes: int = 1_048_576, max_samples: int = 65_536) -> Reading:
    """Decode and validate one raw message value."""
    if raw is None:
        raise InvalidReading("payload", "message has no value")
    if len(raw) > max_bytes:
        raise InvalidReading("payload", f"message is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = "; NaN and Infinity are not JSON numbers" if b"NaN" in raw or b"Infinity" in raw else ""
        raise InvalidReading("payload", f"not valid JSON ({str(exc)[:120]}){hint}") from None
    return validate_reading(obj, max_samples=max_samples)
