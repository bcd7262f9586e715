"""River's Half-Space Trees internals the anomaly detector's state relies on, and typed views of its models.

Why: a detector's state (:meth:`mantis_stream.models.anomaly.AnomalyDetector.to_bytes`)
is written after every batch for every touched sensor, so it carries the
trees' masses only; the split points are drawn again from the seed, as river
draws them (``river.tree.padded.make_padded_tree``), and planted in the trees
with river's per-tree node lists (``HalfSpaceTrees._tree_nodes``, which its
``learn_one`` uses to pivot the masses) and window flag (``_first_window``).
None of that is public.  River's methods carry no annotations; the protocols
below say what the detector calls and gets back.
"""

from __future__ import annotations

import array
import functools
import operator
import random
import zlib
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Protocol, cast

import numpy as np
from river import anomaly, preprocessing
from river.tree.padded import PaddedBranch, PaddedLeaf, make_padded_tree

from .versions import Tested, UntestedVersion, installed_version

__all__ = ["TESTED", "Forest", "Scaler", "adaptive_scaler", "forest_state", "half_space_trees",
           "plant_trees", "restore_forest", "split_checksum"]

#: The river versions whose trees and Half-Space Trees internals these shims were tested with.
TESTED = (Tested("river", ">=0.26,<0.27"),)


class Statistic(Protocol):
    def get(self) -> float: ...


class Scaler(Protocol):
    """What the detector uses of ``preprocessing.AdaptiveStandardScaler``."""

    @property
    def means(self) -> Mapping[str, Statistic]: ...

    @property
    def vars(self) -> Mapping[str, Statistic]: ...

    def transform_one(self, x: dict[str, float]) -> dict[str, float]: ...

    def learn_one(self, x: dict[str, float]) -> None: ...


class Forest(Protocol):
    """What the detector uses of ``anomaly.HalfSpaceTrees``."""

    n_trees: int
    height: int
    window_size: int
    seed: int
    counter: int
    trees: list[PaddedBranch]

    def score_one(self, x: dict[str, float]) -> float: ...

    def learn_one(self, x: dict[str, float]) -> None: ...


class _Internals(Forest, Protocol):
    _tree_nodes: list[list[PaddedBranch | PaddedLeaf]]
    _first_window: bool


def adaptive_scaler(fading_factor: float) -> Scaler:
    return cast(Scaler, preprocessing.AdaptiveStandardScaler(fading_factor=fading_factor))  # type: ignore[no-untyped-call]


def half_space_trees(n_trees: int, height: int, window_size: int, seed: int) -> Forest:
    """River's Half-Space Trees, without trees until the first point or :func:`plant_trees`."""
    forest = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
    if not hasattr(forest, "_tree_nodes") or not hasattr(forest, "_first_window"):
        raise UntestedVersion(f"river {installed_version('river')}: HalfSpaceTrees has no _tree_nodes/_first_window; "
                              f"tested with river{TESTED[0].versions}")
    return cast(Forest, forest)


_MASSES = operator.attrgetter("l_mass", "r_mass")


@functools.lru_cache(maxsize=64)
def _tree_splits(n_trees: int, height: int, seed: int, features: tuple[str, ...]) -> tuple[list[str | None], np.ndarray]:
    """Split feature and threshold of every node (depth-first, all trees), as river builds them.

    River's first ``learn_one`` draws the splits from ``Random(seed)`` over the
    sorted feature names with limits (0, 1) and padding 0.15; doing the same here
    lets a saved state carry masses only. Cached: every detector of one kind of
    sensor shares the same trees.
    """
    rng = random.Random(seed)
    limits = {f: (0.0, 1.0) for f in sorted(features)}
    trees = [make_padded_tree(limits=dict(limits), height=height, padding=0.15, rng=rng, r_mass=0, l_mass=0)  # type: ignore[no-untyped-call]
             for _ in range(n_trees)]
    nodes = [n for t in trees for n in t.iter_dfs()]
    feats = [getattr(n, "feature", None) for n in nodes]
    return feats, np.array([getattr(n, "threshold", -1.0) for n in nodes], dtype=np.float64)


