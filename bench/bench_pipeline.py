"""Pipeline throughput and latency, side by side with a raw relay and a naive Faust peer.

    python bench/bench_pipeline.py [--n 20000] [--kinds scalar,waveform,mixed] [--chunk 1024] [--soak 600]
        [--contenders "relay,naive,mantis/off,mantis/off x2,quix/river"] [--baseline-rev REV]
        [--assets 50] [--no-latency] [--pace R] [--hops] [--worker-env NAME=VALUE]

For each kind of input (scalar readings, waveform chunks, a mix) and each
contender, a fresh embedded broker is started, N readings are produced with no
key, and the clock runs until the last anomaly output appears:

- ``relay``: raw aiokafka consumers/producers forwarding JSON through the same
  four hops (readings -> keyed -> frames -> features -> anomalies): the ceiling;
- ``naive``: ``bench/naive_app.py``, one event at a time with the stock
  ``faust.contrib.opentelemetry`` sensor, exporting every span;
- ``mantis/off``, ``mantis/shipped``, ``mantis/100%``: this project's worker with
  tracing off, with ``config/sampling-strategy.json``, and with every span sampled;
  ``mantis/shipped-thread`` (not run by default): the shipped strategies with the
  export on a thread of the worker instead of its export process (``MANTIS_TRACING_EXPORT``);
  ``mantis/off x2``, ``mantis/off x4`` (not run by default): N workers in one consumer group,
  started by ``mantis-stream workers N`` as a user would;
- ``quix/river``, ``quix/mantis-detector`` (not run by default; scalar readings only;
  ``pip install -e .[bench]``): ``bench/quix_app.py``, the same job on Quix Streams with
  river's ``StandardScaler | HalfSpaceTrees`` or with mantis-stream's ``AnomalyDetector``.

``--baseline-rev REV`` adds ``baseline/off`` (or the ``baseline/...`` contenders named in
``--contenders``, e.g. ``baseline/off x2``): the worker of git revision REV, run from a
temporary ``git worktree`` with ``PYTHONPATH`` pointing at it, so a change is measured
against the code before it in the same run.

Traced contenders export OTLP/gRPC to a discard collector in this process;
each row reports the spans it received per reading, the spans the worker
dropped and the SDK's "exceeds max length" warnings in its log, and the
worker's CPU time per reading (user + system, all threads and child processes,
such as its span export process, from produce to the last output): on a loaded machine a steadier measure of tracing's cost than
readings/s, which waits on the other processes too.
Latency (produce -> anomaly output, p50/p95/p99) is measured in a second, paced
run of each mantis-stream contender at half its own peak rate.  ``--soak S`` then runs that
pace for S seconds and prints the worker's RSS every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent import futures
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mantis_stream import topics as names  # noqa: E402
from mantis_stream.demo.broker import EmbeddedBroker, free_port  # noqa: E402

ASSETS = 50
CHUNK = 1024
FRAME = 2048
#: Partitions of every topic the bench creates.
PARTITIONS = 4
RELAY_HOPS = (names.READINGS, names.READINGS_KEYED, names.FRAMES, names.FEATURES, names.ANOMALIES)


# --- input ---------------------------------------------------------------

def make_readings(kind: str, n: int, rng: np.random.Generator, chunk: int = CHUNK, assets: int = ASSETS) -> list[dict]:
    """``n`` readings over ``assets`` assets; waveform chunks of ``chunk`` samples (default: half a frame)."""
    out = []
    wave = np.round(rng.standard_normal(chunk), 4).tolist()
    for i in range(n):
        asset = f"BENCH-{i % assets}"
        is_wave = kind == "waveform" or (kind == "mixed" and i % 10 == 0)
        if is_wave:
            out.append({"asset_id": asset, "sensor_id": "VIB", "ts": 0.0, "values": wave, "sample_rate_hz": 25600.0})
        else:
            out.append({"asset_id": asset, "sensor_id": "TMP", "ts": 0.0, "value": float(60 + rng.standard_normal())})
    return out


def expected_outputs(readings: list[dict], contender: str = "mantis") -> int:
    """Anomaly messages the readings must yield: one per window, one per complete frame (the relay: one per reading;
    the Quix peer handles scalar readings only)."""
    if contender == "relay":
        return len(readings)
    if contender.startswith("quix/"):
        return sum("value" in r for r in readings)
    samples: dict[str, int] = {}
    count = 0
    for r in readings:
        if "values" in r:
            samples[r["asset_id"]] = samples.get(r["asset_id"], 0) + len(r["values"])
        else:
            count += 1
    return count + sum(n // FRAME for n in samples.values())


def samples_per_s(readings: list[dict], row: dict) -> float:
    """Vibration samples per second through the pipeline, at the row's readings/s."""
    waves = [len(r["values"]) for r in readings if "values" in r]
    return row["readings_per_s"] * sum(waves) / len(readings) if waves else 0.0


