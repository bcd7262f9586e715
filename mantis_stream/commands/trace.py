"""``mantis-stream trace show TRACE_ID`` / ``trace list``: traces from a local file, without Jaeger.

Why this exists
===============

With ``MANTIS_TRACE_FILE`` set (the demo sets it), the worker also writes its
spans as OTLP JSON lines (:mod:`mantis_stream.tracing.filelog`).  ``trace show``
draws one trace as a waterfall in the terminal, like Jaeger's timeline: one row
per span, indented under its parent, its service, a bar at its offset and
length, its duration; failed spans in red (and marked ``!``), the critical path
marked ``*`` and drawn solid.  ``trace list`` lists the most recent traces with
their duration, span and error counts and slowest stage.

Usage
=====

.. sourcecode:: sh

    mantis-stream trace list [--file F] [--limit N]
    mantis-stream trace show TRACE_ID [--file F]      # a unique part of the id is enough

Notes
=====

* The critical path is Jaeger's: from the root, walk back from the end through
  the child that finished last, then the last one that finished before that
  child started, and so on (overlapping siblings are off the path).  Messaging traces are asynchronous (a stage's ``process`` span starts
  after the upstream ``send`` span ended), so a child counts by the end of its
  whole subtree, not its own end: the path follows the reading down to the last
  stage that worked on it.
* The waterfall logic (:func:`critical_path`, :func:`render_waterfall`,
  :func:`summarize`) is pure and tested on a recorded file
  (``tests/fixtures/traces/``).
"""

from __future__ import annotations

import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from ..cli import argument, command, option
from ..demo import DEMO_DIR
from ..settings import current_settings
from ..tracing.filelog import SpanRecord, read_recent, read_spans
from ._oneline import one_line_errors

DEFAULT_FILE = f"{DEMO_DIR}/mantis-traces.jsonl"  # where the demo writes its spans
CRITICAL_MARK = "*"
ERROR_MARK = "!"


def default_trace_file() -> str:
    return current_settings().trace_file or DEFAULT_FILE


def fmt_duration(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


@dataclass
class Tree:
    spans: dict[str, SpanRecord]
    children: dict[str, list[SpanRecord]]
    roots: list[SpanRecord]
    #: span id -> latest end among the span and all its descendants.
    subtree_end: dict[str, int]


def build_tree(spans: Iterable[SpanRecord]) -> Tree:
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    roots = []
    for s in by_id.values():
        if s.parent_id and s.parent_id in by_id and s.parent_id != s.span_id:
            children[s.parent_id].append(s)
        else:
            roots.append(s)  # a root, or its parent is not in the file (e.g. an outside producer)
    for kids in children.values():
        kids.sort(key=lambda s: (s.start, s.end))
    roots.sort(key=lambda s: (s.start, s.end))
    subtree_end: dict[str, int] = {}

    def end_of(s: SpanRecord) -> int:
        stack, order = [s], []
        while stack:  # iterative post-order: deep traces must not hit the recursion limit
            n = stack.pop()
            order.append(n)
            stack.extend(children.get(n.span_id, ()))
        for n in reversed(order):
            subtree_end[n.span_id] = max([n.end] + [subtree_end[c.span_id] for c in children.get(n.span_id, ())])
        return subtree_end[s.span_id]

    for r in roots:
        end_of(r)
    return Tree(by_id, children, roots, subtree_end)


def critical_path(tree: Tree) -> list[SpanRecord]:
    """The spans on the critical path, from the root to the last stage (see the module notes)."""
    if not tree.roots:
        return []
    root = max(tree.roots, key=lambda s: (tree.subtree_end[s.span_id], -s.start))
    path: list[SpanRecord] = []
    seen: set[str] = set()
    stack: list[tuple[SpanRecord, int]] = [(root, tree.subtree_end[root.span_id])]
    while stack:
        span, cursor = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        path.append(span)
        picked: list[tuple[SpanRecord, int]] = []
        kids = sorted(tree.children.get(span.span_id, ()), key=lambda c: tree.subtree_end[c.span_id], reverse=True)
        for child in kids:
            end = tree.subtree_end[child.span_id]
            if child.start >= cursor:  # entirely after what is already on the path
                continue
            if picked and end > cursor:  # overlaps the later child: not what the parent waited for
                continue
            picked.append((child, min(end, cursor)))
            cursor = child.start
            if cursor <= span.start:
                break
        stack.extend(reversed(picked))  # the latest child first, as the walk found it
    return path


def _ordered(tree: Tree) -> list[tuple[SpanRecord, int]]:
    """Depth-first order with depth, children by start time (Jaeger's timeline order)."""
    out: list[tuple[SpanRecord, int]] = []
    stack = [(r, 0) for r in reversed(tree.roots)]
    while stack:
        span, depth = stack.pop()
        out.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(tree.children.get(span.span_id, ())))
    return out


