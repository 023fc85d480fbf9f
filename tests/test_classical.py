"""Classical measures: shipped graphs regenerate identically, parity with piq and scikit-image
on the same decoded pixels, exact ideal values, directions, errors, and a torch-free run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import piq
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dps_fast import Engine, score_dirs
from dps_fast.classical import MEASURES, bundle_path
from dps_fast.classical.measures import MS_MIN_SIZE, MS_WEIGHTS
from dps_fast.engine.inputs import nhwc_to_float
from dps_fast.registry import get_model, list_models
from tests.helpers.images import save_array, text_file, textured
from tests.test_torch_free import run_child

CLASSICAL = list(MEASURES)
# (H, W): odd, non-square, at each measure's minimum (11; 161 for MS-SSIM) and just above it.
SSIM_SIZES = [(11, 11), (12, 17), (41, 64), (97, 131), (162, 175)]
# SSIM's automatic downsampling: factor 1 below a minimum side of 384, 2 from 384 (640/256 =
# 2.5 rounds half-to-even to 2, as Python's round in piq), 3 at 767.
DOWN_SIZES = [(383, 390), (384, 389)] + [
    pytest.param(hw, marks=pytest.mark.slow) for hw in [(640, 641), (767, 769)]
]
MS_SIZES = [(161, 161), (161, 175), (162, 163), (200, 331), (257, 256)]


def _pairs(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (4, H, W, 3) pairs: noise, blur-ish, shift, unrelated — decoded-image pixels."""
    rng = np.random.default_rng(seed)
    a = np.stack([textured(h, w, seed + i) for i in range(4)])
    b = a.astype(np.int16)
    b[0] += rng.integers(-12, 13, b[0].shape, dtype=np.int16)
    b[1] = (b[1] + np.roll(b[1], 1, axis=0) + np.roll(b[1], 1, axis=1)) // 3
    b[2] = np.roll(b[2], 2, axis=1)
    b[3] = np.stack([textured(h, w, seed + 100)])[0]
    return a, np.clip(b, 0, 255).astype(np.uint8)


def _t(x: np.ndarray, dtype: type = np.float64) -> torch.Tensor:
    """The engine's float pixels as a torch tensor (float64 by default: a sharper reference;
    torch's float64 convolutions are slow, so large sizes use float32)."""
    return torch.from_numpy(nhwc_to_float(x).astype(dtype))


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _luma(x: np.ndarray) -> np.ndarray:
    """BT.601 Y in [0, 1] of uint8 NHWC images, from scikit-image (studio range)."""
    return np.stack([rgb2ycbcr(nhwc_to_float(x[i : i + 1])[0].transpose(1, 2, 0))[..., 0]
                     for i in range(x.shape[0])]) / 255  # fmt: skip


# --------------------------------------------------------------------------------------------
# the shipped files


def test_bundles_regenerate_to_identical_bytes(tmp_path) -> None:
    from dps_fast.classical.graphs import write_all

    write_all(tmp_path)
    shipped = sorted(p.relative_to(bundle_path("mse").parent) for p in
                     bundle_path("mse").parent.rglob("*") if p.is_file())  # fmt: skip
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == made
    root = bundle_path("mse").parent
    diff = [str(r) for r in made if (tmp_path / r).read_bytes() != (root / r).read_bytes()]
    assert not diff, f"regenerate with `python -m dps_fast.classical.graphs`: {diff} differ"


@pytest.mark.parametrize("name", CLASSICAL)
def test_registry_and_manifest_declare_direction(name: str) -> None:
    spec = get_model(name)
    assert spec.classical and spec in list_models("classical")
    m = json.loads((bundle_path(name) / "manifest.json").read_text())
    want = name in ("mse", "mae")
    assert spec.lower_is_better is want and m["lower_is_better"] is want
    eng = Engine(name, device="cpu")
    assert eng.lower_is_better is want and eng.info["lower_is_better"] is want
    assert eng.accepts_uint8
    assert m["input"]["min_size"] == [spec.min_size] * 2


def test_deep_bundles_default_to_lower_is_better() -> None:
    assert get_model("lpips-alex").lower_is_better and get_model("dists").lower_is_better


# --------------------------------------------------------------------------------------------
# parity on the same decoded pixels


