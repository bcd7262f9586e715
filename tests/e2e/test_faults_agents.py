"""An agent that crashes (a bug, MemoryError) loses nothing: its batch is processed again.

Why: ``take_events`` acked a batch in a ``finally``, so when an agent died on a
batch Faust restarted it past that batch, whose readings were lost.  The crash
is injected with ``MANTIS_TEST_FAULT`` (``agents._replay``): once in
``preprocess`` (raw readings) and once in ``anomaly`` (a batched hop read by two
agents).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from mantis_stream import topics as names

from conftest import PARTITIONS, collect, produce

READINGS = 12


async def wait_committed_to_end(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> None:
    """Wait until ``group`` has committed every partition of ``topic`` to its end: no offset is held back."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
                return
            assert time.monotonic() < deadline, f"commits held back: {committed} < {ends}"
            await asyncio.sleep(1.0)
    finally:
        await admin.close()
        await consumer.stop()


async def test_a_crashed_agents_batch_is_processed_again_after_its_restart(broker, start_worker) -> None:
    tag = uuid.uuid4().hex[:6]
    calm, first, second = f"CALM{tag}", f"CRASHPRE{tag}", f"CRASHANO{tag}"
    worker = await start_worker(env={"MANTIS_TEST_FAULT": f"preprocess:{first},anomaly:{second}"})
    readings = [orjson.dumps({"asset_id": asset, "sensor_id": "TMP", "ts": 1_790_000_000 + i, "value": 20.0 + i})
                for i in range(READINGS) for asset in (calm, first, second)]
    await produce(broker.bootstrap, names.READINGS, readings)

    mine = {calm, first, second}

    def count(found: dict, topic: str) -> dict[str, int]:
        counts = dict.fromkeys(mine, 0)
        for value, _, _ in found[topic]:
            if value.get("asset_id") in mine:
                counts[value["asset_id"]] += 1
        return counts

    def done(found: dict) -> bool:
        return all(n >= READINGS for n in count(found, names.ANOMALIES).values())

    found = await collect(broker.bootstrap, (names.FEATURES, names.ANOMALIES, names.DEAD_LETTERS), done, timeout=120)
    log = worker.log()
    assert worker.proc.poll() is None
    # both crashes happened, and each agent was restarted by Faust
    assert f"crash injected by MANTIS_TEST_FAULT on b'{first}'" in log
    assert f"crash injected by MANTIS_TEST_FAULT on b'{second}'" in log
    assert log.count("was restarted after a crash; processing its batch") == 2, log[-4000:]
    assert log.count("Restarting dead <Agent*") == 2
    # every reading has its window features and its anomaly score: nothing skipped
    assert count(found, names.FEATURES) == dict.fromkeys(mine, READINGS)
    assert count(found, names.ANOMALIES) == dict.fromkeys(mine, READINGS)
    assert not [v for v, _, _ in found[names.DEAD_LETTERS] if any(a in v["payload"] for a in mine)]
    # and the replayed batches were acked: the group's commits reach the end of the input
    await wait_committed_to_end(broker.bootstrap, worker.app_id, names.READINGS)


async def test_a_message_that_crashes_its_agent_every_time_becomes_one_dead_letter(broker, start_worker) -> None:
    tag = uuid.uuid4().hex[:6]
    calm, poison = f"CALM{tag}", f"POISON{tag}"
    worker = await start_worker(env={"MANTIS_TEST_FAULT": f"preprocess:{poison}:99"})
    readings = [orjson.dumps({"asset_id": calm, "sensor_id": "TMP", "ts": 1_790_000_000 + i, "value": 20.0 + i})
                for i in range(READINGS)]
    bad = orjson.dumps({"asset_id": poison, "sensor_id": "TMP", "ts": 1_790_000_000, "value": 1.0})
    await produce(broker.bootstrap, names.READINGS, [*readings[:6], bad, *readings[6:]], key=b"same-partition")

    def done(found: dict) -> bool:
        calm_features = [v for v, _, _ in found[names.FEATURES] if v["asset_id"] == calm]
        letters = [v for v, _, _ in found[names.DEAD_LETTERS] if poison in v["payload"]]
        return len(calm_features) >= READINGS and len(letters) >= 1

    found = await collect(broker.bootstrap, (names.FEATURES, names.DEAD_LETTERS), done, timeout=120)
    await asyncio.sleep(3)  # time for a second letter, were there to be one
    found = await collect(broker.bootstrap, (names.FEATURES, names.DEAD_LETTERS), done, timeout=60)
    [letter] = [v for v, _, _ in found[names.DEAD_LETTERS] if poison in v["payload"]]
    assert letter["error"]["type"] == "StageCrashed" and letter["stage"] == "preprocessing"
    assert letter["source"]["topic"] == names.READINGS
    assert len([v for v, _, _ in found[names.FEATURES] if v["asset_id"] == calm]) == READINGS
    log = worker.log()
    # the whole batch twice, then the poison alone: three crashes, then the agent carries on
    assert log.count("Restarting dead <Agent*: mantis_stream.agent[.]preprocess>") == 3, log[-4000:]
    assert worker.proc.poll() is None
    await wait_committed_to_end(broker.bootstrap, worker.app_id, names.READINGS)
