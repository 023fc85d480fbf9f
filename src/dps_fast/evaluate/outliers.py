"""Where a measure disagrees with people, and whether those items are high-frequency ones.

Per model and dataset an item table: MOS sets get the fitted value, residual (rating − fit),
z (residual over the item's rating spread, else the residuals' std) and the outlier flag of
the outlier ratio; BAPPS 2AFC gets each triplet's credit, and an outlier is a confident error
(the measure's choice was made by at most 20 % of raters). With ``hf``, each item's
high-frequency features (reference, residual, ΔHFER; see :mod:`hf`) are added and outliers are
compared with inliers by Mann–Whitney U with the rank-biserial effect size, overall and per
distortion type / subset.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import hf as H
from . import measures as M
from .deps import need
from .scoring import ScoreTable
from .summary import Options

CONFIDENT = 0.2  # a 2AFC choice made by at most this share of raters is a confident error
HF_COLUMNS = ("ref_hfer", "ref_si", "ref_lapvar", "res_hfer", "res_si", "res_lapvar", "delta_hfer")
MW_COLUMNS = (
    "model",
    "dataset",
    "subset",
    "feature",
    "n_outliers",
    "n_inliers",
    "median_outliers",
    "median_inliers",
    "u",
    "p",
    "rank_biserial",
)


def item_table(t: ScoreTable, opts: Options) -> list[dict[str, Any]]:
    """One row per item: labels, the measure's value, fit, residual, outlier flag."""
    rows: list[dict[str, Any]] = []
    if t.protocol == "mos":
        q, y = -t.dist["d"], t.target()
        fit = M.fit_logistic(q, y, opts.fit)
        f = fit(q) if (fit.ok or fit.kind == "none") else np.full_like(q, math.nan)
        res = y - f
        flags, how = M.outliers(y, f, t.label_std, opts.outlier_k)
        sd = t.label_std if "item" in how else np.full_like(q, float(np.std(res)))
        for i in range(t.n):
            rows.append(
                {
                    "item": t.items[i],
                    "subset": t.subset[i],
                    "dtype": t.dtype[i],
                    "group": t.group[i],
                    "label": t.label[i],
                    "q": q[i],
                    "fitted": f[i],
                    "residual": res[i],
                    "z": res[i] / sd[i] if sd[i] > 0 else math.nan,
                    "outlier": bool(flags[i]),
                }
            )
    elif t.protocol == "2afc":
        credit = M.two_afc_per_item(t.dist["p0"], t.dist["p1"], t.label)
        for i in range(t.n):
            rows.append(
                {
                    "item": t.items[i],
                    "subset": t.subset[i],
                    "dtype": t.subset[i],
                    "group": t.group[i],
                    "label": t.label[i],
                    "d0": t.dist["p0"][i],
                    "d1": t.dist["p1"][i],
                    "credit": credit[i],
                    "outlier": bool(credit[i] <= CONFIDENT),
                }
            )
    return rows


def add_hf(t: ScoreTable, rows: list[dict[str, Any]], cutoff: float) -> None:
    """Decode each item's images and add the HF features (reference features once per file)."""
    from ..io.decode import decode_image

    root = Path(t.meta["root"])
    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[name] = decode_image(root / name)
        return cache[name]

    for i, r in enumerate(rows):
        # 2AFC: the image the measure judged closer to the reference
        role = "d" if t.protocol != "2afc" else ("p0" if r["d0"] <= r["d1"] else "p1")
        a, b = t.paths[role][i]
        try:
            r.update(H.features(load(b), load(a), cutoff))
        except (OSError, ValueError) as e:
            r.update(dict.fromkeys(HF_COLUMNS, math.nan))
            r["hf_error"] = " ".join(str(e).split())


def mann_whitney(model: str, dataset: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outliers vs inliers per HF feature, overall and per distortion type / subset."""
    st = need("scipy.stats")
    out: list[dict[str, Any]] = []
    groups: list[tuple[str, list[dict[str, Any]]]] = [("all", rows)]
    types = sorted({str(r["dtype"]) for r in rows} - {""})
    if len(types) > 1:
        groups += [(f"type={d}", [r for r in rows if str(r["dtype"]) == d]) for d in types]
    for name, part in groups:
        for feat in HF_COLUMNS:
            xo = np.array([r[feat] for r in part if r["outlier"]], np.float64)
            xi = np.array([r[feat] for r in part if not r["outlier"]], np.float64)
            xo, xi = xo[np.isfinite(xo)], xi[np.isfinite(xi)]
            row: dict[str, Any] = {
                "model": model,
                "dataset": dataset,
                "subset": name,
                "feature": feat,
                "n_outliers": len(xo),
                "n_inliers": len(xi),
            }
            if len(xo) and len(xi):
                res = st.mannwhitneyu(xo, xi, alternative="two-sided")
                row.update(
                    median_outliers=float(np.median(xo)),
                    median_inliers=float(np.median(xi)),
                    u=float(res.statistic),
                    p=float(res.pvalue),
                    rank_biserial=2 * float(res.statistic) / (len(xo) * len(xi)) - 1,
                )
            out.append(row)
    return out


def top_outliers(t: ScoreTable, rows: list[dict[str, Any]], n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` items where the measure disagrees most (largest |z|; lowest 2AFC credit)."""
    if t.protocol == "mos":
        key = [abs(r["z"]) if math.isfinite(r["z"]) else -1.0 for r in rows]
        order = np.argsort(key, kind="stable")[::-1]
    elif t.protocol == "2afc":
        order = np.argsort([r["credit"] for r in rows], kind="stable")
    else:
        return []
    return [rows[i] for i in order[:n]]
