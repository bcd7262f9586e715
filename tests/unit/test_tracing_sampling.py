"""The Jaeger-strategies sampler: each rule kind, statistically where it is random.

Tolerances: with n draws of a Bernoulli(p), the observed rate is within
5 standard deviations (sqrt(p(1-p)/n)) of p except with probability < 1e-6;
the draws use random trace ids, so the tests are not flaky in practice.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mantis_stream import tracing
from mantis_stream.settings import CONFIG_DIR, DEFAULT_SERVICES, Settings
from mantis_stream.tracing.sampling import (
    RateLimiter,
    StrategiesFileError,
    StrategySampler,
    load_strategies,
    parse_strategies,
)

N = 10_000

DOC = {
    "default_strategy": {
        "type": "probabilistic",
        "param": 0.1,
        "operation_strategies": [{"operation": "GET /health", "type": "probabilistic", "param": 0.01}],
    },
    "service_strategies": [
        {
            "service": "svc-a",
            "type": "probabilistic",
            "param": 0.5,
            "operation_strategies": [{"operation": "POST /api/v1/ingest", "type": "probabilistic", "param": 0.2}],
        },
        {"service": "svc-rate", "type": "ratelimiting", "param": 5},
        {"service": "svc-full", "type": "probabilistic", "param": 1.0},
    ],
}


def rate(sampler: StrategySampler, name: str, n: int = N, parent_context: Context | None = None, **kw) -> float:
    rng = random.Random(1234)
    hits = 0
    for _ in range(n):
        r = sampler.should_sample(parent_context, rng.getrandbits(128), name, **kw)
        hits += r.decision is Decision.RECORD_AND_SAMPLE
    return hits / n


def assert_rate(observed: float, p: float, n: int = N) -> None:
    tolerance = 5 * math.sqrt(p * (1 - p) / n) + 1e-9
    assert abs(observed - p) <= tolerance, (observed, p, tolerance)


def parent(sampled: bool, *, remote: bool = True) -> Context:
    sc = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=remote, trace_flags=TraceFlags(0x01 if sampled else 0x00)
    )
    return trace.set_span_in_context(NonRecordingSpan(sc))


@pytest.fixture
def strategies():
    return parse_strategies(DOC)


def test_probabilistic_service(strategies) -> None:
    s = StrategySampler.for_service("svc-a", strategies)
    assert_rate(rate(s, "process mantis.readings"), 0.5)


def test_per_operation(strategies) -> None:
    s = StrategySampler.for_service("svc-a", strategies)
    assert_rate(rate(s, "POST /api/v1/ingest"), 0.2)
    # default_strategy.operation_strategies apply to every service
    assert_rate(rate(s, "GET /health"), 0.01)


def test_default_strategy_for_unknown_service(strategies) -> None:
    s = StrategySampler.for_service("not-in-file", strategies)
    assert_rate(rate(s, "anything"), 0.1)
    assert_rate(rate(s, "GET /health"), 0.01)


def test_rate_limiting_with_a_fake_clock(strategies) -> None:
    now = [100.0]
    s = StrategySampler.for_service("svc-rate", strategies, clock=lambda: now[0])
    decisions = []
    for _ in range(200):  # 200 roots over 10 s at 20/s: 5/s allowed, burst of 5
        decisions.append(s.should_sample(None, random.getrandbits(128), "op").decision)
        now[0] += 0.05
    sampled = sum(d is Decision.RECORD_AND_SAMPLE for d in decisions)
    assert 50 <= sampled <= 56  # 5/s * 10 s, plus the initial burst
    limiter = RateLimiter(2, clock=lambda: 0.0)
    assert [limiter.allow() for _ in range(3)] == [True, True, False]


def test_same_trace_id_same_decision(strategies) -> None:
    a = StrategySampler.for_service("svc-a", strategies)
    b = StrategySampler.for_service("svc-a", strategies)
    rng = random.Random(7)
    for _ in range(2000):
        tid = rng.getrandbits(128)
        assert a.should_sample(None, tid, "x").decision is b.should_sample(None, tid, "x").decision
    # and a lower-probability operation keeps a subset of what a higher one keeps
    for _ in range(2000):
        tid = rng.getrandbits(128)
        if a.should_sample(None, tid, "POST /api/v1/ingest").decision is Decision.RECORD_AND_SAMPLE:
            assert a.should_sample(None, tid, "x").decision is Decision.RECORD_AND_SAMPLE


def test_parent_based(strategies) -> None:
    s = StrategySampler.for_service("not-in-file", strategies)  # 10% as a root
    assert rate(s, "op", n=500, parent_context=parent(True)) == 1.0
    assert rate(s, "op", n=500, parent_context=parent(False)) == 0.0
    assert rate(s, "op", n=500, parent_context=parent(False, remote=False)) == 0.0


def test_a_100_percent_service_follows_an_unsampled_parent(strategies) -> None:
    """ParentBased: a service's strategy applies where it starts a trace, never under a parent."""
    full = StrategySampler.for_service("svc-full", strategies)
    assert rate(full, "process mantis.features", n=200, parent_context=parent(False)) == 0.0
    assert rate(full, "process mantis.features", n=200, parent_context=parent(False, remote=False)) == 0.0
    assert rate(full, "process mantis.features", n=200) == 1.0  # as a root


