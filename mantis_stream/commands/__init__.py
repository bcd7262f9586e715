"""CLI commands beside Faust's own (``mantis-stream --help`` lists them); importing a module registers its command."""

from . import (  # noqa: F401
    config,  # mantis-stream config: the settings as the worker reads them
    demo,
    detect,
    evaluate,
    evaluate_nab,
    maintenance,
    produce,
    replay,
    rul,
    trace,  # mantis-stream trace show|list
    work_orders,
    workers,  # mantis-stream workers N: several worker processes, one group
)
