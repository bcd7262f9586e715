"""Topic names (INTERFACE.md) and which pipeline stage consumes what.

Public topics keep the names users rely on; the two internal hops between the
preprocessing stage's agents are prefixed ``mantis.internal.``.
"""

from __future__ import annotations

READINGS = "mantis.readings"
FEATURES = "mantis.features"
ANOMALIES = "mantis.anomalies"
RUL = "mantis.rul"
WORK_ORDERS = "mantis.work-orders"
DEAD_LETTERS = "mantis.dead-letters"

#: Valid readings keyed by asset (the input has no key).
READINGS_KEYED = "mantis.internal.readings-keyed"
#: Assembled frames / windows / per-cycle rows, keyed by asset.
FRAMES = "mantis.internal.frames"

ALL_TOPICS = (READINGS, READINGS_KEYED, FRAMES, FEATURES, ANOMALIES, RUL, WORK_ORDERS, DEAD_LETTERS)

#: Agent name -> stage key (see ``settings.DEFAULT_SERVICES``); the tracing
#: sensor uses it to pick the service a consumed message is reported under.
AGENT_STAGES: dict[str, str] = {
    "preprocess": "preprocessing",
    "frame": "preprocessing",
    "features": "feature-extraction",
    "anomaly": "anomaly-detection",
    "rul": "rul-prediction",
    "orchestrator": "orchestrator",
    "sink-postgres": "storage",
    "sink-influx": "storage",
}
