"""Sampling from a Jaeger-format strategies file: per service, per operation, with a default.

Why this exists
===============

Jaeger lets operators say "keep 100% of anomaly detection, 30% of feature
extraction, 1% of health checks" in one JSON file that its collector also
serves for remote sampling.  OpenTelemetry Python has no Jaeger remote
sampler, so :class:`StrategySampler` reads the same file (the path in
``MANTIS_SAMPLING_STRATEGIES``) and applies it locally, one sampler per stage
service.

Rules, in order (``should_sample``): ParentBased, with the strategies file as
the root sampler, and outcome-based keeping.

1. A span that starts with ``error.type`` or ``mantis.sampling.reason`` is
   always sampled: an error, an anomaly at or over its threshold or a work
   order inside an unsampled trace is still recorded, in the same trace id
   (:func:`~mantis_stream.tracing.spans.keep` starts such a span).
2. With a parent: follow its decision (W3C, B3 and Jaeger headers alike), except
   for a B3 parent without a sampling state ("defer", see
   :func:`~mantis_stream.tracing.carriers.is_deferred`), decided by rule 3 in the
   parent's trace id.
3. A root: the operation's probabilistic strategy if the service (or the
   default strategy) names the operation, else the service's strategy
   (probabilistic or rate limiting), else the default strategy.  A service's
   strategy therefore applies where that service starts a trace: for readings
   without context, preprocessing (or ingestion for HTTP) decides for the whole
   pipeline.

Probabilistic decisions are deterministic on the trace id (the low 64 bits,
like ``TraceIdRatioBased``): the same trace id gets the same decision in every
stage and process.  Rate limiting is a token bucket per service
(``param`` traces per second, burst ``max(param, 1)``).

Notes
=====

* Service names in the file are the Jaeger service names
  (``mantis-ingestion`` ...), i.e. ``settings.services[stage]``.
* Operation strategies are probabilistic only (Jaeger's format); a service's
  own operation strategies win over ``default_strategy.operation_strategies``.
* A file that cannot be read or parsed raises :class:`StrategiesFileError`
  whose one-line message names ``MANTIS_SAMPLING_STRATEGIES``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes

from ..stages import STAGES, Stage
from . import semconv
from .carriers import is_deferred

__all__ = [
    "DEFAULT_STRATEGY", "PROBABILISTIC", "RATELIMITING", "SHIPPED_STRATEGIES", "Strategy", "ServiceStrategy", "Strategies",
    "StrategiesFileError", "StrategySampler", "RateLimiter", "load_strategies", "parse_strategies", "shipped_strategies",
]

PROBABILISTIC = "probabilistic"
RATELIMITING = "ratelimiting"
ENV_VAR = "MANTIS_SAMPLING_STRATEGIES"
_TRACE_ID_LIMIT = (1 << 64) - 1


#: The strategy of every service and operation the stages do not name.
DEFAULT_STRATEGY: dict[str, Any] = {
    "type": PROBABILISTIC, "param": 0.1,
    "operation_strategies": [{"operation": "GET /health", "type": PROBABILISTIC, "param": 0.01}],
}


def shipped_strategies(stages: Sequence[Stage] = STAGES) -> dict[str, Any]:
    """The stages' default sampling in Jaeger's format (a stage without its own rate gets the default)."""
    services: list[dict[str, Any]] = []
    for stage in stages:
        if stage.sampling is None:
            continue
        entry: dict[str, Any] = {"service": stage.service, "type": PROBABILISTIC, "param": stage.sampling}
        if stage.operations:
            entry["operation_strategies"] = [
                {"operation": name, "type": PROBABILISTIC, "param": param} for name, param in stage.operations
            ]
        services.append(entry)
    return {"service_strategies": services, "default_strategy": DEFAULT_STRATEGY}


#: What ``config/sampling-strategy.json`` holds (kept equal by a test), used
#: when the default path does not exist (an installed wheel has no ``config/``).
SHIPPED_STRATEGIES: dict[str, Any] = shipped_strategies()


class StrategiesFileError(ValueError):
    """The sampling strategies file cannot be read or is not valid."""


@dataclass(frozen=True)
class Strategy:
    type: str
    param: float

    def describe(self) -> str:
        return f"{self.type}:{self.param:g}"


@dataclass(frozen=True)
class ServiceStrategy:
    """What applies to one service: its strategy and its operations' probabilities."""

    strategy: Strategy
    operations: Mapping[str, float] = field(default_factory=dict)

    def probability_for(self, operation: str) -> float | None:
        """The effective probability for ``operation``, or None when rate limited."""
        p = self.operations.get(operation)
        if p is not None:
            return p
        return self.strategy.param if self.strategy.type == PROBABILISTIC else None


