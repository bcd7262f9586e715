"""Stage 5: turn anomalies and RUL estimates into work orders.

The rules are in ``models.maintenance``; this agent feeds each asset's state
machine in order and publishes the work orders it decides on, with the trace id
so an engineer can jump from a work order to its trace.
"""

from __future__ import annotations

import time

from opentelemetry import trace

from .. import tracing
from ..app import app, assessments_topic, settings, work_orders_topic
from ..errors import send_item_dead_letter
from ..models import records
from ..models.maintenance import AssetMaintenance
from ..models.reading import format_timestamp
from ._batch import close_items, item_scope, open_items
from ._events import asset_key, group_by
from ._state import TableBackedCache, bytes_table

STAGE = "orchestrator"
THRESHOLDS = {"cycles": settings.rul_threshold_cycles, "seconds": settings.rul_threshold_seconds}

state_table = bytes_table("maintenance-state")
states: TableBackedCache[AssetMaintenance] = TableBackedCache(
    state_table,
    new=lambda key: AssetMaintenance(THRESHOLDS, settings.anomaly_persistence),
    load=lambda key, raw: AssetMaintenance.from_bytes(raw, THRESHOLDS, settings.anomaly_persistence),
    dump=AssetMaintenance.to_bytes,
)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@app.agent(assessments_topic, name="orchestrator")
async def orchestrator(stream):  # type: ignore[no-untyped-def]
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
        items = await open_items(STAGE, events)
        by_asset = group_by(items, lambda item: str(item.value.get("asset_id", "")))
        for asset_id, asset_items in by_asset.items():
            state = states.get(asset_id)
            for item in asset_items:
                message = item.value
                with item_scope(item):
                    try:
                        if "rul" in message:  # from the RUL stage; else the anomaly stage
                            decision = state.on_rul(message)
                        else:
                            decision = state.on_anomaly(message)
                    except Exception as exc:  # noqa: BLE001 - a bad record must not stop the stage
                        await send_item_dead_letter(item, STAGE, exc)
                        continue
                    if decision is None:
                        continue
                    # Every work order is recorded, in the reading's trace id, even when it is not sampled.
                    tracing.keep(item.trace, "work-order", asset_id=asset_id)
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
        close_items(items)
        states.save((asset_id, asset_items[-1].event) for asset_id, asset_items in by_asset.items())
