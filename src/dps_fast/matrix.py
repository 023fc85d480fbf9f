"""All-pairs distance matrices of a folder in bounded memory.

Features of every image are computed once and held while they fit a byte budget (default
1 GiB). When they do not, the matrix is filled in passes: each pass holds as many images'
features as the budget allows (less one small streaming chunk) and streams the images after
them through in chunks, comparing each chunk with the held ones; the next pass starts after the
held images, and the last pass, once the rest fits, holds the rest. The trunk then runs more
than once per image (:class:`MatrixPlan` says how often), about n²/(2·held) times in all instead
of n²/held with two half-budget blocks.
An image that cannot be read becomes a NaN row and column, with its reason in ``errors``.
Images are brought to one size by ``resize`` (``none``, ``short-side:N`` or ``WxH``, with an
optional centre crop to W:H first).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .engine import Engine
from .errors import DpsFastError, PairingError
from .io.decode import decode_image, resize_image, short_side_size
from .io.pairing import list_images

__all__ = [
    "DEFAULT_FEATURE_BUDGET",
    "MatrixPlan",
    "MatrixResize",
    "MatrixResult",
    "compute_matrix",
    "make_plan",
    "parse_budget",
    "parse_matrix_resize",
]

DEFAULT_FEATURE_BUDGET = 1 << 30  # bytes of features held at once (1 GiB)
_EXIF_ORIENTATION = 0x0112
_RESIZE_FORMS = "'none', 'short-side:N' or 'WxH' (e.g. 256x256)"


@dataclass(frozen=True)
class MatrixResize:
    """How matrix images are brought to one size: ``none``, ``short-side`` (n) or ``size``
    (w, h), the latter optionally after a centre crop to the W:H aspect ratio."""

    mode: str = "none"
    n: int | None = None
    size: tuple[int, int] | None = None  # (w, h)
    crop: bool = False

    def target(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) an image of (h, w) has after this resize."""
        if self.mode == "short-side" and self.n is not None:
            return short_side_size(h, w, self.n)
        if self.mode == "size" and self.size is not None:
            return self.size[1], self.size[0]
        return h, w

    def apply(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.mode == "size" and self.size is not None and self.crop:
            tw, th = self.size
            # the largest centred region of the target's aspect ratio
            if w * th > h * tw:
                cw = max(1, round(h * tw / th))
                x0 = (w - cw) // 2
                img = img[:, x0 : x0 + cw]
            else:
                ch = max(1, round(w * th / tw))
                y0 = (h - ch) // 2
                img = img[y0 : y0 + ch]
        return resize_image(np.ascontiguousarray(img), self.target(h, w))

    def __str__(self) -> str:
        if self.mode == "short-side":
            return f"short-side:{self.n}"
        if self.mode == "size" and self.size is not None:
            return f"{self.size[0]}x{self.size[1]}" + (" (centre crop)" if self.crop else "")
        return "none"


def parse_matrix_resize(spec: str, crop: str | None = None) -> MatrixResize:
    """Parse a matrix's ``--resize`` (none | short-side:N | WxH) and ``--crop`` (center)."""
    text = spec.strip().lower()
    if crop not in (None, "none", "center", "centre"):
        raise ValueError(f"crop: expected 'center' or 'none', got {crop!r}")
    want_crop = crop in ("center", "centre")
    if text == "none":
        if want_crop:
            raise ValueError("--crop center needs --resize WxH (the size to crop and resize to)")
        return MatrixResize()
    found = re.fullmatch(r"short-side:(\d+)", text)
    if found and int(found.group(1)) > 0:
        if want_crop:
            raise ValueError("--crop center needs --resize WxH, not short-side:N")
        return MatrixResize("short-side", n=int(found.group(1)))
    found = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", text)
    if found and int(found.group(1)) > 0 and int(found.group(2)) > 0:
        return MatrixResize("size", size=(int(found.group(1)), int(found.group(2))), crop=want_crop)
    raise ValueError(f"resize: expected {_RESIZE_FORMS} for a matrix, got {spec!r}")


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}  # fmt: skip