async def produce(bootstrap: str, readings: list[dict], rate: float | None = None) -> float:
    """Produce with ``ts`` = send time; returns the start time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    start = time.time()
    try:
        pending = []
        for i, r in enumerate(readings):
            if rate:
                delay = start + i / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            r["ts"] = time.time()
            pending.append(await producer.send(names.READINGS, orjson.dumps(r)))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return start


def _ts(value: dict) -> float:
    ts = value["ts"]
    return float(ts) if isinstance(ts, (int, float)) else datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def drain(bootstrap: str, expected: int, timeout: float) -> tuple[float, list[float]]:
    """Consume ``mantis.anomalies`` until ``expected`` messages; (time of last, latencies)."""
    consumer = AIOKafkaConsumer(names.ANOMALIES, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    latencies: list[float] = []
    last = 0.0
    try:
        deadline = time.time() + timeout
        while len(latencies) < expected and time.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200, max_records=10000)).values():
                for rec in records:
                    created = rec.timestamp / 1000.0
                    latencies.append(created - _ts(orjson.loads(rec.value)))
                    last = max(last, created)
    finally:
        await consumer.stop()
    return last, latencies


#: Where a reading's time goes, topic by topic up to its anomaly (each batched message's records, ``items``).
HOPS = (names.READINGS, names.READINGS_KEYED, names.FRAMES, names.FEATURE_BATCHES, names.FEATURES, names.ANOMALIES)


async def hop_latencies(bootstrap: str) -> dict[str, list[float]]:
    """Per topic of :data:`HOPS`: each record's write time (its Kafka timestamp) minus its ``ts``.

    From the frames on, ``ts`` is a frame's last sample (a waveform frame's second chunk's ``ts`` plus the
    samples after its first): a cumulative time since the reading was produced, slightly understated there.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    out: dict[str, list[float]] = {}
    try:
        for topic in HOPS:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            lat = out[topic] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500, max_records=10000)).values():
                    for rec in records:
                        body = orjson.loads(rec.value)
                        values = [i["value"] for i in body["items"]] if "items" in body else [body]
                        lat += [rec.timestamp / 1000.0 - _ts(v) for v in values]
    finally:
        await consumer.stop()
    return out


# --- contenders ------------------------------------------------------------

class DiscardCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC endpoint that accepts and drops spans, counting them."""

    def __init__(self) -> None:
        self.spans = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def Export(self, request, context):  # gRPC's name
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


#: ``--hops``: the paced runs also say how long after its produce each hop wrote a reading's records.
HOP_TIMES = False

#: ``--worker-env``: settings every mantis-stream worker of the run gets (the caller's MANTIS_* are not passed on).
WORKER_ENV: dict[str, str] = {}


def worker_env(broker: EmbeddedBroker, env: dict[str, str], app_id: str, root: Path) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    full.update(MANTIS_BROKER=broker.url, MANTIS_APP_ID=app_id or f"bench-{uuid.uuid4().hex[:6]}", MANTIS_WEB_PORT=str(free_port()),
                PYTHONPATH=str(root), **WORKER_ENV, **env)
    return full


def start_worker(app_module: str, broker: EmbeddedBroker, env: dict[str, str], log: Path, app_id: str = "",
                 root: Path = ROOT) -> subprocess.Popen:
    """One worker of ``app_module``, importing the code under ``root`` (this checkout, or a baseline revision)."""
    return subprocess.Popen([sys.executable, "-m", "faust", "-A", app_module, "worker", "-l", "info", "--without-web"],
                            cwd=root, env=worker_env(broker, env, app_id, root), stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def start_workers(n: int, broker: EmbeddedBroker, env: dict[str, str], log: Path, app_id: str, root: Path) -> subprocess.Popen:
    """``mantis-stream workers N``, as a user would scale out on one machine."""
    return subprocess.Popen([sys.executable, "-m", "mantis_stream", "workers", str(n), "--without-web"],
                            cwd=root, env=worker_env(broker, env, app_id, root), stdout=open(log, "wb"), stderr=subprocess.STDOUT)


QUIX_DETECTORS = {"quix/river": "river", "quix/mantis-detector": "mantis"}


def start_quix(contender: str, broker: EmbeddedBroker, workdir: Path, log: Path) -> subprocess.Popen:
    """``bench/quix_app.py`` with the contender's detector, its state store in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    env.update(PYTHONPATH=str(ROOT), OTEL_SDK_DISABLED="true", OTEL_TRACES_EXPORTER="none")
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "quix_app.py"), broker.bootstrap,
                             f"bench-quix-{uuid.uuid4().hex[:6]}", str(workdir / "state"),
                             "--detector", QUIX_DETECTORS[contender]],
                            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


