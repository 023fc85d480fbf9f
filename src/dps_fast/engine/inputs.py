"""Turn what users pass (arrays, PIL images, paths, lists) into float32 NCHW batches in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError, InputTypeError

ImageLike = Any  # np.ndarray | PIL.Image.Image | str | os.PathLike | sequences of these


def _is_single_item(x: object) -> bool:
    if isinstance(x, str | os.PathLike | bytes):
        return True
    mod = type(x).__module__
    return mod.startswith("PIL.")


def _decode(x: object) -> np.ndarray:
    from ..io.decode import decode_image

    return decode_image(x)  # type: ignore[arg-type]


def _channels_fix(arr: np.ndarray, axis: int, what: str) -> np.ndarray:
    c = arr.shape[axis]
    if c == 3:
        return arr
    if c == 1:
        return np.repeat(arr, 3, axis=axis)
    if c == 4:
        return np.take(arr, [0, 1, 2], axis=axis)
    raise InputError(
        f"expected 3 colour channels (grey 1 is replicated, alpha 4 dropped), got {c} in {what} "
        f"of shape {arr.shape}"
    )


def _uint8_nhwc(arr: np.ndarray) -> np.ndarray:
    """uint8 images → C-contiguous uint8 (N, H, W, 3)."""
    if arr.ndim == 2:
        arr = arr[None, :, :, None]
    elif arr.ndim == 3:
        arr = arr[None]
    elif arr.ndim != 4:
        raise InputError(
            f"expected uint8 images as (H, W, 3) or (N, H, W, 3), got shape {arr.shape}"
        )
    arr = _channels_fix(arr, 3, "a uint8 (N, H, W, C) array")
    return np.ascontiguousarray(arr)


def nhwc_to_float(u8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) → float32 (N, 3, H, W) in [0, 1]: ``u * float32(1 / 255)``.

    The ``@uint8-nhwc`` graphs do exactly this inside the graph, so both paths agree.
    """
    out = u8.transpose(0, 3, 1, 2).astype(np.float32)
    out *= np.float32(1 / 255)
    return out


def image_hw(batch: np.ndarray) -> tuple[int, int]:
    """(H, W) of a batch: uint8 batches are NHWC, float batches NCHW."""
    h, w = batch.shape[1:3] if batch.dtype == np.uint8 else batch.shape[2:4]
    return int(h), int(w)


def as_float(batch: np.ndarray) -> np.ndarray:
    return nhwc_to_float(batch) if batch.dtype == np.uint8 else batch