def parse_budget(text: str | int) -> int:
    """``"1GB"``, ``"512MB"``, ``"800MiB"`` or a number of bytes → bytes (at least 1)."""
    if isinstance(text, int):
        value = text
    else:
        found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        unit = found.group(2).lower() if found else ""
        if not found or unit not in _UNITS:
            raise ValueError(f"expected a size like 1GB, 512MB or 800MiB, got {text!r}")
        value = int(float(found.group(1)) * _UNITS[unit])
    if value < 1:
        raise ValueError(f"expected a positive memory size, got {text!r}")
    return value


def _mb(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _passes(n: int, cap: int, held: int) -> list[tuple[int, int]]:
    """(held, streamed) image counts of each pass over ``n`` images: all held at once when
    they fit ``cap``; else ``held`` held and the rest streamed, until the rest fits."""
    out: list[tuple[int, int]] = []
    left = n
    while left > 0:
        if left <= cap:
            out.append((left, 0))
            break
        out.append((held, left - held))
        left -= held
    return out


@dataclass
class MatrixPlan:
    """What a matrix will take, said before it starts."""

    n_images: int
    n_readable: int
    hw: tuple[int, int]
    feature_bytes: int  # per image
    budget: int
    block: int  # images whose features are held through a pass
    matrix_bytes: int
    stream: int = 0  # images per streamed chunk (0: every image held at once)

    @property
    def cap(self) -> int:
        """Images whose features are in memory at once."""
        return self.block + self.stream

    @property
    def passes(self) -> list[tuple[int, int]]:
        """(held, streamed) images of each pass."""
        if not self.stream:
            return [(self.n_readable, 0)] if self.n_readable else []
        return _passes(self.n_readable, self.cap, self.block)

    @property
    def n_blocks(self) -> int:
        """Passes over the images (1: every image held at once)."""
        return max(1, len(self.passes))

    @property
    def trunk_runs(self) -> int:
        """Feature computations in all: each image once per pass that holds or streams it."""
        return sum(h + s for h, s in self.passes)

    def describe(self) -> str:
        h, w = self.hw
        first = (
            f"{self.n_readable} images of {h}×{w}, features {_mb(self.feature_bytes)} each, "
            f"{_mb(self.feature_bytes * self.n_readable)} in all; budget {_mb(self.budget)}"
        )
        if self.n_blocks == 1:
            how = f"all held ({_mb(self.feature_bytes * self.n_readable)})"
        else:
            how = (
                f"in {self.n_blocks} passes holding {self.block} images each, the others "
                f"streamed {self.stream} at a time (up to {_mb(self.feature_bytes * self.cap)} "
                f"held; trunk runs {self.trunk_runs / max(1, self.n_readable):.1f}× per image)"
            )
        return f"{first}: {how}; matrix {_mb(self.matrix_bytes)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.n_images,
            "readable": self.n_readable,
            "size": list(self.hw),
            "feature_bytes_per_image": self.feature_bytes,
            "budget_bytes": self.budget,
            "block": self.block,
            "stream": self.stream,
            "blocks": self.n_blocks,
            "trunk_runs": self.trunk_runs,
        }


