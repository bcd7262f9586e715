"""Cut a waveform that arrives in arbitrary chunks into fixed-size frames.

Why this exists
    Sensors send waveform chunks of any length (a reading's ``values``), but the
    FFT features need frames of exactly ``frame_size`` samples. The assembler
    keeps the tail of one chunk and prepends it to the next, so every sample
    lands in the frames it belongs to: none is dropped, none is repeated (for
    ``hop == frame_size``; with ``hop < frame_size`` frames overlap on purpose).

Usage
    >>> import numpy as np
    >>> fa = FrameAssembler(4)
    >>> fa.push(np.arange(6.0)).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    >>> fa.pending
    2
    >>> fa = FrameAssembler.from_bytes(fa.to_bytes())   # e.g. through a Faust table
    >>> fa.push(np.arange(6.0, 10.0)).tolist()
    [[4.0, 5.0, 6.0, 7.0]]

Notes
    One assembler per (asset, sensor): interleaving two sensors' chunks in one
    assembler mixes their samples. The state is small (at most ``frame_size``
    samples) and ``to_bytes`` is a fixed header plus the raw buffer.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["FrameAssembler", "remove_dc"]

# magic, version, dtype code, frame_size, hop, skip, n_buffered
_HEADER = struct.Struct("<4sBBIIQI")
_MAGIC = b"MSFA"
_DTYPES: dict[int, np.dtype[np.floating[Any]]] = {0: np.dtype("<f8"), 1: np.dtype("<f4")}
_CODES = {v: k for k, v in _DTYPES.items()}


class FrameAssembler:
    """Cuts a stream of waveform chunks into fixed-size frames; never drops or duplicates samples across chunk boundaries.

    ``hop`` is the distance between the starts of two frames (defaults to
    ``frame_size``: no overlap). ``hop > frame_size`` decimates frames: the
    samples between frames are skipped, also across chunks.
    """

    __slots__ = ("frame_size", "hop", "dtype", "_buf", "_skip")

    def __init__(self, frame_size: int, hop: int | None = None, dtype: np.dtype | type = np.float64) -> None:
        if int(frame_size) < 1:
            raise ValueError(f"frame_size must be >= 1, got {frame_size}")
        hop = int(frame_size) if hop is None else int(hop)
        if hop < 1:
            raise ValueError(f"hop must be >= 1, got {hop}")
        dt = np.dtype(dtype).newbyteorder("<")
        if dt not in _CODES:
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
        self.frame_size = int(frame_size)
        self.hop = hop
        self.dtype = dt
        self._buf = np.empty(0, dtype=dt)
        self._skip = 0  # samples still to discard before the next frame starts (hop > frame_size)

    @property
    def pending(self) -> int:
        """Samples buffered, not yet in a frame."""
        return int(self._buf.size)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add a chunk; return the frames it completes, shape ``(n_frames, frame_size)``."""
        x = np.asarray(samples, dtype=self.dtype).ravel()
        if self._skip:
            drop = min(self._skip, x.size)
            x = x[drop:]
            self._skip -= drop
        data = np.concatenate((self._buf, x)) if self._buf.size else x
        n = data.size
        if n < self.frame_size:
            self._buf = data.copy() if data is x else data
            return np.empty((0, self.frame_size), dtype=self.dtype)
        n_frames = (n - self.frame_size) // self.hop + 1
        frames = sliding_window_view(data, self.frame_size)[:: self.hop][:n_frames].copy()
        consumed = n_frames * self.hop
        if consumed <= n:
            self._buf = data[consumed:].copy()
        else:
            self._buf = np.empty(0, dtype=self.dtype)
            self._skip = consumed - n
        return frames

    def to_bytes(self) -> bytes:
        """Compact state: a 26-byte header and the buffered samples."""
        head = _HEADER.pack(_MAGIC, 1, _CODES[self.dtype], self.frame_size, self.hop, self._skip, self._buf.size)
        return head + self._buf.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> FrameAssembler:
        """Inverse of :meth:`to_bytes`."""
        if len(data) < _HEADER.size:
            raise ValueError("FrameAssembler state is truncated")
        magic, version, code, frame_size, hop, skip, n = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != 1 or code not in _DTYPES:
            raise ValueError("not a FrameAssembler state (bad magic, version or dtype)")
        dt = _DTYPES[code]
        if len(data) != _HEADER.size + n * dt.itemsize:
            raise ValueError("FrameAssembler state has the wrong length")
        fa = cls(frame_size, hop, dt)
        fa._buf = np.frombuffer(data, dtype=dt, count=n, offset=_HEADER.size).copy()
        fa._skip = skip
        return fa

    def __repr__(self) -> str:
        return f"FrameAssembler(frame_size={self.frame_size}, hop={self.hop}, pending={self.pending})"


def remove_dc(frames: np.ndarray) -> np.ndarray:
    """Subtract each frame's mean: the sensor's DC offset (bias, gravity) carries no vibration."""
    f = np.asarray(frames, dtype=np.float64)
    centred: np.ndarray = f - f.mean(axis=-1, keepdims=True)
    return centred
