"""Spans to a local file, as OTLP JSON lines: traces without Jaeger.

Why this exists
===============

The demo (and anyone debugging without a collector) still wants to see a
reading's trace.  :class:`FileSpanExporter` appends each batch of spans to a file
as ONE ``ExportTraceServiceRequest`` in OTLP/JSON per line, the format of the
OpenTelemetry *OTLP File Exporter* specification (the collector's ``file``
exporter writes the same, and its ``otlpjsonfile`` receiver reads it back):
lowerCamelCase keys, trace and span ids as hex strings, enums as integers.
``mantis-stream trace show|list`` reads it (:func:`read_spans`).

Usage
=====

.. sourcecode:: sh

    MANTIS_TRACE_FILE=mantis-traces.jsonl mantis-stream worker -l info
    mantis-stream trace list

It is selected in :func:`mantis_stream.tracing.setup.exporter_from_env` by
``MANTIS_TRACE_FILE`` (in addition to ``OTEL_TRACES_EXPORTER``'s exporters).

Notes
=====

* Export runs on the batch processor's thread: the file write never blocks the
  event loop.  One lock per exporter keeps lines whole.
* Bounded: when a write would take the file over ``max_bytes``
  (``MANTIS_TRACE_FILE_MAX_BYTES``, 64 MiB; 0: no limit) it is rotated like
  ``logging.handlers.RotatingFileHandler`` does, ``PATH`` -> ``PATH.1`` ... up to
  ``backups`` (``MANTIS_TRACE_FILE_BACKUPS``, 1) older files, the oldest
  deleted.  A file already over the cap when the exporter starts (an earlier
  demo run) is rotated first.  At most ``(backups + 1) * max_bytes`` on disk.
* The reader skips lines it cannot parse (a line cut by a crash), counting them.
  :func:`read_recent` reads from the end of the file, for the latest traces
  (``trace list``); :func:`read_spans` takes a ``contains`` filter that skips
  the lines without it unparsed (``trace show``).
"""

from __future__ import annotations

import base64
import heapq
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["FileSpanExporter", "SpanRecord", "read_recent", "read_spans", "to_otlp_json"]

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_BACKUPS = 1

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> None:
    """Protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants ids in hex."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def to_otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` of ``spans`` as an OTLP/JSON object."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(request)
    return request


class FileSpanExporter(SpanExporter):
    """Appends spans to ``path``, one OTLP/JSON ``ExportTraceServiceRequest`` per line, rotating at ``max_bytes``."""

    def __init__(self, path: str | Path, *, max_bytes: int | None = None, backups: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = int(os.environ.get("MANTIS_TRACE_FILE_MAX_BYTES") or DEFAULT_MAX_BYTES) if max_bytes is None else max_bytes
        self.backups = int(os.environ.get("MANTIS_TRACE_FILE_BACKUPS") or DEFAULT_BACKUPS) if backups is None else backups
        if self.max_bytes < 0 or self.backups < 0:
            raise ValueError("MANTIS_TRACE_FILE_MAX_BYTES and MANTIS_TRACE_FILE_BACKUPS must be >= 0")
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0
        self._closed = False

    def _open(self) -> Any:
        if self._file is None:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        """``PATH.(n-1)`` -> ``PATH.n`` ... ``PATH`` -> ``PATH.1``; without backups the file starts over."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = orjson.dumps(to_otlp_json(spans)) + b"\n"
            with self._lock:
                f = self._open()
                if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()
                    f = self._open()
                f.write(line)
                f.flush()
                self._size += len(line)
        except Exception:  # noqa: BLE001 - counted as dropped by the caller
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if self._file is not None:
                self._file.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


# -- reading ---------------------------------------------------------------------------

_STATUS_ERROR = 2
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _any_value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_any_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _any_value(a.get("value", {})) for a in items or [] if "key" in a}


