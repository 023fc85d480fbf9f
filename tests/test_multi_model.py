"""Several models in one run: one decode per image, score_<model> columns, one error column,
a summary and provenance per model, resume."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dps_fast.pipeline.loader as loader
from dps_fast import Engine, score_dirs, score_pairs
from tests.helpers import images as im
from tests.test_cli import cli


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five pairs of 170×180 (one JPEG, one identical), a too-small pair for MS-SSIM, and a
    file that is not an image."""
    root = tmp_path_factory.mktemp("multi")
    a, b = root / "A", root / "B"
    for i in range(4):
        im.save_array(im.textured(170, 180, 10 + i), a / f"{i}.png")
        noisy = im.textured(170, 180, 10 + i).astype(np.int16) + (i + 1) * 3
        im.save_array(np.clip(noisy, 0, 255).astype(np.uint8), b / f"{i}.jpg", quality=90)
    im.save_array(im.textured(170, 180, 50), a / "same.png")
    im.save_array(im.textured(170, 180, 50), b / "same.png")
    im.save_array(im.textured(120, 130, 60), a / "small.png")
    im.save_array(im.textured(120, 130, 61), b / "small.png")
    im.text_file(a / "bad.png")
    im.save_array(im.textured(170, 180, 70), b / "bad.png")
    return a, b


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out, newline="", encoding="utf-8") as f:
        return {r["a"]: r for r in csv.DictReader(f)}


def test_score_dirs_decodes_once_and_matches_single_runs(
    folders: tuple[Path, Path], bundle: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = folders
    engines = [Engine(bundle("lpips-squeeze"), device="cpu"), Engine("ssim"), Engine("psnr")]
    names = [e.bundle.model for e in engines]
    calls: Counter[str] = Counter()
    real = loader.decode_image

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loader, "decode_image", counting)
    multi = {r["a"]: r for r in score_dirs(a, b, engine=engines, workers=2)}
    assert calls and max(calls.values()) == 1  # every file decoded once for three models
    monkeypatch.setattr(loader, "decode_image", real)
    for name, eng in zip(names, engines, strict=True):
        single = {r["a"]: r for r in score_dirs(a, b, engine=eng)}
        for key, r in single.items():
            got = multi[key][f"score_{name}"]
            if r["error"]:
                assert got is None, (name, key)
                continue
            assert got is not None and (got == r["score"] or abs(got - r["score"]) <= 1e-6)
    assert "score" not in multi["0.png"] and set(multi["0.png"]) == {
        "a",
        "b",
        "error",
        *(f"score_{n}" for n in names),
    }
    assert multi["same.png"]["score_psnr"] == float("inf") and multi["same.png"]["error"] == ""
    assert multi["bad.png"]["error"] and multi["bad.png"]["score_ssim"] is None


def test_a_model_that_fails_a_pair_leaves_the_others_scores(folders: tuple[Path, Path]) -> None:
    a, b = folders
    rows = {r["a"]: r for r in score_dirs(a, b, model="psnr,ms-ssim", device="cpu")}
    small = rows["small.png"]
    assert small["score_ms-ssim"] is None and small["score_psnr"] is not None
    assert small["error"].startswith("ms-ssim: ") and "161×161" in small["error"]
    assert rows["0.png"]["error"] == "" and rows["0.png"]["score_ms-ssim"] > 0.5


