"""Per-message and per-record cost of tracing: off, unsampled, root decisions, 100% sampling.

What is measured, inside an asyncio task, spans going to a ``BatchSpanProcessor``
whose exporter discards them (so export cost, on its own thread, is not
counted; queue drops are reported):

* per message (a stage consuming Kafka messages of its own, e.g. preprocessing):
  the sensor's hooks as Faust calls them for one consumed and one produced
  message -- ``on_stream_event_in`` (extract, process span, attach),
  ``on_send_initiated`` (send span or not, inject), ``on_send_completed``,
  ``on_stream_event_out`` -- with a real ``faust.Event`` and ``PendingMessage``;
* per record (a record of a batched message, every stage after preprocessing):
  ``open_item``, ``use_item`` with the record's ``outgoing_carrier`` (its place
  in the next batch) and one public message sent in its scope through the
  sensor, then ``end``.

Modes:

* ``no sensor``: the loop without any hook (the harness's own cost, subtracted).
* ``off``: ``OTEL_SDK_DISABLED=true`` -- context still propagates.
* ``unsampled parent``: a ``traceparent`` whose flags say "not sampled" (the
  decision is already made): no SDK span, the context goes on verbatim.
* ``root, shipped``: no incoming context, ``config/sampling-strategy.json`` as the
  preprocessing stage sees it (30% root decisions).
* ``100%``: every span sampled and exported (ALWAYS_ON).

Spans per sampled reading are counted end to end by ``bench/bench_pipeline.py``
(``spans/rd`` of ``mantis/100%``).

Run: ``.venv/bin/python bench/bench_tracing.py [--messages N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust
from faust.events import Event
from faust.types import TP, Message, RecordMetadata
from faust.types.tuples import PendingMessage
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from mantis_stream import tracing
from mantis_stream.settings import Settings
from mantis_stream.tracing.sensor import TracingSensor

UNSAMPLED_PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SAMPLED_PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class EncodeDiscard(Discard):
    """Encodes each batch as the OTLP exporters do (protobuf), then discards it: the export's CPU on this interpreter."""

    def export(self, spans: Any) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encode_spans(spans).SerializeToString()
        return super().export(spans)


def _drain(conn: Any) -> None:
    while True:
        try:
            conn.recv_bytes()
        except EOFError:
            return