def test_per_operation_strategies_apply_to_roots_only() -> None:
    st = parse_strategies(
        {
            "service_strategies": [
                {
                    "service": "orch",
                    "type": "probabilistic",
                    "param": 0.0,
                    "operation_strategies": [{"operation": "send mantis.work-orders", "param": 1.0}],
                }
            ]
        }
    )
    s = StrategySampler.for_service("orch", st)
    assert s.should_sample(parent(False, remote=False), 1, "send mantis.work-orders").decision is Decision.DROP
    assert s.should_sample(None, 1, "send mantis.work-orders").decision is Decision.RECORD_AND_SAMPLE
    assert s.should_sample(None, 1, "send mantis.anomalies").decision is Decision.DROP


def test_an_outcome_is_sampled_in_an_unsampled_trace(strategies) -> None:
    s = StrategySampler.for_service("svc-a", strategies)
    r = s.should_sample(parent(False), 1, "process x", attributes={"mantis.sampling.reason": "anomaly", "asset.id": "P"})
    assert r.decision is Decision.RECORD_AND_SAMPLE
    assert dict(r.attributes) == {"mantis.sampling.reason": "anomaly", "asset.id": "P"}


def test_error_is_sampled_even_in_unsampled_trace(strategies) -> None:
    s = StrategySampler.for_service("not-in-file", strategies)
    r = s.should_sample(parent(False), 1, "process x", attributes={"error.type": "ValueError"})
    assert r.decision is Decision.RECORD_AND_SAMPLE
    assert r.attributes["mantis.sampling.reason"] == "error"
    r = s.should_sample(None, (1 << 64) - 1, "process x", attributes={"error.type": "ValueError"})
    assert r.decision is Decision.RECORD_AND_SAMPLE


def test_root_spans_keep_their_attributes_and_carry_the_sampler_tags(strategies) -> None:
    s = StrategySampler.for_service("svc-a", strategies)
    r = s.should_sample(None, 0, "POST /api/v1/ingest", attributes={"http.route": "/api/v1/ingest"})
    assert dict(r.attributes) == {"http.route": "/api/v1/ingest", "sampler.type": "probabilistic", "sampler.param": 0.2}
    r = s.should_sample(parent(True), 0, "child", attributes={"asset.id": "P"})
    assert dict(r.attributes) == {"asset.id": "P"}
    r = s.should_sample(parent(False), 0, "e", attributes={"asset.id": "P", "error.type": "X"})
    assert dict(r.attributes) == {"asset.id": "P", "error.type": "X", "mantis.sampling.reason": "error"}


