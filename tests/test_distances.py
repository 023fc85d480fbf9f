"""NumPy distances (engine/distances.py) vs the torch Head the bundles' head graphs come from.

Random features with several tap shapes, including 1×1 and odd sizes; real head kinds from the
registry; tolerance relative ≤ 1e-5 (max |Δ| / max |ref|).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dps_fast.engine import distances
from dps_fast.export.modules import Head
from dps_fast.registry import get_model

N = 3
# (channels, h, w) per tap: 1×1, odd, non-square, a wide and a tall one
TAPS = [(4, 1, 1), (5, 7, 9), (3, 13, 11), (6, 2, 3), (2, 1, 5)]
CHANNELS = [c for c, _, _ in TAPS]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def make_features(seed: int, relu: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs of features: b is a on some images, perturbed or unrelated on others."""
    rng = np.random.default_rng(seed)
    fa, fb = [], []
    for c, h, w in TAPS:
        a = rng.normal(0, 1, (N, c, h, w)).astype(np.float32)
        b = np.empty_like(a)
        b[0] = a[0] + rng.normal(0, 0.05, a[0].shape)  # close
        b[1] = a[1] * 0.7 + rng.normal(0, 0.5, a[1].shape)  # medium
        b[2] = rng.normal(0, 1, a[2].shape)  # unrelated
        if relu:  # post-ReLU-like features (DISTS sees non-negative maps)
            a, b = np.abs(a), np.abs(b)
        fa.append(a)
        fb.append(b.astype(np.float32))
    return fa, fb


def torch_head(name: str, head_weights: dict[str, np.ndarray], spatial: bool = False) -> Head:
    hw = {k: torch.from_numpy(v) for k, v in head_weights.items()}
    return Head(get_model(name), CHANNELS, hw, spatial=spatial).eval()


def lin_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"lin{k}": rng.uniform(0, 1, c).astype(np.float32) for k, c in enumerate(CHANNELS)}


