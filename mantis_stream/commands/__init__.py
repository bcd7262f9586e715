"""CLI commands beside Faust's own (``mantis-stream --help`` lists them)."""

from . import demo, detect, evaluate_nab, produce, work_orders  # noqa: F401
