"""The classical measures as data: what each computes, its conventions and its direction.

Conventions follow piq 0.8 (the reference the tests compare with): images in [0, 1] with data
range 1; SSIM with an 11×11 Gaussian window of σ 1.5 (normalised, "valid" positions only: no
padding), K1 0.01, K2 0.03, the SSIM of a colour image is the mean of its channels' SSIMs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["mse", "mae", "psnr", "ssim", "ms-ssim"]

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03
# MS-SSIM's scale weights (Wang, Simoncelli & Bovik 2003; piq's defaults, not renormalised).
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Smallest side MS-SSIM takes: the window must fit the fifth scale, (11 - 1) · 2⁴ + 1.
MS_MIN_SIZE = (WINDOW - 1) * 2 ** (len(MS_WEIGHTS) - 1) + 1
# BT.601 luma as restoration benchmarks compute it (MATLAB rgb2ycbcr): studio range, in [0, 1].
Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)
Y_OFFSET = 16.0 / 255
# SSIM's automatic downsampling (Wang's reference code, piq's default): average-pool by
# f = max(1, round(min(H, W) / 256)) before the window, so large images are judged at ~256 px.
DOWNSAMPLE_TO = 256


@dataclass(frozen=True)
class Measure:
    """One classical measure: a graph kind and its options."""

    name: str
    kind: Kind
    luma: bool = False  # on BT.601 Y (studio range) instead of RGB
    downsample: bool = False  # SSIM's automatic downsampling

    @property
    def lower_is_better(self) -> bool:
        return self.kind in ("mse", "mae")

    @property
    def min_size(self) -> int:
        return {"ssim": WINDOW, "ms-ssim": MS_MIN_SIZE}.get(self.kind, 1)

    @property
    def description(self) -> str:
        what = {
            "mse": "mean squared error",
            "mae": "mean absolute error",
            "psnr": "peak signal-to-noise ratio (dB)",
            "ssim": "structural similarity",
            "ms-ssim": "multi-scale structural similarity",
        }[self.kind]
        on = "BT.601 luma Y" if self.luma else "RGB"
        ds = ", automatic downsampling" if self.downsample else ""
        return f"{what} on {on}, data range 1{ds}"

    def conventions(self) -> dict[str, Any]:
        """What the graph computes, for the manifest and ``dps-fast info``."""
        c: dict[str, Any] = {
            "kind": self.kind,
            "data_range": 1.0,
            "colour": (
                f"BT.601 Y = {Y_OFFSET:.9g} + {Y_WEIGHTS[0]:.9g} R + {Y_WEIGHTS[1]:.9g} G "
                f"+ {Y_WEIGHTS[2]:.9g} B"
                if self.luma
                else "RGB; per-channel values averaged"
            ),
        }
        if self.kind == "psnr":
            c["formula"] = "10 log10(1 / MSE); inf for identical images"
        if self.kind in ("ssim", "ms-ssim"):
            c.update(
                window="gaussian", window_size=WINDOW, sigma=SIGMA, k1=K1, k2=K2,
                padding="none (valid positions only)",
            )  # fmt: skip
        if self.kind == "ssim":
            c["downsample"] = (
                f"average-pool by max(1, round(min(H, W) / {DOWNSAMPLE_TO}))"
                if self.downsample
                else "off"
            )
        if self.kind == "ms-ssim":
            c.update(
                scale_weights=list(MS_WEIGHTS),
                scales=len(MS_WEIGHTS),
                between_scales="replicate-pad top/left by 1 if H or W is odd, 2×2 average pool",
                min_size=MS_MIN_SIZE,
            )
        return c


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("mse", "mse"),
        Measure("mae", "mae"),
        Measure("psnr", "psnr"),
        Measure("psnr-y", "psnr", luma=True),
        Measure("ssim", "ssim", downsample=True),
        Measure("ssim-fullres", "ssim"),
        Measure("ssim-y", "ssim", luma=True),
        Measure("ms-ssim", "ms-ssim"),
    )
}

BUNDLES = Path(__file__).resolve().parent / "bundles"


def is_classical(name: str) -> bool:
    return name in MEASURES


def bundle_path(name: str) -> Path:
    """The shipped bundle folder of classical measure ``name``."""
    return BUNDLES / name
