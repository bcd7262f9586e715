"""End to end on the real broker: a sustained departure opens one work order that says why;
``mantis-stream maintenance done`` resolves it and recommissions the asset's monitors, in one trace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import orjson

from mantis_stream import topics as names
from mantis_stream.tracing.filelog import read_spans

from conftest import collect, produce

COMMISSIONING = 300  # REFERENCE_DEFAULTS["warmup"]


def scalar(asset: str, i: int, value: float) -> bytes:
    return orjson.dumps({"asset_id": asset, "sensor_id": "TMP-1", "ts": 1_790_000_000 + i, "value": value, "unit": "degC"})


async def test_work_order_says_why_and_maintenance_resolves_it(broker, start_worker, tmp_path):
    asset = f"MNT{uuid.uuid4().hex[:6]}"
    trace_file = tmp_path / "spans.jsonl"
    # RUL work orders are the RUL stage's business: thresholds at 0 keep them out of this test.
    worker = await start_worker(env={"MANTIS_ANOMALY_PERSISTENCE": "3", "MANTIS_TRACE_FILE": str(trace_file),
                                     "MANTIS_RUL_THRESHOLD_SECONDS": "0", "MANTIS_RUL_THRESHOLD_CYCLES": "0"})
    mine = lambda item: item[0].get("asset_id") == asset  # noqa: E731

    healthy = [scalar(asset, i, 60.0 + 0.2 * ((i * 7) % 5)) for i in range(COMMISSIONING + 50)]
    hot = [scalar(asset, COMMISSIONING + 50 + i, 90.0 + 0.2 * (i % 5)) for i in range(40)]  # 1.5x the reference
    await produce(broker.bootstrap, names.READINGS, healthy + hot)
    found = await collect(broker.bootstrap, (names.WORK_ORDERS,),
                          lambda f: any(mine(i) for i in f[names.WORK_ORDERS]))
    orders = [v for v, _, _ in found[names.WORK_ORDERS] if mine((v,))]
    assert len(orders) == 1, orders
    order = orders[0]
    assert order["reason"] == "persistent_anomaly" and order["action"] == "open"
    assert "TMP-1" in order["why"] and "mean" in order["why"] and "x reference" in order["why"]
    top = order["evidence"]["features"][0]
    assert top["feature"] == "mean" and top["factor"] > 1.25 and top["severity"] >= 1.0

    env = {**worker.env, "PYTHONPATH": os.pathsep.join(sys.path), "MANTIS_TRACE_FILE": str(trace_file)}
    done = subprocess.run([sys.executable, "-m", "mantis_stream", "maintenance", "done", asset, "--note", "sensor replaced"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cli_trace = done.stdout.rsplit("(trace ", 1)[1].rstrip(")\n")

    found = await collect(broker.bootstrap, (names.WORK_ORDERS,),
                          lambda f: any(mine(i) and i[0]["action"] == "resolve" for i in f[names.WORK_ORDERS]))
    resolved = [v for v, _, _ in found[names.WORK_ORDERS] if mine((v,)) and v["action"] == "resolve"]
    assert len(resolved) == 1 and resolved[0]["work_order_id"] == order["work_order_id"]
    assert "sensor replaced" in resolved[0]["why"]
    assert resolved[0]["trace_id"] == cli_trace, "the resolution is in the maintenance command's trace"

    # The monitor commissions again: the next scores are not warm, and the hot level is the new reference.
    after = [scalar(asset, COMMISSIONING + 100 + i, 90.0) for i in range(5)]
    await produce(broker.bootstrap, names.READINGS, after)
    found = await collect(broker.bootstrap, (names.ANOMALIES,),
                          lambda f: len([i for i in f[names.ANOMALIES] if mine(i)]) >= len(healthy) + len(hot) + len(after))
    last = [v for v, _, _ in found[names.ANOMALIES] if mine((v,))][-5:]
    assert all(not a["warm"] and a["score"] == 0.0 for a in last)

    # A maintenance message without an asset is a dead letter naming the field; the agents keep running.
    await produce(broker.bootstrap, names.MAINTENANCE, [orjson.dumps({"action": "done", "note": asset})])
    found = await collect(broker.bootstrap, (names.DEAD_LETTERS,),
                          lambda f: any(asset in str(i[0].get("payload")) for i in f[names.DEAD_LETTERS]))
    letters = [v for v, _, _ in found[names.DEAD_LETTERS] if asset in str(v.get("payload"))]
    assert {v["error"]["field"] for v in letters} == {"asset_id"} and len(letters) == 2  # one per consuming agent
    assert worker.proc.poll() is None

    for _ in range(40):  # spans are exported in batches
        spans = read_spans(trace_file).spans
        if {"create_work_order", "resolve_work_order", "reset_reference"} <= {s.name for s in spans}:
            break
        await asyncio.sleep(0.5)
    by_name = {s.name: s for s in spans if s.attributes.get("asset.id") == asset}
    create = by_name["create_work_order"]
    assert create.attributes["work_order.reason"] == "persistent_anomaly"
    assert create.attributes["work_order.why"] == order["why"][:256]
    assert "feature_departure" in trace_file.read_text(), "each departed feature is an event of the span"
    assert by_name["resolve_work_order"].trace_id == cli_trace
    assert by_name["reset_reference"].trace_id == cli_trace
    assert any(s.service == "mantis-maintenance" and s.trace_id == cli_trace for s in spans)
