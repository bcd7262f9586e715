"""mantis-stream: streaming predictive maintenance on Kafka, traced end to end.

``faust -A mantis_stream worker`` finds :data:`app` here; importing the package
registers every agent, web view and command on it.
"""

from .app import app, settings
from . import agents, commands  # noqa: F401,E402  (registration side effects)

__all__ = ["app", "settings"]