def test_non_finite_score_of_one_model_is_that_models_error(
    folders: tuple[Path, Path], bundle: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: a row of several models took a deep model's NaN as its score (the one-model
    row makes it an error). It is that model's error now; PSNR's +inf of identical images
    stays a score, and the other models' scores stay."""
    a, b = folders
    deep = Engine(bundle("lpips-squeeze"), device="cpu")
    name = deep.bundle.model
    real = deep.score

    def nan_scores(x: Any, y: Any, **kw: Any) -> Any:
        per_tap = np.array(real(x, y, **kw), np.float32)
        per_tap[:, 0] = np.nan  # NaN weights would do this
        return per_tap

    monkeypatch.setattr(deep, "score", nan_scores)
    rows = {r["a"]: r for r in score_dirs(a, b, engine=[deep, Engine("psnr")], workers=1)}
    for key in ("0.png", "3.png", "same.png", "small.png"):
        r = rows[key]
        assert r[f"score_{name}"] is None, r
        assert r["error"].startswith(f"{name}: the model gave a non-finite score (nan)"), r
        assert r["score_psnr"] is not None and r["score_psnr"] > 0
    assert rows["same.png"]["score_psnr"] == float("inf")
    assert rows["bad.png"][f"score_{name}"] is None and rows["bad.png"]["score_psnr"] is None


def test_score_pairs_takes_several_models(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"a,b,id\n{a / '0.png'},{b / '0.jpg'},p0\n{a / '1.png'},{b / '0.jpg'},p1\n")
    rows = list(score_pairs(manifest, model=["ssim", "mae"], device="cpu"))
    assert [r["id"] for r in rows] == ["p0", "p1"]
    ref = Engine("mae").score(a / "1.png", b / "0.jpg")[0]
    assert abs(rows[1]["score_mae"] - ref) <= 1e-7 and rows[1]["score_ssim"] < 1


def test_cli_several_models_columns_summary_meta_and_resume(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = folders
    out = tmp_path / "s.csv"
    res = cli("score", a, b, "--model", "ssim,psnr,ms-ssim", "--out", out, "--device", "cpu",
              code=1)  # fmt: skip
    with open(out, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["a", "b", "score_ssim", "score_psnr", "score_ms-ssim", "error"]
    rows = _rows(out)
    assert rows["same.png"]["score_psnr"] == "inf" and rows["same.png"]["score_ssim"] == "1"
    assert "ms-ssim: image too small" in rows["small.png"]["error"]
    for name in ("ssim", "psnr", "ms-ssim"):
        assert f"{name}: scored" in res.stderr
    meta = json.loads(out.with_name("s.csv.meta.json").read_text())
    assert meta["model"] == ["ssim", "psnr", "ms-ssim"]
    assert [m["lower_is_better"] for m in meta["models"]] == [False, False, False]
    assert all(len(m["bundle_sha256"]) == 64 for m in meta["models"])
    s = meta["last_run"]["models"]  # this run, per model (summary: the whole file)
    assert s["ms-ssim"]["failed"] == 2 and s["psnr"]["failed"] == 1 and s["psnr"]["infinite"] == 1
    # Resume: cut the file after two rows; the rerun completes it, each pair once.
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]), encoding="utf-8")
    cli("score", a, b, "--model", "ssim,psnr,ms-ssim", "--out", out, "--device", "cpu",
        "--resume", code=1)  # fmt: skip
    again = _rows(out)
    assert sorted(again) == sorted(rows)
    with open(out, newline="", encoding="utf-8") as f:
        keys = [r["a"] for r in csv.DictReader(f)]
    assert len(keys) == len(set(keys))
    for k, r in rows.items():
        assert again[k] == r


def test_single_model_keeps_the_score_column(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    out = tmp_path / "one.csv"
    cli("score", a, b, "--model", "ssim", "--out", out, "--device", "cpu", code=1)
    assert out.read_text().splitlines()[0] == "a,b,score,error"
    meta = json.loads(out.with_name("one.csv.meta.json").read_text())
    assert meta["model"] == "ssim" and meta["lower_is_better"] is False


def test_cli_refuses_what_takes_one_model(folders: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = folders
    res = cli("score", a, b, "--model", "ssim,psnr", "--spatial-dir", tmp_path / "m", code=2)
    assert "one model" in res.stderr
    res = cli("score", a, b, "--model", "ssim,ssim", code=2)
    assert "once" in res.stderr
