"""Distance maps as colour PNGs with a colour bar that says their scale, and as raw ``.npy``.

Scale: a value v maps to colour index round(255 * clip(v / vmax, 0, 1)) of a 256-entry colour
map, black at 0 and white at ``vmax`` and above; NaN is drawn as 0. The colour map is generated
here (no matplotlib): CIELAB lightness L* rises linearly from 0 to 100 while the hue turns from
violet through red and orange to yellow, with the largest chroma sRGB allows at each step, so
equal steps in distance look like equal steps in brightness.

:class:`HeatmapWriter` keeps one scale for a whole run: a fixed ``vmax``, or (``vmax=None``)
one chosen from the first maps it sees (:func:`auto_vmax`), so maps of one run compare.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLORMAP",
    "HEATMAP_STYLES",
    "HeatmapWriter",
    "auto_vmax",
    "colorize",
    "heatmap_name",
    "render_heatmap",
    "save_heatmap",
]

HEATMAP_STYLES = ("map", "panel")
# Maps smaller than this (longer side, pixels) are drawn enlarged by a whole factor.
DISPLAY_MIN = 256

# sRGB (D65) from CIE XYZ, and the D65 white point.
_XYZ_TO_RGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
     [0.0556434, -0.2040259, 1.0572252]]
)  # fmt: skip
_WHITE = np.array([0.95047, 1.0, 1.08883])


def _lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (…, 3) to gamma-encoded sRGB in [0, 1] (unclipped: out-of-gamut shows as <0, >1)."""
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    fy = (L + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0
    d = 6.0 / 29.0

    def finv(t: np.ndarray) -> np.ndarray:
        return np.where(t > d, t**3, 3 * d * d * (t - 4.0 / 29.0))

    xyz = np.stack([finv(fx), finv(fy), finv(fz)], axis=-1) * _WHITE
    lin = xyz @ _XYZ_TO_RGB.T
    lin = np.clip(lin, -1.0, 2.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055)


def _build_colormap() -> np.ndarray:
    """The 256×3 uint8 table: L* = 100·t, hue 300° → 90°, chroma the most sRGB holds (≤ 70)."""
    t = np.linspace(0.0, 1.0, 256)
    lightness = 100.0 * t
    hue = np.deg2rad(300.0 + 150.0 * t)  # violet (300°) → red (360°) → yellow-orange (450°)
    lo = np.zeros_like(t)
    hi = np.full_like(t, 70.0)
    for _ in range(30):  # bisect the largest in-gamut chroma per entry
        c = (lo + hi) / 2
        rgb = _lab_to_srgb(np.stack([lightness, c * np.cos(hue), c * np.sin(hue)], axis=-1))
        ok = np.all((rgb >= 0.0) & (rgb <= 1.0), axis=-1)
        lo = np.where(ok, c, lo)
        hi = np.where(ok, hi, c)
    rgb = _lab_to_srgb(np.stack([lightness, lo * np.cos(hue), lo * np.sin(hue)], axis=-1))
    lut = np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    lut[0], lut[-1] = 0, 255
    lut.setflags(write=False)
    return lut


COLORMAP: np.ndarray = _build_colormap()
"""256×3 uint8 colour map: index 0 is black, index 255 is white, L* linear in the index."""


def _check_vmax(vmax: float) -> float:
    vmax_f = float(vmax)
    if not math.isfinite(vmax_f) or vmax_f <= 0:
        raise ValueError(f"heatmap: expected a positive finite vmax, got {vmax!r}")
    return vmax_f


def colorize(m: np.ndarray, *, vmax: float) -> np.ndarray:
    """A float (H, W) map as uint8 RGB (H, W, 3): 0 black, ``vmax`` and above white.

    Negative values and NaN are drawn as 0.
    """
    arr = np.asarray(m)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"heatmap: expected a 2-D (H, W) map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"heatmap: expected a real-valued map, got dtype {arr.dtype}")
    vmax_f = _check_vmax(vmax)
    scaled = np.nan_to_num(arr.astype(np.float64) / vmax_f, nan=0.0, posinf=1.0, neginf=0.0)
    index = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(COLORMAP[index])


def save_heatmap(m: np.ndarray, path: Path, *, vmax: float) -> None:
    """Save a float (H, W) map as an 8-bit RGB PNG of its size, without a colour bar.

    0 is black, ``vmax`` and above white; negative values and NaN are drawn as 0. Parent
    folders are created. :func:`render_heatmap` adds the colour bar (and the images).
    """
    rgb = colorize(m, vmax=vmax)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(out, format="PNG")


def _nice_ceil(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ v (readable colour-bar ends)."""
    k = math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10.0**k >= v * (1 - 1e-9):
            return float(f"{m * 10.0**k:.3g}")
    return 10.0 ** (k + 1)  # pragma: no cover


def auto_vmax(maps: Sequence[np.ndarray] | np.ndarray, *, q: float = 99.0) -> float | None:
    """A colour scale for maps: their ``q``-th percentile rounded up to 1, 2, 2.5 or 5 × 10^k.

    Falls back to the largest value when the percentile is 0; None when every value is 0
    (or NaN), i.e. there is nothing to scale yet.
    """
    vals = np.concatenate([np.asarray(m, np.float64).ravel() for m in maps])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None
    v = float(np.percentile(vals, q))
    if v <= 0:
        v = float(vals.max())
    return _nice_ceil(v) if v > 0 else None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _colour_bar(height: int, vmax: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
                pad: int) -> tuple[Image.Image, int]:  # fmt: skip
    """A vertical colour bar ``height`` tall, ``vmax`` at the top and 0 at the bottom, with tick
    labels; returned with the margin above and below it that holds the end labels."""
    bar_w = max(10, height // 24)
    ticks = [vmax * f for f in (1.0, 0.75, 0.5, 0.25, 0.0)]
    labels = [(">= " if i == 0 else "") + _fmt(v) for i, v in enumerate(ticks)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(probe.textlength(s, font=font)) for s in labels)
    _, top, _, bottom = probe.textbbox((0, 0), ">0", font=font)
    margin = int(bottom - top) // 2 + 2
    width = pad + bar_w + 5 + text_w + pad
    img = Image.new("RGB", (width, height + 2 * margin), "white")
    ramp = COLORMAP[np.linspace(255, 0, height).round().astype(np.uint8)]
    img.paste(Image.fromarray(np.ascontiguousarray(np.repeat(ramp[:, None], bar_w, axis=1))),
              (pad, margin))  # fmt: skip
    draw = ImageDraw.Draw(img)
    for v, s in zip(ticks, labels, strict=True):
        y = margin + round((1.0 - v / vmax) * (height - 1))
        draw.line([(pad + bar_w, y), (pad + bar_w + 3, y)], fill="black")
        draw.text((pad + bar_w + 5, y - (top + bottom) // 2), s, fill="black", font=font)
    return img, margin


def _fit(text: str, width: int, draw: ImageDraw.ImageDraw,
         font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:  # fmt: skip
    """``text`` cut from the left (with '…') to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def _enlarge(rgb: np.ndarray, k: int) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return img if k == 1 else img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)


def render_heatmap(
    m: np.ndarray,
    *,
    vmax: float,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    title: str = "",
    labels: tuple[str, str] = ("A", "B"),
) -> Image.Image:
    """The map in colour with a colour bar; with images ``a`` and ``b`` (uint8 (H, W, 3)),
    the panel A | B | map | bar. ``title`` (e.g. the score) goes in a line above.

    Maps under ``DISPLAY_MIN`` pixels on their longer side are enlarged by a whole factor
    (nearest neighbour); the raw values are what :class:`HeatmapWriter` saves as ``.npy``."""
    rgb = colorize(m, vmax=vmax)
    h0, w0 = rgb.shape[:2]
    # Small images are enlarged (whole pixels, no smoothing) so the panel can be read.
    k = max(1, DISPLAY_MIN // max(h0, w0))
    h, w = h0 * k, w0 * k
    size = max(11, min(18, h // 16))
    font = _font(size)
    pad = max(4, size // 2)
    tiles: list[tuple[Image.Image, str]] = []
    if a is not None and b is not None:
        for img, lab in ((a, labels[0]), (b, labels[1])):
            arr = np.asarray(img)
            if arr.shape[:2] != (h0, w0) or arr.dtype != np.uint8:
                raise ValueError(
                    f"heatmap panel: expected uint8 images of the map's size {h0}×{w0}, got "
                    f"{arr.dtype} {arr.shape}"
                )
            tiles.append((_enlarge(arr[..., :3], k), lab))
    tiles.append((_enlarge(rgb, k), f"distance, 0 to {_fmt(vmax)}"))
    bar, margin = _colour_bar(h, vmax, font, pad)
    line = size + pad
    head = max(line * (2 if title else 1), margin)
    width = len(tiles) * w + (len(tiles) - 1) * pad + bar.width
    out = Image.new("RGB", (width, head + h + margin), "white")
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((pad, pad // 2), _fit(title, width - 2 * pad, draw, font), fill="black",
                  font=font)  # fmt: skip
    x = 0
    for tile, lab in tiles:
        draw.text((x + 2, head - line + pad // 2), _fit(lab, w - 4, draw, font), fill="black",
                  font=font)  # fmt: skip
        out.paste(tile, (x, head))
        x += w + pad
    out.paste(bar, (x - pad, head - margin))
    return out


class HeatmapWriter:
    """Writes a run's maps into one folder on one scale: PNG (map or panel) and optional .npy.

    ``vmax=None`` chooses the scale from the first maps that are not all zero
    (:func:`auto_vmax`) and keeps it for the rest of the run; ``vmax`` then says which.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        vmax: float | None = None,
        style: str = "map",
        npy: bool = False,
    ) -> None:
        if style not in HEATMAP_STYLES:
            raise ValueError(
                f"expected heatmap style one of {', '.join(HEATMAP_STYLES)}, got {style!r}"
            )
        self.folder = Path(folder)
        self.vmax = None if vmax is None else _check_vmax(vmax)
        self.auto = vmax is None
        self.style = style
        self.npy = npy
        self._owners: dict[str, tuple[str, str]] = {}

    def name(self, a: str, b: str) -> str:
        """The pair's file name, unique in this run: pairs whose names flatten to one file
        (``a:b``, ``a?b``, ``a_b``; ``sub/x``, ``sub__x``) get a short hash after the first."""
        name = heatmap_name(a, b)
        owner = self._owners.setdefault(name, (a, b))
        if owner != (a, b):
            key = f"{a}\0{b}".encode("utf-8", "surrogateescape")
            name = f"{name[:-4]}-{hashlib.sha1(key).hexdigest()[:10]}.png"
            self._owners.setdefault(name, (a, b))
        return name

    def write(
        self,
        maps: Sequence[np.ndarray],
        names: Sequence[tuple[str, str]],
        *,
        scores: Sequence[float] | None = None,
        a: Sequence[np.ndarray] | None = None,
        b: Sequence[np.ndarray] | None = None,
    ) -> list[Path]:
        """Write the maps of a batch (pair names ``(a, b)``); returns the PNG paths."""
        if self.vmax is None:
            self.vmax = auto_vmax(maps)
        vmax = self.vmax if self.vmax is not None else 1.0  # all zero so far: any scale is black
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (m, (na, nb)) in enumerate(zip(maps, names, strict=True)):
            path = self.folder / self.name(na, nb)
            title = ""
            if scores is not None:
                title = f"{na} vs {nb}: distance {scores[i]:.4g}"
            panel = self.style == "panel" and a is not None and b is not None
            img = render_heatmap(
                m, vmax=vmax, a=a[i] if panel and a is not None else None,
                b=b[i] if panel and b is not None else None, title=title,
                labels=(f"A: {na}", f"B: {nb}"),
            )  # fmt: skip
            img.save(path, format="PNG")
            if self.npy:
                np.save(path.with_suffix(".npy"), np.asarray(m, np.float32))
            paths.append(path)
        return paths


_UNSAFE = re.compile(r'[\\:*?"<>|\x00-\x1f]')
_MAX_NAME_BYTES = 200


def _flat_stem(name: str) -> str:
    """A display path without extension, flattened to one file name ('/' -> '__')."""
    stem = os.path.splitext(name.replace("\\", "/"))[0].strip("/")
    return _UNSAFE.sub("_", stem.replace("/", "__")) or "_"


def heatmap_name(a: str, b: str) -> str:
    """A file-system-safe PNG name for a pair's map.

    ``sub/0001.png`` with ``sub/0001.jpg`` gives ``sub__0001.png``; when the stems differ,
    ``A--B.png``. Names too long for a file system are cut and given a short hash.
    """
    sa, sb = _flat_stem(a), _flat_stem(b)
    stem = sa if sa == sb else f"{sa}--{sb}"
    if len(stem.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        digest = hashlib.sha1(f"{a}\0{b}".encode("utf-8", "surrogateescape")).hexdigest()[:12]
        cut = stem.encode("utf-8", "surrogateescape")[: _MAX_NAME_BYTES - 13]
        stem = cut.decode("utf-8", "ignore") + "-" + digest
    return stem + ".png"
