"""Stage 5: turn anomalies and RUL estimates into work orders, and maintenance into resolutions.

The rules are in ``models.maintenance``; this agent feeds each asset's state
machine in order and publishes what it decides (open, escalate, resolve) on
``mantis.work-orders``, with the trace id so an engineer can jump from a work
order to its trace. The span of each decision says why: the reason, priority,
the one-line explanation, the defect band that grew, and one event per
feature that left the healthy reference (bounded).
"""

from __future__ import annotations

import time
from typing import Any, cast

from faust.types import EventT
from opentelemetry import trace

from .. import tracing
from ..app import app, assessments_topic, maintenance_topic, settings, work_orders_topic
from ..errors import send_item_dead_letter
from ..models import records
from ..models.maintenance import MAX_FEATURES, AssetMaintenance, Decision
from ..models.reading import format_timestamp
from ._batch import Item, close_items, item_scope, open_items
from ._events import dead_letter_all, group_items, maintenance_events
from ._publish import Publisher
from ._replay import batches
from ._state import TableBackedCache, bytes_table

STAGE = "orchestrator"
THRESHOLDS = {"cycles": settings.rul_threshold_cycles, "seconds": settings.rul_threshold_seconds}
#: Longest ``work_order.why`` span attribute (characters).
MAX_WHY_ATTRIBUTE = 256
SPAN_NAMES = {"open": "create_work_order", "escalate": "escalate_work_order", "resolve": "resolve_work_order"}

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


def publish(public: Publisher, asset_id: str, decision: Decision, origin: Item | EventT[Any]) -> None:
    """The decision's span (why, as attributes and events) and its message, queued for mantis.work-orders."""
    attributes: dict[str, Any] = {
        "work_order.id": decision.work_order_id, "work_order.reason": decision.reason,
        "work_order.priority": decision.priority, "work_order.action": decision.action,
        "work_order.why": decision.why[:MAX_WHY_ATTRIBUTE],
    }
    band = decision.evidence.get("defect_band")
    if isinstance(band, dict) and band.get("band"):
        attributes["work_order.defect_band"] = str(band["band"])[:8]
    with tracing.stage_tracer(STAGE).start_as_current_span(
        SPAN_NAMES[decision.action], attributes=tracing.span_attributes(asset_id=asset_id, **attributes),
    ) as span:
        for d in (decision.evidence.get("features") or [])[:MAX_FEATURES]:
            span.add_event("feature_departure", {
                "feature": str(d.get("feature", ""))[:64], "factor": float(d.get("factor") or 0.0),
                "severity": float(d.get("severity") or 0.0),
            })
        order = records.work_order_message(
            decision.work_order_id, asset_id, decision.priority, decision.reason,
            format_timestamp(time.time()), decision.rul, current_trace_id(), decision.evidence,
            decision.action, decision.why,
        )
        public.add(work_orders_topic, asset_id, order, origin)


@app.agent(assessments_topic, name="orchestrator")
async def orchestrator(stream):  # type: ignore[no-untyped-def]
    async for events in batches(stream, STAGE):
        items = await open_items(STAGE, events)
        public = Publisher(STAGE)
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
                        if decision is not None:
                            # Every work order is recorded, in the reading's trace id, even when it is not sampled.
                            tracing.keep(item.trace, "work-order", asset_id=asset_id)
                            publish(public, asset_id, decision, item)
                    except Exception as exc:  # noqa: BLE001 - a bad record (or a refused send) must not stop the stage
                        await send_item_dead_letter(item, STAGE, exc)
        await public.flush()
        close_items(items)
        states.save(touched)


@app.agent(maintenance_topic, name="maintenance-orders")
async def maintenance(stream):  # type: ignore[no-untyped-def]
    """A serviced asset: resolve its open work orders, start its rules afresh."""
    async for event, asset_id in maintenance_events(stream, STAGE):
        public = Publisher(STAGE)
        message = cast(dict[str, Any], event.value)  # maintenance_events checked it is a JSON object
        for decision in states.get(asset_id).on_maintenance(message):
            publish(public, asset_id, decision, event)
        await public.flush()
        states.save([(asset_id, event)])
