"""Run summaries: per-model statistics in the whole-file meta and in the stderr summary, and
pairs/s counting every pair processed (issue 14: one model failing every pair read "scored 0
… 0.0 pairs/s")."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dps_fast.io.results import ResultWriter, meta_path, result_columns
from dps_fast.io.resume import summarize_file
from dps_fast.io.summary import score_stats, summary_lines
from tests.test_cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    with ResultWriter(path, columns) as w:
        for r in rows:
            w.write(r)


def test_score_stats_leaves_infinite_scores_out_of_mean_and_std() -> None:
    s = score_stats([1.0, 3.0, math.inf])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["infinite"] == 1
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == math.inf
    assert score_stats([]) == {}
    assert "infinite" not in score_stats([0.5])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_whole_file_summary_has_each_models_statistics(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"r{suffix}"
    columns = result_columns(models=["psnr", "ms-ssim"])
    rows: list[dict[str, object]] = [
        {"a": "1", "b": "1", "score_psnr": 30.0, "score_ms-ssim": 0.9, "error": ""},
        {"a": "2", "b": "2", "score_psnr": 20.0, "error": "ms-ssim: image too small"},
        {"a": "3", "b": "3", "score_psnr": math.inf, "score_ms-ssim": 1.0, "error": ""},
        {"a": "4", "b": "4", "error": "4: not an image"},
    ]
    _write(out, columns, rows)
    s = summarize_file(out)
    assert (s["rows"], s["scored"], s["failed"]) == (4, 2, 2)
    psnr, ms = s["models"]["psnr"], s["models"]["ms-ssim"]
    assert (psnr["scored"], psnr["failed"], ms["scored"], ms["failed"]) == (3, 1, 2, 2)
    assert psnr["mean"] == pytest.approx(25.0) and psnr["infinite"] == 1
    assert psnr["max"] == math.inf and psnr["min"] == 20.0 and psnr["median"] == 30.0
    assert ms["mean"] == pytest.approx(0.95) and ms["std"] == pytest.approx(0.05)
    assert "mean" not in s  # no single score column: statistics are per model


def test_whole_file_summary_single_model_keeps_infinity_out_of_the_mean(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    rows: list[dict[str, object]] = [
        {"a": "1", "b": "1", "score": 30.0},
        {"a": "2", "b": "2", "score": math.inf},
        {"a": "3", "b": "3", "error": "bad"},
    ]
    _write(out, result_columns(), rows)
    s = summarize_file(out)
    assert (s["rows"], s["scored"], s["failed"]) == (3, 2, 1)
    assert s["mean"] == 30.0 and s["infinite"] == 1 and s["max"] == math.inf
    assert "models" not in s


def test_summary_lines_name_each_model_and_count_processed_pairs() -> None:
    run = {
        "scored": 0,
        "failed": 4,
        "models": {
            "lpips-alex": {"scored": 4, "failed": 0, **score_stats([0.1, 0.2, 0.3, 0.4])},
            "ms-ssim": {"scored": 0, "failed": 4},
        },
        "pairs_per_s": 12.5,
    }
    prov = {"model": ["lpips-alex", "ms-ssim"], "device": "cpu", "precision": "fp32",
            "decode": "cpu"}  # fmt: skip
    lines = summary_lines(run, prov)
    assert lines[0] == "summary: 4 pairs, 0 scored by every model, 4 with an error"
    assert lines[1].startswith("  lpips-alex: scored 4, failed 0  mean 0.25")
    assert lines[2] == "  ms-ssim: scored 0, failed 4"
    assert lines[-1].endswith("12.5 pairs/s") and "lpips-alex,ms-ssim" in lines[-1]
    one = summary_lines({"scored": 3, "failed": 1, **score_stats([1, 2, 3]), "pairs_per_s": 2},
                        {**prov, "model": "psnr"})  # fmt: skip
    assert one[0] == "summary: scored 3, failed 1" and one[1].startswith("  mean 2  std")


def test_cli_one_model_failing_every_pair(bundle: Callable[[str], Path], tmp_path: Path) -> None:
    """The issue's run: ms-ssim needs more than the 96×128 examples, lpips-alex scores them."""
    out = tmp_path / "s.csv"
    model = f"{bundle('lpips-alex')},ms-ssim"
    res = cli("score", EXAMPLES / "restored", EXAMPLES / "reference", "--model", model,
              "--device", "cpu", "--out", out, code=1)  # fmt: skip
    err = res.stderr
    assert "summary: 4 pairs, 0 scored by every model, 4 with an error" in err, err
    assert "  lpips-alex: scored 4, failed 0  mean" in err, err
    assert "  ms-ssim: scored 0, failed 4" in err, err
    rate = re.search(r"([0-9.]+) pairs/s", err)
    assert rate is not None and float(rate.group(1)) > 0, err
    meta = json.loads(meta_path(out).read_text())
    assert meta["last_run"]["pairs_per_s"] > 0
    with open(out, newline="", encoding="utf-8") as f:
        alex = np.asarray([float(r["score_lpips-alex"]) for r in csv.DictReader(f)])
    whole = meta["summary"]["models"]
    assert whole["ms-ssim"] == {"scored": 0, "failed": 4}
    got = whole["lpips-alex"]
    assert got["scored"] == 4 and got["failed"] == 0
    for key, want in (("mean", alex.mean()), ("std", alex.std()), ("median", np.median(alex)),
                      ("min", alex.min()), ("max", alex.max())):  # fmt: skip
        assert got[key] == pytest.approx(want, rel=1e-6, abs=1e-9), key