def make_plan(
    n_images: int, n_readable: int, hw: tuple[int, int], feature_bytes: int, budget: int,
    batch: int,
) -> MatrixPlan:  # fmt: skip
    """Every image held when their features fit ``budget``; else as many held as fit, less a
    streaming chunk of a quarter of that (at most one engine ``batch``): one held and one
    streamed at the least, even if that is over the budget."""
    budget = max(1, int(budget))
    matrix_bytes = n_images * n_images * 4
    if feature_bytes * n_readable <= budget:
        return MatrixPlan(n_images, n_readable, hw, feature_bytes, budget, n_readable,
                          matrix_bytes)  # fmt: skip
    cap = max(2, budget // max(1, feature_bytes))
    stream = max(1, min(batch, cap // 4))
    return MatrixPlan(n_images, n_readable, hw, feature_bytes, budget, cap - stream,
                      matrix_bytes, stream)  # fmt: skip


@dataclass
class MatrixResult:
    """The matrix (NaN rows/columns for images in ``errors``), its labels and plan."""

    matrix: np.ndarray
    labels: list[str]
    errors: dict[str, str] = field(default_factory=dict)
    plan: MatrixPlan | None = None


def _describe(e: BaseException) -> str:
    return " ".join((str(e).strip() or type(e).__name__).split())


def _header_hw(path: Path) -> tuple[int, int]:
    """(H, W) of an image as decoded (EXIF orientation applied), from its header; if the
    header cannot be read, the full decode says why (ImageDecodeError)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    except Exception:
        img = decode_image(path)
        return int(img.shape[0]), int(img.shape[1])


class _Features:
    """Decodes images (resized) in threads and computes their features in engine batches."""

    def __init__(self, engine: Engine, root: Path, names: list[str], resize: MatrixResize,
                 pool: ThreadPoolExecutor, errors: dict[str, str]) -> None:  # fmt: skip
        self.engine, self.root, self.names, self.resize = engine, root, names, resize
        self.pool, self.errors = pool, errors

    def _load(self, i: int) -> np.ndarray:
        img = decode_image(self.root / self.names[i])
        return self.resize.apply(img)

    def compute(self, idx: list[int], hw: tuple[int, int]) -> tuple[list[int], list[np.ndarray]]:
        """Features of images ``idx`` (those that decode), as [n, C, h, w] per tap."""
        step = self.engine.batch_len(*hw)
        kept: list[int] = []
        parts: list[list[np.ndarray]] = []
        for s in range(0, len(idx), step):
            chunk = idx[s : s + step]
            futures = [self.pool.submit(self._load, i) for i in chunk]
            imgs, ok = [], []
            for i, f in zip(chunk, futures, strict=True):
                try:
                    img = f.result()
                except (ValueError, OSError, DpsFastError) as e:
                    self.errors.setdefault(self.names[i], _describe(e))
                    continue
                if img.shape[:2] != hw:  # header and pixels disagree (rare): that image only
                    self.errors.setdefault(
                        self.names[i], f"decoded to {img.shape[0]}×{img.shape[1]}, not {hw}"
                    )
                    continue
                imgs.append(img)
                ok.append(i)
            if not ok:
                continue
            parts.append(self.engine.features(np.stack(imgs)))
            kept.extend(ok)
        if not parts:
            return [], []
        return kept, [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _fill(engine: Engine, m: np.ndarray, ri: list[int], fi: list[np.ndarray],
          rj: list[int], fj: list[np.ndarray], same: bool, step: int) -> None:  # fmt: skip
    """Distances of images ``ri`` against ``rj`` (features ``fi``, ``fj``) into ``m``."""
    for a, i in enumerate(ri):
        start = a + 1 if same else 0
        for s in range(start, len(rj), step):
            e = min(len(rj), s + step)
            fa = [np.broadcast_to(f[a : a + 1], (e - s, *f.shape[1:])) for f in fi]
            d = engine.reduce(engine.per_tap_from_features(fa, [f[s:e] for f in fj], chunk=e - s))
            cols = rj[s:e]
            m[i, cols] = d
            m[cols, i] = d


def _diagonal(
    engine: Engine, m: np.ndarray, ri: list[int], fi: list[np.ndarray], step: int
) -> None:
    """Each image against itself: 0 for a distance; for a similarity (PSNR, SSIM …) the
    head's own value on identical features (inf, 1), as :meth:`Engine.pairwise` gives."""
    if engine.lower_is_better:
        m[ri, ri] = 0.0
        return
    for s in range(0, len(ri), step):
        e = min(len(ri), s + step)
        same = [f[s:e] for f in fi]
        d = engine.reduce(engine.per_tap_from_features(same, same, chunk=e - s))
        m[ri[s:e], ri[s:e]] = d


def compute_matrix(
    folder: str | os.PathLike[str],
    *,
    engine: Engine,
    resize: str | MatrixResize = "none",
    crop: str | None = None,
    max_feature_bytes: int = DEFAULT_FEATURE_BUDGET,
    workers: int | None = None,
    out: np.ndarray | None = None,
    on_plan: Callable[[MatrixPlan], None] | None = None,
) -> MatrixResult:
    """All-pairs distances of a folder's images (recursive, sorted), in bounded memory.

    ``out`` may be an (N, N) float32 array to fill (e.g. ``np.lib.format.open_memmap``, so
    the matrix itself need not fit in RAM). ``on_plan`` is called with the plan before any
    feature is computed. Raises PairingError (no images) or ValueError (several sizes after
    ``resize``, images below the model's minimum) for the whole run; unreadable images become
    NaN rows and columns, named in ``errors``.
    """
    from .pipeline import default_workers

    root = Path(folder)
    if not root.is_dir():
        raise PairingError(f"folder not found: {root}")
    names = list_images(root)
    if not names:
        raise PairingError(f"no images found in {root}")
    rs = resize if isinstance(resize, MatrixResize) else parse_matrix_resize(resize, crop)
    n = len(names)
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="dps-fast-m") as pool:
        heads = list(pool.map(lambda nm: _try(_header_hw, root / nm), names))
        sizes: dict[tuple[int, int], list[str]] = {}
        good: list[int] = []
        for i, (hw, err) in enumerate(heads):
            if err is not None or hw is None:
                errors[names[i]] = err or "unreadable"
                continue
            sizes.setdefault(rs.target(*hw), []).append(names[i])
            good.append(i)
        if len(sizes) > 1:
            listed = ", ".join(
                f"{h}×{w} ({len(v)}, e.g. {v[0]})"
                for (h, w), v in sorted(sizes.items(), key=lambda kv: -len(kv[1]))[:6]
            )
            raise ValueError(
                f"matrix needs images of one size, found {len(sizes)} (H×W): {listed}; "
                "bring them to one size with --resize WxH (e.g. --resize 256x256), adding "
                "--crop center to keep their aspect ratio"
            )
        m = out if out is not None else np.empty((n, n), np.float32)
        if m.shape != (n, n):
            raise ValueError(f"expected out of shape {(n, n)}, got {m.shape}")
        m[...] = np.nan
        if not good:
            return MatrixResult(m, names, errors, None)
        hw = next(iter(sizes))
        _check_size(engine, hw, rs)
        probe = engine.features(np.zeros((1, *hw, 3), np.uint8))
        fbytes = int(sum(f.nbytes for f in probe))
        del probe
        plan = make_plan(n, len(good), hw, fbytes, max_feature_bytes, engine.batch_len(*hw))
        if on_plan is not None:
            on_plan(plan)
        feats = _Features(engine, root, names, rs, pool, errors)
        step = engine.batch_len(*hw)
        start = 0
        for held, streamed in plan.passes:
            ri, fi = feats.compute(good[start : start + held], hw)
            _diagonal(engine, m, ri, fi, step)
            _fill(engine, m, ri, fi, ri, fi, True, step)
            rest = good[start + held : start + held + streamed]
            for s in range(0, len(rest), max(1, plan.stream)):
                rj, fj = feats.compute(rest[s : s + plan.stream], hw)
                _fill(engine, m, ri, fi, rj, fj, False, step)
                del fj
            del fi
            start += held
    for name in errors:  # an image that failed in a later block: its row and column stay NaN
        i = names.index(name)
        m[i, :] = np.nan
        m[:, i] = np.nan
    return MatrixResult(m, names, errors, plan)


def _check_size(engine: Engine, hw: tuple[int, int], rs: MatrixResize) -> None:
    """The images (after resize, less the engine's ``crop_border`` on each side) are at least
    the model's minimum, or a ValueError says what to change."""
    mh, mw = engine.bundle.min_size
    c = getattr(engine, "crop_border", 0)
    h, w = hw[0] - 2 * c, hw[1] - 2 * c
    if h >= max(1, mh) and w >= max(1, mw):
        return
    cropped = f", {max(0, h)}×{max(0, w)} after --crop-border {c}" if c else ""
    raise ValueError(
        f"images are {hw[0]}×{hw[1]} (H×W) after resize {rs}{cropped}, this model needs at "
        f"least {mh}×{mw}; use --resize WxH with a larger size"
        + (" or a smaller --crop-border" if c else "")
    )


def _try(
    fn: Callable[[Path], tuple[int, int]], path: Path
) -> tuple[tuple[int, int] | None, str | None]:
    try:
        return fn(path), None
    except (ValueError, OSError, DpsFastError) as e:
        return None, _describe(e)
