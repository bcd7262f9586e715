"""OTLP export from a child process: the worker hands finished spans over a pipe as compact tuples.

Why this exists
===============

Encoding spans to OTLP protobuf and sending them costs as much CPU as making
them, and in the worker it runs on the batch processor's thread, holding the
interpreter's lock while the event loop waits.  :class:`ProcessSpanExporter`
sits behind the same ``BatchSpanProcessor`` as an in-process exporter would,
but its ``export`` only turns each span into a tuple of plain values and
writes the batch, marshalled, to a child process (:func:`child_main`).  The child
gives them to the real exporters the ``OTEL_*`` environment names, so what
reaches the collector is what the in-process exporter would send: for
OTLP/gRPC it encodes the request straight from the tuples
(:class:`RecordEncoder`, a few times cheaper than the SDK's encoder, which
wants ``ReadableSpan`` objects); OTLP/HTTP, console and the trace file get
``ReadableSpan`` objects rebuilt from them (:func:`rebuild`).

Notes
=====

* Honest accounting: the child reports each batch's result; the spans of a
  failed export are counted as dropped in the worker (``on_failed``), and so
  are the spans still in the child when it had to be killed at shutdown.
* Never blocks the event loop: writes happen on the processor's thread, and
  the child reads up to :data:`READ_AHEAD` batches ahead while it exports (the
  batches waiting go out together, up to :data:`EXPORT_BATCH` spans); a
  child stuck on a hanging collector makes that thread wait, the processor's
  queue fills and new spans are dropped and counted, as with an in-process
  exporter.
* ``force_flush`` waits (bounded) until the child has exported everything sent
  so far; ``shutdown`` closes the pipe, the child exports what it has, shuts its
  exporters down and exits; after the timeout it is killed.
* The child ignores SIGINT and SIGTERM (a Ctrl-C or a signal to the process
  group must not cut its last export short): it ends when its input closes,
  which also happens when the worker dies.
* A child that died is started again at the next export (its unconfirmed spans
  are counted as dropped).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import marshal
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PbScope
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

__all__ = ["ProcessSpanExporter", "child_main", "compact", "exporter_from_env", "rebuild"]

log = logging.getLogger("mantis_stream.tracing")

_HEADER = struct.Struct("!I")

#: A finished span as plain values (:func:`compact`): origin, ids, flags, trace state, parent, name, kind,
#: times, attributes, events, links (each with its dropped count), status.
SpanRecord = tuple[Any, ...]
#: A span's resource and instrumentation scope as plain values (:func:`origin_key`).
OriginKey = tuple[Any, ...]
_SPANS, _FLUSH = 0, 1


class FanOutExporter(SpanExporter):
    """Several exporters as one (OTLP and the trace file)."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        results = [e.export(spans) for e in self.exporters]
        return SpanExportResult.SUCCESS if all(r is SpanExportResult.SUCCESS for r in results) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for e in self.exporters:
            e.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(e.force_flush(timeout_millis) for e in self.exporters)


