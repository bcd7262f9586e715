"""Per-message and per-record cost of tracing: off, unsampled, root decisions, 100% sampling.

What is measured, inside an asyncio task, spans exported over OTLP/gRPC to a
collector in another process that only counts them (as a worker would):

* per message (a stage consuming Kafka messages of its own, e.g. preprocessing):
  the sensor's hooks as Faust calls them for one consumed and one produced
  message -- ``on_stream_event_in`` (extract, process span, attach),
  ``on_send_initiated`` (send span or not, inject), ``on_send_completed``,
  ``on_stream_event_out`` -- with a real ``faust.Event`` and ``PendingMessage``;
* per record (a record of a batched message, every stage after preprocessing):
  ``open_item``, ``use_item`` with the record's ``outgoing_carrier`` (its place
  in the next batch) and one public message sent in its scope through the
  sensor, then ``end``.

Modes (the export process, ``MANTIS_TRACING_EXPORT=process``, unless said):

* ``no sensor``: the loop without any hook (the harness's own cost).
* ``off``: ``OTEL_SDK_DISABLED=true`` -- context still propagates.
* ``unsampled parent``: a ``traceparent`` whose flags say "not sampled" (the
  decision is already made): no span, the context goes on verbatim.
* ``root, shipped``: no incoming context, ``config/sampling-strategy.json`` as the
  preprocessing stage sees it (30% root decisions); records: 3 in 10 sampled.
* ``100%``: every span sampled and exported (ALWAYS_ON).
* ``..., export thread``: the same with SDK spans exported on the batch
  processor's thread in this process (``MANTIS_TRACING_EXPORT=thread``, OpenTelemetry's way).

``CPU all`` is this process's CPU (the worker's share: its export thread
included) and ``child CPU`` the export process's, both per message + record,
all spans flushed to the collector.

Spans per sampled reading are counted end to end by ``bench/bench_pipeline.py``
(``spans/rd`` of ``mantis/100%``).

Run: ``.venv/bin/python bench/bench_tracing.py [--messages N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faust
from faust.events import Event
from faust.types import TP, Message, RecordMetadata
from faust.types.tuples import PendingMessage
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from mantis_stream import tracing
from mantis_stream.settings import Settings
from mantis_stream.tracing.sensor import TracingSensor

UNSAMPLED_PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
SAMPLED_PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


COLLECTOR = """
import sys
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
spans = 0
class Count(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        global spans
        spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Count(), server)
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
for _ in sys.stdin:  # each line asks for the count so far
    print(spans, flush=True)
"""


def start_collector() -> tuple[subprocess.Popen, int]:
    """An OTLP/gRPC endpoint in its own process (its CPU is not the worker's), answering every export."""
    proc = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def received(collector: subprocess.Popen) -> int:
    assert collector.stdin is not None and collector.stdout is not None
    collector.stdin.write("\n")
    collector.stdin.flush()
    return int(collector.stdout.readline())


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def configure(mode: str) -> Any:
    os.environ.pop("OTEL_SDK_DISABLED", None)
    os.environ["MANTIS_TRACING_EXPORT"] = "thread" if mode.endswith("thread") else "process"
    if mode == "off":
        os.environ["OTEL_SDK_DISABLED"] = "true"
        return tracing.configure(Settings())
    if mode.startswith("100%"):
        return tracing.configure(Settings(), sampler_override=ALWAYS_ON)
    return tracing.configure(Settings())


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
        ("root, shipped, export thread", "shipped thread", None),
        ("100%", "100%", SAMPLED_PARENT),
        ("100%, export thread", "100% thread", SAMPLED_PARENT),
    ]
    collector, port = start_collector()
    os.environ.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                      OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
    results = []
    for label, mode, parent in cases:
        rt = configure(mode or "off")
        child = getattr(rt.exporter, "pid", None)
        rt.force_flush(timeout_millis=60_000)  # the export process is up (its imports are not counted)
        before = received(collector)
        stream = FakeStream(app, "preprocess")
        timings, per_record = [], []
        if parent is None:  # downstream of 30% roots: 3 records in 10 sampled
            carriers = [{"traceparent": (SAMPLED_PARENT if i < 3 else UNSAMPLED_PARENT).decode()} for i in range(10)]
        else:
            carriers = [{"traceparent": parent.decode()}]
        cpu_total = child_total = 0.0
        for _ in range(args.repeat):
            items = make_messages(app, args.messages, "mantis.readings", parent)
            pendings = make_pending(args.messages)
            cpu, child_cpu = time.process_time(), cpu_of(child)
            timings.append(await run(sensor if mode else None, stream, items, "mantis.features"))
            per_record.append(await run_records(sensor if mode else None, carriers, pendings))
            rt.force_flush(timeout_millis=120_000)  # the export of these spans counted here
            cpu_total += time.process_time() - cpu
            child_total += cpu_of(child) - child_cpu
        walls = [w for w, _ in timings]
        cpus = [c for _, c in timings]
        n = args.repeat * args.messages
        results.append((label, statistics.median(walls), statistics.median(cpus), statistics.median(per_record),
                        cpu_total / n, child_total / n, received(collector) - before, rt.dropped_spans))
        tracing.shutdown()
    collector.kill()
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
    print("CPU all: this process's CPU for one message and one record together, its export thread's included;")
    print("child CPU: the export process's for the same (spans flushed to the collector: 'received')")
    print(f"{'mode':<31}{'msg wall':>9}{'msg CPU':>9}{'record wall':>12}{'CPU all':>9}{'child CPU':>10}"
          f"{'received':>10}{'dropped':>9}")
    for label, wall, cpu, record, cpu_all, child_cpu, exported, dropped in results:
        print(f"{label:<31}{wall * 1e6:>9.1f}{cpu * 1e6:>9.1f}{record * 1e6:>12.1f}{cpu_all * 1e6:>9.1f}"
              f"{child_cpu * 1e6:>10.1f}{exported:>10}{dropped:>9}")
    by_label = {row[0]: row for row in results}
    off, unsampled, every = by_label["off"], by_label["unsampled parent"], by_label["100%"]
    spans = every[6] / (args.repeat * args.messages)  # per message + record
    print(f"unsampled (a parent that says 'not sampled'): {unsampled[4] * 1e6 - off[4] * 1e6:.1f} us more than off "
          "per message + record")
    print(f"per sampled span at 100% ({spans:.1f} per message + record): worker "
          f"{(every[4] - off[4]) / spans * 1e6:.1f} us, export process {every[5] / spans * 1e6:.1f} us (CPU)")
    print(f"reference: one bare OpenTelemetry SDK span start+end here takes {bare_us:.1f} us (wall)")


if __name__ == "__main__":
    asyncio.run(main())
