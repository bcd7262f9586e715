"""Traces without Jaeger: the OTLP JSON-lines file exporter and what ``mantis-stream trace show|list`` renders.

The commands themselves run in a subprocess in ``tests/integration/test_trace_cli.py``.

``fixtures/traces/pipeline.jsonl`` was recorded from a real worker on the local
broker (``MANTIS_TRACE_FILE``, ``OTEL_TRACES_SAMPLER=always_on``), keeping four
traces: ``…abc024`` (a C-MAPSS-like cycle through every stage, with a work
order), ``…abc025`` (the same without one), ``…abc028`` (a reading whose value
is a string: dead letter, error spans) and a one-span trace.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from mantis_stream.commands.trace import build_tree, critical_path, render_list, render_waterfall, summarize
from mantis_stream.tracing import setup
from mantis_stream.tracing.export_process import FanOutExporter
from mantis_stream.tracing.filelog import FileSpanExporter, SpanRecord, read_spans

FIXTURE = Path(__file__).parents[1] / "fixtures" / "traces" / "pipeline.jsonl"
WORK_ORDER_TRACE = "00000000000000000000000000abc024"
ERROR_TRACE = "00000000000000000000000000abc028"


def span(sid: str, parent: str, start: int, end: int, service: str = "svc", name: str | None = None) -> SpanRecord:
    return SpanRecord("t" * 32, sid, parent, name or sid, service, start, end)


# -- the file exporter -----------------------------------------------------------------------


def test_file_exporter_writes_one_otlp_json_request_per_line(tmp_path):
    path = tmp_path / "spans.jsonl"
    exporter = FileSpanExporter(path)
    provider = TracerProvider(resource=Resource.create({"service.name": "mantis-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child", attributes={"asset.id": "P-1", "n": 3}) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    lines = path.read_bytes().splitlines()
    assert len(lines) == 2  # a SimpleSpanProcessor exports each span on its own
    request = orjson.loads(lines[0])
    otlp_span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert otlp_span["name"] == "child"
    # OTLP/JSON: ids as lowercase hex, not protobuf's base64; enums as integers
    assert otlp_span["traceId"] == format(parent.get_span_context().trace_id, "032x")
    assert otlp_span["spanId"] == format(child.get_span_context().span_id, "016x")
    assert otlp_span["parentSpanId"] == format(parent.get_span_context().span_id, "016x")
    assert otlp_span["status"]["code"] == 2 and otlp_span["kind"] == 1

    spans = {s.name: s for s in read_spans(path).spans}
    assert spans["child"].service == "mantis-test"
    assert spans["child"].error and spans["child"].status_message == "boom"
    assert spans["child"].attributes == {"asset.id": "P-1", "n": 3}
    assert spans["child"].parent_id == spans["parent"].span_id and not spans["parent"].error


def test_mantis_trace_file_selects_the_file_exporter(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("MANTIS_TRACE_FILE", str(tmp_path / "t.jsonl"))
    exporter = setup.exporter_from_env()
    assert isinstance(exporter, FileSpanExporter) and exporter.path == tmp_path / "t.jsonl"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(setup.exporter_from_env(), FanOutExporter)
    monkeypatch.delenv("MANTIS_TRACE_FILE")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert setup.exporter_from_env() is None


def test_reader_skips_a_cut_line(tmp_path):
    path = tmp_path / "cut.jsonl"
    good = FIXTURE.read_bytes().splitlines()[0]
    path.write_bytes(good + b"\n" + good[: len(good) // 2] + b"\n")
    result = read_spans(path)
    assert result.bad_lines == 1 and result.spans


# -- critical path ------------------------------------------------------------------------------


def test_critical_path_skips_overlapping_siblings():
    # parent 0-100; B 30-90 finishes last; A 10-40 overlaps B's start: off the path; C 0-20 before B: on it
    spans = [span("P", "", 0, 100), span("A", "P", 10, 40), span("B", "P", 30, 90), span("C", "P", 0, 20)]
    assert {s.span_id for s in critical_path(build_tree(spans))} == {"P", "B", "C"}


def test_critical_path_follows_asynchronous_downstream_stages():
    # messaging: the consumer's span starts after the producer's send span ended
    spans = [span("recv", "", 0, 10), span("send", "recv", 5, 8), span("next", "send", 20, 50),
             span("short", "send", 21, 25), span("deep", "next", 30, 45)]
    assert [s.span_id for s in critical_path(build_tree(spans))] == ["recv", "send", "next", "deep"]


# -- trace show / list on the recorded file --------------------------------------------------------


def test_show_renders_every_span_and_marks_the_critical_path():
    spans = [s for s in read_spans(FIXTURE).spans if s.trace_id == WORK_ORDER_TRACE]
    assert len(spans) == 19
    text = render_waterfall(spans, width=160, color=False)
    rows = text.splitlines()[2:2 + len(spans)]
    assert len(rows) == len(spans)
    for s in spans:
        assert sum(s.name in row and s.service in row for row in rows) >= 1, s.name
    on_path = {r for r in rows if r.startswith("*")}
    off_path = [r for r in rows if not r.startswith("*")]
    assert len(on_path) == 13 and len(off_path) == 6  # the RUL branch (3 + 3 orchestrator spans) is off
    # the reading's anomaly branch reaches the orchestrator last: it is the critical path; the RUL branch is not
    assert any("mantis-orchestrator" in r and "process mantis.anomalies" in r for r in on_path)
    assert all("mantis-rul-prediction" not in r for r in on_path)
    assert any("create_work_order" in r for r in off_path)
    assert "█" in "".join(on_path) and "█" not in "".join(off_path)
    assert text.splitlines()[-2] == ("critical path (*): mantis-preprocessing > mantis-feature-extraction > "
                                     "mantis-anomaly-detection > mantis-orchestrator")
    # rows are in tree order: every child after its parent, indented deeper
    assert rows[0].startswith("* mantis-preprocessing  process mantis.readings")


def test_show_marks_errors_in_red():
    spans = [s for s in read_spans(FIXTURE).spans if s.trace_id == ERROR_TRACE]
    plain = render_waterfall(spans, width=160, color=False)
    error_rows = [r for r in plain.splitlines() if r[1:2] == "!"]
    assert {("validate_reading" in r) or ("process mantis.readings" in r) for r in error_rows} == {True}
    assert len(error_rows) == 2 and "InvalidReading" in error_rows[0]
    colored = render_waterfall(spans, width=160, color=True)
    red = [r for r in colored.splitlines() if "\x1b[31m" in r]
    assert len(red) == 3  # the header's error count and the two failed spans
    assert not any("send mantis.dead-letters" in r for r in red)


def test_list_summarizes_each_trace_with_its_slowest_stage():
    summaries = summarize(read_spans(FIXTURE).spans)
    assert len(summaries) == 4
    assert [s.start for s in summaries] == sorted((s.start for s in summaries), reverse=True)
    by_id = {s.trace_id: s for s in summaries}
    assert by_id[WORK_ORDER_TRACE].spans == 19 and by_id[WORK_ORDER_TRACE].errors == 0
    assert by_id[ERROR_TRACE].errors == 2
    assert by_id[WORK_ORDER_TRACE].slowest_stage == "mantis-preprocessing"
    text = render_list(summaries, color=False)
    assert len(text.splitlines()) == 5 and "slowest stage" in text.splitlines()[0]


# -- a bounded file, quick on a large one --------------------------------------------------------


def _export_lines(exporter: FileSpanExporter, n: int, name: str = "s") -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "mantis-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(n):
        tracer.start_span(f"{name}-{i}").end()
    provider.shutdown()


def test_file_rotates_at_its_cap_keeping_the_backups(tmp_path):
    path = tmp_path / "t.jsonl"
    exporter = FileSpanExporter(path, max_bytes=4000, backups=2)
    _export_lines(exporter, 60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["t.jsonl", "t.jsonl.1", "t.jsonl.2"]  # the oldest beyond two backups deleted
    assert all(p.stat().st_size <= 4000 for p in tmp_path.iterdir())
    newest = [s.name for s in read_spans(path).spans]
    assert newest[-1] == "s-59"  # the current file holds the latest spans, whole lines only
    assert read_spans(path).bad_lines == 0 and read_spans(tmp_path / "t.jsonl.1").bad_lines == 0


def test_a_file_over_the_cap_from_an_earlier_run_is_rotated_first(tmp_path):
    path = tmp_path / "t.jsonl"
    _export_lines(FileSpanExporter(path, max_bytes=0), 40, "old")  # no cap: 40 lines
    big = path.stat().st_size
    _export_lines(FileSpanExporter(path, max_bytes=big // 2, backups=0), 1, "new")
    assert [s.name for s in read_spans(path).spans] == ["new-0"]  # started over, no backup kept
    assert not (tmp_path / "t.jsonl.1").exists()


def test_the_cap_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MANTIS_TRACE_FILE_MAX_BYTES", "1234")
    monkeypatch.setenv("MANTIS_TRACE_FILE_BACKUPS", "3")
    exporter = FileSpanExporter(tmp_path / "t.jsonl")
    assert (exporter.max_bytes, exporter.backups) == (1234, 3)


def test_list_reads_only_the_end_of_a_large_file(tmp_path):
    """``read_recent`` stops once the wanted traces are found and older lines cannot belong to them."""
    from mantis_stream.tracing.filelog import RECENT_MARGIN_NS, read_recent

    path = tmp_path / "big.jsonl"
    lines = [line for line in FIXTURE.read_bytes().splitlines() if line.strip()]
    t0 = 1_800_000_000 * 10**9
    with open(path, "wb") as f:
        for k in range(100):  # 100 copies of the fixture, each shifted in time and given other trace ids
            shift = t0 + k * 2 * RECENT_MARGIN_NS
            for line in lines:
                request = orjson.loads(line)
                for rs in request["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        for s in ss["spans"]:
                            s["traceId"] = f"{k:08x}" + s["traceId"][8:]
                            s["startTimeUnixNano"] = str(int(s["startTimeUnixNano"]) % 10**12 + shift)
                            s["endTimeUnixNano"] = str(int(s["endTimeUnixNano"]) % 10**12 + shift)
                f.write(orjson.dumps(request) + b"\n")
    recent = read_recent(path, 4)
    summaries = summarize(recent.spans)
    full = summarize(read_spans(path).spans)
    assert summaries[:4] == full[:4]  # the same four latest traces, with all their spans
    assert len(recent.spans) < len(read_spans(path).spans) / 25  # read a small part of the file