def render_waterfall(spans: list[SpanRecord], *, width: int | None = None, color: bool = True) -> str:
    """The trace as text: a header, one row per span, the critical path's stages."""
    tree = build_tree(spans)
    width = width or shutil.get_terminal_size((120, 24)).columns
    t0 = min(s.start for s in spans)
    t1 = max(s.end for s in spans)
    total = max(1, t1 - t0)
    critical = {s.span_id for s in critical_path(tree)}
    rows = _ordered(tree)
    longest = max(len(f"{'  ' * d}{s.service}  {s.name}") for s, d in rows) + 1
    label_w = min(longest, max(24, int(width * 0.45)))
    dur_w = 10
    bar_w = max(10, width - label_w - dur_w - 6)
    style = click.style if color else (lambda text, **kw: text)
    services = sorted({s.service for s in spans})
    errors = sum(s.error for s in spans)
    lines = [
        style(f"Trace {spans[0].trace_id}", bold=True)
        + f"  {datetime.fromtimestamp(t0 / 1e9, UTC).isoformat(timespec='milliseconds')}"
        + f"  duration {fmt_duration(total)}  {len(spans)} spans  {len(services)} services"
        + (style(f"  {errors} error(s)", fg="red") if errors else ""),
        f"{'':2}{'service  operation':<{label_w}} {'0':<{bar_w // 2}}{fmt_duration(total // 2):<{bar_w - bar_w // 2}} {'duration':>{dur_w}}",
    ]
    for span, depth in rows:
        offset = int((span.start - t0) / total * bar_w)
        length = max(1, round(span.duration / total * bar_w))
        offset = min(offset, bar_w - 1)
        length = min(length, bar_w - offset)
        on_path = span.span_id in critical
        bar = " " * offset + ("█" if on_path else "▒") * length + " " * (bar_w - offset - length)
        mark = (CRITICAL_MARK if on_path else " ") + (ERROR_MARK if span.error else " ")
        label = f"{'  ' * depth}{span.service}  {span.name}"
        if len(label) > label_w:
            label = label[: label_w - 1] + "…"
        fg = "red" if span.error else ("cyan" if on_path else None)
        row = f"{mark}{label:<{label_w}} {bar} {fmt_duration(span.duration):>{dur_w}}"
        if span.error and span.status_message:
            row += f"  {span.status_message[:80]}"
        lines.append(style(row, fg=fg, bold=on_path) if fg or on_path else row)
    stages: list[str] = []
    for s in sorted((tree.spans[i] for i in critical), key=lambda s: s.start):
        if not stages or stages[-1] != s.service:
            stages.append(s.service)
    lines.append("")
    lines.append(f"critical path ({CRITICAL_MARK}): " + " > ".join(stages))
    lines.append(f"legend: █ on the critical path, ▒ off it, {ERROR_MARK} error (red)")
    return "\n".join(lines)


@dataclass
class TraceSummary:
    trace_id: str
    start: int
    duration: int
    spans: int
    errors: int
    root: str
    slowest_stage: str
    slowest_ns: int


def stage_times(spans: list[SpanRecord]) -> dict[str, int]:
    """Service -> time spent in it: the summed durations of its entry spans (parent in another service)."""
    by_id = {s.span_id: s for s in spans}
    out: dict[str, int] = defaultdict(int)
    for s in spans:
        parent = by_id.get(s.parent_id)
        if parent is None or parent.service != s.service:
            out[s.service] += s.duration
    return dict(out)


