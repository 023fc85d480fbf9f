"""``report.md``: the study in one page that reads on its own, plots embedded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .aggregate import NOTE
from .summary import MAIN, Row


def _f(v: Any, nd: int = 4) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def write_report(
    out: Path,
    *,
    rows: list[Row],
    diffs: list[dict[str, Any]],
    aggregate: list[dict[str, Any]],
    sweep_corr: list[dict[str, Any]],
    mw: list[dict[str, Any]],
    top: dict[str, list[dict[str, Any]]],
    plots: list[Path],
    meta: dict[str, Any],
) -> Path:
    """Write ``out/report.md`` from what the run computed."""
    o = meta["options"]
    lines = [
        "# Agreement with human judgments",
        "",
        f"Models: {', '.join(dict.fromkeys(r.model for r in rows))}. Datasets: "
        f"{', '.join(dict.fromkeys(r.dataset for r in rows))}. dps-fast {meta['dps_fast']}.",
        "",
        "Sign convention: quality = −distance and ratings oriented so that higher is better; "
        "every correlation is signed (a measure that ranks backwards is negative). Intervals: "
        f"BCa bootstrap, {o['bootstrap']} resamples of clusters (BAPPS triplets, reference "
        f"images of MOS sets), {o['ci']:.0%} level, seed {o['seed']}. Logistic: {o['fit']}.",
        "",
        "## Main measures",
        "",
    ]
    main = [
        r
        for r in rows
        if not r.taps
        and (r.subset == "all" or r.measure == "2afc")
        and r.measure
        in (
            *MAIN.values(),
            "krocc",
            "plcc",
            "plcc_fit",
            "rmse_fit",
            "outlier_ratio",
            "2afc_ceiling",
        )
    ]
    lines += _table(
        ["model", "dataset", "subset", "measure", "value", "CI", "n", "failed"],
        [
            [
                r.model,
                r.dataset,
                r.subset,
                r.measure,
                r.value,
                f"[{_f(r.ci_low)}, {_f(r.ci_high)}]",
                r.n,
                r.failed,
            ]
            for r in main
        ],
    )
    if diffs:
        lines += ["## Differences between models (paired bootstrap)", ""]
        lines += _table(
            ["dataset", "measure", "a", "b", "a − b", "CI", "n"],
            [
                [
                    d["dataset"],
                    d["measure"],
                    d["model_a"],
                    d["model_b"],
                    d["diff"],
                    f"[{_f(d['ci_low'])}, {_f(d['ci_high'])}]",
                    d["n"],
                ]
                for d in diffs
            ],
        )
    if aggregate:
        lines += ["## Aggregate", "", f"{NOTE}.", ""]
        lines += _table(
            ["model", "factor", "value", "weight"],
            [[a["model"], a["factor"], a["value"], a["weight"]] for a in aggregate],
        )
    if sweep_corr:
        lines += ["## ImageNet accuracy vs agreement", ""]
        lines += _table(
            ["dataset", "measure", "models", "Spearman", "p", "Kendall", "p"],
            [
                [
                    c["dataset"],
                    c["measure"],
                    c["n_models"],
                    c["spearman"],
                    c["spearman_p"],
                    c["kendall"],
                    c["kendall_p"],
                ]
                for c in sweep_corr
            ],
        )
    if mw:
        lines += [
            "## High-frequency content of outliers vs inliers (all items)",
            "",
            "Mann–Whitney U, two-sided; rank-biserial r > 0: outliers have more.",
            "",
        ]
        lines += _table(
            [
                "model",
                "dataset",
                "feature",
                "outliers",
                "inliers",
                "median out",
                "median in",
                "p",
                "r",
            ],
            [
                [
                    m["model"],
                    m["dataset"],
                    m["feature"],
                    m["n_outliers"],
                    m["n_inliers"],
                    m.get("median_outliers", math.nan),
                    m.get("median_inliers", math.nan),
                    m.get("p", math.nan),
                    m.get("rank_biserial", math.nan),
                ]
                for m in mw
                if m["subset"] == "all"
            ],
        )
    for key, items in top.items():
        if not items:
            continue
        lines += [f"## Top outliers: {key}", ""]
        for it in items:
            thumb = it.get("thumbnail")
            desc = ", ".join(
                f"{k} {_f(it[k], 3)}"
                for k in ("label", "q", "fitted", "z", "d0", "d1", "credit")
                if k in it
            )
            lines.append(f"- `{it['item']}`: {desc}")
            if thumb:
                lines.append(f"  ![{it['item']}]({thumb})")
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
