"""Stage 5: turn anomalies and RUL estimates into work orders.

The rules are in ``models.maintenance``; this agent feeds each asset's state
machine in order and publishes the work orders it decides on, with the trace id
so an engineer can jump from a work order to its trace.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace

from .. import tracing
from ..app import app, assessments_topic, settings, work_orders_topic
from ..errors import send_item_dead_letter
from ..models import records
from ..models.maintenance import AssetMaintenance
from ..models.reading import format_timestamp
from ._batch import close_items, item_scope, open_items
from ._events import asset_key, dead_letter_all, group_items
from ._replay import batches
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
    async for events in batches(stream, STAGE):
        items = await open_items(STAGE, events)
        by_asset = await group_items(STAGE, items, lambda item: str(item.value.get("asset_id", "")))
        touched: list[tuple[str, Any]] = []
        for asset_id, asset_items in by_asset.items():
            try:
                state = states.get(asset_id)
            except Exception as exc:  # noqa: BLE001 - a state that cannot be loaded: its records cannot be used
                await dead_letter_all(STAGE, asset_items, exc)
                continue
            touched.append((asset_id, asset_items[-1].event))
            for item in asset_items:
                message = item.value
                with item_scope(item):
                    try:
                        if "rul" in message:  # from the RUL stage; else the anomaly stage
                            decision = state.on_rul(message)
                        else:
                            decision = state.on_anomaly(message)
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
                    except Exception as exc:  # noqa: BLE001 - a bad record (or a refused send) must not stop the stage
                        await send_item_dead_letter(item, STAGE, exc)
        close_items(items)
        states.save(touched)