def _norm_id(value: Any) -> str:
    """Hex (OTLP/JSON) ids as they are; base64 ones (protobuf JSON mapping) decoded."""
    if not value:
        return ""
    text = str(value)
    if all(c in "0123456789abcdefABCDEF" for c in text) and len(text) in (16, 32):
        return text.lower()
    try:
        return base64.b64decode(text).hex()
    except ValueError:  # not base64 (binascii.Error), or not ASCII: shown as it came
        return text


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start: int  # ns since the epoch
    end: int
    kind: str = "internal"
    error: bool = False
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class ReadResult:
    spans: list[SpanRecord]
    bad_lines: int = 0


def _spans_of(request: dict[str, Any]) -> Iterator[SpanRecord]:
    for rs in request.get("resourceSpans", []) or []:
        resource = _attributes((rs.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name") or "unknown")
        for ss in rs.get("scopeSpans", []) or []:
            for s in ss.get("spans", []) or []:
                status = s.get("status") or {}
                code = status.get("code", 0)
                attrs = _attributes(s.get("attributes"))
                yield SpanRecord(
                    trace_id=_norm_id(s.get("traceId")),
                    span_id=_norm_id(s.get("spanId")),
                    parent_id=_norm_id(s.get("parentSpanId")),
                    name=str(s.get("name", "")),
                    service=service,
                    start=int(s.get("startTimeUnixNano", 0)),
                    end=int(s.get("endTimeUnixNano", 0)),
                    kind=_KINDS.get(int(s.get("kind", 0)) if str(s.get("kind", 0)).isdigit() else 0,
                                    str(s.get("kind", "")).removeprefix("SPAN_KIND_").lower() or "internal"),
                    error=code in (_STATUS_ERROR, "STATUS_CODE_ERROR"),
                    status_message=str(status.get("message", "")),
                    attributes=attrs,
                )


def _parse_into(line: bytes, spans: list[SpanRecord]) -> bool:
    """Append the spans of one line; False when the line cannot be read."""
    line = line.strip()
    if not line:
        return True
    try:
        spans.extend(_spans_of(orjson.loads(line)))
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def read_spans(path: str | Path, contains: str | None = None) -> ReadResult:
    """Every span in an OTLP/JSON-lines file (OSError when it cannot be read).

    ``contains``: only lines holding this text (e.g. part of a trace id) are parsed.
    """
    spans: list[SpanRecord] = []
    bad = 0
    needle = contains.encode() if contains else None
    with open(path, "rb") as f:
        for line in f:
            if needle is not None and needle not in line:
                continue
            bad += not _parse_into(line, spans)
    return ReadResult(spans, bad)


_CHUNK = 1 << 20
#: How far before the oldest of the wanted traces' starts :func:`read_recent` keeps reading: spans
#: reach the file when they end, in batches, so a trace's spans sit in lines written over its duration.
RECENT_MARGIN_NS = 300 * 10**9


def _lines_backwards(f: Any) -> Iterator[bytes]:
    f.seek(0, os.SEEK_END)
    pos = f.tell()
    rest = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step) + rest
        lines = block.split(b"\n")
        rest = lines[0]
        yield from reversed(lines[1:])
    if rest:
        yield rest


def read_recent(path: str | Path, traces: int) -> ReadResult:
    """The spans of (at least) the ``traces`` most recent traces, read from the end of the file.

    Why: ``trace list`` on a large file need not parse all of it.  Lines are read
    newest first until ``traces`` trace ids are seen and a whole line's spans
    ended more than :data:`RECENT_MARGIN_NS` before the oldest of their starts.
    """
    spans: list[SpanRecord] = []
    bad = 0
    starts: dict[str, int] = {}
    cutoff: int | None = None
    with open(path, "rb") as f:
        for n, line in enumerate(_lines_backwards(f)):
            found: list[SpanRecord] = []
            if not _parse_into(line, found):
                bad += 1
                continue
            if not found:
                continue
            if len(starts) >= traces and (cutoff is None or n % 256 == 0):
                cutoff = heapq.nlargest(traces, starts.values())[-1] - RECENT_MARGIN_NS
            if cutoff is not None and max(s.end for s in found) < cutoff:
                break
            for s in found:
                starts[s.trace_id] = min(starts.get(s.trace_id, s.start), s.start)
            spans.extend(found)
    return ReadResult(spans, bad)
