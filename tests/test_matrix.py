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

    # A budget of 4 images' features: blocks of 2, never more than 2 images per computation.
    sizes: list[int] = []
    compute = _Features.compute

    def spy(self: _Features, idx: list[int], hw: tuple[int, int]) -> Any:
        sizes.append(len(idx))
        return compute(self, idx, hw)

    monkeypatch.setattr(_Features, "compute", spy)
    budget = 4 * held.plan.feature_bytes
    small = compute_matrix(folder, engine=alex, max_feature_bytes=budget)
    assert small.plan is not None and small.plan.block == 2 and small.plan.n_blocks == 4
    assert max(sizes) <= 2 and small.plan.trunk_runs == sum(sizes) > len(good)
    np.testing.assert_allclose(small.matrix, m, rtol=0, atol=TOL, equal_nan=True)
    assert small.errors == held.errors
    # The smallest budget still works: one image per block.
    tiny = compute_matrix(folder, engine=alex, max_feature_bytes=1)
    assert tiny.plan is not None and tiny.plan.block == 1
    np.testing.assert_allclose(tiny.matrix, m, rtol=0, atol=TOL, equal_nan=True)
    assert "blocks of 1 images" in tiny.plan.describe()


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
    assert lines[0].startswith("matrix: 7 images of 48×64") and "in blocks of 1 images" in lines[0]
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
