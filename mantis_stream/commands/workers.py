"""``mantis-stream workers N``: N worker processes of one consumer group (see :mod:`mantis_stream.supervisor`)."""

from __future__ import annotations

from pathlib import Path

import click
from faust.cli import argument, option

from ..app import app, settings
from ..supervisor import supervise


@app.command(
    argument("n", type=click.IntRange(min=1)),
    option("--log-level", "log_level", default="info", help="Each worker's log level."),
    option("--without-web", is_flag=True, default=False, help="No web server in the workers (no ingest, health or /metrics)."),
    option("--stop-timeout", type=float, default=30.0, help="Seconds a worker has to stop gracefully before SIGKILL."),
)
async def workers(self: object, n: int, log_level: str, without_web: bool, stop_timeout: float) -> None:
    """Run N workers of this app (one consumer group) on this machine: web ports MANTIS_WEB_PORT..+N-1, data dirs DATADIR/worker-i."""
    raise SystemExit(supervise(n, web_port=settings.web_port, datadir=Path(app.conf.datadir), loglevel=log_level,
                               without_web=without_web, stop_timeout=stop_timeout))
