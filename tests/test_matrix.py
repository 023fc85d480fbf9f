"""`matrix` at scale: bounded feature memory (block path = held path), bad images as NaN rows
and columns with their reason, one size by WxH resize (and centre crop), provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dps_fast.cli import app
from dps_fast.io.decode import decode_image, resize_image
from dps_fast.matrix import (
    MatrixResize,
    _Features,
    compute_matrix,
    make_plan,
    parse_budget,
    parse_matrix_resize,
)
from tests.helpers import images as im

H, W = 48, 64
TOL = 1e-6


@pytest.fixture(scope="module")
def alex(engines: Any) -> Any:
    return engines("lpips-alex")


def _folder(root: Path, n: int = 7) -> Path:
    for i in range(n):
        im.save_array(
            im.textured(H, W, 300 + i),
            root / f"sub/{i:02d}.png" if i % 3 else root / f"{i:02d}.png",
        )
    im.text_file(root / "03-bad.png")  # not an image
    return root


def test_block_path_gives_the_held_matrix(alex, tmp_path, monkeypatch) -> None:
    folder = _folder(tmp_path / "imgs")
    held = compute_matrix(folder, engine=alex)
    labels = held.labels
    bad = labels.index("03-bad.png")
    assert held.plan is not None and held.plan.n_blocks == 1
    assert set(held.errors) == {"03-bad.png"} and "not an image" in held.errors["03-bad.png"]
    m = held.matrix
    assert np.isnan(m[bad]).all() and np.isnan(m[:, bad]).all()
    good = [i for i in range(len(labels)) if i != bad]
    g = m[np.ix_(good, good)]
    assert np.array_equal(g, g.T) and np.all(np.diag(g) == 0) and not np.isnan(g).any()
    imgs = np.stack([decode_image(folder / labels[i]) for i in good])
    np.testing.assert_allclose(g, alex.pairwise(imgs), rtol=0, atol=TOL)

    # A budget of 4 images' features: 3 held, 1 streamed at a time, never more than 4 in memory.
    sizes: list[int] = []
    runs: list[int] = []
    compute, features = _Features.compute, alex.features

    def spy(self: _Features, idx: list[int], hw: tuple[int, int]) -> Any:
        sizes.append(len(idx))
        return compute(self, idx, hw)

    def counting(x: Any, **kw: Any) -> Any:
        runs.append(len(x))
        return features(x, **kw)

    monkeypatch.setattr(_Features, "compute", spy)
    monkeypatch.setattr(alex, "features", counting)
    budget = 4 * held.plan.feature_bytes
    small = compute_matrix(folder, engine=alex, max_feature_bytes=budget)
    plan = small.plan
    assert plan is not None and (plan.block, plan.stream) == (3, 1)
    # 7 images: pass 1 holds 0-2 and streams 3-6 (7 runs); the 4 left fit and are held (4).
    assert plan.passes == [(3, 4), (4, 0)] and plan.trunk_runs == 11
    # the trunk ran on exactly that many images (plus the plan's one-image probe)
    assert sum(runs) == plan.trunk_runs + 1 == sum(sizes) + 1 and runs[0] == 1
    # held images and the chunk streamed past them fit the budget of 4 images
    assert max(sizes) <= 4 and plan.cap == 4
    # two half-budget blocks (the previous scheme) ran it 16 times: 2·1 + 2·2 + 2·3 + 1·4
    assert plan.trunk_runs < 16
    np.testing.assert_array_equal(small.matrix, m)
    assert small.errors == held.errors
    assert "in 2 passes holding 3 images" in plan.describe()
    # The smallest budget still works: one image held, one streamed.
    runs.clear()
    tiny = compute_matrix(folder, engine=alex, max_feature_bytes=1)
    assert tiny.plan is not None and (tiny.plan.block, tiny.plan.stream) == (1, 1)
    assert sum(runs) == tiny.plan.trunk_runs + 1 == 7 + 6 + 5 + 4 + 3 + 2 + 1
    np.testing.assert_array_equal(tiny.matrix, m)
    assert "holding 1 images each, the others streamed 1 at a time" in tiny.plan.describe()


def test_plan_passes_hold_the_budget_and_cover_every_pair() -> None:
    """Every pair of images falls in one pass's held×held or held×streamed part, exactly once,
    and no pass holds more than the budget's images (one held and one streamed at the least)."""
    for n in (1, 2, 5, 17, 40):
        for cap_images in (1, 2, 3, 7, 16, 39, 40, 100):
            plan = make_plan(n, n, (8, 8), 10, cap_images * 10, batch=4)
            seen: set[tuple[int, int]] = set()
            start = 0
            for held, streamed in plan.passes:
                assert held + min(streamed, plan.stream or held) <= max(2, cap_images, held)
                h = range(start, start + held)
                rest = range(start + held, start + held + streamed)
                pairs = [(i, j) for i in h for j in h if i < j] + [(i, j) for i in h for j in rest]
                assert not seen & set(pairs)
                seen |= set(pairs)
                start += held
            assert start == n and len(seen) == n * (n - 1) // 2, (n, cap_images)
            assert plan.trunk_runs >= n
            if n <= cap_images:
                assert plan.passes == [(n, 0)] and plan.trunk_runs == n