@pytest.mark.parametrize("hw", SSIM_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_parity_with_piq_and_skimage(hw: tuple[int, int]) -> None:
    h, w = hw
    a, b = _pairs(h, w, seed=h + w)
    ta, tb = _t(a), _t(b)
    got = {n: Engine(n, device="cpu").score(a, b) for n in
           ("mse", "mae", "psnr", "psnr-y", "ssim", "ssim-fullres", "ssim-y")}  # fmt: skip
    fa, fb = ta.numpy(), tb.numpy()
    assert _rel(got["mse"], ((fa - fb) ** 2).mean((1, 2, 3))) <= 1e-5
    assert _rel(got["mae"], np.abs(fa - fb).mean((1, 2, 3))) <= 1e-5
    # piq's PSNR adds 1e-8 to the MSE: compare where that is far below 1e-5 of it.
    ok = ((fa - fb) ** 2).mean((1, 2, 3)) > 1e-3
    ref = piq.psnr(ta, tb, reduction="none").numpy()
    assert ok.sum() >= 3 and _rel(got["psnr"][ok], ref[ok]) <= 1e-5
    ref = [peak_signal_noise_ratio(fa[i], fb[i], data_range=1.0) for i in range(4)]
    assert _rel(got["psnr"], ref) <= 1e-5
    ya, yb = _luma(a), _luma(b)
    ref = [peak_signal_noise_ratio(ya[i], yb[i], data_range=1.0) for i in range(4)]
    assert _rel(got["psnr-y"], ref) <= 1e-5
    for n, down in (("ssim", True), ("ssim-fullres", False)):
        ref = piq.ssim(ta, tb, downsample=down, reduction="none").numpy()
        assert _rel(got[n], ref) <= 1e-5, n
    ref = [structural_similarity(fa[i], fb[i], gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=0)
           for i in range(4)]  # fmt: skip
    assert _rel(got["ssim-fullres"], ref) <= 1e-5
    ref = [structural_similarity(ya[i], yb[i], gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)
           for i in range(4)]  # fmt: skip
    assert _rel(got["ssim-y"], ref) <= 1e-5
    ty = torch.from_numpy(ya[:, None]), torch.from_numpy(yb[:, None])
    assert _rel(got["ssim-y"], piq.ssim(*ty, downsample=False, reduction="none").numpy()) <= 1e-5
    # The float path (NCHW arrays) gives the same scores as the uint8 one.
    for n in ("psnr", "ssim"):
        f = Engine(n, device="cpu").score(nhwc_to_float(a), nhwc_to_float(b))
        assert _rel(f, got[n]) <= 1e-6


@pytest.mark.parametrize("hw", MS_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ms_ssim_parity_with_piq(hw: tuple[int, int]) -> None:
    a, b = _pairs(*hw, seed=hw[0] * 3 + hw[1])
    got = Engine("ms-ssim", device="cpu").score(a, b)
    ref = piq.multi_scale_ssim(_t(a, np.float32), _t(b, np.float32), reduction="none").numpy()
    assert _rel(got, ref) <= 1e-4


@pytest.mark.parametrize("hw", DOWN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ssim_downsampling_parity_with_piq(hw: tuple[int, int]) -> None:
    """References in float64 (piq's float32 SSIM is itself off by up to 2e-5 at these sizes);
    torch's float64 convolutions are slow, so piq runs only where pooling shrinks the image."""
    a, b = _pairs(*hw, seed=5)
    a, b = a[:2], b[:2]  # noise and blur
    s1 = Engine("ssim", device="cpu").score(a, b)
    s2 = Engine("ssim-fullres", device="cpu").score(a, b)
    fa, fb = _t(a).numpy(), _t(b).numpy()
    ref = [structural_similarity(fa[i], fb[i], gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=0)
           for i in range(2)]  # fmt: skip
    assert _rel(s2, ref) <= 1e-5
    if min(hw) < 384:  # factor 1: no pooling, the same graph result
        assert np.array_equal(s1, s2)
    else:
        assert not np.array_equal(s1, s2)
        assert _rel(s1, piq.ssim(_t(a), _t(b), reduction="none").numpy()) <= 1e-5


# --------------------------------------------------------------------------------------------
# ideal values, directions, errors


@pytest.mark.parametrize("hw", [(11, 13), (161, 170), (385, 387)], ids=str)
def test_identical_images_give_exactly_the_ideal_value(hw: tuple[int, int]) -> None:
    a, _ = _pairs(*hw, seed=3)
    for n in CLASSICAL:
        if min(hw) < get_model(n).min_size:
            continue
        eng = Engine(n, device="cpu")
        for x in (a, nhwc_to_float(a)):
            s = eng.score(x, x)
            ideal = {"mse": 0.0, "mae": 0.0, "psnr": math.inf, "psnr-y": math.inf}.get(n, 1.0)
            assert np.all(s == ideal), (n, s)


def test_too_small_for_ms_ssim_names_the_minimum() -> None:
    a, b = _pairs(MS_MIN_SIZE - 1, 300, seed=1)
    with pytest.raises(ValueError, match=f"at least {MS_MIN_SIZE}×{MS_MIN_SIZE}"):
        Engine("ms-ssim", device="cpu").score(a, b)
    assert MS_MIN_SIZE == 10 * 2 ** (len(MS_WEIGHTS) - 1) + 1 == 161
    with pytest.raises(ValueError, match="at least 11×11"):
        Engine("ssim", device="cpu").score(a[:, :10, :10], b[:, :10, :10])


def test_classical_refuses_weights_and_other_precisions() -> None:
    with pytest.raises(ValueError, match="no weights"):
        Engine("ssim", weights="x.pth")
    with pytest.raises(ValueError, match="float32 only"):
        Engine("psnr", precision="int8")


def test_crop_border_scores_the_inside() -> None:
    a, b = _pairs(40, 50, seed=9)
    got = Engine("psnr", device="cpu", crop_border=4).score(a, b)
    ref = Engine("psnr", device="cpu").score(a[:, 4:-4, 4:-4], b[:, 4:-4, 4:-4])
    assert np.array_equal(got, ref)
    assert not np.array_equal(got, Engine("psnr", device="cpu").score(a, b))
    with pytest.raises(ValueError, match="crop_border"):
        Engine("psnr", device="cpu", crop_border=20).score(a, b)


def test_features_pairwise_and_one_vs_many_agree_with_pairs() -> None:
    a, b = _pairs(30, 33, seed=2)
    eng = Engine("ssim", device="cpu")
    pairs = eng.score(a, b)
    assert _rel(eng.distance(eng.features(a), eng.features(b)), pairs) <= 1e-6
    assert _rel(eng.score(a[:1], b), [eng.score(a[0], b[i])[0] for i in range(4)]) <= 1e-6
    m = eng.pairwise(a)
    assert np.all(np.diag(m) == 1.0) and np.allclose(m, m.T)
    assert abs(m[0, 1] - eng.score(a[0], a[1])[0]) <= 1e-6


def test_folder_run_fails_bad_and_too_small_pairs_on_their_own_rows(tmp_path) -> None:
    da, db = tmp_path / "a", tmp_path / "b"
    da.mkdir()
    db.mkdir()
    big_a, big_b = _pairs(170, 180, seed=4)
    save_array(big_a[0], da / "ok.png")
    save_array(big_b[0], db / "ok.png")
    save_array(big_a[1, :100, :100], da / "small.png")
    save_array(big_b[1, :100, :100], db / "small.png")
    text_file(da / "bad.png")
    save_array(big_b[2], db / "bad.png")
    rows = {Path(r["a"]).stem: r for r in score_dirs(da, db, model="ms-ssim", device="cpu")}
    assert rows["ok"]["error"] == "" and 0 < rows["ok"]["score"] < 1
    assert "161" in rows["small"]["error"]
    assert rows["bad"]["error"]


# --------------------------------------------------------------------------------------------
# torch-free (and onnx-free)

CLASSICAL_CHILD = """
import importlib.abc, json

class _NoOnnx(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "onnx":
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoOnnx())
import dps_fast

out = {}
for name in sys.argv[3].split(","):
    rows = list(dps_fast.score_dirs(sys.argv[1], sys.argv[2], model=name, device="cpu"))
    out[name] = [[r["score"], r["error"]] for r in rows]
print(json.dumps({
    "scores": out,
    "torch_in_modules": torch_modules(),
    "onnx_in_modules": sorted(m for m in sys.modules if m.partition(".")[0] == "onnx"),
}))
"""


def test_every_classical_model_scores_a_folder_pair_without_torch_or_onnx(tmp_path) -> None:
    da, db = tmp_path / "a", tmp_path / "b"
    da.mkdir()
    db.mkdir()
    a, b = _pairs(170, 175, seed=8)
    for i in range(3):
        save_array(a[i], da / f"{i}.png")
        save_array(b[i], db / f"{i}.png")
    out = run_child(CLASSICAL_CHILD, str(da), str(db), ",".join(CLASSICAL), cwd=tmp_path)
    assert out["torch_in_modules"] == [] and out["onnx_in_modules"] == []
    for name in CLASSICAL:
        got = out["scores"][name]
        assert [e for _, e in got] == ["", "", ""], (name, got)
        ref = Engine(name, device="cpu").score(a[:3], b[:3])
        assert _rel([s for s, _ in got], ref) <= 1e-6, name


# --------------------------------------------------------------------------------------------
# command line


def test_cli_scores_info_and_export_for_a_classical_model(tmp_path) -> None:
    from tests.test_cli import cli

    da, db = tmp_path / "a", tmp_path / "b"
    da.mkdir()
    db.mkdir()
    a, b = _pairs(40, 44, seed=11)
    for i in range(2):
        save_array(a[i], da / f"{i}.png")
        save_array(b[i], db / f"{i}.png")
    save_array(a[2], da / "same.png")
    save_array(a[2], db / "same.png")
    out = tmp_path / "s.csv"
    cli("score", da, db, "--model", "psnr", "--crop-border", "2", "--out", out, "--device", "cpu")
    rows = {r.split(",")[0]: r.split(",") for r in out.read_text().splitlines()[1:]}
    assert rows["same.png"][2] == "inf"
    ref = Engine("psnr", device="cpu").score(a[:2, 2:-2, 2:-2], b[:2, 2:-2, 2:-2])
    assert _rel([float(rows[f"{i}.png"][2]) for i in range(2)], ref) <= 1e-6
    meta = json.loads(out.with_name("s.csv.meta.json").read_text())
    assert meta["lower_is_better"] is False and meta["crop_border"] == 2
    assert meta["last_run"]["infinite"] == 1 and math.isfinite(meta["last_run"]["mean"])
    info = cli("info", "ms-ssim").stdout
    assert "higher is better" in info and "0.0448" in info and "161" in info
    exp = cli("export", "ssim")
    assert Path(exp.stdout.strip()) == bundle_path("ssim")
    assert "ssim" in cli("models").stdout
