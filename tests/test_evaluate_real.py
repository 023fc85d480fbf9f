"""Opt-in: ``dps-fast evaluate`` on the real datasets against published numbers.

Skipped unless a dataset folder is given in an environment variable, and the real backbone
weights are reachable (torchvision's cache under ``TORCH_HOME``, or the bundle already exported
into ``DPS_FAST_HOME``): ``DPS_FAST_DATA_TID2013=/data/TID2013``,
``DPS_FAST_DATA_KADID10K=/data/kadid10k``. Full resolution, raw PLCC, signed (pyiqa's table
publishes abs values of positive correlations). Tolerance ±0.005 as the research notes ask;
pyiqa's own LPIPS preprocessing may differ slightly, so a miss says "look", not "wrong".
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from dps_fast.evaluate import EvalConfig, evaluate
from dps_fast.evaluate.summary import Options

# (env var, kind, model, {measure: published value}, source)
CASES = [
    (
        "DPS_FAST_DATA_TID2013",
        "tid2013",
        "lpips-alex",
        {"srocc": 0.7445, "plcc": 0.753, "krocc": 0.5477},
        "pyiqa FR_benchmark_results.csv",
    ),
    (
        "DPS_FAST_DATA_KADID10K",
        "kadid10k",
        "lpips-vgg",
        {"srocc": 0.7201, "krocc": 0.5313},
        "piq README",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("env", "kind", "model", "expected", "source"), CASES)
def test_real_dataset_matches_published(
    env: str, kind: str, model: str, expected: dict[str, float], source: str, tmp_path: Path
) -> None:
    root = os.environ.get(env)
    if not root:
        pytest.skip(f"set {env}=/path/to/{kind} to run (real weights needed)")
    if "DPS_FAST_HOME_REAL" in os.environ:
        os.environ["DPS_FAST_HOME"] = os.environ["DPS_FAST_HOME_REAL"]
    out = tmp_path / "eval"
    evaluate(EvalConfig([f"{kind}={root}"], [model], out, options=Options(n_resamples=0)))
    with open(out / "summary.csv", newline="") as f:
        rows = {
            r["measure"]: float(r["value"])
            for r in csv.DictReader(f)
            if r["subset"] == "all" and not r["taps"]
        }
    for measure, value in expected.items():
        assert rows[measure] == pytest.approx(value, abs=0.005), f"{measure} vs {source}"
