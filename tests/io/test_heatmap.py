"""Heatmaps people can read: a generated perceptual colour map, one scale per run, a colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dps_fast.io.heatmap import (
    COLORMAP,
    DISPLAY_MIN,
    HeatmapWriter,
    auto_vmax,
    colorize,
    heatmap_name,
    render_heatmap,
)


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L* of sRGB uint8 colours (the textbook formulas)."""
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = lin @ [0.2126, 0.7152, 0.0722]
    return np.where(y > 216 / 24389, 116 * np.cbrt(y) - 16, y * 24389 / 27)


def test_colormap_lightness_is_linear() -> None:
    lum = _lightness(COLORMAP.astype(np.float64))
    # equal steps of distance are equal steps of lightness (within 8-bit rounding)
    np.testing.assert_allclose(lum, np.linspace(0, 100, 256), atol=1.0)
    assert np.all(np.diff(lum) > 0)
    # and it is a colour map, not grey: chroma in the middle
    mid = COLORMAP[96:200].astype(int)
    assert (mid.max(axis=1) - mid.min(axis=1)).min() > 40


def test_auto_vmax_is_a_round_number_above_most_values() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.uniform(0, 0.013, (8, 8)) for _ in range(3)]
    v = auto_vmax(maps)
    assert v == 0.02  # p99 ≈ 0.0129 → 0.02 (1, 2, 2.5, 5 × 10^k)
    assert auto_vmax([np.full((4, 4), 0.3)]) == 0.5
    assert auto_vmax([np.zeros((4, 4))]) is None  # nothing to scale yet
    spike = np.zeros((100, 100))
    spike[0, 0] = 0.7
    assert auto_vmax([spike]) == 1.0  # percentile 0: the largest value sets the scale


def test_writer_keeps_one_scale_per_run(tmp_path: Path) -> None:
    w = HeatmapWriter(tmp_path, npy=True)
    zero = np.zeros((40, 50), np.float32)
    w.write([zero], [("z.png", "z.png")])
    assert w.vmax is None  # an all-zero first batch does not fix the scale
    m1 = np.full((40, 50), 0.04, np.float32)
    w.write([m1], [("a.png", "a.png")])
    assert w.vmax == 0.05
    w.write([np.full((40, 50), 0.9, np.float32)], [("b.png", "b.png")])
    assert w.vmax == 0.05  # fixed for the rest of the run: maps of one run compare
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), m1)
    fixed = HeatmapWriter(tmp_path / "f", vmax=0.2)
    fixed.write([m1], [("a.png", "a.png")])
    assert fixed.vmax == 0.2 and not (tmp_path / "f" / "a.npy").exists()


def test_render_map_and_panel(tmp_path: Path) -> None:
    h, w = 30, 40
    m = np.linspace(0, 0.2, h * w, dtype=np.float32).reshape(h, w)
    k = DISPLAY_MIN // w
    img = np.asarray(render_heatmap(m, vmax=0.1))
    big = np.repeat(np.repeat(colorize(m, vmax=0.1), k, axis=0), k, axis=1)
    # the map tile starts at the left edge, under the label line
    rows = [y for y in range(img.shape[0] - h * k + 1)
            if np.array_equal(img[y : y + h * k, : w * k], big)]  # fmt: skip
    assert len(rows) == 1
    # the colour bar right of it runs from white (top) to black (bottom)
    bar = img[rows[0] : rows[0] + h * k, w * k :]
    ramp = COLORMAP[np.linspace(255, 0, h * k).round().astype(np.uint8)]
    assert any(np.array_equal(bar[:, x], ramp) for x in range(bar.shape[1]))
    a = np.full((h, w, 3), 10, np.uint8)
    b = np.full((h, w, 3), 200, np.uint8)
    panel = np.asarray(render_heatmap(m, vmax=0.1, a=a, b=b, title="x vs y: distance 0.1"))
    assert panel.shape[1] > 3 * w * k
    assert (panel == 10).all(axis=2).sum() == (h * k) * (w * k)  # A drawn once, whole
    with pytest.raises(ValueError, match="map's size"):
        render_heatmap(m, vmax=0.1, a=a[:10], b=b)
    with pytest.raises(ValueError, match="vmax"):
        render_heatmap(m, vmax=0)
    with pytest.raises(ValueError, match="style"):
        HeatmapWriter(tmp_path, style="overlay")


def test_colorize_scale() -> None:
    m = np.array([[0.0, 0.05, 0.1, 0.5], [-1.0, np.nan, 0.025, np.inf]])
    rgb = colorize(m, vmax=0.1)
    np.testing.assert_array_equal(rgb[0], COLORMAP[[0, 128, 255, 255]])
    np.testing.assert_array_equal(rgb[1], COLORMAP[[0, 0, 64, 255]])
    assert heatmap_name("x.png", "x.jpg") == "x.png"
