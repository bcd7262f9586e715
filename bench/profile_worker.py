"""Where a worker's CPU goes per Faust layer, on a burst of readings.

    python bench/profile_worker.py [--n 20000] [--rate 200] [--kind scalar|waveform|mixed] [--chunk 1024] [--pace 0]
        [--tracing off|shipped|100%]

Starts an embedded broker and one worker (tracing off, or exporting OTLP/gRPC
to a collector that only counts spans, as ``bench_pipeline``'s ``mantis/shipped``
and ``mantis/100%``; then its span export process is sampled too), attaches ``py-spy
record`` to it, produces ``--n`` unkeyed readings (``bench_pipeline``'s, waveform
chunks of ``--chunk`` samples) over 50 assets as fast as possible, or at
``--pace`` readings/s (a steady rate makes small batches, whose per-batch costs
a burst hides), and stops sampling when the last anomaly output is out.  Prints the
share of the worker's on-CPU samples spent inside each layer (inclusive: a
sample inside ``Topic.send`` that is also inside a sensor counts for both) and
the functions with the most samples of their own.  Needs ``py-spy``
(``pip install -e .[bench]``); the raw collapsed stacks are kept for flame graphs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import (
    ASSETS,
    DiscardCollector,
    drain,
    expected_outputs,
    make_readings,
    produce,
    start_worker,
    wait_ready,
)

from mantis_stream import topics as names
from mantis_stream.demo.broker import EmbeddedBroker

#: Layer -> marks; a sample counts for a layer when one of its frames (``"Qual.name (path:line)"``) contains a mark.
LAYERS: dict[str, tuple[str, ...]] = {
    "sensors (faust.sensors delegate, Monitor, mantis metrics + tracing sensors)": (
        "faust/sensors/", "mantis_stream/metrics.py", "mantis_stream/tracing/sensor.py"),
    "acks and commits (Stream/Event/Message.ack, Consumer.ack, commit)": (
        "Stream.ack (", "Event.ack (", "Message.ack (", "Consumer.ack (", "on_final_ack (", "Consumer.commit (",
        "Consumer._commit", "Consumer.force_commit ("),
    "input path (Consumer._drain_messages -> Conductor -> Channel -> Stream iterator)": (
        "Consumer._drain_messages (", "Conductor._compile_message_handler", "Stream._c_aiter (", "Stream._py_aiter (",
        "Stream.__aiter__ (", "Channel.__anext__ (", "Stream._passive_drainer (", "App.create_event ("),
    "take_events (Stream.take_events)": ("Stream.take_events (",),
    "aiokafka fetch (Fetcher, aiokafka consumer)": ("Fetcher._fetcher (faust", "aiokafka/consumer/"),
    "Topic.send (Channel._send_now, publish_message, producer, aiokafka sender)": (
        "Topic.send (", "Channel._send_now (", "Topic.publish_message (", "Channel.as_future_message (",
        "faust/transport/producer.py", "Producer.send (faust", "aiokafka/producer/"),
    "  of which aiokafka's produce requests on the socket (Sender._send_produce_req)": ("Sender._send_produce_req (",),
    "tracing (mantis_stream/tracing, opentelemetry; the export process included)": (
        "mantis_stream/tracing/", "opentelemetry/"),
    "  of which the span export process": ("export_process.py", "process ", "multiprocessing/"),
    "pipeline code (mantis_stream.agents, dsp, models)": (
        "mantis_stream/agents/", "mantis_stream/dsp/", "mantis_stream/models/"),
    "  of which JSON decoding of input records (codecs, orjson.loads)": ("mantis_stream/codecs.py", "loads ("),
    "  of which framing (agents/framing.py, dsp/framing.py)": ("agents/framing.py", "dsp/framing.py"),
    "  of which waveform features (dsp/spectral.py)": ("dsp/spectral.py",),
}


def load_stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            out.append((stack.split(";"), int(count)))
    return out


def breakdown(stacks: list[tuple[list[str], int]]) -> tuple[int, dict[str, int], collections.Counter]:
    total = sum(n for _, n in stacks)
    per_layer = dict.fromkeys(LAYERS, 0)
    self_time: collections.Counter = collections.Counter()
    per_layer["none of the above (event loop, timers, other services)"] = 0
    for frames, n in stacks:
        hit = False
        for layer, marks in LAYERS.items():
            if any(m in f for f in frames for m in marks):
                per_layer[layer] += n
                hit = True
        if not hit:
            per_layer["none of the above (event loop, timers, other services)"] += n
        self_time[frames[-1]] += n
    return total, per_layer, self_time


def tracing_env(mode: str, collector_port: int, out_dir: Path) -> dict[str, str]:
    """The worker's tracing settings for ``mode`` (``bench_pipeline``'s contenders)."""
    if mode == "off":
        return {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_TRACES_EXPORTER": "otlp"}
    if mode == "100%":
        all_on = out_dir / "all.json"
        all_on.write_text(json.dumps({"default_strategy": {"type": "probabilistic", "param": 1.0}}))
        env["MANTIS_SAMPLING_STRATEGIES"] = str(all_on)
    return env


async def run(spy_bin: str, n: int, rate: int, out_dir: Path, kind: str = "scalar", chunk: int = 1024,
              pace: float = 0.0, mode: str = "off", gil: bool = False) -> Path:
    readings = make_readings(kind, n, np.random.default_rng(1), chunk)
    raw = out_dir / "worker.collapsed"
    collector = DiscardCollector()
    collector.server.start()
    with EmbeddedBroker() as broker:
        broker.create_topics(list(names.ALL_TOPICS), 4)
        log = out_dir / "worker.log"
        worker = start_worker("mantis_stream", broker, tracing_env(mode, collector.port, out_dir), log)
        try:
            await wait_ready(worker, log)
            spy = subprocess.Popen([spy_bin, "record", "--pid", str(worker.pid), "--rate", str(rate), "--format", "raw",
                                    "--output", str(raw), "--nonblocking", *(["--subprocesses"] if mode != "off" else []), *(["--gil"] if gil else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
            drain_task = asyncio.create_task(drain(broker.bootstrap, expected_outputs(readings), timeout=600))
            start = await produce(broker.bootstrap, readings, pace or None)
            last, latencies = await drain_task
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=60)
            print(f"{len(latencies)}/{n} outputs, {n / (last - start):.0f} readings/s under the profiler "
                  f"({ASSETS} assets, {kind}, tracing {mode})")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            collector.server.stop(0)
    if mode != "off":
        print(f"{collector.spans / n:.2f} spans per reading")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--kind", choices=("scalar", "waveform", "mixed"), default="scalar")
    parser.add_argument("--chunk", type=int, default=1024, help="samples per waveform chunk")
    parser.add_argument("--pace", type=float, default=0.0, help="readings/s to produce at (0: as fast as possible)")
    parser.add_argument("--tracing", choices=("off", "shipped", "100%"), default="off",
                        help="tracing off, the shipped strategies, or every reading sampled")
    parser.add_argument("--gil", action="store_true",
                        help="only samples holding the interpreter lock (a thread waiting for it is no cost of its own)")
    parser.add_argument("--stacks", type=Path, default=None, help="analyse this collapsed-stack file instead of running")
    args = parser.parse_args()
    if args.stacks:
        report(args.stacks)
        return
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("profile_worker: py-spy is not installed (pip install -e .[bench])")
    out_dir = Path(tempfile.mkdtemp(prefix="mantis-profile-"))
    report(asyncio.run(run(spy, args.n, args.rate, out_dir, args.kind, args.chunk, args.pace,
                               args.tracing, args.gil)))


def report(raw: Path) -> None:
    total, per_layer, self_time = breakdown(load_stacks(raw))
    print(f"\non-CPU samples: {total} (collapsed stacks: {raw})")
    for layer, count in per_layer.items():
        print(f"  {100 * count / max(total, 1):5.1f} %  {layer}")
    print("\nmost samples of their own:")
    for frame, count in self_time.most_common(15):
        print(f"  {100 * count / max(total, 1):5.1f} %  {frame}")


if __name__ == "__main__":
    main()
