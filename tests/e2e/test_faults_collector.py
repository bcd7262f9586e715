"""The OTLP collector is down or hangs: the pipeline keeps processing.

Why: tracing is an observer; a dead or stuck collector must never stall the
stages or lose readings.  Each case runs the same small fixed load (readings
with a sampled ``traceparent``, so spans are really exported) and asserts only
that every output arrives, the worker is still running and stops when told;
the elapsed times (collector down / hanging vs tracing off) are printed for the
report, not asserted (shared machine).
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import uuid

import orjson
import pytest

from mantis_stream import topics as names
from mantis_stream.demo.broker import free_port

from conftest import collect, produce

N = 120


class HangingServer:
    """Accepts TCP connections and never answers (a stuck collector or proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.conns) < 1000:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)  # hold it open, read nothing

    def __enter__(self) -> HangingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


async def run_load(broker, start_worker, env: dict[str, str]) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    worker = await start_worker(env=env)
    asset = f"OT{uuid.uuid4().hex[:6]}"
    values = [orjson.dumps({"asset_id": asset, "sensor_id": f"T{i % 4}", "ts": 1_790_000_000 + i, "value": 20.0 + (i % 5)})
              for i in range(N)]
    headers = [[("traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode())] for _ in range(N)]
    started = time.monotonic()
    await produce(broker.bootstrap, names.READINGS, values, headers=headers)

    def done(found: dict) -> bool:
        return sum(v["asset_id"] == asset for v, _, _ in found[names.ANOMALIES]) >= N

    found = await collect(broker.bootstrap, (names.ANOMALIES,), done, timeout=150)
    elapsed = time.monotonic() - started
    assert worker.proc.poll() is None, "the worker must keep running"
    scores = {(v["sensor_id"], v["ts"]) for v, _, _ in found[names.ANOMALIES] if v["asset_id"] == asset}
    assert len(scores) == N, "every reading scored"
    return elapsed, worker


def stop_time(worker) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    worker.stop(timeout=40)
    return time.monotonic() - started


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_collector_down_or_hanging_does_not_stall_the_pipeline(broker, start_worker, protocol: str) -> None:
    off, worker = await run_load(broker, start_worker, {"OTEL_TRACES_EXPORTER": "none"})
    stop_off = stop_time(worker)

    down_port = free_port()  # nothing listens there
    scheme = "http"
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"{scheme}://127.0.0.1:{down_port}", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}
    down, worker = await run_load(broker, start_worker, env)
    stop_down = stop_time(worker)
    assert worker.proc.returncode is not None

    with HangingServer() as hang:
        env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"{scheme}://127.0.0.1:{hang.port}"}
        hung, worker = await run_load(broker, start_worker, env)
        stop_hung = stop_time(worker)
        assert hang.conns, "the exporter did try the hanging collector"
    print(f"\n[{protocol}] {N} readings: tracing off {off:.1f} s (stop {stop_off:.1f} s), "
          f"collector down {down:.1f} s (stop {stop_down:.1f} s), collector hanging {hung:.1f} s (stop {stop_hung:.1f} s)")
    # The worker stopped on SIGTERM by itself (not killed after the grace period).
    assert stop_hung < 40
