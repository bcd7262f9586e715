"""mantis-stream: streaming predictive maintenance on Kafka, traced end to end.

``faust -A mantis_stream worker`` finds :data:`app` here; importing the package
registers every agent, web view and command on it.
"""

from . import agents, commands  # noqa: F401  (registration side effects)
from .app import app, settings

__all__ = ["app", "settings"]
