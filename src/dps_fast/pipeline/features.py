"""Feature reuse: tap features of an image that several pairs use, computed once per run.

Features are cached by (engine index, file, array shape) in an LRU bounded in bytes; only
files used more than once are kept.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine

DEFAULT_FEATURE_CACHE_BYTES = 512 * 1024 * 1024


class FeatureCache:
    """LRU of tap features by image key, bounded in bytes: images used by many pairs run once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[Any, list[np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Any) -> list[np.ndarray] | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: Any, feats: list[np.ndarray]) -> None:
        size = sum(f.nbytes for f in feats)
        if size > self.max_bytes or key in self._d:
            return
        self._d[key] = feats
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._d.popitem(last=False)
            self._bytes -= sum(f.nbytes for f in old)


def per_tap_reusing_features(
    k: int,
    engine: Engine,
    pairs: list[tuple[tuple[Path | None, np.ndarray], tuple[Path | None, np.ndarray]]],
    cache: FeatureCache,
    uses: Counter[Path | None],
) -> np.ndarray:
    """Engine ``k``'s per-tap distances of ``pairs`` ((file, array) on each side), each
    distinct image's trunk run once per batch, and once per run for shared files.

    A side that is one image for every pair is passed as a broadcast view, and a side whose
    images are in order in this batch's trunk output as a slice of it: no per-pair copies.
    """
    keys: list[Any] = []
    arrays: list[np.ndarray] = []
    index: dict[Any, int] = {}
    pairs_idx = []
    for side_a, side_b in pairs:
        ij = []
        for p, arr in (side_a, side_b):
            key = (p, arr.shape)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
                arrays.append(arr)
            ij.append(index[key])
        pairs_idx.append(ij)
    out: list[list[np.ndarray] | None] = [cache.get((k, *key)) for key in keys]
    todo = [i for i, f in enumerate(out) if f is None]
    row: dict[int, int] = {}  # key index → its row in this batch's trunk output
    feats: list[np.ndarray] = []
    if todo:
        feats = engine.features(np.stack([arrays[i] for i in todo]))
        for j, i in enumerate(todo):
            out[i] = [t[j : j + 1] for t in feats]
            row[i] = j
            if uses[keys[i][0]] > 1:
                # A copy: a view would keep the whole batch's features alive in the cache.
                cache.put((k, *keys[i]), [t[j : j + 1].copy() for t in feats])
    got = [f for f in out if f is not None]
    n_taps = len(engine.tap_names)

    def side(idx: list[int]) -> list[np.ndarray]:
        """One side's features for the batch, copied only when they must be gathered."""
        n, first = len(idx), idx[0]
        if all(i == first for i in idx):  # one image for every pair (a shared reference)
            return [np.broadcast_to(f, (n, *f.shape[1:])) for f in got[first]]
        rows = [row.get(i, -1) for i in idx]
        if rows == list(range(rows[0], rows[0] + n)) and rows[0] >= 0:  # in order in the batch
            return [t[rows[0] : rows[0] + n] for t in feats]
        return [np.concatenate([got[i][t] for i in idx]) for t in range(n_taps)]

    fa = side([i for i, _ in pairs_idx])
    fb = side([j for _, j in pairs_idx])
    return engine.per_tap_from_features(fa, fb)