async def wait_ready(proc: subprocess.Popen, log: Path, timeout: float = 90.0, count: int = 1) -> None:
    """Until ``log`` says ``Ready`` ``count`` times (once per worker)."""
    deadline = time.time() + timeout
    while log.read_text(errors="replace").count("Ready") < count:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"worker not ready:\n{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descendants(pid: int) -> list[int]:
    """``pid``'s live child processes, theirs, and so on (a worker's span export process, ``workers N``'s workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *descendants(child)]
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes and their live descendants used so far (all threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in {p for top in pids for p in (top, *descendants(top))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mib(pid: int) -> float:
    """RSS of ``pid``; of its children instead when it is the ``workers`` supervisor (their sum)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if children and "workers" in Path(f"/proc/{pid}/cmdline").read_text():
            return sum(rss_mib(c) for c in children)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


RELAY_SCRIPT = """
import asyncio, sys, orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
hops = sys.argv[2].split(",")
async def hop(src, dst, producer):
    c = AIOKafkaConsumer(src, bootstrap_servers=sys.argv[1], group_id="relay-" + src, auto_offset_reset="earliest",
                         session_timeout_ms=6000, heartbeat_interval_ms=1000, max_partition_fetch_bytes=8 << 20)
    await c.start()
    while True:
        for records in (await c.getmany(timeout_ms=100, max_records=5000)).values():
            for r in records:
                v = orjson.loads(r.value)
                await producer.send(dst, orjson.dumps(v), key=r.key or v["asset_id"].encode(), headers=r.headers)
async def main():
    p = AIOKafkaProducer(bootstrap_servers=sys.argv[1], linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20)
    await p.start()
    print("Ready", flush=True)
    await asyncio.gather(*(hop(a, b, p) for a, b in zip(hops, hops[1:])))
asyncio.run(main())
"""


