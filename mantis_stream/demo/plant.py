"""A simulated plant: pumps with vibration and temperature sensors, and an engine.

- ``PUMP-1`` healthy; ``PUMP-2`` and ``PUMP-3`` develop an outer-race bearing
  defect whose impacts (at BPFO, ringing a structural resonance) grow until
  failure at ``failure_after`` seconds of demo time (PUMP-3 more slowly).
- ``PUMP-1`` also reports a temperature (``TMP-1``), which drifts up on a
  degrading pump.
- ``ENGINE-1`` reports one ``cycle`` per tick with turbofan-like channels that
  drift towards failure.

Pure generation (numpy); the demo command produces the readings to Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 10_240.0
CHUNK = 1_024  # samples per waveform reading (0.1 s)
SHAFT_HZ = 29.5  # 1770 rpm
BEARING = {"n_balls": 9, "ball_diameter": 7.94, "pitch_diameter": 38.5, "contact_angle_deg": 0.0}
RESONANCE_HZ = 3_000.0


def bpfo_hz(shaft_hz: float = SHAFT_HZ) -> float:
    b = BEARING
    return float(b["n_balls"] / 2 * shaft_hz * (1 - b["ball_diameter"] / b["pitch_diameter"] * np.cos(np.radians(b["contact_angle_deg"]))))


@dataclass
class Pump:
    asset_id: str
    failure_after: float | None  # seconds of demo time; None: healthy
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    t0_samples: int = 0

    def wear(self, t: float) -> float:
        """0 (new) .. 1 (failed)."""
        if self.failure_after is None:
            return 0.0
        return float(min(1.0, (t / self.failure_after) ** 3))

    def vibration_chunk(self, t: float) -> np.ndarray:
        n = np.arange(self.t0_samples, self.t0_samples + CHUNK)
        self.t0_samples += CHUNK
        time = n / SAMPLE_RATE
        signal = 0.3 * np.sin(2 * np.pi * SHAFT_HZ * time) + 0.05 * self.rng.standard_normal(CHUNK)
        severity = self.wear(t)
        if severity > 0:
            period = 1.0 / bpfo_hz()
            since_impact = np.mod(time, period)
            ring = np.exp(-since_impact * 800.0) * np.sin(2 * np.pi * RESONANCE_HZ * since_impact)
            signal += 4.0 * severity * ring
        return signal + 0.02  # a small DC offset the pipeline removes

    def readings(self, t: float, ts: float) -> list[dict[str, Any]]:
        return [{
            "asset_id": self.asset_id, "sensor_id": "VIB-1", "ts": ts, "kind": "vibration", "unit": "g",
            "values": np.round(self.vibration_chunk(t), 5).tolist(), "sample_rate_hz": SAMPLE_RATE,
            "meta": {"shaft_hz": SHAFT_HZ, **BEARING},
        }]

    def temperature(self, t: float, ts: float) -> dict[str, Any]:
        value = 61.0 + 15.0 * self.wear(t) + 0.3 * self.rng.standard_normal()
        return {"asset_id": self.asset_id, "sensor_id": "TMP-1", "ts": ts, "kind": "temperature", "unit": "degC", "value": round(value, 2)}


@dataclass
class Engine:
    asset_id: str
    life_cycles: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    cycle: int = 0

    def reading(self, ts: float) -> dict[str, Any]:
        self.cycle += 1
        wear = min(1.0, self.cycle / self.life_cycles) ** 2
        noise = self.rng.standard_normal(4)
        channels = {
            "s2": 642.0 + 2.0 * wear + 0.4 * noise[0],
            "s3": 1585.0 + 30.0 * wear + 5.0 * noise[1],
            "s4": 1400.0 + 40.0 * wear + 8.0 * noise[2],
            "s11": 47.3 + 1.2 * wear + 0.2 * noise[3],
        }
        return {"asset_id": self.asset_id, "sensor_id": "GAS-PATH", "ts": ts, "cycle": self.cycle,
                "channels": {k: round(float(v), 3) for k, v in channels.items()}}


@dataclass
class Plant:
    """Everything the demo simulates; ``tick`` returns the readings of one 0.1 s step."""

    pumps: list[Pump] = field(default_factory=lambda: [
        Pump("PUMP-1", None), Pump("PUMP-2", 150.0), Pump("PUMP-3", 300.0)])
    engine: Engine = field(default_factory=lambda: Engine("ENGINE-1", 250))
    ticks: int = 0

    def tick(self, t: float, ts: float) -> list[dict[str, Any]]:
        self.ticks += 1
        out: list[dict[str, Any]] = []
        for pump in self.pumps:
            out += pump.readings(t, ts)
        if self.ticks % 10 == 0:  # 1 Hz
            out += [pump.temperature(t, ts) for pump in self.pumps]
        if self.ticks % 5 == 0:  # one engine cycle every 0.5 s
            out.append(self.engine.reading(ts))
        return out
