"""Run summaries: statistics of scores, and the summary text a scoring run ends with.

One set of statistics serves a run's counters, a whole results file (``FILE.meta.json``) and
the command line: ``mean`` and ``std`` over the finite scores, ``median``, ``min`` and ``max``
over all, and ``infinite`` when some are (PSNR of identical images is ``inf``). With several
models, each ``score_<model>`` column has its own counts and statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STAT_KEYS", "score_stats", "summary_lines"]

STAT_KEYS: tuple[str, ...] = ("mean", "std", "median", "min", "max")
"""The statistics :func:`score_stats` gives, in the order they are shown."""


def score_stats(scores: Iterable[float]) -> dict[str, Any]:
    """``mean``, ``std`` (finite scores), ``median``, ``min``, ``max``; empty for no scores.

    ``infinite`` counts the infinite scores when there are any; they are left out of mean and
    std (which are NaN when every score is infinite) but not out of median, min and max.
    """
    s = np.asarray(list(scores), np.float64)
    if not s.size:
        return {}
    fin = s[np.isfinite(s)]
    out: dict[str, Any] = {
        "mean": float(fin.mean()) if fin.size else float("nan"),
        "std": float(fin.std()) if fin.size else float("nan"),
        "median": float(np.median(s)),
        "min": float(s.min()),
        "max": float(s.max()),
    }
    if fin.size < s.size:
        out["infinite"] = int(s.size - fin.size)
    return out


def _stats_text(s: Mapping[str, Any], keys: Iterable[str] = STAT_KEYS) -> str:
    """``mean 0.1  std 0.02 …`` for the keys ``s`` has, then how many were infinite."""
    text = "  ".join(f"{k} {s[k]:.6g}" for k in keys if k in s)
    if s.get("infinite"):
        text += f"  ({s['infinite']} infinite, not in mean/std)"
    return text


def _model_line(name: str, s: Mapping[str, Any]) -> str:
    line = f"  {name}: scored {s['scored']}, failed {s['failed']}"
    stats = _stats_text(s)
    return f"{line}  {stats}" if stats else line


def summary_lines(
    run: Mapping[str, Any],
    provenance: Mapping[str, Any],
    whole: Mapping[str, Any] | None = None,
    out: Path | None = None,
) -> list[str]:
    """The lines that end a scoring run (the CLI writes them to stderr).

    ``run``: this run's counts (``scored``, ``failed``, optional ``skipped (resume)``, the
    statistics, ``models`` per model with several, ``pairs_per_s``); ``provenance``: the
    results meta (``model``, ``device``, ``precision``, ``decode``, optional ``heatmaps``);
    ``whole``: the summary of the whole results file ``out`` (after a resume the statistics
    describe it, not only this run). With several models a row counts as scored when every
    model scored it, so each model's own counts are given too.
    """
    models = run.get("models") or {}
    skipped = run.get("skipped (resume)")
    if models:
        n = run["scored"] + run["failed"]
        head = (
            f"summary: {n} pairs, {run['scored']} scored by every model, "
            f"{run['failed']} with an error"
        )
    else:
        head = f"summary: scored {run['scored']}, failed {run['failed']}"
    if skipped:
        head += f", skipped {skipped} (already in --out)"
    lines = [head]
    lines += [_model_line(name, s) for name, s in models.items()]
    stats_of: Mapping[str, Any] = run
    if whole is not None and skipped:
        lines.append(
            f"  {out}: {whole['rows']} rows, {whole['scored']} scored, {whole['failed']} failed"
        )
        lines += [_model_line(f"{out} {name}", s) for name, s in whole.get("models", {}).items()]
        stats_of = whole
    if "mean" in stats_of and not models:
        lines.append("  " + _stats_text(stats_of))
    model = provenance["model"]
    model = model if isinstance(model, str) else ",".join(model)
    lines.append(
        f"  model {model}, device {provenance['device']}, precision {provenance['precision']}, "
        f"decode {provenance['decode']}, {run['pairs_per_s']:.1f} pairs/s"
    )
    hm = provenance.get("heatmaps")
    if hm is not None and hm.get("vmax") is not None:
        how = "chosen from the first maps" if hm["auto"] else "--vmax"
        lines.append(f"  heatmaps in {hm['dir']}: white = distance {hm['vmax']:.3g} ({how})")
    return lines
