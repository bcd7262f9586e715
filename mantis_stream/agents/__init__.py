"""The pipeline's Faust agents, one module per stage; importing registers them."""

from . import anomaly, features, framing, ingest, orchestrator, preprocess, rul  # noqa: F401