def check_value_range(value_range: Any) -> tuple[float, float]:
    """``value_range`` as two finite floats (low, high) with low < high; else InputError."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(
            f"expected value_range as two numbers (low, high), e.g. (0, 1) or (-1, 1), got "
            f"{value_range!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or not hi > lo:
        raise InputError(
            f"expected value_range (low, high) finite with low < high, e.g. (0, 1) or (-1, 1), "
            f"got {tuple(value_range)!r}"
        )
    return lo, hi


def _from_float(arr: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[None]
    elif arr.ndim != 4:
        raise InputError(
            f"expected float images as (3, H, W) or (N, 3, H, W), got shape {arr.shape}"
        )
    if arr.shape[1] not in (1, 3, 4) and arr.shape[-1] in (1, 3, 4):
        raise InputError(
            f"expected float images channels-first (N, 3, H, W), got shape {arr.shape}, which "
            "looks channels-last: transpose it, or pass uint8 (N, H, W, 3)"
        )
    arr = _channels_fix(arr, 1, "a float (N, C, H, W) array")
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = check_value_range(value_range)
    if arr.size:
        # min and max also reveal NaN/Inf: one pass each instead of a separate isfinite pass.
        mn, mx = float(arr.min()), float(arr.max())
        if not (np.isfinite(mn) and np.isfinite(mx)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise InputError(f"expected finite pixel values, got {bad} NaN/Inf values")
        tol = 1e-6 * (hi - lo)
        if mn < lo - tol or mx > hi + tol:
            raise InputError(
                f"expected values in value_range {tuple(value_range)}, got min {mn:.4g}, "
                f"max {mx:.4g}; pass value_range=(-1, 1) for lpips-style inputs, "
                "(0, 255) for float 0–255 images, or clip the input"
            )
    if (lo, hi) != (0.0, 1.0):
        arr = (arr - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.ascontiguousarray(arr, dtype=np.float32)


def _is_torch(x: object) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def untrack(x: ImageLike) -> ImageLike:
    """Torch tensors that require grad, detached: the engine reads their values only (it is not
    differentiable, so no gradient could flow back anyway). Lists are handled item by item."""
    if _is_torch(x) and getattr(x, "requires_grad", False):
        return x.detach()
    if isinstance(x, list | tuple) and any(_is_torch(i) for i in x):
        return [untrack(i) for i in x]
    return x


def to_batch(
    x: ImageLike, value_range: tuple[float, float] = (0.0, 1.0), *, keep_uint8: bool = False
) -> np.ndarray:
    """Any supported input → float32 (N, 3, H, W) in [0, 1], C-contiguous.

    With ``keep_uint8``, inputs that are 8-bit anyway (uint8 arrays, PIL images, files) stay
    uint8 (N, H, W, 3) for the engine's ``@uint8-nhwc`` graphs.
    """
    check_value_range(value_range)
    x = untrack(x)
    if _is_single_item(x):
        u8 = _uint8_nhwc(_decode(x))
        return u8 if keep_uint8 else nhwc_to_float(u8)
    if isinstance(x, list | tuple):
        if len(x) == 0:
            raise InputError("expected at least one image, got an empty list")
        if any(_is_single_item(i) or isinstance(i, np.ndarray) for i in x):
            parts = [to_batch(i, value_range, keep_uint8=keep_uint8) for i in x]
            if len({p.dtype for p in parts}) > 1:
                parts = [as_float(p) for p in parts]
            sizes = {image_hw(p) for p in parts}
            if len(sizes) > 1:
                raise InputError(
                    f"expected images of one size in a list, got sizes (H, W) {sorted(sizes)}; "
                    "resize them or score them apart"
                )
            return np.concatenate(parts)
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        u8 = _uint8_nhwc(arr)
        return u8 if keep_uint8 else nhwc_to_float(u8)
    if arr.dtype.kind == "f":
        return _from_float(arr, value_range)
    if arr.dtype == object and isinstance(x, Iterator):
        raise InputTypeError(
            f"expected images, got a {type(x).__name__} (an iterator): for a stream of pairs use "
            "dps_fast.score_iter(pairs, engine=engine), or pass a list"
        )
    if arr.dtype == np.bool_ or arr.dtype.kind in "iu":
        raise InputTypeError(
            f"expected uint8 (0–255) or float images, got dtype {arr.dtype}: convert with "
            "arr.astype(np.float32) / max_value"
        )
    raise InputTypeError(
        f"expected an image: array, PIL image, path or list of these; got {type(x).__name__}"
    )


def check_min_size(hw: tuple[int, int], min_size: tuple[int, int]) -> None:
    """Refuse images below the model's minimum: ONNX Runtime may crash the process on them."""
    h, w = hw
    if h < min_size[0] or w < min_size[1]:
        raise InputError(
            f"expected images of at least {min_size[0]}×{min_size[1]} (H×W) for this model, "
            f"got {h}×{w}; upscale them or choose another model"
        )


def pair_batches(
    a: np.ndarray, b: np.ndarray, min_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check a pair of batches (sizes, counts, minimum) and return (a, b, N).

    A uint8 NHWC side next to a float side is converted, so both share one layout.
    """
    if a.dtype != b.dtype:
        a, b = as_float(a), as_float(b)
    na, nb = a.shape[0], b.shape[0]
    if na == 0 or nb == 0:
        raise InputError("expected at least one image on each side, got an empty batch")
    (ha, wa), (hb, wb) = image_hw(a), image_hw(b)
    if (ha, wa) != (hb, wb):
        raise InputError(
            f"expected images of the same size in a pair, got a {ha}×{wa} (H×W) and "
            f"b {hb}×{wb}; resize one (the choice of how is yours)"
        )
    check_min_size((ha, wa), min_size)
    if na != nb and na != 1 and nb != 1:
        raise InputError(
            f"expected batches of equal size or one side with a single image (1-vs-N), "
            f"got {na} and {nb}"
        )
    return a, b, max(na, nb)
