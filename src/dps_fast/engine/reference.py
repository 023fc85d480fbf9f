"""One reference image's features, kept to score many candidates against it.

Scoring N candidates against one reference with ``Engine.score(ref, candidates)`` already
computes the reference's features once per call; a :class:`Reference` keeps them across calls
(a stream of candidates, several batches, several threads). It holds the reference's tap
features on the host: ``nbytes`` says how much (about 32 MB for a 1024×768 image with
lpips-alex, ~5× that with lpips-vgg), and dropping the object frees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .inputs import ImageLike, check_min_size, image_hw, to_batch, untrack

if TYPE_CHECKING:
    from .engine import Engine


class Reference:
    """Features of one image; :meth:`score` compares candidates of its size against them."""

    def __init__(
        self, engine: Engine, image: ImageLike, *, value_range: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        batch = to_batch(untrack(image), value_range, keep_uint8=engine.accepts_uint8)
        if batch.shape[0] != 1:
            raise ValueError(
                f"expected one reference image, got a batch of {batch.shape[0]}: make one "
                "Reference per image"
            )
        check_min_size(image_hw(batch), engine.bundle.min_size)
        self.engine = engine
        self.hw: tuple[int, int] = image_hw(batch)
        self.features: list[np.ndarray] = engine.features(batch)

    @property
    def nbytes(self) -> int:
        """Bytes of features this object holds (float32, all taps)."""
        return int(sum(f.nbytes for f in self.features))

    def score(
        self,
        candidates: ImageLike,
        *,
        per_layer: bool = False,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> Any:
        """Distances of candidates (N images of the reference's size) to the reference:
        float32 (N,), or (N, K) with ``per_layer``. Runs the trunk on the candidates only."""
        eng = self.engine
        batch = to_batch(untrack(candidates), value_range, keep_uint8=eng.accepts_uint8)
        if image_hw(batch) != self.hw:
            h, w = self.hw
            hb, wb = image_hw(batch)
            raise ValueError(
                f"expected candidates of the reference's size {h}×{w} (H×W), got {hb}×{wb}; "
                "resize them, or make a Reference of that size"
            )
        n = batch.shape[0]
        step = eng.batch_len(*self.hw)
        per_tap = np.empty((n, len(self.features)), np.float32)
        for i in range(0, n, step):
            j = min(n, i + step)
            fm = eng.features(batch[i:j])
            rep = [np.broadcast_to(f, (j - i, *f.shape[1:])) for f in self.features]
            per_tap[i:j] = eng.per_tap_from_features(rep, fm, chunk=j - i)
        return per_tap if per_layer else eng.reduce(per_tap)

    def __call__(self, candidates: ImageLike, **options: Any) -> Any:
        return self.score(candidates, **options)

    def __repr__(self) -> str:
        h, w = self.hw
        return f"Reference({h}×{w}, {self.nbytes / 1e6:.1f} MB, model={self.engine.bundle.model!r})"
