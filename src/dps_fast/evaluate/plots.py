"""Plots (matplotlib, Agg, imported only with ``--plots``); each function writes one PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import measures as M
from .deps import need
from .scoring import ScoreTable
from .summary import MAIN, Options, Row


def _plt() -> Any:
    mpl = need("matplotlib")
    mpl.use("Agg")
    return need("matplotlib.pyplot")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def mos_scatter(t: ScoreTable, opts: Options, path: Path) -> Path:
    """Quality (−distance) against the rating, with the fitted logistic."""
    plt = _plt()
    q, y = -t.dist["d"], t.target()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(q, y, s=6, alpha=0.5)
    fit = M.fit_logistic(q, y, opts.fit)
    if fit.ok:
        xs = np.linspace(q.min(), q.max(), 200)
        ax.plot(xs, fit(xs), color="C3", label=f"{fit.kind}")
        ax.legend()
    ax.set_xlabel("quality = −distance" if t.lower_is_better else "similarity")
    ax.set_ylabel("rating (higher is better)")
    ax.set_title(f"{t.model} on {t.dataset}: SROCC {M.srocc(q, y):.3f}")
    return _save(fig, path)


def bapps_bars(rows: list[Row], dataset: str, path: Path) -> Path:
    """2AFC per subset and model, the human ceiling as a marker."""
    plt = _plt()
    two = [r for r in rows if r.dataset == dataset and r.measure == "2afc" and not r.taps]
    ceil = {
        r.subset: r.value
        for r in rows
        if r.dataset == dataset and r.measure == "2afc_ceiling" and not r.taps
    }
    subsets = list(dict.fromkeys(r.subset for r in two))
    models = list(dict.fromkeys(r.model for r in two))
    fig, ax = plt.subplots(figsize=(1.2 * len(subsets) + 3, 4))
    w = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        v = {r.subset: r.value for r in two if r.model == m}
        ax.bar(np.arange(len(subsets)) + k * w, [v.get(s, math.nan) for s in subsets], w, label=m)
    ax.scatter(
        np.arange(len(subsets)) + 0.4 - w / 2,
        [ceil.get(s, math.nan) for s in subsets],
        marker="_",
        s=400,
        color="k",
        label="human ceiling",
    )
    ax.set_xticks(np.arange(len(subsets)) + 0.4 - w / 2, subsets)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("2AFC")
    ax.legend(fontsize=7)
    return _save(fig, path)


def tap_bars(rows: list[Row], dataset: str, path: Path) -> Path | None:
    """The main measure per tap subset, per model."""
    tap_rows = [r for r in rows if r.dataset == dataset and r.taps]
    if not tap_rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(tap_rows) + 1.5))
    labels = [f"{r.model} [{r.taps}]" for r in tap_rows]
    ax.barh(range(len(tap_rows)), [r.value for r in tap_rows])
    ax.set_yticks(range(len(tap_rows)), labels, fontsize=7)
    ax.set_xlabel(tap_rows[0].measure)
    return _save(fig, path)


def hf_boxes(
    items: list[dict[str, Any]], features: tuple[str, ...], title: str, path: Path
) -> Path:
    """Outliers vs inliers per HF feature."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(features), figsize=(2.2 * len(features), 3))
    for ax, f in zip(np.atleast_1d(axes), features, strict=True):
        out = [r[f] for r in items if r["outlier"] and math.isfinite(r.get(f, math.nan))]
        inl = [r[f] for r in items if not r["outlier"] and math.isfinite(r.get(f, math.nan))]
        ax.boxplot([inl, out] if out else [inl], tick_labels=["in", "out"][: 1 + bool(out)])
        ax.set_title(f, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def sweep_scatter(points: list[dict[str, Any]], dataset: str, path: Path) -> Path:
    """ImageNet top-1 against the main measure, one point per model."""
    plt = _plt()
    pts = [p for p in points if p["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p["acc1"] for p in pts], [p["value"] for p in pts])
    for p in pts:
        ax.annotate(p["model"], (p["acc1"], p["value"]), fontsize=7)
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel(pts[0]["measure"] if pts else "")
    ax.set_title(dataset)
    return _save(fig, path)


def thumbnail(ref: np.ndarray, dist: np.ndarray, path: Path, height: int = 96) -> Path:
    """Reference and distorted image side by side, ``height`` pixels high (Pillow)."""
    from PIL import Image

    ims = []
    for a in (ref, dist):
        im = Image.fromarray(np.asarray(a, np.uint8))
        w = max(1, round(im.width * height / im.height))
        ims.append(im.resize((w, height)))
    canvas = Image.new("RGB", (ims[0].width + ims[1].width + 4, height), "white")
    canvas.paste(ims[0], (0, 0))
    canvas.paste(ims[1], (ims[0].width + 4, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


__all__ = [
    "MAIN",
    "bapps_bars",
    "hf_boxes",
    "mos_scatter",
    "sweep_scatter",
    "tap_bars",
    "thumbnail",
]
