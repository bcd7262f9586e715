"""Which stage a consumed message belongs to: one answer for the tracing and the metrics sensors.

Why: Jaeger's service and the metrics' ``stage`` label of a message must be the
same stage, so both sensors resolve it here, from ``stages.AGENT_STAGES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.agents.agent import current_agent

__all__ = ["StageMap"]

#: Most agent names whose stage is remembered (the app's own are a handful).
MAX_CACHED = 256


class StageMap:
    """Agent name -> stage, with the lookups cached (they run for every consumed message)."""

    def __init__(self, stages: Mapping[str, str], default: str) -> None:
        self.stages = dict(stages)
        self.default = default
        self._cache: dict[str, str] = {}

    def of_agent(self, name: str) -> str:
        """The stage of ``name`` (Faust may qualify it with its module path), else its short name, else the default."""
        stage = self._cache.get(name)
        if stage is None:
            short = name.rsplit(".", 1)[-1]
            stage = self.stages.get(name) or self.stages.get(short) or short or self.default
            if len(self._cache) < MAX_CACHED:
                self._cache[name] = stage
        return stage

    def of_stream(self, stream: Any) -> str:
        """The stage of the agent reading ``stream`` (``stream.prefix`` is its name)."""
        prefix = getattr(stream, "prefix", "") or ""
        if not prefix:  # e.g. agent.test_context(): the stream has no prefix, the task knows its agent
            prefix = getattr(current_agent(), "name", "") or ""
        return self.of_agent(prefix)
