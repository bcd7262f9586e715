"""CLI commands beside Faust's own (``mantis-stream --help`` lists them)."""

from . import demo, produce, work_orders  # noqa: F401
