"""The ``mantis-stream`` console script: our own command group in front of Faust's CLI.

Why: offline commands (scoring a CSV, training or evaluating a model, reading
the trace file, printing the configuration) need no Kafka app; building the
Faust app for them costs start-up time, prints Faust's banner and lets a bad
worker setting break ``--help``.  They run here with :func:`asyncio.run`.  The
commands that run or talk to the pipeline (``worker``, ``workers``, ``demo``,
``produce``, ``replay``, ``maintenance``) are handed, arguments untouched, to
Faust's CLI for the app, as ``faust -A mantis_stream ...`` runs them.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any

import click

#: The offline commands and their modules (in ``mantis_stream.commands``); importing one registers its commands.
OFFLINE_COMMANDS = {
    "config": "config", "detect": "detect", "evaluate": "evaluate", "evaluate-nab": "evaluate_nab",
    "train-rul": "rul", "evaluate-rul": "rul", "predict-rul": "rul", "trace": "trace", "work-orders": "work_orders",
}

#: Commands Faust's CLI runs for the app, with the one-line help ``mantis-stream --help`` shows.
APP_COMMANDS = {
    "worker": "Start a worker of the pipeline (faust -A mantis_stream worker).",
    "workers": "Run N workers of this app (one consumer group) on this machine.",
    "demo": "Run the whole pipeline on a simulated plant and show it live.",
    "produce": "Produce JSON lines from stdin to a topic, one message per line.",
    "replay": "Produce a data set's rows to mantis.readings as readings.",
    "maintenance": "Record maintenance on ASSET: reset its healthy references and resolve its open work orders.",
}


#: ``click.argument``, as the commands declare their arguments.
argument = click.argument
#: ``click.option`` showing defaults in ``--help``, as Faust's ``option`` does.
option = functools.partial(click.option, show_default=True)


class _Commands(click.Group):
    """Imports a command's module only when that command is asked for (or ``--help`` lists them all)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*OFFLINE_COMMANDS, *APP_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            if cmd_name in OFFLINE_COMMANDS:
                importlib.import_module(f"{__package__}.commands.{OFFLINE_COMMANDS[cmd_name]}")
            elif cmd_name in APP_COMMANDS:
                self.add_command(_app_command(cmd_name, APP_COMMANDS[cmd_name]))
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
@click.version_option(version("mantis-stream"), "--version", prog_name="mantis-stream", message="%(prog)s %(version)s")
def group() -> None:
    """mantis-stream: streaming predictive maintenance on Kafka, traced end to end."""


def command(*params: Callable[[Any], Any]) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], click.Command]:
    """Register ``async def name(self, **params)`` as ``mantis-stream name``, run without the Faust app.

    The handler keeps Faust's command signature (a first ``self``, unused) so a
    command can move between this group and the app's without changes.
    """

    def register(fun: Callable[..., Coroutine[Any, Any, None]]) -> click.Command:
        def run(**kwargs: Any) -> None:
            asyncio.run(fun(None, **kwargs))

        cmd = click.Command(fun.__name__.replace("_", "-"), callback=run, help=inspect.getdoc(fun))
        for param in params:
            param(cmd)
        group.add_command(cmd)
        return cmd

    return register


def _app_command(name: str, summary: str) -> click.Command:
    """The entry ``--help`` lists; :func:`main` hands the command to Faust before this group parses it."""
    return click.Command(name, help=summary)


def main() -> None:
    """The console script: the app's commands go to Faust's CLI (the app built first), the rest to :data:`group`.

    Faust's own options may come before the command (``--datadir D worker``), so
    the first command name on the line decides.
    """
    named = next((arg for arg in sys.argv[1:] if arg in APP_COMMANDS or arg in OFFLINE_COMMANDS), None)
    if named in APP_COMMANDS:
        from .pipeline import app

        app.main()
    group()
