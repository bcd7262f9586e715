"""The pipeline's stages, declared once: name, Jaeger service, agents, topics, default sampling.

Why: a stage's identity is needed in several places (agent modules, the
sensors' agent -> stage map, the default service names, the shipped sampling
strategies) that must agree; spelt once here, everything else derives from
:data:`STAGES`: :data:`AGENT_STAGES` (which service a consumed message is
reported under), ``settings.DEFAULT_SERVICES`` and
``tracing.sampling.SHIPPED_STRATEGIES`` (``config/sampling-strategy.json``).
Pure data: importing it builds no app and imports no Faust.

Adding a stage: one :class:`Stage` line here, one agent module (see
``docs/architecture.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import topics as t

__all__ = ["AGENT_STAGES", "STAGES", "Agent", "Stage", "by_name"]


@dataclass(frozen=True, slots=True)
class Agent:
    """One Faust agent of a stage: its name (``@app.agent(name=...)``), the topics it reads, what it writes."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stage:
    """A service in Jaeger and a label in the metrics; its agents run in every worker.

    ``sampling`` is the probability of keeping a trace the stage starts (None:
    the strategies' default); ``operations`` overrides it per span name.  Every
    stage may also write ``mantis.dead-letters``.
    """

    name: str
    service: str
    agents: tuple[Agent, ...] = ()
    sampling: float | None = None
    operations: tuple[tuple[str, float], ...] = ()
    #: Topics written outside any agent (the HTTP ingest, a command).
    produces: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(topic for agent in self.agents for topic in agent.inputs))

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.produces, *(topic for agent in self.agents for topic in agent.outputs)]))


STAGES: tuple[Stage, ...] = (
    Stage("ingestion", "mantis-ingestion", sampling=0.5, produces=(t.READINGS,),
          operations=(("POST /api/v1/ingest", 0.2), ("GET /health", 0.01))),
    Stage("preprocessing", "mantis-preprocessing", sampling=0.3, agents=(
        Agent("preprocess", (t.READINGS,), (t.READINGS_KEYED,)),
        Agent("frame", (t.READINGS_KEYED,), (t.FRAMES,)),
    )),
    Stage("feature-extraction", "mantis-feature-extraction", sampling=0.3, agents=(
        Agent("features", (t.FRAMES,), (t.FEATURES, t.FEATURE_BATCHES)),
    )),
    Stage("anomaly-detection", "mantis-anomaly-detection", sampling=1.0, agents=(
        Agent("anomaly", (t.FEATURE_BATCHES,), (t.ANOMALIES, t.ASSESSMENTS)),
        Agent("maintenance-anomaly", (t.MAINTENANCE,)),
    )),
    Stage("rul-prediction", "mantis-rul-prediction", sampling=1.0, agents=(
        Agent("rul", (t.FEATURE_BATCHES,), (t.RUL, t.ASSESSMENTS)),
    )),
    Stage("orchestrator", "mantis-orchestrator", sampling=0.8, agents=(
        Agent("orchestrator", (t.ASSESSMENTS,), (t.WORK_ORDERS,)),
        Agent("maintenance-orders", (t.MAINTENANCE,), (t.WORK_ORDERS,)),
    ), operations=(("send mantis.work-orders", 1.0), ("create_work_order", 1.0), ("escalate_work_order", 1.0),
                   ("resolve_work_order", 1.0))),
    Stage("storage", "mantis-storage", agents=(  # registered only when its database is configured
        Agent("sink-postgres", (t.ANOMALIES, t.RUL, t.WORK_ORDERS)),
        Agent("sink-influx", (t.FEATURES, t.ANOMALIES, t.RUL)),
    )),
    Stage("maintenance", "mantis-maintenance", sampling=1.0, produces=(t.MAINTENANCE,)),
)

_BY_NAME = {stage.name: stage for stage in STAGES}

#: Agent name -> stage name: the service a consumed message is reported under.
AGENT_STAGES: dict[str, str] = {agent.name: stage.name for stage in STAGES for agent in stage.agents}


def by_name(name: str) -> Stage:
    """The stage called ``name``; a typo fails at import of the agent module, not at the first record."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r} in mantis_stream.stages.STAGES") from None

