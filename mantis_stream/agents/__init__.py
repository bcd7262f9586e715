"""The pipeline's Faust agents, one module per stage; importing registers them."""

from . import anomaly, features, framing, ingest, orchestrator, preprocess, rul, sinks  # noqa: F401
