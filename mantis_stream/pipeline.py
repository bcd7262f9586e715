"""The Faust app with every agent, web view and app command registered: what ``faust -A mantis_stream`` runs.

Why a module of its own: the agents and commands import :mod:`mantis_stream.app`
for the app and its topics, so registering them from there would be an import
cycle; this module sits above both, and only the package's ``app`` attribute and
the console script import it.
"""

from . import agents  # noqa: F401  (registration)
from .app import app, settings
from .commands import demo, maintenance, produce, replay, workers  # noqa: F401  (registration)

__all__ = ["app", "settings"]
