"""One line, no traceback, a non-zero exit: how a CLI command reports a mistake the user can fix.

Why: Faust runs a command inside a ``mode`` worker, which logs any exception
with its traceback (40 to 90 lines for a broker that is not running).  The
commands raise :class:`CommandError` (or let a broker, file or usage error
through) and :func:`one_line_errors` turns it into ``mantis-stream CMD: what,
and the fix`` on stderr with exit status 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import click
from aiokafka.errors import KafkaError

P = ParamSpec("P")
R = TypeVar("R")


class CommandError(Exception):
    """A mistake in the command's input or environment, said in one line."""


def describe(exc: BaseException) -> str:
    """The one-line reason of a known failure."""
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if isinstance(exc, KafkaError):
        return f"the Kafka broker did not answer ({type(exc).__name__}: {str(exc).removeprefix(type(exc).__name__ + ': ')}); " \
               "is it running, and do MANTIS_BROKER and MANTIS_KAFKA_SECURITY_PROTOCOL match it?"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def one_line_errors(fun: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap a command body: known failures exit with one line on stderr, status 1."""
    name = fun.__name__.replace("_", "-")

    @functools.wraps(fun)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # aiokafka logs every failed connection attempt; the command says what failed, once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        try:
            return await fun(*args, **kwargs)
        except (CommandError, click.ClickException, KafkaError, OSError) as exc:
            raise SystemExit(f"mantis-stream {name}: {describe(exc)}") from None

    return run
