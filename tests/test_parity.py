"""Engine scores vs the reference packages, same random trunk weights, real lin / alpha-beta.

Inputs span tiny (mild noise) to large (blur, shift, unrelated image) distances; the tolerance
(docs/numerics.md) is max |Δ| ≤ 1e-5 or max |Δ| / max |ref| ≤ 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dps_fast.samples import distortion_pairs
from tests.helpers.references import LPIPS_NET, dists_reference, lpips_reference

SIZES = [(64, 64), (97, 131)]


def assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    d = float(np.abs(got.astype(np.float64) - ref).max())
    rel = d / float(np.abs(ref).max())
    assert d <= 1e-5 or rel <= 1e-4, f"max |Δ| {d:.3g}, relative {rel:.3g}"


def _pairs(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = distortion_pairs(8, h, w, seed=h * 1000 + w)
    return a, b


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("spatial", [False, True], ids=["mean", "spatial"])
@pytest.mark.parametrize("variant", ["v0.1", "v0.0", "baseline"])
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_parity(net, variant, spatial, size, engines, weights_file) -> None:
    name = {"v0.1": f"lpips-{net}", "v0.0": f"lpips-{net}-v0.0"}.get(
        variant, f"lpips-{net}-baseline"
    )
    version = "0.0" if variant == "v0.0" else "0.1"
    w = weights_file(LPIPS_NET[net])
    ref = lpips_reference(net, version, variant != "baseline", spatial, w)
    a, b = _pairs(*size)
    with torch.inference_mode():
        r = ref(torch.from_numpy(a), torch.from_numpy(b), normalize=True).numpy()
    eng = engines(name)
    if spatial:
        assert_close(eng.score(a, b, spatial=True), r[:, 0])
        return
    r = r.reshape(-1)
    assert r.min() < 0.01 and r.max() >= 0.05  # the inputs span tiny and large distances
    assert_close(eng.score(a, b), r)
    # The same through lpips' own [-1, 1] convention, and through features + NumPy distances.
    assert_close(eng.score(a * 2 - 1, b * 2 - 1, value_range=(-1, 1)), r)
    assert_close(eng.distance(eng.features(a), eng.features(b)), r)


@pytest.mark.parametrize("variant", ["v0.1", "baseline"])
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_parity_trunk_and_numpy_head(
    net, variant, engines, weights_file, monkeypatch
) -> None:
    """The CPU split path (trunk graph + blocked NumPy head), forced on for every net."""
    from dps_fast.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "SPLIT_MIN_PIXELS", 0)
    monkeypatch.setattr(engine_module, "SPLIT_MIN_DENSITY", 0.0)
    name = f"lpips-{net}" if variant == "v0.1" else f"lpips-{net}-baseline"
    ref = lpips_reference(net, "0.1", variant != "baseline", False, weights_file(LPIPS_NET[net]))
    a, b = _pairs(*SIZES[1])
    with torch.inference_mode():
        r = ref(torch.from_numpy(a), torch.from_numpy(b), normalize=True).numpy().reshape(-1)
    eng = engines(name)
    assert eng._split_pairs(*SIZES[1])
    calls = []
    real = eng._host_head
    monkeypatch.setattr(eng, "_host_head", lambda fa, fb: calls.append(1) or real(fa, fb))
    assert_close(eng.score(a, b), r)
    assert calls, "the split path was not taken"


@pytest.mark.slow
def test_squeeze_parity_at_split_size(engines, weights_file) -> None:
    """lpips-squeeze is head-heavy: from 128² on, the engine's own rule picks the split path."""
    ref = lpips_reference("squeeze", "0.1", True, False, weights_file(LPIPS_NET["squeeze"]))
    a, b = distortion_pairs(3, 160, 200, seed=5)
    with torch.inference_mode():
        r = ref(torch.from_numpy(a), torch.from_numpy(b), normalize=True).numpy().reshape(-1)
    eng = engines("lpips-squeeze")
    alex = engines("lpips-alex")
    assert eng._split_pairs(160, 200) and not alex._split_pairs(160, 200)
    assert alex._split_pairs(768, 1024) and not engines("dists")._split_pairs(768, 1024)
    assert r.min() < 0.01 and r.max() >= 0.05
    assert_close(eng.score(a, b), r)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dists_parity(size, engines, weights_file, monkeypatch) -> None:
    ref = dists_reference(weights_file("vgg16"), monkeypatch)
    a, b = _pairs(*size)
    with torch.inference_mode():
        r = ref(torch.from_numpy(a), torch.from_numpy(b)).numpy().reshape(-1)
    assert r.max() >= 0.05
    eng = engines("dists")
    assert_close(eng.score(a, b), r)
    assert_close(eng.distance(eng.features(a), eng.features(b)), r)
    # DISTS' forward_once taps == our trunk outputs
    with torch.inference_mode():
        feats = ref.forward_once(torch.from_numpy(a))
    for g, t in zip(eng.features(a), feats, strict=True):
        t = t.numpy()
        assert float(np.abs(g - t).max() / np.abs(t).max()) <= 1e-5


@pytest.mark.slow
def test_dps_matches_its_definition(engines, weights_file) -> None:
    """dps-*: mean over taps of mean over space of Σ_c (f̂a − f̂b)², f̂ unit over channels."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    eng = engines("dps-resnet18")
    m = torchvision.models.resnet18()
    m.load_state_dict(torch.load(weights_file("resnet18"), weights_only=True))
    m.eval()
    fe = create_feature_extractor(m, eng.tap_names)
    a, b = _pairs(97, 131)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        fa = fe((torch.from_numpy(a) - mean) / std)
        fb = fe((torch.from_numpy(b) - mean) / std)
    vals = []
    for n in eng.tap_names:
        ua = fa[n] / (fa[n].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ub = fb[n] / (fb[n].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        vals.append((ua - ub).pow(2).sum(1).mean((1, 2)))
    ref = torch.stack(vals, 1).mean(1).numpy()
    assert_close(eng.score(a, b), ref)
    per = eng.score(a, b, per_layer=True)
    assert per.shape == (8, 5) and np.all((per >= 0) & (per <= 4))
