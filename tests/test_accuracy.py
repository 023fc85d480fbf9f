"""Accuracy at photograph sizes: long reductions in the heads against float64 references.

The parity tests elsewhere run at 64² and 97×131, where a float32 sum over every position
loses nothing visible; at 1024×768 and above a naive float32 reduction (ONNX Runtime's
ReduceMean over H·W, NumPy's einsum) and DISTS' E[xy] − μxμy lost up to half the score.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dps_fast.engine import distances
from dps_fast.export.modules import Head
from dps_fast.registry import get_model
from dps_fast.samples import photo_pairs
from tests.helpers.references import dists_head_float64

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
