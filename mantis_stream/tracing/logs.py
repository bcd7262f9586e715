"""Trace ids on log records: a worker's log line says which trace it belongs to.

Why this exists
===============

An engineer who finds an error in the worker's log wants the trace, and one
who finds a trace wants its log lines.  :func:`install_log_correlation` wraps
the logging record factory so that every record made while a span is current
carries ``trace_id``, ``span_id`` (hex, as Jaeger shows them) and
``trace_sampled``; outside a span they are ``"0" * 32``, ``"0" * 16`` and False.
A record factory rather than a ``logging.Filter``: Faust (mode) sets up its
handlers after the app is imported, and a factory covers every logger and
handler, including those.

Usage
=====

``%(trace_id)s`` / ``%(span_id)s`` in a format string, e.g. :data:`LOG_FORMAT`;
JSON log formatters pick the attributes up by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

__all__ = ["LOG_FORMAT", "install_log_correlation", "uninstall_log_correlation"]

LOG_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"

_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16
_previous: Callable[..., logging.LogRecord] | None = None


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # logging's own factory when uninstalled while a later factory still calls this one
    record = (_previous or logging.LogRecord)(*args, **kwargs)
    sc = trace.get_current_span().get_span_context()
    if sc.is_valid:
        record.trace_id = format(sc.trace_id, "032x")
        record.span_id = format(sc.span_id, "016x")
        record.trace_sampled = sc.trace_flags.sampled
    else:
        record.trace_id = _NO_TRACE
        record.span_id = _NO_SPAN
        record.trace_sampled = False
    return record


def install_log_correlation() -> None:
    """Install the record factory (idempotent)."""
    global _previous
    if _previous is not None:
        return
    _previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_factory)


def uninstall_log_correlation() -> None:
    global _previous
    if _previous is not None and logging.getLogRecordFactory() is _factory:
        logging.setLogRecordFactory(_previous)
    _previous = None
