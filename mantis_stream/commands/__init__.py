"""CLI commands beside Faust's own (``mantis-stream --help`` lists them)."""

from . import demo, detect, evaluate, evaluate_nab, maintenance, produce, replay, rul, work_orders  # noqa: F401
from . import config, trace  # noqa: F401  (observability: mantis-stream config / trace show|list)
from . import workers  # noqa: F401  (mantis-stream workers N: several worker processes, one group)