def torch_per_tap(head: Head, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return head(*[torch.from_numpy(f) for f in fa + fb]).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_lpips_matches_torch_head(seed) -> None:
    fa, fb = make_features(seed, relu=False)
    lins = lin_weights(seed)
    ref = torch_per_tap(torch_head("lpips-squeeze", lins), fa, fb)
    got = distances.lpips_per_tap(fa, fb, [lins[f"lin{k}"] for k in range(len(TAPS))])
    assert got.shape == (N, len(TAPS)) and got.dtype == np.float32
    assert rel_err(got, ref) <= 1e-5
    via = distances.per_tap_distance("lpips", fa, fb, lins)
    assert rel_err(via, ref) <= 1e-5


def _lpips_whole_taps(fa, fb, lins) -> np.ndarray:
    """LPIPS per tap in float64 on whole taps: the yardstick for the blocked kernel."""
    cols = []
    for k, (a, b) in enumerate(zip(fa, fb, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        d = a / (np.sqrt((a * a).sum(1, keepdims=True)) + 1e-10)
        d -= b / (np.sqrt((b * b).sum(1, keepdims=True)) + 1e-10)
        w = 1.0 if lins is None else np.asarray(lins[k], np.float64)[None, :, None, None]
        cols.append((d * d * w).sum(1).mean(axis=(1, 2)))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("block_bytes", [64, 4096, 1 << 20], ids=["tiny", "small", "default"])
def test_lpips_blocks_and_threads_do_not_change_results(block_bytes, threads) -> None:
    """Pieces of a few positions, of whole maps of several images, and threads: same numbers."""
    rng = np.random.default_rng(7)
    shapes = [(5, 16, 23, 37), (5, 64, 9, 1), (5, 3, 1, 1), (5, 300, 2, 2)]
    fa = [np.abs(rng.normal(size=s)).astype(np.float32) for s in shapes]
    fb = [np.abs(rng.normal(size=s)).astype(np.float32) for s in shapes]
    fb[0][1] = fa[0][1]  # identical images: exactly zero
    lins = [rng.uniform(0, 1, s[1]).astype(np.float32) for s in shapes]
    for w in (lins, None):
        ref = _lpips_whole_taps(fa, fb, w)
        got = distances.lpips_per_tap(fa, fb, w, threads=threads, block_bytes=block_bytes)
        assert got.dtype == np.float32 and got.shape == (5, len(shapes))
        assert rel_err(got, ref) <= 1e-6
        assert np.all(got[1, 0] == 0.0)
    # 1-vs-N through broadcast views (no copies), either side
    one = [np.broadcast_to(f[:1], f.shape) for f in fa]
    ref = _lpips_whole_taps([np.repeat(f[:1], 5, 0) for f in fa], fb, lins)
    got = distances.lpips_per_tap(one, fb, lins, threads=threads, block_bytes=block_bytes)
    assert rel_err(got, ref) <= 1e-6
    got = distances.lpips_per_tap(fb, one, lins, threads=threads, block_bytes=block_bytes)
    assert rel_err(got, ref) <= 1e-6


def test_lpips_rejects_unequal_tap_counts() -> None:
    fa, fb = make_features(0, relu=False)
    with pytest.raises(ValueError, match="as many taps"):
        distances.lpips_per_tap(fa, fb[:-1])


@pytest.mark.parametrize("name", ["lpips-squeeze-baseline", "dps-squeezenet1_1"])
def test_baseline_matches_torch_head(name) -> None:
    fa, fb = make_features(2, relu=True)
    ref = torch_per_tap(torch_head(name, {}), fa, fb)
    got = distances.lpips_per_tap(fa, fb, None)
    assert got.dtype == np.float32
    assert rel_err(got, ref) <= 1e-5
    head = get_model(name).head
    assert rel_err(distances.per_tap_distance(head, fa, fb, {}), ref) <= 1e-5
    assert np.all((got >= 0) & (got <= 4))  # unit-normalised: each tap in [0, 4]


@pytest.mark.parametrize("seed", [3, 4])
def test_dists_matches_torch_head(seed) -> None:
    fa, fb = make_features(seed, relu=True)
    rng = np.random.default_rng(seed)
    total = sum(CHANNELS)
    # shipped (un-normalised) shape (1, C, 1, 1), random positive values
    hw = {
        "alpha": rng.uniform(0.01, 1, (1, total, 1, 1)).astype(np.float32),
        "beta": rng.uniform(0.01, 1, (1, total, 1, 1)).astype(np.float32),
    }
    ref = torch_per_tap(torch_head("dists", hw), fa, fb)
    got = distances.dists_per_tap(fa, fb, hw["alpha"], hw["beta"])
    assert got.shape == (N, len(TAPS)) and got.dtype == np.float32
    assert rel_err(got, ref) <= 1e-5
    assert rel_err(distances.per_tap_distance("dists", fa, fb, hw), ref) <= 1e-5
    # identical inputs: distance 0 (S1 = S2 = 1)
    same = distances.dists_per_tap(fa, fa, hw["alpha"], hw["beta"]).sum(axis=1)
    assert np.abs(same).max() <= 1e-6
    # alpha/beta sized for other features: a clear error
    with pytest.raises(ValueError, match=r"channels"):
        distances.dists_per_tap(fa[:-1], fb[:-1], hw["alpha"], hw["beta"])


@pytest.mark.parametrize("size", [(5, 7), (64, 64), (97, 131)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_lpips_spatial_matches_torch_head(size) -> None:
    fa, fb = make_features(5, relu=False)
    lins = lin_weights(5)
    head = torch_head("lpips-squeeze", lins, spatial=True)
    with torch.inference_mode():
        ta = [torch.from_numpy(f) for f in fa]
        tb = [torch.from_numpy(f) for f in fb]
        ref_per, ref_map = head.compute(ta, tb, torch.zeros(N, 3, *size))
    assert ref_map is not None
    per, m = distances.lpips_spatial(fa, fb, size, [lins[f"lin{k}"] for k in range(len(TAPS))])
    assert m.shape == (N, *size) and m.dtype == np.float32
    assert rel_err(per, ref_per.numpy()) <= 1e-5
    assert rel_err(m, ref_map.numpy()[:, 0]) <= 1e-5


@pytest.mark.parametrize(
    ("src", "dst"),
    [((1, 1), (5, 7)), ((3, 4), (97, 131)), ((7, 9), (64, 64)), ((8, 8), (3, 5)), ((5, 5), (5, 5))],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
def test_upsample_bilinear_matches_interpolate(src, dst) -> None:
    rng = np.random.default_rng(7)
    m = rng.random((N, *src), dtype=np.float32)
    got = distances.upsample_bilinear(m, dst)
    with torch.inference_mode():
        ref = F.interpolate(
            torch.from_numpy(m)[:, None], size=dst, mode="bilinear", align_corners=False
        )[:, 0].numpy()
    assert got.shape == (N, *dst) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) <= 1e-6


def test_reduce_taps() -> None:
    per = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, 0.25]], np.float32)
    s = distances.reduce_taps(per, "sum")
    assert s.dtype == np.float32 and np.allclose(s, [6.0, 0.75])
    m = distances.reduce_taps(per, "mean")
    assert m.dtype == np.float32 and np.allclose(m, [2.0, 0.25])
    with pytest.raises(ValueError) as e:
        distances.reduce_taps(per, "max")
    assert "'max'" in str(e.value) and "sum" in str(e.value) and "mean" in str(e.value)


def test_per_tap_distance_unknown_head() -> None:
    fa, fb = make_features(0, relu=False)
    with pytest.raises(ValueError, match=r"unknown head kind 'ssim'"):
        distances.per_tap_distance("ssim", fa, fb, {})


@pytest.mark.parametrize(("cores", "want"), [(1, 1), (2, 2), (64, distances.MAX_DEFAULT_THREADS)])
def test_default_threads_follow_affinity_with_a_cap(cores, want, monkeypatch) -> None:
    monkeypatch.setattr(
        distances.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False
    )
    assert distances.default_threads() == want
