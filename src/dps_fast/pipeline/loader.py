"""One image file → the uint8 array the engine takes: decode, resize, size checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.decode import (
    ImageDecodeError,
    ResizeSpec,
    check_pixels,
    decode_image,
    resize_image,
    short_side_size,
)
from ..io.pairing import Pair


class ImageLoader:
    """Decodes and resizes the images of pairs (thread-safe: it holds no state per call)."""

    def __init__(self, resize: ResizeSpec, min_size: tuple[int, int]) -> None:
        self.resize = resize
        self.min_size = min_size

    def decode(self, path: Path | None) -> np.ndarray:
        """One file decoded (and resized short-side), as uint8 HWC RGB."""
        if path is None:
            raise ImageDecodeError("no file")
        hint = None
        if self.resize.mode == "short-side" and self.resize.n is not None:
            hint = (self.resize.n, self.resize.n)
        img = decode_image(path, reduce_to=hint)
        if self.resize.mode == "short-side" and self.resize.n is not None:
            size = short_side_size(img.shape[0], img.shape[1], self.resize.n)
            # The resized image passes the same pixel limit as a decoded one (bomb guard).
            check_pixels(*size, f"{path} resized to {self.resize}")
            img = resize_image(img, size)
        return img

    def pair_arrays(
        self, pair: Pair, a_img: np.ndarray, b_img: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The two images of a pair, b resized to a's size under ``to-a``, sizes checked."""
        if self.resize.mode == "to-a":
            b_img = resize_image(b_img, (a_img.shape[0], a_img.shape[1]))
        self.check_sizes(a_img.shape[:2], b_img.shape[:2])
        return a_img, b_img  # uint8 HWC: the engine takes 8-bit images as they are

    def check_sizes(self, a_hw: tuple[int, ...], b_hw: tuple[int, ...]) -> None:
        """One size on both sides, at least the model's minimum (ValueError says the fix)."""
        (ha, wa), (hb, wb) = a_hw[:2], b_hw[:2]
        if (ha, wa) != (hb, wb):
            raise ValueError(
                f"size mismatch: a is {ha}×{wa}, b is {hb}×{wb} (H×W); "
                "use --resize to-a or --resize short-side:N"
            )
        mh, mw = self.min_size
        if ha < mh or wa < mw:
            raise ValueError(
                f"image too small: {ha}×{wa} (H×W), this model needs at least {mh}×{mw}"
            )
