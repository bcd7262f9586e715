"""Model state as a pickle: one ``to_bytes``/``from_bytes`` pair for the streaming models.

Why pickle: a model's state is its whole object graph (river estimators,
counters, deques), written to and read back from the worker's own changelogs;
a model that needs a compact layout shapes it with ``__getstate__``.
"""

from __future__ import annotations

import pickle
from typing import Self

__all__ = ["Pickled"]


class Pickled:
    """Mixin: the object pickled whole, and loaded back only as the class asked for."""

    def to_bytes(self) -> bytes:
        """The whole state; ``from_bytes`` gives an object with identical next results."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes` (only load states this process or a trusted peer wrote)."""
        obj = pickle.loads(data)
        if not isinstance(obj, cls):
            raise TypeError(f"not a state of {cls.__name__}: {type(obj).__name__}")
        return obj
