"""The W3C fast paths read and write exactly what the OpenTelemetry propagators would, and step aside otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from mantis_stream.tracing import carriers, items
from mantis_stream.tracing.setup import reload_propagators

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.fixture(autouse=True)
def _propagators(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    reload_propagators()
    yield
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    reload_propagators()


def by_propagators(carrier: dict[str, str]) -> SpanContext:
    return trace.get_current_span(propagate.extract(carrier, Context())).get_span_context()


@pytest.mark.parametrize("carrier", [
    {"traceparent": f"00-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{SPAN}-00"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=abc,other=1"},
])
def test_a_plain_traceparent_reads_as_the_propagator_reads_it(carrier: dict[str, str]) -> None:
    ctx = items.w3c_context(carrier)
    assert ctx is not None
    assert trace.get_current_span(ctx).get_span_context() == by_propagators(carrier)


@pytest.mark.parametrize("traceparent", [
    f"00-{TRACE.upper()}-{SPAN}-01",  # upper case
    f"00-{TRACE[:-2]}_1-{SPAN}-01",  # int() would take the underscore
    f"ff-{TRACE}-{SPAN}-01",  # forbidden version
    f"01-{TRACE}-{SPAN}-01",  # another version: the propagator decides
    f"00-{'0' * 32}-{SPAN}-01",  # zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # zero span id
    f"00-{TRACE}-{SPAN}-01-extra",
])
def test_anything_but_a_plain_version_00_header_goes_to_the_propagators(traceparent: str) -> None:
    assert items.w3c_context({"traceparent": traceparent}) is None


def test_other_headers_or_propagators_go_to_the_propagators(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    assert items.w3c_context({**plain, "baggage": "k=v"}) is None
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,b3multi")
    reload_propagators()
    assert items.w3c_context(plain) is None


def context_of(flags: int, state: str | None = None) -> Context:
    sc = SpanContext(int(TRACE, 16), int(SPAN, 16), is_remote=False, trace_flags=TraceFlags(flags),
                     trace_state=TraceState.from_header([state]) if state else None)
    return trace.set_span_in_context(NonRecordingSpan(sc), Context())


@pytest.mark.parametrize("ctx", [context_of(1), context_of(0), context_of(1, "vendor=abc"), Context()])
def test_headers_are_written_as_the_propagators_write_them(ctx: Context) -> None:
    expected: dict[str, str] = {}
    propagate.inject(expected, ctx)
    assert carriers.w3c_carrier(ctx) == expected
    headers: list = [("traceparent", b"stale"), ("other", b"kept")]
    carriers.inject_replacing(headers, ctx)
    assert headers == [("other", b"kept")] + [(k, v.encode()) for k, v in expected.items()]


def test_baggage_or_other_propagators_are_left_to_the_propagators(monkeypatch: pytest.MonkeyPatch) -> None:
    with_baggage = baggage.set_baggage("tenant", "t1", context_of(1))
    assert carriers.w3c_carrier(with_baggage) is None
    assert items.carrier_of(with_baggage)["baggage"] == "tenant=t1"
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,b3")
    reload_propagators()
    assert carriers.w3c_carrier(context_of(1)) is None
    assert "b3" in items.carrier_of(context_of(1))


@pytest.mark.parametrize("headers", [None, [], {}])
def test_no_headers_is_the_empty_context_the_propagators_return(headers: object) -> None:
    assert carriers.extract(headers) == propagate.extract(headers or {}, Context()) == Context()
