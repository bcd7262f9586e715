"""``mantis-stream work-orders [--open] [--asset A]``: work orders from PostgreSQL.

Why: the people who act on work orders should not need SQL; the table shows
each order's trace id, to look it up in Jaeger (why was this opened?).

Notes: reads ``MANTIS_POSTGRES_DSN``; one line on stderr and exit status 1
when it is unset or the database cannot be reached.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..cli import command, option
from ..settings import current_settings, mask_url, secret
from ..sinks.postgres import list_work_orders
from ._oneline import one_line_errors

COLUMNS = (
    ("work_order_id", "WORK ORDER"),
    ("asset_id", "ASSET"),
    ("status", "STATUS"),
    ("priority", "PRIORITY"),
    ("reason", "REASON"),
    ("rul", "RUL"),
    ("created_at", "CREATED (UTC)"),
    ("updated_at", "UPDATED (UTC)"),
    ("trace_id", "TRACE ID"),
    ("why", "WHY"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if key == "rul" and isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain fixed-width table, one line per work order (merged orders noted)."""
    header = [title for _, title in COLUMNS]
    body = []
    for row in rows:
        cells = [_cell(key, row.get(key)) for key, _ in COLUMNS]
        merged = row.get("merged_work_order_ids") or []
        if merged:
            cells[0] += f" (+{len(merged)})"
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *body]]
    return "\n".join(lines)


class WorkOrdersError(Exception):
    """A one-line reason the command cannot list work orders."""


async def fetch_work_orders(dsn: str | None, *, open_only: bool, asset: str | None) -> list[dict[str, Any]]:
    if not dsn:
        raise WorkOrdersError("MANTIS_POSTGRES_DSN is not set (e.g. postgresql://user:password@localhost:5432/mantis)")
    try:
        conn = await asyncpg.connect(dsn, timeout=5.0)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise WorkOrdersError(f"cannot reach PostgreSQL at {mask_url(dsn)}: {reason}") from None
    try:
        return await list_work_orders(conn, open_only=open_only, asset=asset)
    except asyncpg.UndefinedTableError:
        raise WorkOrdersError(
            f"no work_orders table in {mask_url(dsn)} yet: the worker creates it when it starts with this DSN"
        ) from None
    finally:
        await conn.close()


@command(
    option("--open", "open_only", is_flag=True, help="Only open (and in-progress) work orders."),
    option("--asset", default=None, help="Only this asset's work orders."),
)
@one_line_errors
async def work_orders(self: Any, open_only: bool, asset: str | None) -> None:
    """List work orders from PostgreSQL (MANTIS_POSTGRES_DSN), newest first, with trace ids."""
    try:
        rows = await fetch_work_orders(secret(current_settings().postgres_dsn), open_only=open_only, asset=asset)
    except WorkOrdersError as exc:
        print(f"mantis-stream work-orders: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if not rows:
        print("no work orders" + (" open" if open_only else "") + (f" for asset {asset}" if asset else ""))
        return
    print(format_table(rows), flush=True)
