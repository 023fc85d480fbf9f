"""Robustness of a measure: rank flips under small shifts, monotonicity over distortion ladders.

- Shift (as shift-tolerant LPIPS, Ghildyal & Liu 2022): on BAPPS 2AFC triplets, crop with
  offset 3: the distorted images ``X[:, n : W − 3 + n]``, the reference ``R[:, 0 : W − 3]``;
  the rank-flip rate at ``n`` px is the share of triplets whose order (d0 < d1) differs from
  ``n = 0``; per subset, then averaged over subsets (``subset`` ``all``).
- Monotonicity: the dataset's own references (up to ``max_refs``) through synthetic ladders of
  Gaussian blur, Gaussian noise and JPEG; the share of steps where the distance strictly rises.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..io.decode import decode_image, parse_resize
from ..pipeline import ImageLoader
from .items import Dataset
from .summary import Row

if TYPE_CHECKING:
    from ..engine import Engine

LADDERS: dict[str, tuple[float, ...]] = {
    "blur": (0.5, 1.0, 2.0, 3.0, 4.0),  # Gaussian sigma, px
    "noise": (2.0, 5.0, 10.0, 20.0, 40.0),  # std on 0–255
    "jpeg": (90.0, 70.0, 50.0, 30.0, 10.0),  # quality
}
SHIFTS = (1, 2, 3)


def _distances(engine: Engine, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Distance-oriented scores of pairs of equal-size uint8 images (similarities negated)."""
    from .scoring import lower_is_better

    d = np.concatenate(
        [
            engine.score(np.stack(a[i : i + 32]), np.stack(b[i : i + 32]))
            for i in range(0, len(a), 32)
        ]
    ).astype(np.float64)
    return d if lower_is_better(engine) else -d


def shift_flips(engine: Engine, ds: Dataset, resize: str, model: str) -> list[Row]:
    """Rank-flip rates of a BAPPS 2AFC dataset under 1–3 px shifts (rows per subset and all)."""
    loader = ImageLoader(parse_resize(resize), engine.bundle.min_size)
    rows: list[Row] = []
    per_shift: dict[int, list[float]] = {n: [] for n in SHIFTS}
    for sub in ds.subsets:
        items = [it for it in ds.items if it.subset == sub]
        trip = [
            [loader.decode(p) for p in (it.pairs[0].b_path, it.pairs[0].a_path, it.pairs[1].a_path)]
            for it in items
        ]
        order = {}
        for n in (0, *SHIFTS):
            refs = [t[0][:, : t[0].shape[1] - 3] for t in trip]
            d0 = _distances(engine, [t[1][:, n : t[1].shape[1] - 3 + n] for t in trip], refs)
            d1 = _distances(engine, [t[2][:, n : t[2].shape[1] - 3 + n] for t in trip], refs)
            order[n] = d0 < d1
        for n in SHIFTS:
            rate = float(np.mean(order[n] != order[0]))
            per_shift[n].append(rate)
            rows.append(
                Row(
                    model,
                    ds.name,
                    sub,
                    f"rank_flip_{n}px",
                    rate,
                    math.nan,
                    math.nan,
                    len(items),
                    0,
                    "",
                    "shift of the distorted images vs n = 0",
                )
            )
    for n in SHIFTS:
        v = per_shift[n]
        rows.append(
            Row(
                model,
                ds.name,
                "all",
                f"rank_flip_{n}px",
                float(np.mean(v)),
                math.nan,
                math.nan,
                len(ds.items),
                0,
                "",
                "mean over subsets",
            )
        )
    return rows


def _ladder(img: np.ndarray, kind: str, level: float, seed: int) -> np.ndarray:
    from PIL import Image, ImageFilter

    if kind == "blur":
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(level)))
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0, level, img.shape)
        return (img + noise).round().clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(level))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def monotonicity(
    engine: Engine,
    ds: Dataset,
    resize: str,
    model: str,
    max_refs: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Share of ladder steps where the distance strictly rises, per ladder and overall."""
    loader = ImageLoader(parse_resize(resize), engine.bundle.min_size)
    refs = list(dict.fromkeys(it.pairs[0].b_path for it in ds.items))[:max_refs]
    rises: dict[str, list[bool]] = {k: [] for k in LADDERS}
    for r, path in enumerate(refs):
        img = loader.decode(path) if resize != "none" else decode_image(path)
        for kind, levels in LADDERS.items():
            dist = [_ladder(img, kind, lv, r) for lv in levels]
            d = _distances(engine, dist, [img] * len(dist))
            rises[kind] += [bool(x) for x in np.diff(d) > 0]
        if progress is not None:
            progress(r + 1, len(refs))
    rows = []
    for kind, v in rises.items():
        rows.append(
            Row(
                model,
                ds.name,
                kind,
                "monotonicity",
                float(np.mean(v)),
                math.nan,
                math.nan,
                len(refs),
                0,
                "",
                f"levels {LADDERS[kind]}",
            )
        )
    allv = [x for v in rises.values() for x in v]
    rows.append(
        Row(
            model,
            ds.name,
            "all",
            "monotonicity",
            float(np.mean(allv)),
            math.nan,
            math.nan,
            len(refs),
            0,
            "",
            "blur, noise, jpeg ladders",
        )
    )
    return rows
