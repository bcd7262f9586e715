"""The shims over libraries' private APIs (mantis_stream._compat): version checks, and each shim on the installed version."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import secrets
import signal
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.worker import Worker
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from mantis_stream._compat import faust as faust_compat
from mantis_stream._compat import otel as otel_compat
from mantis_stream._compat import river as river_compat
from mantis_stream._compat.check import check_tested_versions
from mantis_stream._compat.versions import UntestedVersion, installed_version, require

MODULES = {"faust": faust_compat, "otel": otel_compat, "river": river_compat}


@pytest.mark.parametrize("name", MODULES)
def test_the_installed_versions_are_tested_ones(name: str) -> None:
    require(MODULES[name].TESTED)


@pytest.mark.parametrize("name", MODULES)
def test_a_version_outside_the_tested_ones_fails_naming_the_library_and_version(name: str) -> None:
    for tested in MODULES[name].TESTED:
        with pytest.raises(UntestedVersion) as info:
            require(MODULES[name].TESTED, lambda d, t=tested: "99.0" if d == t.distribution else installed_version(d))
        assert f"{tested.distribution} 99.0 is installed" in str(info.value)
        assert f"{tested.distribution}{tested.versions}" in str(info.value)


def test_the_worker_start_check_stops_in_one_line_naming_each_untested_library() -> None:
    check_tested_versions()  # the installed ones pass
    with pytest.raises(SystemExit) as info:
        check_tested_versions(lambda d: "0.1" if d in ("river", "aiokafka") else installed_version(d))
    message = str(info.value)
    assert message.startswith("mantis-stream: ") and "\n" not in message
    assert "river 0.1 is installed" in message and "aiokafka 0.1 is installed" in message
    assert "opentelemetry-sdk" not in message


def test_pyproject_requires_the_tested_versions() -> None:
    """pip must not install a version the worker then refuses to start with."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    required = {r.name: r.specifier for r in map(Requirement, pyproject["project"]["dependencies"])}
    for module in MODULES.values():
        for tested in module.TESTED:
            assert required.get(tested.distribution) == SpecifierSet(tested.versions), tested.distribution


# -- OpenTelemetry SDK ----------------------------------------------------------


def test_the_batch_queue_shim_reaches_the_sdk_processors_queue() -> None:
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=8, schedule_delay_millis=60_000, max_export_batch_size=4)
    queue = otel_compat.batch_queue(processor)
    assert queue.max_size == 8 and len(queue.queue) == 0
    queue.emit(("a lean span record",))
    assert len(queue.queue) == 1
    queue.shutdown(1_000)
    assert exporter.get_finished_spans() == (("a lean span record",),)  # exported by the shutdown's last batch


# -- river ------------------------------------------------------------------------


def test_planted_trees_are_river_trees_and_their_state_round_trips() -> None:
    forest = river_compat.half_space_trees(n_trees=3, height=4, window_size=8, seed=5)
    river_compat.plant_trees(forest, ("a", "b"))
    points = [{"a": 0.1 * (i % 9), "b": 0.5} for i in range(20)]
    for x in points[:12]:
        forest.learn_one(x)
    window, masses = river_compat.forest_state(forest)
    assert window == (4, False) and masses is not None and masses.shape == (3 * (2**5 - 1), 2)
    check = river_compat.split_checksum(forest)
    clone = river_compat.restore_forest((3, 4, 8, 5), ("a", "b"), window, masses, check)
    for x in points[12:]:
        assert clone.score_one(x) == forest.score_one(x)
        clone.learn_one(x)
        forest.learn_one(x)
    with pytest.raises(ValueError, match="river version's trees"):
        river_compat.restore_forest((3, 4, 8, 6), ("a", "b"), window, masses, check)  # another seed: other splits


def test_a_forest_before_its_first_point_has_no_masses() -> None:
    forest = river_compat.half_space_trees(n_trees=2, height=3, window_size=8, seed=1)
    assert river_compat.forest_state(forest) == ((0, True), None)


# -- Faust, mode, aiokafka -----------------------------------------------------------


