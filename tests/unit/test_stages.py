"""The stage registry is the one place a stage is declared: the app, services, strategies and topics agree with it."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

from mantis_stream import agents, stages, topics
from mantis_stream.pipeline import app
from mantis_stream.settings import CONFIG_DIR, DEFAULT_SERVICES
from mantis_stream.tracing import sampling
from mantis_stream.tracing.stage_map import StageMap


def test_every_agent_of_the_app_is_declared_with_the_topics_it_reads() -> None:
    registered = {agent.name.rsplit(".", 1)[-1]: set(agent.channel.topics) for agent in app.agents.values()}
    declared = {agent.name: set(agent.inputs) for stage in stages.STAGES for agent in stage.agents}
    assert {name: declared.get(name) for name in registered} == registered
    # the storage agents exist only when their database is configured
    missing = set(declared) - set(registered)
    assert {stages.AGENT_STAGES[name] for name in missing} <= {"storage"}, missing


def test_every_agent_module_names_a_declared_stage() -> None:
    modules = [importlib.import_module(f"mantis_stream.agents.{info.name}")
               for info in pkgutil.iter_modules(agents.__path__) if not info.name.startswith("_")]
    assert len(modules) >= 8
    for module in modules:
        assert stages.by_name(module.STAGE).name == module.STAGE, module.__name__


def test_services_and_shipped_strategies_derive_from_the_stages() -> None:
    assert DEFAULT_SERVICES == {stage.name: stage.service for stage in stages.STAGES}
    assert len(set(DEFAULT_SERVICES.values())) == len(stages.STAGES)
    shipped = json.loads((CONFIG_DIR / "sampling-strategy.json").read_text())
    assert shipped == sampling.SHIPPED_STRATEGIES
    strategies = sampling.parse_strategies(shipped, "config/sampling-strategy.json")
    for stage in stages.STAGES:
        service = strategies.for_service(stage.service)
        assert service.probability_for("process x") == (stage.sampling or 0.1), stage.name
        for operation, param in stage.operations:
            assert service.probability_for(operation) == param, (stage.name, operation)


def test_every_topic_is_read_or_written_by_a_stage() -> None:
    read = {topic for stage in stages.STAGES for topic in stage.inputs}
    written = {topic for stage in stages.STAGES for topic in stage.outputs}
    assert read | written | {topics.DEAD_LETTERS} == set(topics.ALL_TOPICS)
    assert set(topics.BATCHED) <= read & written  # a batched hop runs between two of our own agents


def test_an_unknown_stage_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="no stage 'anomaly'"):
        stages.by_name("anomaly")
    assert stages.by_name("rul-prediction").inputs == (topics.FEATURE_BATCHES,)


def test_agent_names_map_to_their_stage_qualified_or_not() -> None:
    mapped = StageMap(stages.AGENT_STAGES, "ingestion")
    assert mapped.of_agent("mantis_stream.agents.anomaly.anomaly") == "anomaly-detection"
    assert mapped.of_agent("frame") == "preprocessing"
    assert mapped.of_agent("somebody.elses") == "elses"
    assert mapped.of_agent("") == "ingestion"


def test_the_architecture_page_names_every_stage_and_agent() -> None:
    page = (CONFIG_DIR.parent / "docs" / "architecture.md").read_text()
    for stage in stages.STAGES:
        assert f"({stage.name})" in page or f'"{stage.name}"' in page, stage.name
        for agent in stage.agents:
            assert agent.name in page, agent.name
