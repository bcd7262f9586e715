"""Where the pipeline's results are kept: PostgreSQL and InfluxDB 1.x.

Why this exists: the storage stage's database code, kept apart from Faust so it
is tested against real servers without a broker (``tests/integration/test_sinks_*.py``).

- :mod:`.records`: messages -> typed rows (pure, validating);
- :mod:`.buffer`: bounded write buffer, retry with backoff through outages;
- :mod:`.postgres`: work orders, anomaly events, RUL history; :mod:`.migrations`;
- :mod:`.influx`: features, anomaly scores and RUL as time series;
- :mod:`.spans`: database spans with the semantic conventions.

The Faust agents are in :mod:`mantis_stream.agents.sinks`; ``docs/sinks.md``
describes the schema and the behaviour under outage.
"""

from .buffer import Backoff, BufferClosed, BufferStats, WriteBuffer
from .influx import InfluxSink, InfluxTarget
from .postgres import PostgresSink, list_work_orders
from .records import InvalidMessage, from_message, trace_id_from_headers

__all__ = [
    "Backoff", "BufferClosed", "BufferStats", "InfluxSink", "InfluxTarget", "InvalidMessage",
    "PostgresSink", "WriteBuffer", "from_message", "list_work_orders", "trace_id_from_headers",
]
