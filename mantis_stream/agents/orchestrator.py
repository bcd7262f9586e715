"""Stage 5: turn anomalies and RUL estimates into work orders.

The rules are in ``models.maintenance``; this agent feeds each asset's state
machine in order and publishes the work orders it decides on, with the trace id
so an engineer can jump from a work order to its trace.
"""

from __future__ import annotations

import time

from opentelemetry import trace

from .. import topics as names
from .. import tracing
from ..app import app, settings, work_orders_topic
from ..errors import send_dead_letter
from ..models import records
from ..models.maintenance import AssetMaintenance
from ..models.reading import format_timestamp
from ._events import asset_key, event_scope, group_events
from ._state import TableBackedCache, bytes_table

STAGE = "orchestrator"
THRESHOLDS = {"cycles": settings.rul_threshold_cycles, "seconds": settings.rul_threshold_seconds}

source = app.topic(names.ANOMALIES, names.RUL, value_serializer="orjson", key_serializer="raw")
state_table = bytes_table("maintenance-state")
states: TableBackedCache[AssetMaintenance] = TableBackedCache(
    state_table,
    new=lambda key: AssetMaintenance(THRESHOLDS, settings.anomaly_persistence),
    load=lambda raw: AssetMaintenance.from_bytes(raw, THRESHOLDS, settings.anomaly_persistence),
    dump=AssetMaintenance.to_bytes,
)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@app.agent(source, name="orchestrator")
async def orchestrator(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        by_asset = group_events(events, lambda event: event.value["asset_id"])
        for asset_id, asset_events in by_asset.items():
            state = states.get(asset_id)
            for event in asset_events:
                message = event.value
                with event_scope(event):
                    try:
                        if "rul" in message:  # mantis.rul; else mantis.anomalies
                            decision = state.on_rul(message)
                        else:
                            decision = state.on_anomaly(message)
                    except Exception as exc:  # noqa: BLE001 - a bad event must not stop the stage
                        await send_dead_letter(event, STAGE, exc)
                        continue
                    if decision is None:
                        continue
                    with tracing.stage_tracer(STAGE).start_as_current_span(
                        "create_work_order",
                        attributes=tracing.span_attributes(
                            asset_id=asset_id, **{"work_order.reason": decision.reason, "work_order.priority": decision.priority}),
                    ):
                        order = records.work_order_message(
                            decision.work_order_id, asset_id, decision.priority, decision.reason,
                            format_timestamp(time.time()), decision.rul, current_trace_id(), decision.evidence,
                        )
                        await work_orders_topic.send(key=asset_key(asset_id), value=order)
        states.save((asset_id, asset_events[-1]) for asset_id, asset_events in by_asset.items())