def _as_the_library_defines_it(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
    """``owner.name`` unwrapped for the test (app.py may have installed the shim), as it was afterwards."""
    method = getattr(owner, name)
    monkeypatch.setattr(owner, name, getattr(method, "__wrapped__", method))


def test_the_replaced_methods_exist_with_the_signatures_the_shims_call() -> None:
    def params(method: Any) -> list[str]:
        return list(inspect.signature(method).parameters)  # a shim's: the library's (__wrapped__)

    assert params(Recovery._build_highwaters) == ["self", "consumer", "tps", "destination", "title"]
    assert params(Recovery._resume_streams) == ["self", "generation_id"]
    assert params(Recovery.on_recovery_completed) == ["self", "generation_id"]
    assert params(AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    assert params(Worker._schedule_shutdown) == ["self", "signal"]


async def test_the_resume_hook_runs_before_faust_resumes_and_installs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def resume(self: object, generation_id: int = 0) -> None:
        calls.append(f"resume {generation_id}")

    for name in ("_resume_streams", "on_recovery_completed"):
        monkeypatch.setattr(Recovery, name, resume)
    for _ in range(2):
        faust_compat.before_stream_resume(lambda recovery: calls.append("hook"))
    await Recovery._resume_streams(object(), 3)  # type: ignore[arg-type]
    await Recovery.on_recovery_completed(object(), 4)  # type: ignore[arg-type]
    assert calls == ["hook", "resume 3", "hook", "resume 4"]


async def test_the_highwater_fix_runs_after_faust_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    async def build(self: object, consumer: object, tps: set[str], destination: Counter[str], title: str) -> None:
        destination.update({tp: 10 for tp in tps})

    async def fix(recovery: object, tps: set[str], destination: Counter[str]) -> None:
        destination["t-0"] += 1

    monkeypatch.setattr(Recovery, "_build_highwaters", build)
    faust_compat.after_highwaters(fix)  # type: ignore[arg-type]  # str partitions stand in for TPs
    faust_compat.after_highwaters(fix)  # type: ignore[arg-type]
    highwaters: Counter[str] = Counter()
    await Recovery._build_highwaters(object(), None, {"t-0", "t-1"}, highwaters, "Active")  # type: ignore[arg-type]
    assert highwaters == {"t-0": 11, "t-1": 10}


async def test_the_worker_consumer_asks_for_the_shorter_fetch_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_the_library_defines_it(monkeypatch, AIOKafkaConsumerThread, "_create_worker_consumer")
    app = faust.App("compat-test", broker="kafka://127.0.0.1:9", store="memory://")
    thread = app.consumer._thread
    assert isinstance(thread, AIOKafkaConsumerThread)
    before = thread._create_worker_consumer(app.transport)
    assert isinstance(before, AIOKafkaConsumer) and before._fetch_max_wait_ms == 1500
    faust_compat.worker_fetch_max_wait(100)
    faust_compat.worker_fetch_max_wait(100)
    after = thread._create_worker_consumer(app.transport)
    assert isinstance(after, AIOKafkaConsumer) and after._fetch_max_wait_ms == 100
    for consumer in (before, after):
        await consumer.stop()


def test_the_apps_aiokafka_producer_is_reached_through_the_shim() -> None:
    app = faust.App(f"compat-{secrets.token_hex(3)}", broker="kafka://127.0.0.1:1")
    assert callable(getattr(app.producer, "_ensure_producer", None))  # what the shim reaches for, on this Faust

    class Started:
        def _ensure_producer(self) -> str:
            return "the aiokafka producer"

    assert faust_compat.aiokafka_producer(Started()) == "the aiokafka producer"
    with pytest.raises(UntestedVersion, match="_ensure_producer"):
        faust_compat.aiokafka_producer(object())


async def test_the_first_stop_signal_calls_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_the_library_defines_it(monkeypatch, Worker, "_schedule_shutdown")
    calls: list[int] = []
    faust_compat.on_first_stop_signal(lambda: calls.append(1))
    worker = Worker(loop=asyncio.get_running_loop())
    worker._starting_fut = None
    worker._schedule_shutdown(signal.SIGTERM)
    worker._schedule_shutdown(signal.SIGINT)
    await worker._signal_stop_future
    assert calls == [1]


def test_the_worker_runs_the_version_check_at_start() -> None:
    from mantis_stream import runtime

    assert importlib.import_module("mantis_stream.app").app is not None  # building the app registers its start checks
    assert check_tested_versions in runtime._start_checks
