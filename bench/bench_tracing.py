"""Per-message cost of the tracing sensor: off, the shipped strategies, 100% sampling.

What is measured: for one consumed message and one produced message, the
sensor's hooks as Faust calls them -- ``on_stream_event_in`` (extract the
context, start and attach the ``process`` span), ``on_send_initiated`` (start
the ``send`` span, strip stale headers, inject), ``on_send_completed`` and
``on_stream_event_out`` (end both) -- with a real ``faust.Event`` and
``PendingMessage``, inside an asyncio task, spans going to a
``BatchSpanProcessor`` whose exporter discards them (so export cost, on its own
thread, is not counted; queue drops are reported).

Modes:

* ``no sensor``: the loop without any hook (the harness's own cost, subtracted).
* ``off``: ``OTEL_SDK_DISABLED=true`` -- context still propagates.
* ``shipped``: ``config/sampling-strategy.json`` as the preprocessing stage sees it
  (messages without context, so 30% root decisions) and as anomaly detection
  sees it (unsampled parents: 100%, restarted traces with a link).
* ``100%``: every span sampled and exported (ALWAYS_ON).

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

import faust  # noqa: E402
from faust.events import Event  # noqa: E402
from faust.types import TP, Message, RecordMetadata  # noqa: E402
from faust.types.tuples import PendingMessage  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_ON  # noqa: E402

from mantis_stream import tracing  # noqa: E402
from mantis_stream.settings import Settings  # noqa: E402
from mantis_stream.tracing.sensor import TracingSensor  # noqa: E402

UNSAMPLED_PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


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


def configure(mode: str, exporter: Discard) -> Any:
    os.environ.pop("OTEL_SDK_DISABLED", None)
    if mode == "off":
        os.environ["OTEL_SDK_DISABLED"] = "true"
        return tracing.configure(Settings())
    if mode == "100%":
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
        ("no sensor", None, "preprocess", None),
        ("off", "off", "preprocess", None),
        ("shipped: preprocessing (30% roots)", "shipped", "preprocess", None),
        ("shipped: anomaly (unsampled parent -> 100% restart)", "shipped", "anomaly", UNSAMPLED_PARENT),
        ("100%", "100%", "preprocess", None),
    ]
    results = []
    for label, mode, stage, parent in cases:
        exporter = Discard()
        rt = configure(mode, exporter) if mode else configure("off", exporter)
        stream = FakeStream(app, stage)
        timings = []
        for _ in range(args.repeat):
            items = make_messages(app, args.messages, "mantis.readings", parent)
            timings.append(await run(sensor if mode else None, stream, items, "mantis.features"))
        rt.force_flush()
        walls = [w for w, _ in timings]
        cpus = [c for _, c in timings]
        results.append((label, statistics.median(walls), statistics.median(cpus), exporter.count, rt.dropped_spans))
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
    print(f"{args.messages} messages x {args.repeat} runs; per message (one consumed + one produced), medians")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall time suffers from load; CPU time less)")
    print(f"{'mode':<54}{'wall us/msg':>12}{'CPU us/msg':>12}{'exported':>10}{'dropped':>9}")
    for label, wall, cpu, exported, dropped in results:
        print(f"{label:<54}{wall * 1e6:>12.1f}{cpu * 1e6:>12.1f}{exported:>10}{dropped:>9}")
    print(f"reference: one bare OpenTelemetry SDK span start+end here takes {bare_us:.1f} us (wall)")


if __name__ == "__main__":
    asyncio.run(main())
