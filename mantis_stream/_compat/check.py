"""The worker's start check over every library :mod:`mantis_stream._compat` reaches into."""

from __future__ import annotations

from collections.abc import Callable

from . import faust, otel, river
from .versions import UntestedVersion, installed_version, require

__all__ = ["check_tested_versions"]


def check_tested_versions(installed: Callable[[str], str] = installed_version) -> None:
    """Stop in one line when a library the shims reach into is outside its tested versions (a worker start check)."""
    try:
        require((*faust.TESTED, *otel.TESTED, *river.TESTED), installed)
    except UntestedVersion as exc:
        raise SystemExit(f"mantis-stream: {exc}") from None