def test_resize_wxh_and_centre_crop(alex, tmp_path) -> None:
    folder = tmp_path / "mixed"
    shapes = [(48, 64), (64, 64), (60, 100), (48, 64)]
    for i, (h, w) in enumerate(shapes):
        im.save_array(im.textured(h, w, 400 + i), folder / f"{i}.png")
    with pytest.raises(ValueError, match=r"3 .*--resize WxH.*--crop center"):
        compute_matrix(folder, engine=alex)
    res = compute_matrix(folder, engine=alex, resize="64x48")
    imgs = [decode_image(folder / f"{i}.png") for i in range(4)]
    stretched = np.stack([resize_image(x, (48, 64)) for x in imgs])
    np.testing.assert_allclose(res.matrix, alex.pairwise(stretched), rtol=0, atol=TOL)
    res = compute_matrix(folder, engine=alex, resize="64x48", crop="center")
    # centre crop to 4:3, then resize: 64×64 → rows 8..56; 60×100 → columns 10..90
    cropped = [imgs[0], imgs[1][8:56], imgs[2][:, 10:90], imgs[3]]
    want = np.stack([resize_image(np.ascontiguousarray(x), (48, 64)) for x in cropped])
    np.testing.assert_allclose(res.matrix, alex.pairwise(want), rtol=0, atol=TOL)
    assert str(parse_matrix_resize("64x48", "center")) == "64x48 (centre crop)"
    assert parse_matrix_resize("short-side:32") == MatrixResize("short-side", n=32)
    for spec, crop, words in (("to-a", None, "WxH"), ("none", "center", "needs --resize WxH"),
                              ("0x5", None, "WxH"), ("64x48", "left", "center")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_matrix_resize(spec, crop)
    assert parse_budget("1GB") == 10**9 and parse_budget("300MiB") == 300 * 2**20
    with pytest.raises(ValueError, match="1GB"):
        parse_budget("lots")


def test_matrix_cli_says_the_plan_names_bad_images_and_writes_meta(alex, tmp_path) -> None:
    folder = _folder(tmp_path / "imgs")
    out = tmp_path / "m.npy"
    res = CliRunner().invoke(
        app,
        [
            "matrix",
            str(folder),
            "--out",
            str(out),
            "--model",
            str(alex.bundle.path),
            "--max-memory",
            "1kB",
        ],
    )
    assert res.exit_code == 1, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert lines[0].startswith("matrix: 7 images of 48×64") and "holding 1 images" in lines[0]
    assert "03-bad.png" in res.stderr and "not an image" in res.stderr
    m = np.load(out)
    labels = (tmp_path / "m.labels.txt").read_text(encoding="utf-8").split()
    bad = labels.index("03-bad.png")
    assert np.isnan(m[bad]).all() and np.isnan(m[:, bad]).all()
    assert np.isfinite(np.delete(np.delete(m, bad, 0), bad, 1)).all()
    meta = json.loads((tmp_path / "m.npy.meta.json").read_text(encoding="utf-8"))
    assert meta["model"] == "lpips-alex" and meta["bundle_sha256"] == alex.bundle.sha256
    assert meta["errors"].keys() == {"03-bad.png"} and meta["labels"] == labels
    assert meta["plan"]["block"] == 1 and meta["options"]["max_memory"] == 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    res = CliRunner().invoke(app, ["matrix", str(folder), "--out", str(out), "--resize", "9"])
    assert res.exit_code == 2 and "WxH" in res.stderr


def test_crop_border_scores_the_inside_of_each_image(alex, tmp_path) -> None:
    """``--crop-border N`` (the engine's crop_border) on a matrix: the distances of the images
    less N pixels on each side, recorded in the meta; a crop that leaves too little says so."""
    from dps_fast import Engine

    folder = _folder(tmp_path / "imgs", n=4)
    cropped = Engine(alex.bundle.path, device="cpu", crop_border=6)
    res = compute_matrix(folder, engine=cropped)
    good = [i for i, name in enumerate(res.labels) if name not in res.errors]
    imgs = np.stack([decode_image(folder / res.labels[i]) for i in good])
    inside = np.ascontiguousarray(imgs[:, 6:-6, 6:-6])
    g = res.matrix[np.ix_(good, good)]
    np.testing.assert_allclose(g, alex.pairwise(inside), rtol=0, atol=TOL)
    assert not np.allclose(g, alex.pairwise(imgs), rtol=0, atol=TOL)  # the crop mattered
    too_much = Engine(alex.bundle.path, device="cpu", crop_border=20)
    with pytest.raises(ValueError, match=r"8×24 after --crop-border 20.*smaller --crop-border"):
        compute_matrix(folder, engine=too_much)

    out = tmp_path / "m.npy"
    args = ["matrix", str(folder), "--out", str(out), "--model", str(alex.bundle.path),
            "--crop-border", "6"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, (r.stdout, r.stderr)  # the bad file
    np.testing.assert_allclose(np.load(out), res.matrix, rtol=0, atol=TOL, equal_nan=True)
    meta = json.loads((tmp_path / "m.npy.meta.json").read_text(encoding="utf-8"))
    assert meta["crop_border"] == 6 and meta["options"]["crop_border"] == 6
    r = CliRunner().invoke(app, [*args[:-1], "30"])
    assert r.exit_code == 2 and "after --crop-border 30" in r.stderr


@pytest.mark.parametrize("name", ["psnr", "ssim", "mse"])
def test_classical_matrix_diagonal_is_each_image_against_itself(name: str, tmp_path) -> None:
    """A similarity's diagonal is its ideal value (PSNR inf, SSIM 1), as ``Engine.pairwise``
    gives, not the 0 of a distance; in one pass and in several."""
    from dps_fast import Engine

    eng = Engine(name, device="cpu")
    folder = _folder(tmp_path / "imgs", n=5)
    res = compute_matrix(folder, engine=eng)
    good = [i for i, label in enumerate(res.labels) if label not in res.errors]
    imgs = np.stack([decode_image(folder / res.labels[i]) for i in good])
    want = eng.pairwise(imgs)
    g = res.matrix[np.ix_(good, good)]
    assert np.array_equal(np.diag(g), np.diag(want))
    assert np.diag(g).tolist() == [{"psnr": np.inf, "ssim": 1.0, "mse": 0.0}[name]] * len(good)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    small = compute_matrix(folder, engine=eng, max_feature_bytes=1)
    assert small.plan is not None and len(small.plan.passes) > 1
    np.testing.assert_array_equal(small.matrix, res.matrix)
