"""mantis-stream: streaming predictive maintenance on Kafka, traced end to end.

Importing the package is light: the offline commands (``mantis-stream detect``,
``evaluate``, ``trace``...) never build the Faust app.  ``faust -A mantis_stream
worker`` asks for :data:`app`, which imports :mod:`mantis_stream.pipeline`: the
app with every agent, web view and app command registered.
"""

from typing import Any

__all__ = ["app", "settings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .pipeline import app, settings

        globals().update(app=app, settings=settings)  # the App, not the submodule of the same name
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
