"""The versions a shim was tested with, and the check that an installed library is one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

__all__ = ["Tested", "UntestedVersion", "installed_version", "require"]


class UntestedVersion(RuntimeError):
    """A library's installed version is not one the shim for it was tested with."""


@dataclass(frozen=True)
class Tested:
    """A distribution and the versions of it a shim was tested with (a PEP 440 specifier)."""

    distribution: str
    versions: str

    def problem(self, installed: Callable[[str], str]) -> str | None:
        """None when the installed version is a tested one, else the one-line reason."""
        try:
            found = installed(self.distribution)
        except PackageNotFoundError:
            return f"{self.distribution} is not installed (tested with {self.distribution}{self.versions})"
        if found in SpecifierSet(self.versions, prereleases=True):
            return None
        return (f"{self.distribution} {found} is installed, but mantis-stream relies on its internals and is "
                f"tested with {self.distribution}{self.versions} only; install a tested version")


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (its metadata, not its ``__version__``)."""
    return version(distribution)


def require(tested: Iterable[Tested], installed: Callable[[str], str] = installed_version) -> None:
    """Raise :class:`UntestedVersion` naming every distribution outside its tested versions."""
    problems = [p for t in tested if (p := t.problem(installed)) is not None]
    if problems:
        raise UntestedVersion("; ".join(problems))