def _file_exporter(path: str) -> SpanExporter:
    """The trace file's exporter; loaded by path in the child, which does not import the package (its app)."""
    if __package__:
        from .filelog import FileSpanExporter

        return FileSpanExporter(path)
    spec = importlib.util.spec_from_file_location("mantis_trace_filelog", Path(__file__).with_name("filelog.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    exporter: SpanExporter = module.FileSpanExporter(path)
    return exporter


def exporter_names() -> list[tuple[str, str]]:
    """What OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_*PROTOCOL / MANTIS_TRACE_FILE ask for, checked: (kind, detail) pairs.

    Raises ValueError naming the variable for an unknown exporter or protocol.
    """
    names = [n.strip().lower() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    out: list[tuple[str, str]] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            out.append(("console", ""))
        elif name in ("otlp", "otlp_proto_grpc", "otlp_proto_http"):
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or ("http/protobuf" if name == "otlp_proto_http" else "grpc")
            ).strip().lower()
            if protocol not in ("grpc", "http/protobuf", "http"):
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")
            out.append(("otlp", protocol))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: use 'otlp', 'console' or 'none'")
    trace_file = os.environ.get("MANTIS_TRACE_FILE")
    if trace_file:
        out.append(("file", trace_file))
    return out


def _exporters(encoded: bool) -> list[tuple[bool, SpanExporter]]:
    """The exporters :func:`exporter_names` asks for, each with whether it takes an encoded request.

    With ``encoded`` (the export process), OTLP/gRPC gets the request :class:`RecordEncoder`
    made (:func:`_request_exporter`); the others get SDK spans.
    """
    exporters: list[tuple[bool, SpanExporter]] = []
    for kind, detail in exporter_names():
        if kind == "console":
            exporters.append((False, ConsoleSpanExporter()))
        elif kind == "otlp" and detail == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporters.append((True, _request_exporter()) if encoded else (False, GrpcExporter()))
        elif kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporters.append((False, HttpExporter()))
        else:
            exporters.append((False, _file_exporter(detail)))
    return exporters


def exporter_from_env() -> SpanExporter | None:
    """The exporter :func:`exporter_names` asks for (None for ``none``)."""
    exporters = [exporter for _, exporter in _exporters(encoded=False)]
    if not exporters:
        return None
    return exporters[0] if len(exporters) == 1 else FanOutExporter(exporters)


def _request_exporter() -> SpanExporter:
    """The SDK's OTLP/gRPC exporter (its channel, retries, timeouts, headers) sending a request encoded already."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    class RequestExporter(GrpcExporter):
        def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
            request: ExportTraceServiceRequest = data
            return request

        def _count_data(self, data: Any) -> int:
            return sum(len(scope.spans) for resource in data.resource_spans for scope in resource.scope_spans)

    return RequestExporter()


class ChildExporters:
    """What the export process does with a batch of records: each exporter gets them in the form it takes."""

    def __init__(self, exporters: list[tuple[bool, SpanExporter]]) -> None:
        self.exporters = exporters
        self.encoder = RecordEncoder()

    def export(self, records: Sequence[SpanRecord], origins: dict[int, OriginKey]) -> bool:
        """True when every exporter succeeded."""
        request: ExportTraceServiceRequest | None = None
        spans: list[Any] | None = None
        ok = True
        for encoded, exporter in self.exporters:
            if encoded:
                request = request if request is not None else self.encoder.request(records, origins)
                result = exporter.export(request)  # type: ignore[arg-type]  # a request, see _request_exporter
            else:
                spans = spans if spans is not None else rebuild(records, origins)
                result = exporter.export(spans)
            ok = ok and result is SpanExportResult.SUCCESS
        return ok

    def force_flush(self) -> None:
        for _, exporter in self.exporters:
            exporter.force_flush()

    def shutdown(self) -> None:
        for _, exporter in self.exporters:
            exporter.shutdown()


def _attrs(attributes: Any) -> tuple[dict[str, Any], int]:
    if not attributes:
        return {}, 0
    return dict(attributes), getattr(attributes, "dropped", 0)


def origin_key(resource: Any, scope: Any) -> OriginKey:
    """What a span's resource and instrumentation scope are, as plain values."""
    return (
        tuple(sorted(resource.attributes.items())), resource.schema_url,
        scope.name if scope else "", scope.version if scope else None, scope.schema_url if scope else None,
    )


def compact(spans: Sequence[Any], origin: Callable[[OriginKey], int]) -> list[SpanRecord]:
    """Each finished span as a tuple of plain values (a ``lean`` span's record already is one).

    ``origin`` numbers each (resource, scope) pair.
    """
    out = []
    for s in spans:
        if type(s) is tuple:
            out.append(s)
            continue
        ctx = s.context
        origin_id = origin(origin_key(s.resource, s.instrumentation_scope))
        parent = s.parent
        attrs, dropped_attrs = _attrs(s.attributes)
        events = [(e.name, e.timestamp, *_attrs(e.attributes)) for e in s.events]
        links = [
            (link.context.trace_id, link.context.span_id, int(link.context.trace_flags), link.context.is_remote,
             link.context.trace_state.to_header() if link.context.trace_state else None, *_attrs(link.attributes))
            for link in s.links
        ]
        out.append((
            origin_id, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.trace_state.to_header() if ctx.trace_state else None,
            parent.span_id if parent else 0, parent.is_remote if parent else False,
            s.name, s.kind.value, s.start_time, s.end_time, attrs, dropped_attrs,
            events, getattr(s.events, "dropped", 0), links, getattr(s.links, "dropped", 0),
            s.status.status_code.value, s.status.description,
        ))
    return out


def rebuild(records: Sequence[SpanRecord], origins: dict[int, OriginKey]) -> list[Any]:
    """The ``ReadableSpan`` objects :func:`compact` describes (in the child)."""
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    def bounded(values: dict[str, Any], dropped: int) -> Any:
        if not dropped:  # the values are clean already; the SDK reads no drops from a plain dict
            return values
        attrs = BoundedAttributes(maxlen=None, attributes=values, immutable=True, max_value_len=None)
        attrs.dropped = dropped
        return attrs

    def bounded_list(items: list[Any], dropped: int) -> Any:
        if not dropped:
            return items
        out = BoundedList.from_seq(None, items)
        out.dropped = dropped
        return out

    def state(header: str | None) -> TraceState | None:
        return TraceState.from_header([header]) if header else None

    kinds = {k.value: k for k in SpanKind}
    unset = Status(StatusCode.UNSET)
    made: dict[int, tuple[Any, Any]] = {}
    spans = []
    for (origin, trace_id, span_id, flags, trace_state, parent_id, parent_remote, name, kind, start, end, attrs,
         dropped_attrs, events, dropped_events, links, dropped_links, status_code, description) in records:
        if origin not in made:
            res_attrs, res_schema, scope_name, scope_version, scope_schema = origins[origin]
            made[origin] = (
                Resource(dict(res_attrs), res_schema),
                InstrumentationScope(scope_name, scope_version, scope_schema),
            )
        resource, scope = made[origin]
        ctx = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=state(trace_state))
        parent = SpanContext(trace_id, parent_id, is_remote=parent_remote) if parent_id else None
        spans.append(ReadableSpan(
            name=name, context=ctx, parent=parent, resource=resource,
            attributes=bounded(attrs, dropped_attrs),
            events=bounded_list([Event(n, bounded(a, d), ts) for n, ts, a, d in events], dropped_events),
            links=bounded_list([
                Link(SpanContext(t, sp, is_remote=remote, trace_flags=TraceFlags(f), trace_state=state(ts)), bounded(a, d))
                for t, sp, f, remote, ts, a, d in links
            ], dropped_links),
            kind=kinds[kind], status=Status(StatusCode(status_code), description) if status_code else unset,
            start_time=start, end_time=end, instrumentation_scope=scope,
        ))
    return spans


#: Encoded attributes, statuses and trace states kept for reuse, at most this many of each.
_MAX_CACHED = 4096
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # OTLP's SpanFlags: the parent's is_remote is known / true


class RecordEncoder:
    """OTLP protobuf (``ExportTraceServiceRequest``) straight from :func:`compact` records.

    Why: the SDK's encoder wants ``ReadableSpan`` objects and builds an
    ``AnyValue`` and a ``KeyValue`` message per attribute of every span; that
    was most of the export process's CPU, which competes with the worker for
    the same cores.  Here a span is one ``Span`` message built from the
    record's values, and its attributes are merged in as bytes: a stage's
    spans repeat the same keys and mostly the same values (system, topic,
    group, asset), so each (key, value) is encoded once and reused.  The result
    is what :func:`opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`
    makes of :func:`rebuild`'s spans (``tests/unit/test_tracing_record_encoder.py``).
    """

    def __init__(self) -> None:
        self._attributes: dict[tuple[type, str, type, Any], bytes] = {}
        self._statuses: dict[tuple[int, str | None], bytes] = {}
        self._states: dict[str, str] = {}

    def request(self, records: Sequence[SpanRecord], origins: dict[int, OriginKey]) -> ExportTraceServiceRequest:
        """The export request of ``records``: spans grouped by resource, then by instrumentation scope."""
        request = ExportTraceServiceRequest()
        resources: dict[tuple[Any, ...], tuple[ResourceSpans, dict[tuple[Any, ...], ScopeSpans]]] = {}
        scope_of: dict[int, ScopeSpans] = {}
        for record in records:
            scope_spans = scope_of.get(record[0])
            if scope_spans is None:
                res_attrs, res_schema, *scope = origins[record[0]]
                entry = resources.get((res_attrs, res_schema))
                if entry is None:
                    resource_spans = request.resource_spans.add(schema_url=res_schema)
                    self._merge_attributes(resource_spans.resource, dict(res_attrs))
                    entry = resources[res_attrs, res_schema] = (resource_spans, {})
                scope_spans = entry[1].get(tuple(scope))
                if scope_spans is None:
                    name, version, schema = scope
                    scope_spans = entry[0].scope_spans.add(scope=PbScope(name=name, version=version), schema_url=schema)
                    entry[1][tuple(scope)] = scope_spans
                scope_of[record[0]] = scope_spans
            self.add_span(scope_spans.spans, record)
        return request

    def add_span(self, spans: Any, record: SpanRecord) -> None:
        """One record as an OTLP ``Span``, added to ``spans`` (a ``ScopeSpans``' field)."""
        (_, trace_id, span_id, _, trace_state, parent_id, parent_remote, name, kind, start, end, attrs,
         dropped_attrs, events, dropped_events, links, dropped_links, status_code, description) = record
        span = spans.add(
            trace_id=trace_id.to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"),
            trace_state=self._state(trace_state) if trace_state else None,
            parent_span_id=parent_id.to_bytes(8, "big") if parent_id else None,
            name=name, kind=kind + 1,  # the API's SpanKind counts from INTERNAL = 0, OTLP's from UNSPECIFIED = 0
            start_time_unix_nano=start, end_time_unix_nano=end,
            dropped_attributes_count=dropped_attrs, dropped_events_count=dropped_events,
            dropped_links_count=dropped_links,
            flags=_HAS_IS_REMOTE | _IS_REMOTE if parent_id and parent_remote else _HAS_IS_REMOTE,
        )
        status = (status_code, description if status_code else None)
        encoded_status = self._statuses.get(status)
        if encoded_status is None:  # the SDK's encoder always sets it, UNSET too
            code, message = status
            pb_status = Status(code=code) if message is None else Status(code=code, message=message)
            encoded_status = Span(status=pb_status).SerializeToString()
            if len(self._statuses) >= _MAX_CACHED:
                self._statuses.clear()
            self._statuses[status] = encoded_status
        self._merge_attributes(span, attrs, encoded_status)
        for event_name, timestamp, values, dropped in events:
            event = span.events.add(name=event_name, time_unix_nano=timestamp, dropped_attributes_count=dropped)
            self._merge_attributes(event, values)
        for link_trace, link_span, _, remote, _, values, dropped in links:
            link = span.links.add(trace_id=link_trace.to_bytes(16, "big"), span_id=link_span.to_bytes(8, "big"),
                                  dropped_attributes_count=dropped,
                                  flags=_HAS_IS_REMOTE | _IS_REMOTE if remote else _HAS_IS_REMOTE)
            self._merge_attributes(link, values)

    def _state(self, header: str) -> str:
        """A trace state as the SDK's encoder writes it (parsed, then joined)."""
        text = self._states.get(header)
        if text is None:
            from opentelemetry.trace import TraceState

            text = ",".join(f"{k}={v}" for k, v in TraceState.from_header([header]).items())
            if len(self._states) >= _MAX_CACHED:
                self._states.clear()
            self._states[header] = text
        return text

    def _merge_attributes(self, message: Any, attributes: dict[str, Any], tail: bytes = b"") -> None:
        """Append ``attributes`` to the ``attributes`` field of ``message`` (a ``Span``, ``Span.Event``,
        ``Span.Link`` or ``Resource``), in order, then merge ``tail`` (more encoded fields of ``message``).

        A str or bool attribute is merged from its encoding alone in a message of that type, kept for
        reuse; any other is added in place.
        """
        cache = self._attributes
        holder = type(message)
        parts: list[bytes] = []
        for key, value in attributes.items():
            if type(value) not in _REUSED:
                if parts:
                    message.MergeFromString(b"".join(parts))
                    parts.clear()
                if type(value) is int:
                    message.attributes.add(key=key).value.int_value = value
                    continue
                try:
                    encoded = _any_value(value)
                except TypeError:  # as the SDK's encoder: the attribute is left out, the span goes
                    log.exception("tracing: span attribute %s could not be encoded", key)
                    continue
                message.attributes.add(key=key).value.CopyFrom(encoded)
                continue
            reused = (holder, key, type(value), value)
            data = cache.get(reused)
            if data is None:
                data = holder(attributes=[KeyValue(key=key, value=_any_value(value))]).SerializeToString()
                if len(cache) >= _MAX_CACHED:
                    cache.clear()
                cache[reused] = data
            parts.append(data)
        if tail:
            parts.append(tail)
        if parts:
            message.MergeFromString(b"".join(parts))


#: Value types whose encoded attribute is kept for reuse (ints are mostly offsets and counts: they rarely repeat).
_REUSED = (str, bool)


def _any_value(value: Any) -> AnyValue:
    """An attribute value as OTLP's ``AnyValue``, as the SDK's encoder writes it."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[_any_value(v) for v in value]))
    if value is None:
        return AnyValue()
    raise TypeError(f"span attribute value of type {type(value).__name__} cannot be encoded")


class ProcessSpanExporter(SpanExporter):
    """Exports through a child process running the environment's exporters (see the module docstring)."""

    def __init__(self, on_failed: Callable[[int], None]) -> None:
        self._on_failed = on_failed
        self._lock = threading.Lock()
        self._acked = threading.Condition()
        self._origins: dict[OriginKey, int] = {}
        self._origin_lock = threading.Lock()
        self._sent_origins = 0
        self._sent = 0  # spans written to the current child
        self._settled = 0  # of them, exported or reported failed
        self._flushes = 0
        self._flushed = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def origin(self, key: OriginKey) -> int:
        """The number of a (resource, scope) pair (:func:`origin_key`), told to the child with the next batch."""
        number = self._origins.get(key)
        if number is None:
            with self._origin_lock:
                number = self._origins.setdefault(key, len(self._origins))
        return number

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:  # the file as a script (-P: its folder not on sys.path): the child imports no application code
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(Path(__file__).resolve()), str(write_fd)],
                stdin=subprocess.PIPE, pass_fds=(write_fd,), close_fds=True,
            )
        finally:
            os.close(write_fd)
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError, AttributeError):  # Linux only; else the system's default size
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._sent_origins, self._sent, self._settled = 0, 0, 0  # the new child is told every origin again
        self._flushes = self._flushed = 0
        results = os.fdopen(read_fd, "rb")
        self._reader = threading.Thread(target=self._read, args=(results,), name="mantis-span-export-results", daemon=True)
        self._reader.start()

    def _read(self, results: IO[bytes]) -> None:
        with results:
            for line in results:
                kind, _, value = line.decode("ascii", "replace").strip().partition(" ")
                with self._acked:
                    if kind == "ok":
                        self._settled += int(value)
                    elif kind == "failed":
                        self._settled += int(value)
                        self._on_failed(int(value))
                    elif kind == "flushed":
                        self._flushed = int(value)
                    self._acked.notify_all()

    def _write(self, kind: int, payload: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = marshal.dumps((kind, payload))  # plain values only; the child runs the same interpreter
        self._proc.stdin.write(_HEADER.pack(len(data)) + data)
        self._proc.stdin.flush()

    def _restart_if_dead(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        lost = self._sent - self._settled
        log.warning("tracing: the span export process exited (code %s); starting it again",
                    self._proc.returncode if self._proc else None)
        if lost > 0:
            self._on_failed(lost)
        self._start()

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            try:
                self._restart_if_dead()
                records = compact(spans, self.origin)
                with self._origin_lock:
                    new = {i: key for key, i in self._origins.items() if i >= self._sent_origins}
                    self._sent_origins = len(self._origins)
                self._write(_SPANS, (new, records))
                self._sent += len(spans)
            except (OSError, ValueError):
                log.debug("tracing: could not hand spans to the export process", exc_info=True)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            if self._closed or self._proc is None or self._proc.poll() is not None:
                return False
            self._flushes += 1
            token = self._flushes
            try:
                self._write(_FLUSH, token)
            except (OSError, ValueError):
                return False
        with self._acked:
            return self._acked.wait_for(lambda: self._flushed >= token, timeout=max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=max(0.1, timeout_millis / 1000))
        except subprocess.TimeoutExpired:
            log.warning("tracing: the span export process did not finish in time; stopped")
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        with self._acked:
            lost = self._sent - self._settled
            self._settled = self._sent
        if lost > 0:
            self._on_failed(lost)


#: The batch processor's queue in front of the export process (spans as small tuples: a few MiB), unless
#: ``OTEL_BSP_MAX_QUEUE_SIZE`` says otherwise: a worker's batch makes thousands of spans at 100 %, faster
#: than the processor's thread gets the CPU on a busy machine.
QUEUE_SIZE = 8192


def processor_options(exporter: SpanExporter) -> dict[str, int]:
    """Options of the batch span processor in front of ``exporter``: a longer queue for the export process."""
    if isinstance(exporter, ProcessSpanExporter) and not os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE"):
        return {"max_queue_size": QUEUE_SIZE}
    return {}


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


#: Frames the export process reads ahead while it exports (the worker's writes do not wait on an export).
READ_AHEAD = 64
#: Most spans the export process sends in one request when frames wait (a few hundred bytes each, well
#: under a collector's default 4 MiB message limit).
EXPORT_BATCH = 2048
#: The pipe's buffer to the export process: with the frames read ahead, bursts of ~10 k spans wait there
#: instead of filling the batch processor's queue (whose overflow is dropped).
PIPE_BYTES = 1 << 20


def _read_frames(stdin: IO[bytes], frames: queue.Queue[bytes | None]) -> None:
    while True:
        header = _read_exact(stdin, _HEADER.size)
        body = _read_exact(stdin, _HEADER.unpack(header)[0]) if header is not None else None
        frames.put(body)  # blocks when READ_AHEAD frames wait: then the worker's pipe fills
        if body is None:
            return


def child_main(result_fd: int) -> None:
    """The export process: frames from stdin to the environment's exporters, one result line per frame."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s (span export): %(message)s")
    exporters = ChildExporters(_exporters(encoded=True))
    origins: dict[int, OriginKey] = {}
    frames: queue.Queue[bytes | None] = queue.Queue(maxsize=READ_AHEAD)
    threading.Thread(target=_read_frames, args=(sys.stdin.buffer, frames), name="read-frames", daemon=True).start()
    with os.fdopen(result_fd, "wb", buffering=0) as results:
        ahead: list[bytes | None] = []  # a frame read while gathering spans, handled next
        while (body := ahead.pop() if ahead else frames.get()) is not None:
            kind, payload = marshal.loads(body)
            if kind == _FLUSH:
                exporters.force_flush()
                results.write(f"flushed {payload}\n".encode())
                continue
            records: list[SpanRecord] = []
            counts: list[int] = []
            while True:  # the frames waiting already go out in one request (fewer, larger exports when behind)
                new, batch = payload
                origins.update(new)
                records.extend(batch)
                counts.append(len(batch))
                if len(records) >= EXPORT_BATCH:
                    break
                try:
                    body = frames.get_nowait()
                except queue.Empty:
                    break
                if body is None or (following := marshal.loads(body))[0] == _FLUSH:
                    ahead.append(body)
                    break
                payload = following[1]
            try:
                ok = exporters.export(records, origins)
            except Exception:
                logging.getLogger("mantis_stream.tracing").debug("exporter raised", exc_info=True)
                ok = False
            outcome = "ok" if ok else "failed"
            results.write("".join(f"{outcome} {n}\n" for n in counts).encode())
        exporters.shutdown()


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
