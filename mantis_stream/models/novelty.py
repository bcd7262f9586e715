"""Transition novelty of a scalar series: has the series gone from these levels to this one before?

Why this exists
    The condition monitor's healthy reference judges levels and its Half-Space
    Trees judge window statistics. A change of *pattern* without a jump (a daily
    cycle that loses a peak, a value that starts to oscillate inside its usual
    range) moves neither. This estimator learns which transitions between a few
    coarse levels the series makes, and scores a point by how little of what it
    has learned the point confirms. It follows the idea of Smirnov's Contextual
    Anomaly Detector (CAD OSE, the simple detector with the best stored
    detections on NAB's development files: docs/models-anomaly.md, section 3)
    with plain counts of level sequences instead of CAD's context memory, which
    costs milliseconds per point and grows without bound.

Method
    - *Levels.* The range seen during ``warmup`` (commissioning), widened by
      ``margin`` of its width on each side (a short commissioning rarely sees
      the extremes of the noise), is cut into ``levels`` equal parts; values
      outside it get levels outside ``0 .. levels - 1``. The commissioning
      points are kept until then and are the first transitions learned.
    - *A range that grows.* A value more than one range's width beyond the
      cut range (where its level would have no name) is scored as it is, then
      the range is re-cut over everything seen (widened by ``margin`` again)
      and the transitions are learned afresh from the last ``keep`` values:
      a live series is not handed its extremes in advance, as CAD OSE's NAB
      run is.
    - *Contexts.* For each order ``k = 1 .. order`` the last ``k`` levels are a
      context; the estimator counts which levels followed each context.
    - *Score.* ``confirmed``: of the continuations known for the current
      contexts, the share that the new level is; ``novel``: the share of orders
      for which (context, level) was never seen. ``raw = (1 - confirmed + novel) / 2``.
    - *Events.* A raw score at or above ``alert`` is an event; the published
      score is the raw score only if no event happened in the ``rest`` points
      before, else 0: an anomaly is reported once, at its onset.

Usage
    >>> nov = TransitionNovelty(warmup=20, rest=5)
    >>> scores = [nov.process_one(float(i % 4)) for i in range(200)]
    >>> max(scores[100:]) < nov.alert   # a learned cycle confirms itself
    True
    >>> nov.process_one(1.0) >= nov.alert   # 3 -> 1 breaks the cycle 0 1 2 3
    True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from .pickled import Pickled

__all__ = ["TransitionNovelty"]

#: Values kept to re-learn from when the range grows (a warm-up's worth).
DEFAULT_KEEP = 300


class TransitionNovelty(Pickled):
    """Onset score in [0, 1] of level transitions never (or rarely) seen; river's protocol on a scalar."""

    def __init__(self, warmup: int = 300, levels: int = 3, order: int = 4, alert: float = 0.75, rest: int = 150,
                 margin: float = 0.25, keep: int = DEFAULT_KEEP) -> None:
        if warmup < 2 or levels < 2 or order < 1 or not 0.0 < alert <= 1.0 or rest < 0 or margin < 0 or keep < 1:
            raise ValueError("TransitionNovelty: warmup >= 2, levels >= 2, order >= 1, 0 < alert <= 1, rest >= 0, margin >= 0, "
                             "keep >= 1")
        self.warmup, self.levels, self.order, self.alert, self.rest = int(warmup), int(levels), int(order), float(alert), int(rest)
        self.margin, self.keep = float(margin), int(keep)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next ``warmup`` values commission the range again."""
        self.n_seen = 0
        self._range: list[float] = []
        self.low, self.step = math.nan, math.nan
        self.seen_low, self.seen_high = math.nan, math.nan  # the range cut (before the margin)
        self._kept: deque[float] = deque(maxlen=self.keep)  # the last finite values, to re-learn from after a re-cut
        self._next: dict[tuple[int, ...], dict[int, int]] = {}  # context (last k levels) -> {next level: count}
        self._history: tuple[int, ...] = ()  # the last `order` levels
        self._since_event = 0  # points since the last raw score >= alert (capped at rest)

    @property
    def warm(self) -> bool:
        return self.n_seen >= self.warmup

    def level(self, x: float) -> int:
        """The level of ``x`` on the cut range (beyond it: up to one range's width outside)."""
        if not math.isfinite(x):
            return 0
        q = math.floor((x - self.low) / self.step)
        return min(max(q, -self.levels), 2 * self.levels - 1)

    def raw_one(self, x: float) -> float:
        """How little the learned transitions confirm ``x``: (1 - confirmed + novel) / 2 (0 while warming up)."""
        if not self.warm:
            return 0.0
        q = self.level(x)
        known = matched = novel = tried = 0
        for k in range(1, min(self.order, len(self._history)) + 1):
            after = self._next.get(self._history[-k:])
            tried += 1
            if after is None:
                novel += 1
                continue
            known += len(after)
            if q in after:
                matched += 1
            else:
                novel += 1
        confirmed = matched / known if known else 0.0
        return (1.0 - confirmed + (novel / tried if tried else 0.0)) / 2.0

    def score_one(self, x: float) -> float:
        """The onset score of ``x``: its raw score unless an event happened in the last ``rest`` points; does not learn."""
        return self._onset(self.raw_one(x))

    def learn_one(self, x: float) -> None:
        self.process_one(x)

    def process_one(self, x: float) -> float:
        """:meth:`score_one`, then learn ``x``."""
        raw = self.raw_one(x)
        score = self._onset(raw)
        self.n_seen += 1
        if self.n_seen <= self.warmup:
            self._commission(float(x))
            return 0.0
        self._since_event = 0 if raw >= self.alert else min(self._since_event + 1, self.rest)
        if math.isfinite(x):
            self._kept.append(x)
            width = self.levels * self.step
            if not self.low - width <= x <= self.low + 2 * width:
                self._cut(min(self.seen_low, x), max(self.seen_high, x), self._kept)
                return score
        self._learn_level(self.level(x))
        return score

    def _learn_level(self, q: int) -> None:
        h = self._history
        for k in range(1, min(self.order, len(h)) + 1):
            after = self._next.setdefault(h[-k:], {})
            after[q] = after.get(q, 0) + 1
        self._history = (*h, q)[-self.order :]

    def _onset(self, raw: float) -> float:
        return raw if self.warm and self._since_event >= self.rest else 0.0

    def _commission(self, x: float) -> None:
        if math.isfinite(x):
            self._range.append(x)
        if self.n_seen < self.warmup:
            return
        low, high = (min(self._range), max(self._range)) if self._range else (0.0, 0.0)
        self._cut(low, high, self._range)  # the commissioning points' transitions are the first ones learned
        self._kept.extend(self._range)
        self._range = []
        self._since_event = self.rest

    def _cut(self, low: float, high: float, values: Iterable[float]) -> None:
        """Cut ``[low, high]``, widened by ``margin``, into the levels and learn the transitions of ``values`` afresh."""
        self.seen_low, self.seen_high = low, high
        pad = self.margin * (high - low)
        low, high = low - pad, high + pad
        self.low, self.step = low, (high - low) / self.levels if high > low else 1.0
        self._next, self._history = {}, ()
        for v in values:
            self._learn_level(self.level(v))

    def __setstate__(self, state: dict[str, object]) -> None:
        """Load a state pickled before the range could grow: its cut range is recovered, the kept values start empty."""
        self.__dict__.update(state)
        if "_kept" not in state:
            self.keep = DEFAULT_KEEP
            self._kept = deque(maxlen=self.keep)
            self.seen_low = self.seen_high = math.nan
            if math.isfinite(self.low):
                span = self.levels * self.step / (1.0 + 2.0 * self.margin)
                self.seen_low = self.low + self.margin * span
                self.seen_high = self.seen_low + span