class PipeDiscard(Discard):
    """What exporting from a child process would leave here: each span as a compact tuple, pickled to a pipe."""

    def __init__(self) -> None:
        import multiprocessing

        super().__init__()
        self.conn, child = multiprocessing.Pipe()
        self.child = multiprocessing.Process(target=_drain, args=(child,), daemon=True)
        self.child.start()
        child.close()

    def export(self, spans: Any) -> SpanExportResult:
        import pickle

        records = [(
            s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else 0, s.name, s.kind.value,
            s.start_time, s.end_time, dict(s.attributes), s.status.status_code.value,
            [(link.context.trace_id, link.context.span_id) for link in s.links], s.resource.attributes.get("service.name"),
        ) for s in spans]
        self.conn.send_bytes(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
        return super().export(spans)

    def shutdown(self) -> None:
        self.conn.close()


class FakeStream:
    def __init__(self, app: faust.App, prefix: str) -> None:
        self.app = app
        self.prefix = prefix


def make_messages(app: faust.App, n: int, topic: str, parent: bytes | None) -> list[tuple[Event, PendingMessage]]:
    out = []
    for i in range(n):
        headers = [("traceparent", parent)] if parent else []
        msg = Message(topic, 0, i, time.time(), 0, headers, b"PUMP-7", b'{"v":1}', b"", 6, 7)
        event = Event(app, b"PUMP-7", {"v": 1}, headers, msg)
        pending = PendingMessage(
            channel=None, key=b"PUMP-7", value=b'{"v":2}', partition=None, timestamp=None,
            headers=list(headers), key_serializer=None, value_serializer=None, callback=None,
        )
        out.append((event, pending))
    return out


async def run(sensor: TracingSensor | None, stream: FakeStream, items: list, out_topic: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process incl. the export thread) per message."""
    tp = TP(stream.prefix, 0)
    meta = RecordMetadata(out_topic, 0, TP(out_topic, 0), 0)
    started, cpu = time.perf_counter(), time.process_time()
    if sensor is None:
        for event, pending in items:
            _ = (tp, event, pending, meta)
    else:
        for event, pending in items:
            state = sensor.on_stream_event_in(tp, event.message.offset, stream, event)
            send_state = sensor.on_send_initiated(None, out_topic, pending, 6, 7)
            sensor.on_send_completed(None, send_state, meta)
            sensor.on_stream_event_out(tp, event.message.offset, stream, event, state)
    return (time.perf_counter() - started) / len(items), (time.process_time() - cpu) / len(items)


def make_pending(n: int) -> list[PendingMessage]:
    return [PendingMessage(
        channel=None, key=b"PUMP-7", value=b'{"v":2}', partition=None, timestamp=None,
        headers=[], key_serializer=None, value_serializer=None, callback=None,
    ) for _ in range(n)]


async def run_records(sensor: TracingSensor | None, carriers: list[dict[str, str]], pendings: list[PendingMessage]) -> float:
    """Wall seconds per record of a batched message: open, scope + outgoing carrier + one public send, end."""
    meta = RecordMetadata("mantis.anomalies", 0, TP("mantis.anomalies", 0), 0)
    started = time.perf_counter()
    if sensor is None:
        for i, pending in enumerate(pendings):
            _ = (carriers[i % len(carriers)], pending, meta, i)
    else:
        for i, pending in enumerate(pendings):
            carrier = carriers[i % len(carriers)]
            record = tracing.open_item(
                "anomaly-detection", carrier, topic="mantis.internal.feature-batches", partition=0, offset=i, group="g",
            )
            with tracing.use_item(record, carrier):
                tracing.outgoing_carrier()
                state = sensor.on_send_initiated(None, "mantis.anomalies", pending, 6, 7)
                sensor.on_send_completed(None, state, meta)
            if record is not None:
                record.end()
    return (time.perf_counter() - started) / len(pendings)


def configure(mode: str, exporter: Discard) -> Any:
    os.environ.pop("OTEL_SDK_DISABLED", None)
    if mode == "off":
        os.environ["OTEL_SDK_DISABLED"] = "true"
        return tracing.configure(Settings())
    if mode.startswith("100%"):
        return tracing.configure(Settings(), exporter, sampler_override=ALWAYS_ON, batch=True)
    return tracing.configure(Settings(), exporter, batch=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(4 * args.messages))  # measure cost, not drops
    app = faust.App("bench-tracing", broker="kafka://127.0.0.1:1", store="memory://")
    sensor = TracingSensor(stages={"preprocess": "preprocessing", "anomaly": "anomaly-detection"})
    cases = [
        ("no sensor", None, None),
        ("off", "off", None),
        ("unsampled parent", "shipped", UNSAMPLED_PARENT),
        ("root, shipped (30% sampled)", "shipped", None),
        ("100%", "100%", SAMPLED_PARENT),
        ("100%, OTLP encoded", "100%+encode", SAMPLED_PARENT),
        ("100%, pickled to a child", "100%+pipe", SAMPLED_PARENT),
    ]
    results = []
    for label, mode, parent in cases:
        exporter = {"100%+encode": EncodeDiscard, "100%+pipe": PipeDiscard}.get(mode or "", Discard)()
        rt = configure(mode, exporter) if mode else configure("off", exporter)
        stream = FakeStream(app, "preprocess")
        timings, per_record = [], []
        if parent is None:  # downstream of 30% roots: 3 records in 10 sampled
            carriers = [{"traceparent": (SAMPLED_PARENT if i < 3 else UNSAMPLED_PARENT).decode()} for i in range(10)]
        else:
            carriers = [{"traceparent": parent.decode()}]
        cpu_total = 0.0
        for _ in range(args.repeat):
            items = make_messages(app, args.messages, "mantis.readings", parent)
            pendings = make_pending(args.messages)
            cpu = time.process_time()
            timings.append(await run(sensor if mode else None, stream, items, "mantis.features"))
            per_record.append(await run_records(sensor if mode else None, carriers, pendings))
            rt.force_flush()  # the export of these spans, on its thread, counted here
            cpu_total += time.process_time() - cpu
        walls = [w for w, _ in timings]
        cpus = [c for _, c in timings]
        results.append((label, statistics.median(walls), statistics.median(cpus), statistics.median(per_record),
                        cpu_total / (args.repeat * args.messages), exporter.count, rt.dropped_spans))
        tracing.shutdown()
    os.environ.pop("OTEL_SDK_DISABLED", None)
    # Calibration: what this machine takes for one bare SDK span (start + end, no attributes, no export).
    from opentelemetry.sdk.trace import TracerProvider

    bare = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False).get_tracer("bench")
    n = min(args.messages, 20_000)
    started = time.perf_counter()
    for _ in range(n):
        bare.start_span("x").end()
    bare_us = (time.perf_counter() - started) / n * 1e6
    print(f"{args.messages} messages x {args.repeat} runs, medians, in microseconds")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall time suffers from load; CPU time less)")
    print("per message: one consumed + one produced message of a stage's own (the sensor's hooks)")
    print("per record: one record of a batched message with one public send (open_item .. end); in the root row")
    print("3 records in 10 carry a sampled context (a record is never a root: downstream of 30% roots)")
    print("CPU all: CPU of one message and one record together, the export thread's included (flushed)")
    print(f"{'mode':<30}{'msg wall':>10}{'msg CPU':>9}{'record wall':>13}{'CPU all':>9}{'exported':>10}{'dropped':>9}")
    for label, wall, cpu, record, cpu_all, exported, dropped in results:
        print(f"{label:<30}{wall * 1e6:>10.1f}{cpu * 1e6:>9.1f}{record * 1e6:>13.1f}{cpu_all * 1e6:>9.1f}"
              f"{exported:>10}{dropped:>9}")
    print(f"reference: one bare OpenTelemetry SDK span start+end here takes {bare_us:.1f} us (wall)")


if __name__ == "__main__":
    asyncio.run(main())
