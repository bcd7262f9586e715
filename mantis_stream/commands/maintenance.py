"""``mantis-stream maintenance done ASSET``: tell the pipeline an asset was serviced.

Why: after a repair the machine is a new one; its old healthy reference and its
open work orders no longer apply. This sends one maintenance event on
``mantis.maintenance`` (keyed by the asset, so it is ordered with the asset's
other messages)::

    {"asset_id": "PUMP-2", "ts": "2026-12-07T10:00:00Z", "action": "done",
     "note": "replaced DE bearing", "by": "j.doe"}

The anomaly stage then recommissions every monitor of the asset (a new healthy
reference is learned over the next warm-up), and the orchestrator resolves the
asset's open work orders (``action: resolve`` on ``mantis.work-orders``; the
PostgreSQL sink closes them with the note as their resolution). The send is a
span (service ``mantis-maintenance``) whose context travels in the message's
``traceparent`` header, so the reset and the resolutions are one trace.
"""

from __future__ import annotations

import sys
import time

import click
import orjson
from aiokafka import AIOKafkaProducer
from faust.cli import argument, option
from opentelemetry import propagate, trace

from .. import topics as names
from .. import tracing
from ..app import app, settings
from ..kafka import bootstrap_servers
from ..models import records
from ..models.reading import format_timestamp

#: Longest note kept (characters): it is read by people, not parsed.
MAX_NOTE = 200


@app.command(
    argument("action", type=click.Choice(list(records.MAINTENANCE_ACTIONS))),
    argument("asset"),
    option("--note", default="", help="What was done (kept with the resolved work orders)."),
    option("--by", "by", default="", help="Who did it."),
)
async def maintenance(self: object, action: str, asset: str, note: str, by: str) -> None:
    """Record maintenance on ASSET: reset its healthy references and resolve its open work orders."""
    if not asset.strip():
        raise click.BadParameter("the asset id is empty", param_hint="ASSET")
    message = records.maintenance_message(asset, format_timestamp(time.time()), action, note[:MAX_NOTE], by[:100])
    with tracing.stage_tracer("maintenance").start_as_current_span(
        f"send {names.MAINTENANCE}", kind=trace.SpanKind.PRODUCER,
        attributes=tracing.span_attributes(asset_id=asset, **{
            "messaging.system": "kafka", "messaging.destination.name": names.MAINTENANCE,
            "messaging.operation.type": "send", "maintenance.action": action}),
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker))
        try:
            await producer.start()
            sent = await producer.send_and_wait(
                names.MAINTENANCE, orjson.dumps(message), key=asset.encode(),
                headers=[(k, v.encode()) for k, v in carrier.items()],
            )
        except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            print(f"mantis-stream maintenance: cannot send to {names.MAINTENANCE} at {settings.broker}: {exc}",
                  file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            await producer.stop()
        span.set_attribute("messaging.destination.partition.id", str(sent.partition))
    trace_id = format(span.get_span_context().trace_id, "032x")
    print(f"maintenance {action} for {asset}: sent to {names.MAINTENANCE}[{sent.partition}] (trace {trace_id})")