@dataclass(frozen=True)
class Strategies:
    default: Strategy
    default_operations: Mapping[str, float]
    services: Mapping[str, tuple[Strategy, Mapping[str, float]]]
    source: str = "<memory>"

    def for_service(self, service: str) -> ServiceStrategy:
        own = self.services.get(service)
        ops = dict(self.default_operations)
        if own is None:
            return ServiceStrategy(self.default, ops)
        ops.update(own[1])
        return ServiceStrategy(own[0], ops)


def _strategy(obj: Mapping[str, Any], where: str) -> Strategy:
    kind = str(obj.get("type", PROBABILISTIC)).lower().replace("_", "").replace("-", "")
    if kind not in (PROBABILISTIC, RATELIMITING):
        raise ValueError(f"{where}: type {obj.get('type')!r} is not 'probabilistic' or 'ratelimiting'")
    try:
        param = float(obj["param"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: 'param' must be a number") from None
    if kind == PROBABILISTIC and not 0.0 <= param <= 1.0:
        raise ValueError(f"{where}: probabilistic param {param} is not in [0, 1]")
    if kind == RATELIMITING and (param < 0 or not math.isfinite(param)):
        raise ValueError(f"{where}: ratelimiting param {param} must be >= 0")
    return Strategy(kind, param)


def _operations(items: Any, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, op in enumerate(items or ()):
        name = op.get("operation") if isinstance(op, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.operation_strategies[{i}]: missing 'operation'")
        strategy = _strategy(op, f"{where}.operation_strategies[{i}] ({name})")
        if strategy.type != PROBABILISTIC:
            raise ValueError(f"{where}.operation_strategies[{i}] ({name}): operation strategies are probabilistic only")
        out[name] = strategy.param
    return out


def parse_strategies(doc: Mapping[str, Any], source: str = "<memory>") -> Strategies:
    """Parse a Jaeger strategies document (already decoded JSON)."""
    if not isinstance(doc, Mapping):
        raise ValueError("the document is not a JSON object")
    default_obj = doc.get("default_strategy") or {"type": PROBABILISTIC, "param": 0.001}
    default = _strategy(default_obj, "default_strategy")
    default_ops = _operations(default_obj.get("operation_strategies"), "default_strategy")
    services: dict[str, tuple[Strategy, Mapping[str, float]]] = {}
    for i, svc in enumerate(doc.get("service_strategies") or ()):
        name = svc.get("service") if isinstance(svc, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"service_strategies[{i}]: missing 'service'")
        where = f"service_strategies[{i}] ({name})"
        strategy = _strategy(svc, where) if "param" in svc else default
        services[name] = (strategy, _operations(svc.get("operation_strategies"), where))
    return Strategies(default, default_ops, services, source)


def load_strategies(path: str | Path) -> Strategies:
    """Read the strategies file; any problem is one :class:`StrategiesFileError` line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StrategiesFileError(
            f"{ENV_VAR}={str(path)!r}: cannot read the sampling strategies file: {exc.strerror or exc}"
        ) from None
    try:
        return parse_strategies(json.loads(text), str(path))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise StrategiesFileError(
            f"{ENV_VAR}={str(path)!r}: not a valid Jaeger sampling strategies file: {exc}"
        ) from None


class RateLimiter:
    """Token bucket: ``rate`` credits a second, at most ``max(rate, 1)`` banked. Thread-safe."""

    def __init__(self, rate: float, *, clock: Any = time.monotonic) -> None:
        self.rate = float(rate)
        self.capacity = max(self.rate, 1.0)
        self._clock = clock
        self._balance = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._balance = min(self.capacity, self._balance + (now - self._last) * self.rate)
            self._last = now
            if self._balance >= 1.0:
                self._balance -= 1.0
                return True
            return False


def _ratio_bound(p: float) -> int:
    return round(p * (_TRACE_ID_LIMIT + 1))


def trace_id_sampled(trace_id: int, p: float) -> bool:
    """Deterministic probabilistic decision on a trace id (TraceIdRatioBased's rule)."""
    if p >= 1.0:
        return True
    if p <= 0.0:
        return False
    return (trace_id & _TRACE_ID_LIMIT) < _ratio_bound(p)


_SAMPLE = Decision.RECORD_AND_SAMPLE
_DROP = Decision.DROP
_REASON_ERROR = {semconv.SAMPLING_REASON: "error"}


def _result(decision: Decision, attributes: Attributes, extra: Mapping[str, Any], trace_state: Any) -> SamplingResult:
    merged = dict(attributes) if attributes else {}
    merged.update(extra)
    return SamplingResult(decision, merged, trace_state)


class StrategySampler(Sampler):
    """The sampler of one service, from its :class:`ServiceStrategy`."""

    def __init__(self, service: str, strategy: ServiceStrategy, *, clock: Any = time.monotonic) -> None:
        self.service = service
        self.strategy = strategy
        self.limiter = RateLimiter(strategy.strategy.param, clock=clock) if strategy.strategy.type == RATELIMITING else None
        self._ops_attrs = {
            op: {semconv.SAMPLER_TYPE: PROBABILISTIC, semconv.SAMPLER_PARAM: p} for op, p in strategy.operations.items()
        }
        self._svc_attrs = {semconv.SAMPLER_TYPE: strategy.strategy.type, semconv.SAMPLER_PARAM: strategy.strategy.param}

    @classmethod
    def for_service(cls, service: str, strategies: Strategies, **kw: Any) -> StrategySampler:
        return cls(service, strategies.for_service(service), **kw)

    def probability_for(self, operation: str) -> float | None:
        return self.strategy.probability_for(operation)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        # The SDK gives the span the attributes of the SamplingResult (not the
        # ones passed in), so they are passed through, plus this sampler's own.
        parent = get_current_span(parent_context).get_span_context()
        parent_state = parent.trace_state if parent.is_valid else None
        if attributes:
            if semconv.ERROR_TYPE in attributes:
                return _result(_SAMPLE, attributes, _REASON_ERROR, parent_state)
            if semconv.SAMPLING_REASON in attributes:
                return SamplingResult(_SAMPLE, attributes, parent_state)
        if parent.is_valid and not is_deferred(parent_context, parent):
            if parent.trace_flags.sampled:
                return SamplingResult(_SAMPLE, attributes, parent_state)
            return SamplingResult(_DROP, None, parent_state)
        p = self.strategy.operations.get(name)
        if p is not None:
            sampled = trace_id_sampled(trace_id, p)
            tags = self._ops_attrs[name]
        elif self.limiter is not None:
            sampled = self.limiter.allow()
            tags = self._svc_attrs
        else:
            sampled = trace_id_sampled(trace_id, self.strategy.strategy.param)
            tags = self._svc_attrs
        if not sampled:
            return SamplingResult(_DROP, None, parent_state)
        return _result(_SAMPLE, attributes, tags, parent_state)

    def get_description(self) -> str:
        return f"JaegerStrategySampler{{{self.service}, {self.strategy.strategy.describe()}, ops={len(self.strategy.operations)}}}"
