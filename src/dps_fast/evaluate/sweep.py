"""Backbone sweep: agreement with people against ImageNet top-1 accuracy, across models.

Accuracy comes from ``--accuracy NAME=ACC`` (which wins) or from the bundle: the manifest's
``weights.imagenet_acc1``, torchvision's ``acc@1`` recorded at export for its own weights (a
``--weights`` file has none: give it with ``--accuracy``). With three or more models on a
dataset, Spearman and Kendall correlations between accuracy and the main measure, with p-values
(exact for Kendall on small samples, as scipy chooses).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .deps import need
from .items import LayoutError
from .scoring import ScoreTable
from .summary import MAIN, Row

COLUMNS = ("model", "acc1", "dataset", "measure", "value")
CORR_COLUMNS = ("dataset", "measure", "n_models", "spearman", "spearman_p", "kendall", "kendall_p")


def parse_accuracy(items: list[str]) -> dict[str, float]:
    """``NAME=ACC`` pairs (ACC in percent, as torchvision's ``acc@1``)."""
    out: dict[str, float] = {}
    for s in items:
        name, sep, acc = s.partition("=")
        try:
            out[name] = float(acc)
        except ValueError:
            raise LayoutError(
                f"--accuracy: expected NAME=ACC (e.g. dps-resnet18=69.758), got {s!r}"
            ) from None
        if not sep or not name:
            raise LayoutError(f"--accuracy: expected NAME=ACC, got {s!r}")
    return out


def accuracy_of(t: ScoreTable, given: dict[str, float]) -> float:
    """acc@1 of the table's model: given on the command line, else recorded in its bundle
    (NaN when neither says)."""
    if t.model in given:
        return given[t.model]
    meta = t.meta.get("weights_meta") or {}
    for path in (("imagenet_acc1",), ("acc@1",), ("_metrics", "ImageNet-1K", "acc@1")):
        v: Any = meta
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            return float(v)
    return math.nan


def sweep(
    tables: list[ScoreTable], rows: list[Row], given: dict[str, float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per model × dataset rows, per dataset correlations) for models with a known accuracy."""
    acc = {t.model: accuracy_of(t, given) for t in tables}
    points = []
    for r in rows:
        if r.subset == "all" and not r.taps and r.measure in MAIN.values():
            a = acc.get(r.model, math.nan)
            if math.isfinite(a):
                points.append(
                    {
                        "model": r.model,
                        "acc1": a,
                        "dataset": r.dataset,
                        "measure": r.measure,
                        "value": r.value,
                    }
                )
    corr = []
    st = need("scipy.stats")
    for ds in dict.fromkeys(p["dataset"] for p in points):
        pts = [p for p in points if p["dataset"] == ds]
        if len({p["model"] for p in pts}) < 3:
            continue
        x = np.array([p["acc1"] for p in pts])
        y = np.array([p["value"] for p in pts])
        s, k = st.spearmanr(x, y), st.kendalltau(x, y)
        corr.append(
            {
                "dataset": ds,
                "measure": pts[0]["measure"],
                "n_models": len(pts),
                "spearman": float(s.statistic),
                "spearman_p": float(s.pvalue),
                "kendall": float(k.statistic),
                "kendall_p": float(k.pvalue),
            }
        )
    return points, corr