def _build_trees(forest: Forest, feats: list[str | None], thresholds: list[float], mass: Sequence[int]) -> None:
    """Plant ``PaddedBranch``/``PaddedLeaf`` trees from depth-first arrays, with each tree's node list.

    ``mass`` is flat: node ``i``'s left and right masses at ``2 i`` and ``2 i + 1``.
    """
    height = forest.height
    pos = 0
    nodes: list[PaddedBranch | PaddedLeaf | None] = []

    def build(depth: int) -> PaddedBranch | PaddedLeaf:
        nonlocal pos
        i = pos
        pos += 1
        lm, rm = mass[2 * i], mass[2 * i + 1]
        if depth == height:
            leaf = PaddedLeaf(l_mass=lm, r_mass=rm)  # type: ignore[no-untyped-call]
            nodes.append(leaf)
            return leaf
        at = len(nodes)
        nodes.append(None)  # the branch, once its children exist: the list is depth-first
        left = build(depth + 1)
        right = build(depth + 1)
        branch = PaddedBranch(left, right, feats[i], thresholds[i], lm, rm)  # type: ignore[no-untyped-call]
        nodes[at] = branch
        return branch

    trees: list[PaddedBranch] = []
    per_tree: list[list[PaddedBranch | PaddedLeaf]] = []
    for _ in range(forest.n_trees):
        nodes = []
        trees.append(cast(PaddedBranch, build(0)))
        per_tree.append(cast(list[PaddedBranch | PaddedLeaf], nodes))  # every None replaced
    internals = cast(_Internals, forest)
    internals.trees, internals._tree_nodes = trees, per_tree


def plant_trees(forest: Forest, features: tuple[str, ...]) -> None:
    """Empty trees with river's split points for ``features``, from a per-process cache.

    River would draw them on the first ``learn_one`` (a few milliseconds per
    detector, paid again for every new sensor); every detector of one kind of
    sensor has the same splits, so they are drawn once per process.
    """
    feats, thresholds = _tree_splits(forest.n_trees, forest.height, forest.seed, features)
    _build_trees(forest, feats, thresholds.tolist(), [0] * (2 * len(thresholds)))


def forest_state(forest: Forest) -> tuple[tuple[int, bool], np.ndarray | None]:
    """``((counter, first_window), masses)``: the window position, and every node's (left, right) mass.

    ``masses`` is a (nodes, 2) uint32 array over all trees depth-first, None before the first point.
    """
    internals = cast(_Internals, forest)
    window = (forest.counter, internals._first_window)
    if not forest.trees:
        return window, None
    masses = array.array("I", chain.from_iterable(map(_MASSES, chain.from_iterable(internals._tree_nodes))))
    return window, np.frombuffer(masses, dtype=np.uint32).reshape(-1, 2)


def split_checksum(forest: Forest) -> int:
    """CRC of the trees' split points: guards a saved state against a river that builds trees differently."""
    nodes = chain.from_iterable(cast(_Internals, forest)._tree_nodes)
    return zlib.crc32(np.array([getattr(n, "threshold", -1.0) for n in nodes], dtype=np.float64).tobytes())


def restore_forest(params: tuple[int, int, int, int], features: tuple[str, ...], window: tuple[int, bool],
                   masses: np.ndarray | None, checksum: int | None) -> Forest:
    """The forest :func:`forest_state` described; ValueError when this river draws other split points."""
    n_trees, height, window_size, seed = params
    forest = half_space_trees(n_trees, height, window_size, seed)
    if masses is not None:
        feats, thresholds = _tree_splits(n_trees, height, seed, features)
        if len(thresholds) != len(masses) or zlib.crc32(thresholds.tobytes()) != checksum:
            raise ValueError("detector state does not match this river version's trees; retrain the detector")
        flat = array.array("I", np.asarray(masses, dtype=np.uint32).tobytes())  # much cheaper than a 2-D tolist()
        _build_trees(forest, feats, thresholds.tolist(), flat)
    internals = cast(_Internals, forest)
    internals.counter, internals._first_window = window
    return forest