async def run_one(contender: str, readings: list[dict], collector: DiscardCollector, rate: float | None = None,
                  soak: float = 0.0, baseline: Path | None = None) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="mantis-bench-"))
    log = workdir / "worker.log"
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_EXPORTER": "otlp"}
    all_on = workdir / "all.json"
    all_on.write_text(json.dumps({"default_strategy": {"type": "probabilistic", "param": 1.0}}))
    envs = {
        "mantis/off": {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"},
        "mantis/shipped": otlp,
        "mantis/shipped-thread": {**otlp, "MANTIS_TRACING_EXPORT": "thread"},
        "mantis/100%": {**otlp, "MANTIS_SAMPLING_STRATEGIES": str(all_on)},
        "naive": otlp,
    }
    spans_before = collector.spans
    with EmbeddedBroker() as broker:
        broker.create_topics(list(names.ALL_TOPICS), PARTITIONS)
        if contender == "relay":
            proc = subprocess.Popen([sys.executable, "-c", RELAY_SCRIPT, broker.bootstrap, ",".join(RELAY_HOPS)],
                                    stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            await wait_ready(proc, log)
            await asyncio.sleep(8)  # the relay's four groups join
            procs = [proc]
        elif contender.startswith("quix/"):
            proc = start_quix(contender, broker, workdir, log)
            await wait_ready(proc, log)
            procs = [proc]
        else:
            module = "bench.naive_app" if contender == "naive" else "mantis_stream"
            name, _, copies = contender.partition(" x")
            n = int(copies or 1)
            root = ROOT
            if name.startswith("baseline/"):
                if baseline is None:
                    raise SystemExit(f"{contender}: needs --baseline-rev")
                root, name = baseline, "mantis/" + name.removeprefix("baseline/")
            app_id = f"bench-{uuid.uuid4().hex[:6]}"
            if n > 1 and module == "mantis_stream" and (root / "mantis_stream" / "supervisor.py").exists():
                procs = [start_workers(n, broker, envs[name], log, app_id, root)]
                await wait_ready(procs[0], log, count=n)
            else:
                logs = [log] + [workdir / f"worker-{i}.log" for i in range(1, n)]
                procs = [start_worker(module, broker, envs[name], path, app_id, root) for path in logs]
                for p, path in zip(procs, logs):
                    await wait_ready(p, path)
            if n > 1:  # every worker recovered after the last rebalance, with its share of partitions
                await asyncio.sleep(10)
            proc = procs[0]
        try:
            expected = expected_outputs(readings, contender)
            duration = soak or 0.0
            rss: list[tuple[float, float]] = []
            if soak:
                reps = int(rate * soak / len(readings)) + 1
                readings = (readings * reps)[: int(rate * soak)]
                expected = expected_outputs(readings, contender)

                async def sample() -> None:
                    t0 = time.time()
                    while time.time() - t0 < duration + 30:
                        rss.append((time.time() - t0, rss_mib(proc.pid)))
                        await asyncio.sleep(30)
                sampler = asyncio.create_task(sample())
            drain_task = asyncio.create_task(drain(broker.bootstrap, expected, timeout=max(300.0, duration * 2)))
            cpu_before = cpu_seconds([p.pid for p in procs])
            start = await produce(broker.bootstrap, readings, rate)
            last, latencies = await drain_task
            cpu_used = cpu_seconds([p.pid for p in procs]) - cpu_before
            hops = await hop_latencies(broker.bootstrap) if HOP_TIMES and rate and contender != "relay" else {}
            if soak:
                sampler.cancel()
            done = len(latencies)
            lat = np.percentile(latencies, [50, 95, 99]) if latencies else [float("nan")] * 3
            row = {"contender": contender, "readings": len(readings), "outputs": done, "expected": expected,
                   "readings_per_s": len(readings) / (last - start) if done >= expected else float("nan"),
                   "p50": lat[0], "p95": lat[1], "p99": lat[2], "rss_mib": rss_mib(proc.pid), "rss_series": rss,
                   "cpu_ms_per_reading": cpu_used / len(readings) * 1e3, "hops": hops}
        finally:
            for p in procs:
                stop(p)
        await asyncio.sleep(1.0)  # the worker's last export reaches the collector
        text = "\n".join(path.read_text(errors="replace") for path in workdir.glob("worker*.log"))
        row["spans_per_reading"] = (collector.spans - spans_before) / len(readings)
        row["dropped"] = sum(int(m) for m in re.findall(r"(\d+) span\(s\) were dropped in total", text))
        row["too_long"] = text.count("exceeds max length")
        return row


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def baseline_worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` in a temporary directory (removed at the end of the run)."""
    path = Path(tempfile.mkdtemp(prefix="mantis-baseline-")) / "tree"
    git("worktree", "add", "--detach", str(path), rev)
    return path


def table(rows: list[dict], title: str) -> str:
    off = next((r for r in rows if r["contender"] == "mantis/off"), None)
    off_rate = off["readings_per_s"] if off else float("nan")
    off_cpu = off["cpu_ms_per_reading"] if off else float("nan")
    out = [title, f"{'contender':<22}{'readings':>10}{'outputs':>10}{'readings/s':>12}{'vs off':>8}{'CPU ms/rd':>10}{'vs off':>8}"
                  f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'RSS MiB':>9}{'spans/rd':>9}{'dropped':>9}{'>1024':>7}"]
    for r in rows:
        out.append(f"{r['contender']:<22}{r['readings']:>10}{r['outputs']:>10}{r['readings_per_s']:>12.0f}"
                   f"{(r['readings_per_s'] / off_rate - 1) * 100:>+7.0f}%"
                   f"{r['cpu_ms_per_reading']:>10.3f}{(r['cpu_ms_per_reading'] / off_cpu - 1) * 100:>+7.0f}%"
                   f"{r['p50'] * 1e3:>9.0f}{r['p95'] * 1e3:>9.0f}{r['p99'] * 1e3:>9.0f}{r['rss_mib']:>9.0f}"
                   f"{r['spans_per_reading']:>9.2f}{r['dropped']:>9}{r['too_long']:>7}")
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="readings per run")
    parser.add_argument("--kinds", default="scalar,waveform,mixed")
    parser.add_argument("--contenders", default="relay,naive,mantis/off,mantis/shipped,mantis/100%")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="samples per waveform chunk")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of soak at half the peak rate (0: none)")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="also run git revision REV of mantis-stream (contender baseline/off, or baseline/shipped, "
                             "baseline/100%%, baseline/off xN in --contenders) from a temporary worktree")
    parser.add_argument("--assets", type=int, default=ASSETS, help="assets the readings are spread over")
    parser.add_argument("--no-latency", action="store_true", help="skip the paced latency run")
    parser.add_argument("--pace", type=float, default=0.0, metavar="R",
                        help="run the paced latency runs at R readings/s instead of half each contender's peak")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="set NAME=VALUE in every mantis-stream worker (repeatable), e.g. MANTIS_BATCH_WITHIN=0.2")
    parser.add_argument("--hops", action="store_true",
                        help="paced runs: also the time from produce to each hop's write (p50/p99 per topic)")
    args = parser.parse_args()
    global HOP_TIMES
    HOP_TIMES = args.hops
    WORKER_ENV.update(pair.split("=", 1) for pair in args.worker_env)
    contenders = args.contenders.split(",")
    if args.baseline_rev and not any(c.startswith("baseline/") for c in contenders):
        contenders.append("baseline/off")
    collector = DiscardCollector()
    collector.server.start()
    rng = np.random.default_rng(1)
    baseline = None
    try:
        baseline = baseline_worktree(args.baseline_rev) if args.baseline_rev else None
        for kind in args.kinds.split(","):
            readings = make_readings(kind, args.n, rng, args.chunk, args.assets)
            rows = []
            for contender in contenders:
                rows.append(await run_one(contender, [dict(r) for r in readings], collector, baseline=baseline))
                print(f"  {kind} {contender}: {rows[-1]['readings_per_s']:.0f} readings/s", file=sys.stderr, flush=True)
            print(table(rows, f"\n{kind}: {args.n} readings, {args.assets} assets, peak rate (produce as fast as possible)"))
            if kind != "scalar":
                print(f"vibration samples/s ({args.chunk} per chunk): " + ", ".join(
                    f"{r['contender']} {samples_per_s(readings, r) / 1e3:.0f} k" for r in rows))
            by = {r["contender"]: r["readings_per_s"] for r in rows}
            if not args.no_latency:
                for contender, peak in by.items():
                    if contender.startswith(("mantis/", "baseline/")) and " x" not in contender:
                        rate = args.pace or peak / 2
                        paced = await run_one(contender, [dict(r) for r in readings], collector, rate=rate, baseline=baseline)
                        print(table([paced], f"{kind}: {contender}, latency at {rate:.0f} readings/s"
                                             f"{'' if args.pace else ' (half its peak)'}"))
                        for topic, lat in paced["hops"].items():
                            if lat:
                                p50, p99 = np.percentile(lat, [50, 99]) * 1e3
                                print(f"  written to {topic:<32} p50 {p50:6.0f} ms  p99 {p99:6.0f} ms  ({len(lat)} records)")
        if args.soak:
            readings = make_readings("mixed", args.n, rng, args.chunk)
            peak = (await run_one("mantis/shipped", [dict(r) for r in readings], collector))["readings_per_s"]
            soak = await run_one("mantis/shipped", [dict(r) for r in readings], collector, rate=peak / 2, soak=args.soak)
            print(table([soak], f"\nsoak: {args.soak:.0f} s of mixed readings at {peak / 2:.0f} readings/s"))
            print("RSS MiB over time: " + ", ".join(f"{t:.0f}s={m:.0f}" for t, m in soak["rss_series"]))
        print(f"\nspans received by the discard collector: {collector.spans}")
        if baseline:
            print(f"baseline: {args.baseline_rev} = {git('rev-parse', '--short', args.baseline_rev)}")
    finally:
        collector.server.stop(0)
        if baseline:
            git("worktree", "remove", "--force", str(baseline))


if __name__ == "__main__":
    asyncio.run(main())
