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
* The file only grows; rotate or delete it yourself (the demo appends to it).
* The reader skips lines it cannot parse (a line cut by a crash), counting them.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["FileSpanExporter", "SpanRecord", "read_spans", "to_otlp_json"]

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
    """Appends spans to ``path``, one OTLP/JSON ``ExportTraceServiceRequest`` per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: Any = None
        self._closed = False

    def _open(self) -> Any:
        if self._file is None:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the exporter's life
        return self._file

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = orjson.dumps(to_otlp_json(spans)) + b"\n"
            with self._lock:
                f = self._open()
                f.write(line)
                f.flush()
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
    except Exception:  # noqa: BLE001
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


def read_spans(path: str | Path) -> ReadResult:
    """Every span in an OTLP/JSON-lines file (OSError when it cannot be read)."""
    spans: list[SpanRecord] = []
    bad = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                request = orjson.loads(line)
                spans.extend(_spans_of(request))
            except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError):
                bad += 1
    return ReadResult(spans, bad)
