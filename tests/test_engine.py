"""The public Engine: accepted inputs, shapes and dtypes, batching, errors, threads, providers.

Parity with the reference packages lives in test_parity.py; here every input form and option
must give the same numbers as the plain float32 (N, 3, H, W) call, and every bad input must
fail with a clear, typed error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

import dps_fast
from dps_fast import BundleError, Engine, ProviderError, UnknownModelError
from dps_fast._install import install_command
from dps_fast.io import ImageDecodeError
from dps_fast.manifest import content_sha256
from dps_fast.samples import distortion_pairs

H, W = 48, 64  # small and not square; lpips-squeeze needs ≥ 17, lpips-alex ≥ 31


# --------------------------------------------------------------------------------------------
# helpers


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |Δ| / max |ref| (docs/numerics.md, Tolerances)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-6) -> None:
    r = rel_err(got, ref)
    assert r <= rel, f"relative error {r:.3g} > {rel:g}"


def u8_pairs(n: int, h: int = H, w: int = W, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) pairs spanning small (noise) to large (unrelated image) distances."""
    a, b = distortion_pairs(n, h, w, seed=seed)

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))

    return to_u8(a), to_u8(b)


def f32(u8: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) → float32 (N, C, H, W) in [0, 1]."""
    return np.ascontiguousarray(u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))


def write_pngs(u8: np.ndarray, folder: Path, tag: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(u8):
        p = folder / f"{tag}{i}.png"
        Image.fromarray(x).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def squeeze(engines) -> Engine:
    return engines("lpips-squeeze")


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    return u8_pairs(4, seed=7)


@pytest.fixture(scope="module")
def ref(squeeze, pairs) -> np.ndarray:
    a, b = pairs
    r = squeeze.score(f32(a), f32(b))
    assert r.min() < 0.01 and r.max() > 0.05  # spans tiny and large distances
    return r


# --------------------------------------------------------------------------------------------
# inputs


def _mixed(u8: np.ndarray, folder: Path, tag: str) -> list:
    paths = write_pngs(u8[1:2], folder, tag)
    return [Image.fromarray(u8[0]), Path(paths[0]), u8[2], f32(u8)[3]]


BATCH_FORMS = {
    "float32_nchw": lambda u, d, t: f32(u),
    "float64_nchw": lambda u, d, t: f32(u).astype(np.float64),
    "float16_nchw": None,  # float16 rounds the input: checked apart, looser
    "uint8_nhwc": lambda u, d, t: u,
    "list_float_chw": lambda u, d, t: list(f32(u)),
    "list_float_1chw": lambda u, d, t: [x[None] for x in f32(u)],
    "list_uint8_hwc": lambda u, d, t: list(u),
    "tuple_uint8_hwc": lambda u, d, t: tuple(u),
    "list_pil": lambda u, d, t: [Image.fromarray(x) for x in u],
    "list_str_paths": lambda u, d, t: write_pngs(u, d, t),
    "list_pathlib": lambda u, d, t: [Path(p) for p in write_pngs(u, d, t)],
    "list_mixed": _mixed,
}


@pytest.mark.parametrize("form", [k for k, v in BATCH_FORMS.items() if v is not None])
def test_batch_input_forms_give_identical_scores(form, squeeze, pairs, ref, tmp_path) -> None:
    a, b = pairs
    make = BATCH_FORMS[form]
    assert make is not None
    got = squeeze.score(make(a, tmp_path, "a"), make(b, tmp_path, "b"))
    assert got.dtype == np.float32 and got.shape == (4,)
    assert_close(got, ref)


def test_float16_input(squeeze, pairs, ref) -> None:
    a, b = pairs
    got = squeeze.score(f32(a).astype(np.float16), f32(b).astype(np.float16))
    assert got.dtype == np.float32
    # float16 rounds pixel values (≤ 2^-11 relative): same scores up to that rounding.
    assert np.abs(got - ref).max() <= 1e-3


SINGLE_FORMS = {
    "float_chw": lambda u, d, t: f32(u[None])[0],
    "uint8_hwc": lambda u, d, t: u,
    "pil": lambda u, d, t: Image.fromarray(u),
    "str_path": lambda u, d, t: write_pngs(u[None], d, t)[0],
    "pathlib": lambda u, d, t: Path(write_pngs(u[None], d, t)[0]),
}


@pytest.mark.parametrize("form", list(SINGLE_FORMS))
def test_single_image_forms(form, squeeze, pairs, ref, tmp_path) -> None:
    a, b = pairs
    make = SINGLE_FORMS[form]
    got = squeeze.score(make(a[2], tmp_path, "a"), make(b[2], tmp_path, "b"))
    assert got.dtype == np.float32 and got.shape == (1,)
    assert_close(got, ref[2:3])


def test_value_ranges(squeeze, pairs, ref) -> None:
    a, b = pairs
    lo_hi = squeeze.score(f32(a) * 2 - 1, f32(b) * 2 - 1, value_range=(-1, 1))
    assert lo_hi.dtype == np.float32
    assert_close(lo_hi, ref)
    to255 = squeeze.score(
        a.transpose(0, 3, 1, 2).astype(np.float32),
        b.transpose(0, 3, 1, 2).astype(np.float32),
        value_range=(0, 255),
    )
    assert_close(to255, ref)
    # features take value_range too
    fa = squeeze.features(f32(a) * 2 - 1, value_range=(-1.0, 1.0))
    for g, r in zip(fa, squeeze.features(f32(a)), strict=True):
        assert_close(g, r)


def test_grey_is_replicated(squeeze, pairs) -> None:
    a, b = pairs
    ga, gb = a[..., :1], b[..., 1:2]  # (N, H, W, 1) grey images
    rgb = squeeze.score(np.repeat(ga, 3, axis=3), np.repeat(gb, 3, axis=3))
    assert_close(squeeze.score(ga, gb), rgb)  # uint8 (N, H, W, 1)
    assert_close(squeeze.score(f32(ga), f32(gb)), rgb)  # float (N, 1, H, W)
    assert_close(squeeze.score(ga[0, :, :, 0], gb[0, :, :, 0]), rgb[:1])  # uint8 (H, W)
    pil = squeeze.score(
        [Image.fromarray(x[:, :, 0], mode="L") for x in ga],
        [Image.fromarray(x[:, :, 0], mode="L") for x in gb],
    )
    assert_close(pil, rgb)


def test_alpha_is_dropped(squeeze, pairs, ref, tmp_path) -> None:
    a, b = pairs
    rng = np.random.default_rng(3)
    alpha_a = rng.integers(0, 256, (*a.shape[:3], 1), dtype=np.uint8)
    alpha_b = rng.integers(0, 256, (*b.shape[:3], 1), dtype=np.uint8)
    ra, rb = np.concatenate([a, alpha_a], axis=3), np.concatenate([b, alpha_b], axis=3)
    assert_close(squeeze.score(ra, rb), ref)  # uint8 (N, H, W, 4)
    assert_close(squeeze.score(f32(ra), f32(rb)), ref)  # float (N, 4, H, W)
    pa = [Image.fromarray(x, mode="RGBA") for x in ra]
    pb = [Image.fromarray(x, mode="RGBA") for x in rb]
    assert_close(squeeze.score(pa, pb), ref)  # RGBA PIL images: alpha dropped, not composited
    files_a = [tmp_path / f"a{i}.png" for i in range(len(pa))]
    files_b = [tmp_path / f"b{i}.png" for i in range(len(pb))]
    for im, p in zip(pa + pb, files_a + files_b, strict=True):
        im.save(p)
    assert_close(squeeze.score(files_a, files_b), ref)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_one_vs_many_broadcast_equals_tiled(batch_size, bundle) -> None:
    eng = Engine(bundle("lpips-squeeze"), device="cpu", batch_size=batch_size)
    a, b = u8_pairs(7, seed=11)
    fa, fb = f32(a), f32(b)
    one = fa[:1]
    tiled = np.repeat(one, 7, axis=0)
    assert_close(eng.score(one, fb), eng.score(tiled, fb))
    assert_close(eng.score(fb, one), eng.score(fb, tiled))
    assert_close(eng.score(a[0], b), eng.score(np.repeat(a[:1], 7, axis=0), b))  # (H, W, 3) vs N
    per = eng.score(one, fb, per_layer=True)
    assert per.shape == (7, len(eng.tap_names)) and per.dtype == np.float32
    assert_close(per, eng.score(tiled, fb, per_layer=True))
    sp = eng.score(fb, one, spatial=True)
    assert sp.shape == (7, H, W) and sp.dtype == np.float32
    assert_close(sp, eng.score(fb, tiled, spatial=True))


@pytest.mark.parametrize(
    ("name", "reduce"),
    [("lpips-squeeze", np.sum), ("dps-squeezenet1_1", np.mean), ("dists", np.sum)],
)
def test_per_layer_reduces_to_score(name, reduce, engines, pairs) -> None:
    eng = engines(name)
    a, b = pairs
    per = eng.score(a, b, per_layer=True)
    k = len(eng.bundle.manifest.taps)
    assert per.shape == (4, k) and per.dtype == np.float32
    assert np.all(per >= 0)
    score = eng.score(a, b)
    assert_close(reduce(per, axis=1), score)
    if name.startswith("dps-"):
        assert np.all(per <= 4)  # every tap of a unit-normalised distance is in [0, 4]


@pytest.mark.parametrize("size", [(H, W), (97, 131)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_spatial_shape_dtype(size, squeeze) -> None:
    a, b = u8_pairs(3, *size, seed=5)
    m = squeeze.score(a, b, spatial=True)
    assert m.shape == (3, *size) and m.dtype == np.float32
    assert np.all(np.isfinite(m)) and np.all(m >= 0)
    per, m2 = squeeze.score(a, b, spatial=True, per_layer=True)
    assert per.shape == (3, len(squeeze.tap_names)) and per.dtype == np.float32
    assert m2.dtype == np.float32
    assert_close(m2, m)
    assert_close(per.sum(axis=1), squeeze.score(a, b))


def test_returns_float32_everywhere(squeeze, pairs) -> None:
    a, b = pairs
    fa64, fb64 = f32(a).astype(np.float64), f32(b).astype(np.float64)
    assert squeeze.score(fa64, fb64).dtype == np.float32
    assert squeeze.score(fa64, fb64, per_layer=True).dtype == np.float32
    assert squeeze.score(fa64[:1], fb64).dtype == np.float32  # the 1-vs-N path
    assert squeeze.score(fa64, fb64, spatial=True).dtype == np.float32
    feats = squeeze.features(fa64)
    assert all(f.dtype == np.float32 for f in feats)
    assert squeeze.distance(feats, squeeze.features(fb64)).dtype == np.float32
    assert squeeze.distance(feats, feats, per_layer=True).dtype == np.float32


def test_batch_size_does_not_change_results(bundle, squeeze) -> None:
    a, b = u8_pairs(7, seed=21)
    default = squeeze.score(a, b)
    default_per = squeeze.score(a, b, per_layer=True)
    default_map = squeeze.score(a, b, spatial=True)
    for bs in (1, 3):
        eng = Engine(bundle("lpips-squeeze"), device="cpu", batch_size=bs)
        assert_close(eng.score(a, b), default)
        assert_close(eng.score(a, b, per_layer=True), default_per)
        assert_close(eng.score(a, b, spatial=True), default_map)
        feats = eng.features(a)
        for g, r in zip(feats, squeeze.features(a), strict=True):
            assert g.shape[0] == 7
            assert_close(g, r)


# --------------------------------------------------------------------------------------------
# features and distance


@pytest.mark.parametrize(
    ("name", "rel"),
    # DISTS' covariance (mean(xy) − μx μy in float32) cancels: NumPy and the ONNX head agree
    # to float32 noise, well inside docs/numerics.md's 1e-4.
    [("lpips-squeeze", 1e-6), ("lpips-alex", 1e-6), ("dists", 1e-5)],
)
def test_features_and_distance(name, rel, engines) -> None:
    eng = engines(name)
    a, b = u8_pairs(4, seed=9)
    fa, fb = eng.features(a), eng.features(b)
    taps = eng.bundle.manifest.taps
    assert len(fa) == len(taps) == len(eng.info["taps"])
    for f, t in zip(fa, taps, strict=True):
        assert isinstance(f, np.ndarray) and f.dtype == np.float32
        assert f.ndim == 4 and f.shape[0] == 4 and f.shape[1] == t.channels
        assert f.shape[2] >= 1 and f.shape[3] >= 1
    assert_close(eng.distance(fa, fb), eng.score(a, b), rel)
    assert_close(eng.distance(fa, fb, per_layer=True), eng.score(a, b, per_layer=True), rel)
    # 1-vs-N on features, and features kept as float64 (e.g. a cache) score the same
    one = [f[:1] for f in fa]
    assert_close(eng.distance(one, fb), eng.score(a[:1], b), rel)
    f64 = [f.astype(np.float64) for f in fa]
    got = eng.distance(f64, fb)
    assert got.dtype == np.float32
    assert_close(got, eng.distance(fa, fb), rel)


def test_distance_rejects_mismatched_features(squeeze, pairs) -> None:
    a, b = pairs
    fa, fb = squeeze.features(a), squeeze.features(b)
    with pytest.raises(ValueError, match=r"expected 7 feature arrays"):
        squeeze.distance(fa[:-1], fb)
    with pytest.raises(ValueError, match=r"1-vs-N"):
        squeeze.distance([f[:2] for f in fa], [f[:3] for f in fb])
    with pytest.raises(ValueError, match=r"tap 0"):
        squeeze.distance([fa[0][:, :, :-1], *fa[1:]], fb)


# --------------------------------------------------------------------------------------------
# info


def test_info_and_repr(squeeze, bundle) -> None:
    info = squeeze.info
    for key in ("model", "taps", "device", "providers", "precision", "bundle", "bundle_sha256"):
        assert key in info, key
    path = bundle("lpips-squeeze")
    assert info["model"] == "lpips-squeeze"
    assert info["taps"] == [
        t["name"] for t in json.loads((path / "manifest.json").read_text())["taps"]
    ]
    assert info["device"] == "cpu"
    assert info["providers"] and info["providers"][0] == "CPUExecutionProvider"
    assert info["precision"] == "fp32"
    assert Path(info["bundle"]) == path
    sha = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    assert info["bundle_sha256"] == sha
    json.dumps(info)  # plain data
    r = repr(squeeze)
    assert r.startswith("Engine(") and "lpips-squeeze" in r and "cpu" in r


# --------------------------------------------------------------------------------------------
# bad input


def _zeros(*shape: int) -> np.ndarray:
    return np.full(shape, 0.5, np.float32)


def test_error_different_sizes(squeeze) -> None:
    with pytest.raises(ValueError) as e:
        squeeze.score(_zeros(2, 3, 64, 64), _zeros(2, 3, 32, 64))
    assert "64×64" in str(e.value) and "32×64" in str(e.value)


@pytest.mark.parametrize("size", [(16, 16), (30, 40), (40, 30)])
def test_error_smaller_than_model_minimum(size, engines) -> None:
    alex = engines("lpips-alex")
    assert alex.bundle.min_size == (31, 31)
    x = _zeros(2, 3, *size)
    for call in (
        lambda: alex.score(x, x),
        lambda: alex.score(x[:1], x),  # the 1-vs-N path
        lambda: alex.score(x, x, spatial=True),
        lambda: alex.features(x),
        lambda: alex.score(np.zeros((*size, 3), np.uint8), np.zeros((*size, 3), np.uint8)),
    ):
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert "31×31" in msg and f"{size[0]}×{size[1]}" in msg
    # the smallest size that runs does run
    assert alex.score(_zeros(1, 3, 31, 31), _zeros(1, 3, 31, 31)).shape == (1,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_not_finite(bad, squeeze) -> None:
    x = _zeros(2, 3, H, W)
    y = x.copy()
    y[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"finite"):
        squeeze.score(x, y)
    with pytest.raises(ValueError, match=r"finite"):
        squeeze.features(y)


def test_error_outside_value_range(squeeze) -> None:
    x = _zeros(1, 3, H, W)
    y = x.copy()
    y[0, 1, 2, 3] = 1.01
    with pytest.raises(ValueError) as e:
        squeeze.score(x, y)
    assert "value_range" in str(e.value) and "(-1, 1)" in str(e.value)
    y[0, 1, 2, 3] = -0.01
    with pytest.raises(ValueError, match=r"value_range"):
        squeeze.score(y, x)
    with pytest.raises(ValueError, match=r"value_range"):
        squeeze.score(x - 1, x - 1)  # [-1, 1] input without value_range=(-1, 1)
    with pytest.raises(ValueError, match=r"value_range"):
        squeeze.score(x * 600, x * 600, value_range=(0, 255))
    with pytest.raises(ValueError, match=r"value_range"):
        squeeze.score(x, x, value_range=(1, 0))


@pytest.mark.parametrize("c", [2, 5])
def test_error_wrong_channel_count(c, squeeze) -> None:
    for x in (_zeros(2, c, H, W), np.zeros((2, H, W, c), np.uint8)):
        with pytest.raises(ValueError) as e:
            squeeze.score(x, x)
        msg = str(e.value)
        assert "3 colour channels" in msg and f"got {c}" in msg


def test_error_empty_batch(squeeze) -> None:
    x = np.zeros((0, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match=r"at least one image"):
        squeeze.score(x, x)
    with pytest.raises(ValueError, match=r"at least one image"):
        squeeze.score(x, _zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"at least one image"):
        squeeze.features(x)
    with pytest.raises(ValueError, match=r"at least one image"):
        squeeze.score([], [])


def test_error_batches_2_vs_3(squeeze) -> None:
    with pytest.raises(ValueError) as e:
        squeeze.score(_zeros(2, 3, H, W), _zeros(3, 3, H, W))
    msg = str(e.value)
    assert "2 and 3" in msg and "1-vs-N" in msg


@pytest.mark.slow
def test_error_spatial_with_dists(engines, pairs) -> None:
    with pytest.raises(ValueError, match=r"LPIPS"):
        engines("dists").score(*pairs, spatial=True)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.bool_])
def test_error_unsupported_dtype(dtype, squeeze) -> None:
    x = np.zeros((2, 3, H, W), dtype)
    with pytest.raises(TypeError) as e:
        squeeze.score(x, x)
    msg = str(e.value)
    assert "uint8" in msg and "float" in msg and np.dtype(dtype).name in msg


def test_error_not_an_image(squeeze) -> None:
    with pytest.raises(TypeError, match=r"expected an image"):
        squeeze.score(None, None)
    with pytest.raises(TypeError, match=r"expected an image"):
        squeeze.score(object(), object())


def test_error_channels_last_float(squeeze) -> None:
    x = _zeros(2, H, W, 3)
    with pytest.raises(ValueError, match=r"channels-last"):
        squeeze.score(x, x)


def test_error_bad_engine_options(bundle) -> None:
    path = bundle("lpips-squeeze")
    with pytest.raises(ValueError) as e:
        Engine(path, device="gpu")
    assert "'gpu'" in str(e.value) and "cpu" in str(e.value) and "cuda" in str(e.value)
    with pytest.raises(ValueError) as e:
        Engine(path, precision="bf16")
    assert "'bf16'" in str(e.value) and "fp32" in str(e.value)
    for bs in (0, -1, 2.5):
        with pytest.raises(ValueError, match=r"batch_size"):
            Engine(path, batch_size=bs)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError):
        Engine("lpips-nonexistent")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_error_precision_without_its_graphs(bundle, precision) -> None:
    with pytest.raises(BundleError) as e:
        Engine(bundle("lpips-squeeze"), device="cpu", precision=precision)
    msg = str(e.value)
    assert f"@{precision}" in msg and "re-export" in msg
    assert "`dps-fast export lpips-squeeze --weights " in msg
    assert f" --{precision} --out {bundle('lpips-squeeze')} --force`" in msg


def test_error_spatial_without_precision_variant(bundle, tmp_path, pairs) -> None:
    """A bundle with fp16 trunk/pair graphs but no pair_spatial@fp16: the error names the
    missing graph and the fix (not 'needs an LPIPS-family model', which is false here)."""
    src = bundle("lpips-squeeze")
    dst = tmp_path / "variant"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for role in ("trunk", "head", "pair"):  # stand-ins: the fp32 files under the fp16 roles
        manifest["graphs"][f"{role}@fp16"] = dict(manifest["graphs"][role])
    manifest["content_sha256"] = content_sha256(manifest)  # an edit made on purpose
    (dst / "manifest.json").write_text(json.dumps(manifest))
    eng = Engine(dst, device="cpu", precision="fp16")
    assert eng.score(*pairs).shape == (4,)
    with pytest.raises(BundleError) as e:
        eng.score(*pairs, spatial=True)
    assert "pair_spatial@fp16" in str(e.value) and "re-export" in str(e.value)


def test_error_missing_or_corrupt_file(squeeze, tmp_path, pairs) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageDecodeError) as e:
        squeeze.score(missing, missing)
    assert isinstance(e.value, ValueError)
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(ImageDecodeError) as e:
        squeeze.score(bad, pairs[1][0])
    assert str(bad) in str(e.value)
    with pytest.raises(ValueError):
        squeeze.score([str(bad)], [str(bad)])


# --------------------------------------------------------------------------------------------
# threads


def test_thread_safety_matches_serial(bundle) -> None:
    eng = Engine(bundle("lpips-squeeze"), device="cpu")  # fresh: sessions are made lazily
    jobs = []
    for j in range(8):
        a, b = u8_pairs(2 + j % 3, seed=100 + j)
        jobs.append((j % 4, a, b))

    def run(job):
        kind, a, b = job
        if kind == 0:
            return eng.score(a, b)
        if kind == 1:
            return eng.score(a[:1], b)  # trunk + head graphs
        if kind == 2:
            return eng.score(a, b, spatial=True)
        return eng.distance(eng.features(a), eng.features(b))

    with ThreadPoolExecutor(max_workers=4) as ex:
        concurrent = [list(ex.map(run, jobs)) for _ in range(3)]
    serial = [run(job) for job in jobs]
    for rnd in concurrent:
        for got, want in zip(rnd, serial, strict=True):
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-7


# --------------------------------------------------------------------------------------------
# providers


def test_cuda_without_provider_raises(bundle) -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(ProviderError) as e:
        Engine(bundle("lpips-squeeze"), device="cuda")
    assert install_command("gpu") in str(e.value) and "uninstall -y onnxruntime" in str(e.value)


def test_auto_picks_cpu_and_logs(bundle, caplog) -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    caplog.set_level(logging.INFO, logger="dps_fast.engine")
    eng = Engine(bundle("lpips-squeeze"), device="auto")
    assert eng.info["device"] == "cpu"
    recs = [r for r in caplog.records if r.name == "dps_fast.engine" and r.levelno == logging.INFO]
    assert any("device cpu" in r.getMessage() for r in recs), [r.getMessage() for r in recs]


class _FakeSessionFactory:
    """Stands in for onnxruntime.InferenceSession: runs on CPU, reports ``reported``."""

    def __init__(self, reported: list[str]) -> None:
        self.real = onnxruntime.InferenceSession
        self.reported = reported
        self.requested: list[list] = []

    def __call__(self, path, sess_options=None, providers=None, **kwargs):
        self.requested.append(list(providers or []))
        real = self.real(path, sess_options, providers=["CPUExecutionProvider"])
        reported = self.reported

        class Fake:
            def get_providers(self) -> list[str]:
                return list(reported)

            def run(self, *args, **kw):
                return real.run(*args, **kw)

        return Fake()


def _requested_cuda(providers: list) -> bool:
    first = providers[0] if providers else None
    name = first[0] if isinstance(first, tuple) else first
    return name == "CUDAExecutionProvider"


def test_cuda_provider_that_does_not_load(bundle, monkeypatch, caplog, squeeze, pairs) -> None:
    fake = _FakeSessionFactory(["CPUExecutionProvider"])
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", fake)
    path = bundle("lpips-squeeze")

    with pytest.raises(ProviderError, match=r"did not load"):
        Engine(path, device="cuda")
    assert fake.requested and _requested_cuda(fake.requested[0])

    fake.requested.clear()
    caplog.set_level(logging.INFO, logger="dps_fast.engine")
    eng = Engine(path, device="auto")
    assert _requested_cuda(fake.requested[0])  # it tried CUDA first …
    assert eng.info["device"] == "cpu"  # … and says honestly where it runs
    assert eng.info["providers"] == ["CPUExecutionProvider"]
    warns = [
        r for r in caplog.records if r.name == "dps_fast.engine" and r.levelno == logging.WARNING
    ]
    assert any("CUDA" in r.getMessage() for r in warns)
    assert_close(eng.score(*pairs), squeeze.score(*pairs))
    # later sessions go straight to CPU: no second CUDA attempt
    assert not any(_requested_cuda(p) for p in fake.requested[1:])


def test_cuda_provider_that_loads(bundle, monkeypatch) -> None:
    fake = _FakeSessionFactory(["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", fake)
    for device in ("auto", "cuda"):
        eng = Engine(bundle("lpips-squeeze"), device=device)
        assert eng.info["device"] == "cuda"
        assert eng.info["providers"][0] == "CUDAExecutionProvider"


# --------------------------------------------------------------------------------------------
# load / from_pretrained and the cache


@pytest.mark.slow  # a whole export of its own
def test_load_exports_into_cache_then_reuses(
    tmp_path, monkeypatch, weights_file, squeeze, pairs, bundle
) -> None:
    import dps_fast.export as export_pkg

    home = tmp_path / "home"
    monkeypatch.setenv("DPS_FAST_HOME", str(home))
    w = weights_file("squeezenet1_1")
    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    expected = home / "bundles" / "lpips-squeeze" / f"sha256-{sha[:16]}"

    eng = dps_fast.load("lpips-squeeze", weights=w, device="cpu")
    assert eng.bundle.path == expected
    manifest = expected / "manifest.json"
    assert manifest.is_file()
    assert json.loads(manifest.read_text())["weights"]["sha256"] == sha
    assert_close(eng.score(*pairs), squeeze.score(*pairs))
    mtime = manifest.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("the cached bundle should have been reused")

    monkeypatch.setattr(export_pkg, "export_model", no_export)
    again = Engine.from_pretrained("lpips-squeeze", weights=str(w), device="cpu")
    assert again.bundle.path == expected
    assert manifest.stat().st_mtime_ns == mtime
    assert again.info["bundle_sha256"] == eng.info["bundle_sha256"]

    # A bundle folder already has its weights: passing weights= too is refused.
    with pytest.raises(ValueError, match=r"one or the other"):
        Engine(bundle("lpips-squeeze"), weights=w)
    with pytest.raises(ValueError, match=r"one or the other"):
        dps_fast.load(expected, weights=w)
    with pytest.raises(FileNotFoundError):
        dps_fast.load("lpips-squeeze", weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("threads", [1, 2])
def test_numpy_head_keeps_to_the_engines_threads(threads, engines, monkeypatch) -> None:
    """Engine(threads=1) runs the NumPy head in the calling thread; more threads use the pool."""
    from dps_fast.engine import distances

    eng = Engine(engines("lpips-squeeze").bundle.path, device="cpu", threads=threads)
    assert eng._split_pairs(128, 160)
    pools: list[int] = []
    real = distances._pool
    monkeypatch.setattr(distances, "_pool", lambda n: pools.append(n) or real(n))
    a, b = u8_pairs(3, 128, 160, seed=4)
    got = eng.score(a, b)
    assert pools == ([] if threads == 1 else [2])
    assert_close(got, engines("lpips-squeeze").score(a, b), 1e-6)
    assert_close(eng.distance(eng.features(a), eng.features(b)), got, 1e-6)
    # uint8 NHWC inputs through the trunk@uint8-nhwc graph == the pair graph on the same pairs
    from dps_fast.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "SPLIT_MIN_PIXELS", 1 << 62)
    monkeypatch.setattr(engine_module, "SPLIT_ANY_PIXELS", 1 << 62)
    assert not eng._split_pairs(128, 160)
    assert_close(eng.score(a, b), got, 1e-6)
