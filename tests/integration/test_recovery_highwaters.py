"""A recovery reads each changelog partition to its real end, even when ``ListOffsets`` answers one short.

Tansu 0.6.0 sometimes reports a partition's latest offset one record short
(until the next write to it); Faust stops its recovery there, so after a
restart a table came back without its last record (a sensor's pending samples
lost).  The broker's behaviour is not reproducible on demand, so the short
answer is played by the wrapped ``ListOffsets`` step; the fetch that corrects
it runs against the real broker.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.types import TP

from mantis_stream import recovery

from conftest import produce


@pytest.mark.parametrize(("records", "expected"), [
    (3, 2),  # offsets 0-2, ListOffsets says the last is 1: one short, corrected
    (2, 1),  # offsets 0-1, ListOffsets right: left alone
])
async def test_recovery_reads_to_the_last_record_the_broker_holds(broker, monkeypatch: pytest.MonkeyPatch, records: int, expected: int) -> None:
    topic = f"hw-{uuid.uuid4().hex[:8]}-changelog"
    broker.create_topics([topic], 1)
    await produce(broker.bootstrap, topic, [b"x"] * records)
    tp = TP(topic, 0)

    async def list_offsets(self: Recovery, consumer: object, tps: set, destination: dict, title: str) -> None:
        for t in tps:
            destination[t] = 1  # "the last offset is 1": what Tansu answered at times with a third record stored

    monkeypatch.setattr(Recovery, "_build_highwaters", list_offsets)
    recovery.read_highwaters_from_fetch()
    app = faust.App(f"hw-{uuid.uuid4().hex[:6]}", broker=broker.url)
    highwaters: dict = {}
    await Recovery._build_highwaters(SimpleNamespace(app=app), None, {tp}, highwaters, "active")
    assert highwaters == {tp: expected}
