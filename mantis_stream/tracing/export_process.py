"""OTLP export from a child process: the worker hands finished spans over a pipe as compact tuples.

Why this exists
===============

Encoding spans to OTLP protobuf and sending them costs as much CPU as making
them, and in the worker it runs on the batch processor's thread, holding the
interpreter's lock while the event loop waits.  :class:`ProcessSpanExporter`
sits behind the same ``BatchSpanProcessor`` as an in-process exporter would,
but its ``export`` only turns each span into a tuple of plain values and
writes the batch, pickled, to a child process (:func:`child_main`).  The child
rebuilds ``ReadableSpan`` objects and gives them to the real exporters the
``OTEL_*`` environment names (OTLP gRPC or HTTP, console, the trace file), so
what reaches the collector is what the in-process exporter would send.

Notes
=====

* Honest accounting: the child reports each batch's result; the spans of a
  failed export are counted as dropped in the worker (``on_failed``), and so
  are the spans still in the child when it had to be killed at shutdown.
* Never blocks the event loop: writes happen on the processor's thread, and
  the child reads up to :data:`READ_AHEAD` batches ahead while it exports; a
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

import importlib.util
import logging
import os
import pickle
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

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

__all__ = ["ProcessSpanExporter", "child_main", "compact", "exporter_from_env", "rebuild"]

log = logging.getLogger("mantis_stream.tracing")

_HEADER = struct.Struct("!I")
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


def exporter_from_env() -> SpanExporter | None:
    """The exporter :func:`exporter_names` asks for (None for ``none``)."""
    exporters: list[SpanExporter] = []
    for kind, detail in exporter_names():
        if kind == "console":
            exporters.append(ConsoleSpanExporter())
        elif kind == "otlp" and detail == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporters.append(GrpcExporter())
        elif kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporters.append(HttpExporter())
        else:
            exporters.append(_file_exporter(detail))
    if not exporters:
        return None
    return exporters[0] if len(exporters) == 1 else FanOutExporter(exporters)


def _attrs(attributes: Any) -> tuple[dict[str, Any], int]:
    if not attributes:
        return {}, 0
    return dict(attributes), getattr(attributes, "dropped", 0)


def origin_key(resource: Any, scope: Any) -> tuple:
    """What a span's resource and instrumentation scope are, as plain values."""
    return (
        tuple(sorted(resource.attributes.items())), resource.schema_url,
        scope.name if scope else "", scope.version if scope else None, scope.schema_url if scope else None,
    )


def compact(spans: Sequence[Any], origin: Callable[[tuple], int]) -> list[tuple]:
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


def rebuild(records: Sequence[tuple], origins: dict[int, tuple]) -> list[Any]:
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

    def bounded_list(items: list, dropped: int) -> Any:
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


class ProcessSpanExporter(SpanExporter):
    """Exports through a child process running the environment's exporters (see the module docstring)."""

    def __init__(self, on_failed: Callable[[int], None]) -> None:
        self._on_failed = on_failed
        self._lock = threading.Lock()
        self._acked = threading.Condition()
        self._origins: dict[tuple, int] = {}
        self._origin_lock = threading.Lock()
        self._sent_origins = 0
        self._sent = 0  # spans written to the current child
        self._settled = 0  # of them, exported or reported failed
        self._flushes = 0
        self._flushed = 0
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def origin(self, key: tuple) -> int:
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
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
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
            except (OSError, ValueError, pickle.PicklingError):
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


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


#: Frames the export process reads ahead while it exports (the worker's writes do not wait on an export).
READ_AHEAD = 8


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
    exporter = exporter_from_env()
    origins: dict[int, tuple] = {}
    frames: queue.Queue[bytes | None] = queue.Queue(maxsize=READ_AHEAD)
    threading.Thread(target=_read_frames, args=(sys.stdin.buffer, frames), name="read-frames", daemon=True).start()
    with os.fdopen(result_fd, "wb", buffering=0) as results:
        while (body := frames.get()) is not None:
            kind, payload = pickle.loads(body)
            if kind == _FLUSH:
                if exporter is not None:
                    exporter.force_flush()
                results.write(f"flushed {payload}\n".encode())
                continue
            new, records = payload
            origins.update(new)
            ok = True
            if exporter is not None:
                try:
                    ok = exporter.export(rebuild(records, origins)) is SpanExportResult.SUCCESS
                except Exception:
                    logging.getLogger("mantis_stream.tracing").debug("exporter raised", exc_info=True)
                    ok = False
            results.write(f"{'ok' if ok else 'failed'} {len(records)}\n".encode())
        if exporter is not None:
            exporter.shutdown()


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
