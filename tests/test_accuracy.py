"""Accuracy at photograph sizes: long reductions in the heads against float64 references.

The parity tests elsewhere run at 64² and 97×131, where a float32 sum over every position
loses nothing visible; at 1024×768 and above a naive float32 reduction (ONNX Runtime's
ReduceMean over H·W, NumPy's einsum) and DISTS' E[xy] − μxμy lost up to half the score.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dps_fast import Engine
from dps_fast.engine import distances
from dps_fast.export.modules import Head
from dps_fast.registry import get_model
from dps_fast.samples import photo_pairs
from tests.helpers.references import (
    LPIPS_NET,
    dists_float64,
    dists_head_float64,
    dps_float64,
    dps_score_float64,
    lpips_float64,
)

# Photograph-sized images take seconds to minutes per case: the whole module is the slow lane.
pytestmark = pytest.mark.slow

PHOTO_SIZES = [(768, 1024), (1536, 2048)]


def photo_taps(h: int, w: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tap-like features of three photo pairs (JPEG q55, blur, noise): the image itself at full
    size, then channel mixes of it (ReLU, plus offsets like a trunk's) at strides 1, 2 and 8."""
    a8, b8 = photo_pairs(h, w, seed)
    a = a8.transpose(0, 3, 1, 2).astype(np.float32) / 255
    b = b8.transpose(0, 3, 1, 2).astype(np.float32) / 255
    rng = np.random.default_rng(seed)
    fa, fb = [a], [b]
    for c, s in [(8, 1), (16, 2), (32, 8)]:
        mix = rng.normal(0, 1, (c, 3)).astype(np.float32)
        off = rng.uniform(0, 2, (1, c, 1, 1)).astype(np.float32)
        for x, out in ((a, fa), (b, fb)):
            xs = x
            if s > 1:
                n_, _, hh, ww = x.shape
                xs = x.reshape(n_, 3, hh // s, s, ww // s, s).mean(axis=(3, 5))
            out.append(np.maximum(np.einsum("kc,nchw->nkhw", mix, xs) + off, 0).astype(np.float32))
    return fa, fb


def export_head(head: Head, fa: list[np.ndarray], path) -> ort.InferenceSession:
    k = len(fa)
    names = [f"a_tap{i}" for i in range(k)] + [f"b_tap{i}" for i in range(k)]
    ex = tuple(torch.rand(1, f.shape[1], 4, 4) for f in fa) * 2
    torch.onnx.export(
        head, ex, str(path), dynamo=False, input_names=names, output_names=["per_tap"],
        dynamic_axes={n: {0: "N", 2: f"h{i % k}", 3: f"w{i % k}"} for i, n in enumerate(names)},
        opset_version=17,
    )  # fmt: skip
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("size", PHOTO_SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_dists_heads_match_float64_at_photo_sizes(size, tmp_path) -> None:
    """NumPy head and the exported head graph vs DISTS_pytorch's head in float64, same features.

    The trunk is out of the picture here, so each pair's score must agree to 1e-5 relative;
    before the fix the NumPy head was 1e-2 and the graph up to 0.5 off on the JPEG pair.
    """
    fa, fb = photo_taps(*size, seed=3)
    rng = np.random.default_rng(0)
    total = sum(f.shape[1] for f in fa)
    alpha = rng.uniform(0.01, 0.2, total).astype(np.float32)
    beta = rng.uniform(0.01, 0.2, total).astype(np.float32)
    ref = dists_head_float64(
        [torch.from_numpy(f) for f in fa], [torch.from_numpy(f) for f in fb],
        torch.from_numpy(alpha), torch.from_numpy(beta),
    ).numpy()  # fmt: skip
    assert ref[0] < 1e-3 < ref[2]  # tiny (JPEG) to large (noise) distances
    got_np = distances.dists_per_tap(fa, fb, alpha, beta).sum(axis=1, dtype=np.float64)
    hw = {"alpha": torch.from_numpy(alpha), "beta": torch.from_numpy(beta)}
    head = Head(get_model("dists"), [f.shape[1] for f in fa], hw).eval()
    sess = export_head(head, fa, tmp_path / "head.onnx")
    got_ort = sess.run(None, {f"a_tap{i}": f for i, f in enumerate(fa)} | {
        f"b_tap{i}": f for i, f in enumerate(fb)})[0].sum(axis=1, dtype=np.float64)  # fmt: skip
    for name, got in (("numpy", got_np), ("graph", got_ort)):
        rel = np.abs(got - ref) / ref
        assert rel.max() <= 1e-5, f"{name} head: relative {rel}, scores {got} vs {ref}"


# ---------------------------------------------------------------- every family, end to end

# size → which of photo_pairs' three pairs (JPEG q55, blur, noise + shift) run there
REAL_SIZES = {"512x512": ((512, 512), [0, 1, 2]), "1024x768": ((768, 1024), [0, 1])}
VERSIONS = ("", "-v0.0", "-baseline")


def _photo_cases() -> list[Any]:
    """Cases ordered so that the three LPIPS forms of one net at one size run back to back
    (they share the reference trunk's features, see ``_cache``). VGG-sized models are slow
    (still in the default run): lpips-vgg in its three forms at 1024×768 only (what grows with
    the size is the head's reductions; a VGG case costs 30–70 s here), DISTS at both sizes."""
    cases = []
    for net in ("alex", "squeeze", "vgg"):
        for size in REAL_SIZES:
            for v in VERSIONS:
                if net == "vgg" and size == "512x512":
                    continue
                cases.append((f"lpips-{net}{v}", size, net == "vgg"))
    cases += [("dps-resnet18", size, False) for size in REAL_SIZES]
    cases += [("dists", size, True) for size in REAL_SIZES]
    return [
        pytest.param(n, size, marks=[pytest.mark.slow] if slow else [], id=f"{n}-{size}")
        for n, size, slow in cases
    ]


# One reference trunk's features at a time: float64 (or float32 VGG) features of a 1024×768
# pair are ~1.6 GB for VGG, so only the current (trunk, size) is kept, not the whole session's.
_TRUNK_CACHE: dict[tuple[str, bool, str], dict] = {}


def _cache(key: str, trunk32: bool, size: str) -> dict:
    k = (key, trunk32, size)
    if k not in _TRUNK_CACHE:
        _TRUNK_CACHE.clear()
        gc.collect()
    return _TRUNK_CACHE.setdefault(k, {})


def assert_close_each(got: np.ndarray, ref: np.ndarray) -> None:
    """The tolerance of docs/numerics.md for every pair on its own: |Δ| ≤ 1e-5 or
    |Δ| / |ref| ≤ 1e-4."""
    d = np.abs(got.astype(np.float64) - ref)
    ok = (d <= 1e-5) | (d <= 1e-4 * np.abs(ref))
    assert ok.all(), f"|Δ| {d}, relative {d / np.abs(ref)}; got {got}, float64 {ref}"


PHOTO_CASES = _photo_cases()


@pytest.mark.parametrize(("name", "size"), PHOTO_CASES)
def test_parity_at_photo_sizes(name, size, bundle, weights_file, monkeypatch) -> None:
    """Engine scores on decoded uint8 photo pairs vs the reference packages in float64.

    The reference's trunk runs in float64 too, except VGG's (float32 trunk, float64 head: a
    float64 VGG costs 10–60 s per image here, and measured once on a 1024×768 JPEG pair, DISTS'
    float64 head on float32 trunk features was 1.4e-11 from the all-float64 score).

    The engine is this test's own, not the session's shared one: its memory arena grows to the
    photo size's activations (GBs for VGG) and is freed when the test ends.
    """
    (h, w), which = REAL_SIZES[size]
    eng = Engine(bundle(name), device="cpu")
    spec = get_model(name)
    trunk32 = spec.arch == "vgg16"
    if trunk32 and h * w > 512 * 512:
        which = which[:1]  # the JPEG pair, the hardest
    a8, b8 = photo_pairs(h, w, seed=11)
    a8, b8 = a8[which], b8[which]
    ta = torch.from_numpy(a8.transpose(0, 3, 1, 2).astype(np.float64) / 255)
    tb = torch.from_numpy(b8.transpose(0, 3, 1, 2).astype(np.float64) / 255)
    with torch.inference_mode():
        if spec.head == "dists":
            ref_m = dists_float64(
                weights_file("vgg16"), monkeypatch, _cache("dists", trunk32, size), trunk32
            )
            ref = ref_m(ta, tb).reshape(-1).numpy()
        elif spec.head == "dps":
            names = list(spec.tap_names)
            fa = dps_float64(spec.arch, names, weights_file(spec.arch), ta)
            fb = dps_float64(spec.arch, names, weights_file(spec.arch), tb)
            ref = dps_score_float64(fa, fb, names).numpy()
        else:
            net = name.split("-")[1]
            ref_m = lpips_float64(
                net, spec.lpips_version or "0.1", spec.head == "lpips",
                weights_file(LPIPS_NET[net]), _cache(net, trunk32, size), trunk32,
            )  # fmt: skip
            ref = ref_m(ta, tb, normalize=True).reshape(-1).numpy()
    got = eng.score(a8, b8)
    assert_close_each(got, ref)
    if size == "512x512":  # tiny (JPEG, blur: which is smaller depends on the net) to large
        assert ref[2] > 10 * min(ref[0], ref[1]), ref
