"""Topic names (INTERFACE.md); which stage reads and writes which is in :mod:`mantis_stream.stages`.

Public topics keep the names users rely on, one message per record.  The hops
between our own agents are prefixed ``mantis.internal.`` and *batched*: one
message carries many records, each with its own trace context
(``mantis_stream.agents._batch``).
"""

from __future__ import annotations

READINGS = "mantis.readings"
FEATURES = "mantis.features"
ANOMALIES = "mantis.anomalies"
RUL = "mantis.rul"
WORK_ORDERS = "mantis.work-orders"
DEAD_LETTERS = "mantis.dead-letters"
#: Maintenance events (``mantis-stream maintenance done ASSET``), keyed by asset.
MAINTENANCE = "mantis.maintenance"

#: Valid readings on the partition of their asset (the input has no key).
READINGS_KEYED = "mantis.internal.readings-keyed"
#: Assembled frames / windows / per-cycle rows.
FRAMES = "mantis.internal.frames"
#: Feature vectors for the anomaly and RUL stages (the public copy is mantis.features).
FEATURE_BATCHES = "mantis.internal.features"
#: Anomaly scores and RUL estimates for the orchestrator (public: mantis.anomalies, mantis.rul).
ASSESSMENTS = "mantis.internal.assessments"

#: Topics whose messages are batches of records, per partition of the asset.
BATCHED = (READINGS_KEYED, FRAMES, FEATURE_BATCHES, ASSESSMENTS)

ALL_TOPICS = (READINGS, *BATCHED, FEATURES, ANOMALIES, RUL, WORK_ORDERS, DEAD_LETTERS, MAINTENANCE)
