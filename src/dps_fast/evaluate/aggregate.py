"""One score per model: a weighted geometric mean of desirabilities in [0, 1].

D = (Π dᵢ^wᵢ)^(1/Σwᵢ) over the factors present with wᵢ > 0 (Derringer & Suich desirabilities);
a missing factor is dropped and the other weights renormalised. D is comparable only between
models of one run (same datasets, subsets and factors).

| factor | dᵢ | default weight |
|---|---|---|
| ``mos_srocc`` | mean over MOS datasets of max(0, SROCC) | 2 |
| ``twoafc`` | mean over BAPPS subsets of clip((S − ½)/(O − ½), 0, 1), O the human ceiling | 2 |
| ``jnd_map`` | BAPPS JND mAP | 1 |
| ``consistency`` | 1 − mean outlier ratio over MOS datasets | 1 |
| ``shift_robust`` | clip(1 − r̄/0.25, 0, 1), r̄ the mean 1 px rank-flip rate (``--robustness``) | 1 |
| ``monotonicity`` | share of blur/noise/JPEG ladder steps where d rises (``--robustness``) | 1 |
| ``speed`` | clip(log(pairs/s) / log 1000, 0, 1), the engine's own rate in this run | 0 |
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._install import install_command
from .items import LayoutError
from .summary import Row

DEFAULT_WEIGHTS: dict[str, float] = {
    "mos_srocc": 2.0,
    "twoafc": 2.0,
    "jnd_map": 1.0,
    "consistency": 1.0,
    "shift_robust": 1.0,
    "monotonicity": 1.0,
    "speed": 0.0,
}
COLUMNS = ("model", "factor", "value", "weight")
NOTE = "D is comparable only between models of one run (same datasets, subsets and factors)"


def read_weights(path: Path | None) -> dict[str, float]:
    """Weights from a TOML file (``[weights]`` table or top-level keys), over the defaults."""
    weights = dict(DEFAULT_WEIGHTS)
    if path is None:
        return weights
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli is the same parser (the [eval] extra installs it)
        try:
            import tomli as tomllib
        except ImportError:
            raise LayoutError(
                f"--aggregate on Python 3.10 needs tomli: {install_command('eval')}"
            ) from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LayoutError(f"--aggregate {path}: {e}") from None
    table = data.get("weights", data)
    for k, v in table.items():
        if k not in DEFAULT_WEIGHTS:
            raise LayoutError(
                f"--aggregate {path}: unknown factor {k!r}; expected {', '.join(DEFAULT_WEIGHTS)}"
            )
        if not isinstance(v, (int, float)) or v < 0:
            raise LayoutError(f"--aggregate {path}: weight of {k} must be a number ≥ 0, got {v!r}")
        weights[k] = float(v)
    return weights


def combine(factors: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted geometric mean of the finite factors with a positive weight (NaN if none)."""
    used = {k: v for k, v in factors.items() if weights.get(k, 0) > 0 and math.isfinite(v)}
    if not used:
        return math.nan
    if any(v <= 0 for v in used.values()):
        return 0.0
    total = sum(weights[k] for k in used)
    return math.exp(sum(weights[k] * math.log(v) for k, v in used.items()) / total)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def factors(rows: list[Row], model: str, pairs_per_s: float | None = None) -> dict[str, float]:
    """The desirabilities of one model from its summary rows (plain taps only)."""
    mine = [r for r in rows if r.model == model and not r.taps]

    def vals(measure: str, subset_all: bool = True) -> list[Row]:
        return [r for r in mine if r.measure == measure and (r.subset == "all") == subset_all]

    out: dict[str, float] = {}
    sr = [max(0.0, r.value) for r in vals("srocc") if math.isfinite(r.value)]
    if sr:
        out["mos_srocc"] = sum(sr) / len(sr)
    two = {(r.dataset, r.subset): r.value for r in mine if r.measure == "2afc"}
    ceil = {(r.dataset, r.subset): r.value for r in mine if r.measure == "2afc_ceiling"}
    per_subset = [k for k in two if k[1] != "all"] or list(two)
    d = [_clip((two[k] - 0.5) / (ceil[k] - 0.5)) for k in per_subset if ceil.get(k, 0.5) > 0.5]
    if d:
        out["twoafc"] = sum(d) / len(d)
    jnd = [r.value for r in vals("jnd_map") if math.isfinite(r.value)]
    if jnd:
        out["jnd_map"] = sum(jnd) / len(jnd)
    orr = [r.value for r in vals("outlier_ratio") if math.isfinite(r.value)]
    if orr:
        out["consistency"] = 1.0 - sum(orr) / len(orr)
    rf = [r.value for r in vals("rank_flip_1px") if math.isfinite(r.value)]
    if rf:
        out["shift_robust"] = _clip(1.0 - (sum(rf) / len(rf)) / 0.25)
    mono = [r.value for r in vals("monotonicity") if math.isfinite(r.value)]
    if mono:
        out["monotonicity"] = sum(mono) / len(mono)
    if pairs_per_s is not None and pairs_per_s > 0:
        out["speed"] = _clip(math.log(pairs_per_s) / math.log(1000.0))
    return out


def aggregate_rows(
    rows: list[Row], weights: dict[str, float], speeds: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """``aggregate.csv`` rows: each factor, then ``D``, per model."""
    out: list[dict[str, Any]] = []
    for model in dict.fromkeys(r.model for r in rows):
        f = factors(rows, model, (speeds or {}).get(model))
        for k, v in f.items():
            out.append({"model": model, "factor": k, "value": v, "weight": weights.get(k, 0.0)})
        out.append({"model": model, "factor": "D", "value": combine(f, weights), "weight": ""})
    return out
