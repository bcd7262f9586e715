"""A fast JSON codec (orjson) registered with Faust as ``"orjson"``.

Why: Faust's default ``json`` codec is the stdlib's; JSON decoding dominates the
per-event cost on the hot path.  Values are plain dicts and lists.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs


class OrjsonCodec(codecs.Codec):
    """``dumps``/``loads`` through orjson; numpy scalars and arrays are accepted."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


codecs.register("orjson", OrjsonCodec())