def summarize(spans: Iterable[SpanRecord]) -> list[TraceSummary]:
    """One summary per trace, the most recent first."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in spans:
        by_trace[s.trace_id].append(s)
    out = []
    for trace_id, group in by_trace.items():
        start = min(s.start for s in group)
        end = max(s.end for s in group)
        tree = build_tree(group)
        root = tree.roots[0] if tree.roots else group[0]
        times = stage_times(group)
        slowest = max(times.items(), key=lambda kv: kv[1]) if times else ("", 0)
        out.append(TraceSummary(trace_id, start, end - start, len(group), sum(s.error for s in group),
                                f"{root.service}: {root.name}", slowest[0], slowest[1]))
    out.sort(key=lambda t: t.start, reverse=True)
    return out


def render_list(summaries: list[TraceSummary], *, color: bool = True) -> str:
    style = click.style if color else (lambda text, **kw: text)
    lines = [f"{'trace id':<32}  {'start (UTC)':<23}  {'duration':>9}  {'spans':>5}  {'errors':>6}  slowest stage"]
    for t in summaries:
        when = datetime.fromtimestamp(t.start / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        row = (f"{t.trace_id:<32}  {when:<23}  {fmt_duration(t.duration):>9}  {t.spans:>5}  {t.errors:>6}  "
               f"{t.slowest_stage} ({fmt_duration(t.slowest_ns)})")
        lines.append(style(row, fg="red") if t.errors else row)
    return "\n".join(lines)


def _fail(message: str) -> None:
    print(f"mantis-stream trace: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


@command(
    argument("action", type=click.Choice(["show", "list"])),
    argument("trace_id", required=False),
    option("--file", "path", default=None, help="OTLP JSON-lines file [default: $MANTIS_TRACE_FILE or the demo's mantis-demo/mantis-traces.jsonl]."),
    option("--limit", type=int, default=20, show_default=True, help="list: how many traces."),
    option("--width", type=int, default=None, help="show: columns (default: the terminal's)."),
    option("--color/--no-color", default=None, help="Colors (default: when stdout is a terminal)."),
)
@one_line_errors
async def trace(self: object, action: str, trace_id: str | None, path: str | None, limit: int,
                width: int | None, color: bool | None) -> None:
    """Show a trace as a waterfall (show TRACE_ID) or list recent traces (list), from the trace file."""
    path = path or default_trace_file()
    if color is None:
        color = sys.stdout.isatty()
    if action == "show" and not trace_id:
        _fail("show needs a TRACE_ID (see: mantis-stream trace list)")
    wanted = (trace_id or "").strip().lower()
    try:
        if action == "list":
            result = read_recent(path, max(1, limit))
        else:  # only the lines holding the id are parsed
            result = read_spans(path, contains=wanted)
    except FileNotFoundError:
        _fail(f"no trace file at {path} (run the demo, or a worker with MANTIS_TRACE_FILE set; or pass --file)")
    except OSError as exc:
        _fail(f"{path}: {exc.strerror or exc}")
    if result.bad_lines:
        print(f"mantis-stream trace: skipped {result.bad_lines} unreadable line(s) in {path}", file=sys.stderr)
    if action == "list":
        if trace_id:
            _fail("list takes no TRACE_ID")
        summaries = summarize(result.spans)
        if not summaries:
            _fail(f"no spans in {path}")
        click.echo(render_list(summaries[: max(1, limit)], color=color), color=color)
        return
    ids = {s.trace_id for s in result.spans}
    matches = ([i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
               or [i for i in ids if wanted in i])
    if not matches:
        _fail(f"trace {trace_id} not in {path}")
    if len(matches) > 1:
        _fail(f"{trace_id} matches {len(matches)} traces; give more digits")
    spans = [s for s in result.spans if s.trace_id == matches[0]]
    click.echo(render_waterfall(spans, width=width, color=color), color=color)
