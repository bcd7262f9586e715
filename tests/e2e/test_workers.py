"""``mantis-stream workers N`` on the real broker: N processes, one consumer group, stopped together.

Why: the command is how one machine uses more cores.  The workers must join
one group (each input partition read by exactly one of them), each serve its
own web port, process a burst completely between them, and all stop when the
supervisor gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from mantis_stream import topics as names
from mantis_stream.supervisor import worker_commands

from conftest import PARTITIONS, ROOT, collect, produce

pytestmark = pytest.mark.broker

N = 2
READINGS = 400


def free_port_pair() -> int:
    """A port P with P and P + 1 both free (the workers' web ports)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports")


def readings_partitions(port: int) -> set[int]:
    """Partitions of mantis.readings this worker is assigned, from its consumer-lag metric."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', line)) for line in text.splitlines() if line.startswith("mantis_consumer_lag{")]
    return {int(la["partition"]) for la in labels if la.get("topic") == names.READINGS}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_commands_give_each_worker_its_port_and_data_dir(tmp_path: Path) -> None:
    cmds = worker_commands(3, web_port=7000, datadir=tmp_path, without_web=True)
    assert [env["MANTIS_WEB_PORT"] for _, env in cmds] == ["7000", "7001", "7002"]
    assert [cmd[cmd.index("--datadir") + 1] for cmd, _ in cmds] == [str(tmp_path / f"worker-{i}") for i in range(3)]
    assert all(cmd[-1] == "--without-web" for cmd, _ in cmds)
    with pytest.raises(ValueError, match="N must be >= 1"):
        worker_commands(0, web_port=7000, datadir=tmp_path)


async def test_two_workers_share_the_partitions_and_process_a_burst(broker, tmp_path: Path) -> None:
    port = free_port_pair()
    app_id = f"mantis-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTIS_", "OTEL_"))}
    env.update(MANTIS_BROKER=broker.url, MANTIS_APP_ID=app_id, MANTIS_WEB_PORT=str(port), MANTIS_PARTITIONS=str(PARTITIONS),
               OTEL_TRACES_EXPORTER="none", PYTHONUNBUFFERED="1", PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)))
    log_path = tmp_path / "workers.log"
    log = open(log_path, "wb")
    sup = subprocess.Popen([sys.executable, "-m", "mantis_stream", "workers", str(N)], cwd=tmp_path, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while log_path.read_text(errors="replace").count("Ready") < N:
            assert sup.poll() is None, f"supervisor exited with {sup.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"workers not ready:\n{log_path.read_text()[-4000:]}"
            await asyncio.sleep(0.5)
        pids = [int(p) for p in re.search(r"started \d+ \(pids ([\d, ]+);", log_path.read_text()).group(1).split(", ")]
        assert len(pids) == N and all(alive(p) for p in pids)

        values = [orjson.dumps({"asset_id": f"W-{i % 20}", "sensor_id": "TMP", "ts": 1_790_000_000.0 + i,
                                "value": 60.0 + (i % 7) * 0.1}) for i in range(READINGS)]
        await produce(broker.bootstrap, names.READINGS, values)
        found = await collect(broker.bootstrap, (names.ANOMALIES,),
                              lambda f: len({(v["asset_id"], v["ts"]) for v, _, _ in f[names.ANOMALIES]}) >= READINGS,
                              timeout=180)
        assert len({(v["asset_id"], v["ts"]) for v, _, _ in found[names.ANOMALIES]}) == READINGS

        shares = [readings_partitions(port + i) for i in range(N)]
        assert all(shares), f"a worker has no partition of mantis.readings: {shares}"
        assert not shares[0] & shares[1], f"a partition read by both workers: {shares}"
        assert shares[0] | shares[1] == set(range(PARTITIONS)), shares
    finally:
        sup.send_signal(signal.SIGTERM)
        code = sup.wait(timeout=60)
    assert code == 0, log_path.read_text()[-4000:]
    assert not any(alive(p) for p in pids), "a worker outlived the supervisor"


def test_a_worker_that_exits_stops_the_set_with_its_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTIS_BROKER_PROFILE", "nonsense")  # every worker refuses to start, with exit code 1
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", str(ROOT)))
    from mantis_stream.supervisor import supervise

    started = time.monotonic()
    assert supervise(2, web_port=7000, datadir=tmp_path / "data", stop_timeout=10) == 1
    assert time.monotonic() - started < 120
    assert (tmp_path / "data").is_dir()
