"""The demo's live terminal view: one line per asset, recent work orders below.

Pure state + rendering (no I/O) so it can be tested; the demo command feeds it
the pipeline's output messages and prints :meth:`DemoView.render`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import topics as names

RED, YELLOW, GREEN, DIM, BOLD, RESET = "\033[31m", "\033[33m", "\033[32m", "\033[2m", "\033[1m", "\033[0m"


@dataclass
class AssetRow:
    #: Latest (rul, unit, health index) per sensor; the row shows the worst sensor.
    ruls: dict[str, tuple[float, str, float]] = field(default_factory=dict)
    score: dict[str, float] = field(default_factory=dict)
    anomalous: set[str] = field(default_factory=set)
    work_orders: int = 0

    @property
    def worst(self) -> tuple[float, str, float] | None:
        return min(self.ruls.values(), key=lambda r: (r[0], r[2])) if self.ruls else None


@dataclass
class DemoView:
    assets: dict[str, AssetRow] = field(default_factory=dict)
    work_orders: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=6))
    dead_letters: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=3))
    counts: dict[str, int] = field(default_factory=dict)

    def update(self, topic: str, value: dict[str, Any]) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        if topic == names.DEAD_LETTERS:
            self.dead_letters.append(value)
            return
        row = self.assets.setdefault(value.get("asset_id", "?"), AssetRow())
        if topic == names.ANOMALIES:
            row.score[value["sensor_id"]] = value["score"]
            (row.anomalous.add if value["is_anomaly"] else row.anomalous.discard)(value["sensor_id"])
        elif topic == names.RUL:
            row.ruls[value["sensor_id"]] = (value["rul"], value["unit"], value["health_index"])
        elif topic == names.WORK_ORDERS:
            row.work_orders += value.get("action", "open") == "open"  # escalations and resolutions are the same order
            self.work_orders.append(value)

    def render(self, header: str = "") -> str:
        lines = [f"{BOLD}mantis-stream demo{RESET}  {header}", ""]
        lines.append(f"{BOLD}{'asset':<10} {'health':>7} {'RUL':>14} {'anomaly score (per sensor)':<40} {'WOs':>4}{RESET}")
        for asset_id in sorted(self.assets):
            row = self.assets[asset_id]
            worst = row.worst
            health = "-" if worst is None else f"{worst[2]:6.2f}"
            colour = GREEN if worst is None or worst[2] > 0.6 else YELLOW if worst[2] > 0.3 else RED
            rul = "-" if worst is None else f"{worst[0]:9.0f} {worst[1][:3]}"
            scores = " ".join(
                f"{RED if s in row.anomalous else ''}{s}={v:.2f}{RESET if s in row.anomalous else ''}"
                for s, v in sorted(row.score.items()))
            lines.append(f"{asset_id:<10} {colour}{health:>7}{RESET} {rul:>14} {scores:<40} {row.work_orders:>4}")
        lines += ["", f"{BOLD}work orders{RESET}"]
        for wo in self.work_orders:
            rul = "" if wo.get("rul") is None else f" rul={wo['rul']:.0f}"
            action = "" if wo.get("action", "open") == "open" else f" ({wo['action']})"
            lines.append(f"  {wo['created_at']} {wo['asset_id']:<10} {wo['priority']:<8} {wo['reason']}{action}{rul}  trace {wo.get('trace_id') or '-'}")
            if wo.get("why"):
                lines.append(f"    {DIM}{wo['why'][:110]}{RESET}")
        if not self.work_orders:
            lines.append(f"  {DIM}none yet{RESET}")
        if self.dead_letters:
            lines += ["", f"{BOLD}dead letters{RESET}"]
            lines += [f"  {d['stage']}: {d['error']['message'][:90]}" for d in self.dead_letters]
        totals = "  ".join(f"{t.removeprefix('mantis.')}={n}" for t, n in sorted(self.counts.items()))
        lines += ["", f"{DIM}{totals}{RESET}", f"{DIM}Ctrl-C stops everything.{RESET}"]
        return "\n".join(lines)
