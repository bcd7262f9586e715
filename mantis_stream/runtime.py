"""The worker process's own start-up and stop: garbage-collector settings, start checks, a bounded stop.

Why freeze at start: a worker allocates fast, and each of CPython's full
collections walks every tracked object, including the ~150,000 that exist once
the worker is set up (modules, Faust, OpenTelemetry) and are never garbage.
Freezing them once takes them out of every later collection, so a burst spends
its collector time on its own objects.  The thresholds stay CPython's: a larger
young generation collects less often, which lets garbage pile up between full
collections and a long-running worker's memory grow.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mode.types.signals import BaseSignalT

log = logging.getLogger(__name__)

#: Checks, then waits, run when ``worker`` starts (see :func:`run_start_checks`).
_start_checks: list[Callable[[], object]] = []
_start_waits: list[Callable[[], object]] = []


def tune_garbage_collector(sender: object, /, *args: object, signal: BaseSignalT[object], **kwargs: object) -> None:
    """Freeze the objects alive now; a signal receiver for ``app.on_worker_init``."""
    gc.collect()
    gc.freeze()


def is_worker_command() -> bool:
    """True when the CLI command being run is ``worker`` (``on_worker_init`` fires for every command)."""
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.info_name == "worker"


def check_at_worker_start(check: Callable[[], object]) -> Callable[[], object]:
    """Register ``check`` (raising SystemExit with one line) to run when ``worker`` starts.

    Why: a setting the worker cannot use (a DSN asyncpg refuses, an unreadable
    RUL model) must stop it at once in one line, not after the broker wait or
    inside a running agent, and must not stop other commands.
    """
    _start_checks.append(check)
    return check


def wait_at_worker_start(wait: Callable[[], object]) -> None:
    """Register ``wait`` (for the broker) to run when ``worker`` starts, after every check."""
    _start_waits.append(wait)


def run_start_checks(sender: object, /, *args: object, signal: BaseSignalT[object], **kwargs: object) -> None:
    """A receiver for ``app.on_worker_init``: the checks, then the waits (receivers run in no set order)."""
    if is_worker_command():
        for step in (*_start_checks, *_start_waits):
            step()


def bound_stop_time(seconds: float) -> None:
    """Exit at most ``seconds`` after SIGTERM or SIGINT, however far the graceful stop got.

    Why: with the broker gone, Faust's stop waits for the producer's metadata
    without end (looping on ``Unable to update metadata``), and an orchestrator
    would have to SIGKILL the process.  A watchdog thread, armed by the first
    stop signal, ends the process instead, saying why.  Offsets not committed
    by then are read again on the next start.
    """
    from ._compat import faust as faust_compat

    def arm() -> None:
        watchdog = threading.Timer(seconds, _exit_now, args=(seconds,))
        watchdog.daemon = True
        watchdog.start()

    faust_compat.on_first_stop_signal(arm)


def _exit_now(seconds: float) -> None:
    log.error("mantis-stream: the stop did not finish within %.0f s (MANTIS_STOP_TIMEOUT; is the broker gone?); "
              "exiting now", seconds)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(1)