def test_attributes_reach_the_exported_span_through_the_strategy_sampler() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter)  # the shipped file: anomaly detection at 100%
    try:
        tracer = tracing.stage_tracer("anomaly-detection")
        with tracer.start_as_current_span("predict_anomaly", attributes={"asset.id": "PUMP-7"}):
            with tracer.start_as_current_span("child", attributes={"model.name": "hst"}):
                pass
        child, root = exporter.get_finished_spans()
        assert root.attributes["asset.id"] == "PUMP-7" and root.attributes["sampler.param"] == 1.0
        assert dict(child.attributes) == {"model.name": "hst"}
    finally:
        tracing.shutdown()


def test_shipped_strategies_file() -> None:
    st = load_strategies(CONFIG_DIR / "sampling-strategy.json")
    svc = {stage: st.for_service(name) for stage, name in DEFAULT_SERVICES.items()}
    assert svc["ingestion"].probability_for("anything") == 0.5
    assert svc["ingestion"].probability_for("POST /api/v1/ingest") == 0.2
    assert svc["ingestion"].probability_for("GET /health") == 0.01
    assert svc["preprocessing"].probability_for("process mantis.readings") == 0.3
    assert svc["feature-extraction"].probability_for("compute_fft") == 0.3
    assert svc["anomaly-detection"].probability_for("process mantis.features") == 1.0
    assert svc["rul-prediction"].probability_for("process mantis.features") == 1.0
    assert svc["orchestrator"].probability_for("process mantis.anomalies") == 0.8
    assert svc["orchestrator"].probability_for("send mantis.work-orders") == 1.0
    assert svc["orchestrator"].probability_for("create_work_order") == 1.0
    assert st.for_service("someone-else").probability_for("x") == 0.1


def test_builtin_copy_equals_the_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mantis_stream.tracing import sampling, setup

    assert json.loads((CONFIG_DIR / "sampling-strategy.json").read_text()) == sampling.SHIPPED_STRATEGIES
    # the default path missing (a wheel has no config/): the built-in copy is used
    monkeypatch.setattr(setup, "_DEFAULT_STRATEGIES_PATH", tmp_path / "absent.json")
    st = setup._strategies_for(Settings(sampling_strategies=tmp_path / "absent.json"))
    assert st.source == "<built-in>" and st.for_service("mantis-orchestrator").probability_for("create_work_order") == 1.0
    # a path somebody chose is never silently replaced
    with pytest.raises(StrategiesFileError):
        setup._strategies_for(Settings(sampling_strategies=tmp_path / "typo.json"))


def test_through_configure_each_stage_uses_its_service_strategy() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter)  # the shipped file
    try:
        counts = {}
        for stage, p in (("preprocessing", 0.3), ("anomaly-detection", 1.0), ("storage", 0.1)):
            tracer = tracing.stage_tracer(stage)
            n = 4000
            hits = 0
            for _ in range(n):
                with tracer.start_as_current_span("root", context=Context()) as span:
                    hits += span.get_span_context().trace_flags.sampled
            counts[stage] = hits
            assert_rate(hits / n, p, n)
        assert len(exporter.get_finished_spans()) == sum(counts.values())
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "cannot read"),
        ("{not json", "not a valid"),
        ('{"default_strategy": {"type": "sometimes", "param": 1}}', "not 'probabilistic'"),
        ('{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 2}]}', "not in [0, 1]"),
        (
            '{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 0.5,'
            ' "operation_strategies": [{"operation": "x", "type": "ratelimiting", "param": 3}]}]}',
            "probabilistic only",
        ),
    ],
)
def test_unusable_file_is_one_clear_line(tmp_path: Path, content, words) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StrategiesFileError) as err:
        load_strategies(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("MANTIS_SAMPLING_STRATEGIES=") and words in message
    with pytest.raises(StrategiesFileError):
        tracing.configure(Settings(sampling_strategies=path), InMemorySpanExporter())


def test_ratelimiting_service_in_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(DOC))
    st = load_strategies(path)
    assert st.for_service("svc-rate").strategy.type == "ratelimiting"
    assert st.for_service("svc-rate").probability_for("x") is None
