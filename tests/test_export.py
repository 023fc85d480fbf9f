"""Export every registry model from seeded random weights and check the bundle it writes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dps_fast.bundle import read_bundle
from dps_fast.errors import BundleError, UnknownModelError, WeightsError
from dps_fast.export import export_model
from dps_fast.export.weights import build_backbone
from dps_fast.manifest import FORMAT_VERSION
from dps_fast.registry import get_model, list_models
from dps_fast.samples import distortion_pairs
from tests.helpers.references import LPIPS_NET, lpips_reference

MANIFEST_KEYS = {
    "format_version", "content_sha256", "model", "reduce", "lower_is_better", "head",
    "lpips_version", "taps", "input", "preprocessing", "weights", "head_weights", "graphs",
    "export", "validation",
}  # fmt: skip


def _ort_trunk(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path / "trunk.onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _torchvision_taps(name: str, weights: Path, x: np.ndarray) -> list[np.ndarray]:
    """The same taps computed by torchvision's own modules (feature extraction by node name)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = get_model(name)
    model = build_backbone(spec.arch)
    model.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    model.eval()
    p = spec.preprocessing
    t = torch.from_numpy(x) * p.in_scale + p.in_shift
    t = (t - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    fe = create_feature_extractor(model, list(spec.tap_names))
    with torch.inference_mode():
        out = fe(t)
    return [out[n].numpy() for n in spec.tap_names]


@pytest.mark.parametrize(
    "spec", [s for s in list_models() if not s.classical], ids=lambda s: s.name
)
def test_export_every_model(spec, bundle, weights_file) -> None:
    path = bundle(spec.name)
    b = read_bundle(path)
    m = b.manifest
    assert set(json.loads((path / "manifest.json").read_text())) >= MANIFEST_KEYS
    assert m.format_version == FORMAT_VERSION and m.model == spec.name
    assert m.reduce == spec.reduce and m.head == spec.head
    assert [t.name for t in m.taps] == list(spec.tap_names)
    assert [t.channels for t in m.taps] == [t.channels for t in spec.taps]
    assert m.input.layout == "NCHW" and m.input.range == (0, 1)
    assert m.weights.source == "file" and len(m.weights.sha256) == 64
    roles = {"trunk", "head", "pair"} | ({"pair_spatial"} if spec.spatial_supported else set())
    roles |= {f"{r}@uint8-nhwc" for r in roles - {"head"}}
    assert set(m.graphs) == roles
    for role, g in m.graphs.items():
        assert (path / g.file).is_file() and not list(path.glob("*.data"))
        outs = m.validation["graphs"][role]["outputs"]
        assert outs and all(o["ok"] for o in outs)
        shapes = m.validation["graphs"][role]["shapes"]
        assert len(shapes) >= 2
    # Trunk outputs vs torchvision's own modules, on an odd non-square size.
    x = distortion_pairs(2, 97, 131, seed=5)[0]
    got = _ort_trunk(path, x)
    if spec.head == "dists":
        from DISTS_pytorch import DISTS_pt  # noqa: F401  (checked in test_parity)

        assert np.array_equal(got[0], x)
        return
    ref = _torchvision_taps(spec.name, weights_file(spec.arch), x)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape
        assert _rel(g, r) <= 1e-5


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("version", ["0.1", "0.0"])
def test_lpips_trunks_match_lpips_package(net, version, bundle, weights_file) -> None:
    name = f"lpips-{net}" if version == "0.1" else f"lpips-{net}-v0.0"
    ref = lpips_reference(net, version, True, False, weights_file(LPIPS_NET[net]))
    x = distortion_pairs(2, 64, 80, seed=6)[0]
    t = torch.from_numpy(x) * 2 - 1
    with torch.inference_mode():
        feats = ref.net(ref.scaling_layer(t) if version == "0.1" else t)
    got = _ort_trunk(bundle(name), x)
    for g, r in zip(got, feats, strict=True):
        assert _rel(g, r.numpy()) <= 1e-5


def test_lpips_lin_weights_really_loaded(bundle) -> None:
    b = read_bundle(bundle("lpips-alex"))
    sums = [float(b.head_weights[f"lin{k}"].sum()) for k in range(5)]
    np.testing.assert_allclose(sums, [2.34953, 16.1430, 39.2684, 27.1972, 20.3172], rtol=1e-4)


@pytest.mark.slow
def test_custom_dps_export(tmp_path, weights_file) -> None:
    path = export_model(
        "dps-resnet18+layer1+layer3", weights=weights_file("resnet18"), out=tmp_path / "b"
    )
    m = read_bundle(path).manifest
    assert m.model == "dps-resnet18+layer1+layer3"
    assert [(t.name, t.channels, t.stride) for t in m.taps] == [
        ("layer1", 64, 4),
        ("layer3", 256, 16),
    ]


# (model, weights arch, score tolerance, trunk-tap tolerance): relative, max |Δ| / max |ref|
PRECISION_CASES = {
    "fp16": ("lpips-squeeze", "squeezenet1_1", 1e-2, 1e-2),
    "int8": ("lpips-alex", "alexnet", 5e-2, 0.25),
}


@pytest.mark.slow
@pytest.mark.parametrize("precision", sorted(PRECISION_CASES))
def test_precision_variants(tmp_path, weights_file, precision) -> None:
    """--fp16 / --int8 add variants of the trunk (heads stay float32), validated against
    float32 PyTorch; the engine scores with them close to float32."""
    from dps_fast import Engine

    model, arch, score_tol, tap_tol = PRECISION_CASES[precision]
    path = export_model(model, weights=weights_file(arch), out=tmp_path / "b", **{precision: True})
    m = read_bundle(path).manifest
    for role in ("trunk", "pair", "pair_spatial"):
        for u8 in ("", "@uint8-nhwc"):
            r = f"{role}@{precision}{u8}"
            assert r in m.graphs, r
            outputs = m.validation["graphs"][r]["outputs"]
            assert all(o["ok"] for o in outputs)
            assert max(o["rel_diff"] for o in outputs) <= (
                tap_tol if role == "trunk" else score_tol
            )
    assert "head@fp16" not in m.graphs and "head@int8" not in m.graphs
    a, b = distortion_pairs(8, 97, 131, seed=11)
    s32 = Engine(path, device="cpu").score(a, b)
    eng = Engine(path, device="cpu", precision=precision)
    got = eng.score(a, b)
    assert float(np.abs(got - s32).max() / np.abs(s32).max()) <= score_tol
    # the trunk + head path (shared images) agrees with the pair graph at this precision
    via_features = eng.distance(eng.features(a), eng.features(b))
    np.testing.assert_allclose(via_features, got, rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # a whole export of its own
def test_export_to_cache_uses_weights_key(weights_file) -> None:
    from dps_fast.cache import bundle_dir
    from dps_fast.hashing import sha256_file

    w = weights_file("squeezenet1_1")
    path = export_model("lpips-squeeze-baseline", weights=w)
    assert path == bundle_dir("lpips-squeeze-baseline", f"sha256-{sha256_file(w)[:16]}")
    with pytest.raises(BundleError, match="--force"):
        export_model("lpips-squeeze-baseline", weights=w)
    assert export_model("lpips-squeeze-baseline", weights=w, force=True) == path


# ---- bad input -----------------------------------------------------------------------------


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match="Valid models"):
        export_model("lpips-alexnet")


def test_unknown_architecture(weights_file) -> None:
    with pytest.raises(UnknownModelError, match="resnet50"):
        export_model("dps-resnt50+layer1", weights=weights_file("resnet18"))


def test_unknown_tap_lists_close_matches(tmp_path, weights_file) -> None:
    with pytest.raises(UnknownModelError) as e:
        export_model("dps-resnet18+layer9", weights=weights_file("resnet18"), out=tmp_path / "b")
    assert "layer1" in str(e.value) and "layer9" in str(e.value)
    assert not (tmp_path / "b").exists()


def _save(tmp_path: Path, obj: object, name: str = "w.pth") -> Path:
    p = tmp_path / name
    torch.save(obj, p)
    return p


def test_weights_missing_keys(tmp_path, weights_file) -> None:
    sd = torch.load(weights_file("alexnet"), weights_only=True)
    del sd["features.3.weight"]
    with pytest.raises(WeightsError, match=r"missing keys \(1\): features\.3\.weight"):
        export_model("lpips-alex", weights=_save(tmp_path, sd), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_weights_unexpected_and_misshaped_keys(tmp_path, weights_file) -> None:
    sd = torch.load(weights_file("alexnet"), weights_only=True)
    sd["features.99.weight"] = torch.zeros(3)
    sd["features.0.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError) as e:
        export_model("lpips-alex", weights=_save(tmp_path, sd), out=tmp_path / "b")
    msg = str(e.value)
    assert "unexpected keys (1): features.99.weight" in msg
    assert "features.0.bias: expected (64,), got (7,)" in msg


def test_weights_of_another_architecture(tmp_path, weights_file) -> None:
    with pytest.raises(WeightsError, match="missing keys"):
        export_model("lpips-alex", weights=weights_file("squeezenet1_1"), out=tmp_path / "b")


@pytest.mark.parametrize(
    "obj",
    [[1, 2, 3], {"state_dict": {"a": torch.zeros(1)}}, {"a": 1}],
    ids=["list", "checkpoint", "not-tensors"],
)
def test_weights_not_a_state_dict(tmp_path, obj) -> None:
    with pytest.raises(WeightsError, match="state dict"):
        export_model("lpips-alex", weights=_save(tmp_path, obj), out=tmp_path / "b")


def test_weights_garbage_file(tmp_path) -> None:
    p = tmp_path / "w.pth"
    p.write_bytes(b"this is not a pickle")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        export_model("lpips-alex", weights=p, out=tmp_path / "b")


@pytest.mark.slow  # two exports of its own
def test_weights_safetensors(tmp_path, weights_file, bundle) -> None:
    """A .safetensors state dict exports the same trunk as the same weights in a .pth file."""
    from safetensors.torch import save_file

    from dps_fast import Engine

    sd = torch.load(weights_file("squeezenet1_1"), weights_only=True)
    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    path = export_model("lpips-squeeze", weights=p, out=tmp_path / "b")
    m = read_bundle(path).manifest
    assert m.weights.name.endswith("w.safetensors") and m.weights.source == "file"
    assert m.weights.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    x = distortion_pairs(2, 64, 64, seed=3)[0]
    got = Engine(path, device="cpu").features(x)
    want = Engine(bundle("lpips-squeeze"), device="cpu").features(x)  # from the .pth file
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    # Different weights give different features: the comparison above can fail.
    shifted = {k: v * 1.5 if v.is_floating_point() else v for k, v in sd.items()}
    other = export_model("lpips-squeeze", weights=_save(tmp_path, shifted), out=tmp_path / "c")
    assert not np.array_equal(Engine(other, device="cpu").features(x)[0], want[0])


def _copy_bundle(bundle, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle("lpips-squeeze"), dst)
    return dst


def test_corrupt_bundle_file(bundle, tmp_path) -> None:
    p = _copy_bundle(bundle, tmp_path)
    data = bytearray((p / "trunk.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (p / "trunk.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"trunk.onnx is corrupt.*--force"):
        read_bundle(p)
    # The engine opens bundles lazily: a graph is hash-checked when first used, never run unchecked.
    from dps_fast import Engine

    eng = Engine(p, device="cpu")
    a = np.zeros((1, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(eng.score(a, a), [0.0])  # the pair graph is intact
    with pytest.raises(BundleError, match=r"trunk.onnx is corrupt.*--force"):
        eng.features(a)
    with pytest.raises(ValueError, match="verify True, False or 'lazy'"):
        read_bundle(p, verify="sometimes")


def test_truncated_bundle(bundle, tmp_path) -> None:
    p = _copy_bundle(bundle, tmp_path)
    (p / "pair.onnx").unlink()
    with pytest.raises(BundleError, match=r"pair\.onnx is missing"):
        read_bundle(p)
    (p / "manifest.json").write_text('{"schema_version": 1, "mod')
    with pytest.raises(BundleError, match="unreadable"):
        read_bundle(p)


def test_bundle_format_version(bundle, tmp_path) -> None:
    p = _copy_bundle(bundle, tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    m["format_version"] = 999
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        BundleError, match=r"format 999.*reads formats 1, 2.*upgrade dps-fast.*--force"
    ):
        read_bundle(p)


def test_bundle_head_numerics(bundle, tmp_path) -> None:
    """DISTS graphs exported before the accuracy fix (no ``head_numerics``) are refused."""
    from dps_fast.bundle import HEAD_NUMERICS

    p = _copy_bundle(bundle, tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    assert m["head_numerics"] == HEAD_NUMERICS
    # as written before the fix: format 1, no head_numerics
    for k in ("head_numerics", "format_version", "content_sha256", "lower_is_better"):
        del m[k]
    m["schema_version"] = 1
    (p / "manifest.json").write_text(json.dumps(m))
    read_bundle(p)  # an LPIPS bundle from before stays usable (its error was within tolerance)
    m["head"] = "dists"
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"before the dists head's accuracy fix.*--force"):
        read_bundle(p)


def test_stale_cached_bundle_is_reexported(tmp_path, monkeypatch) -> None:
    """A stale bundle in the cache is exported again, keeping its precision variants."""
    import dps_fast.export
    from dps_fast.hub import cached_bundle_path, resolve_bundle

    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path))
    dest = cached_bundle_path("dists")
    dest.mkdir(parents=True)
    m = {"schema_version": 1, "model": "dists", "head": "dists",
         "graphs": {"pair": {}, "pair@fp16": {}}}  # fmt: skip
    (dest / "manifest.json").write_text(json.dumps(m))
    calls = []
    monkeypatch.setattr(
        dps_fast.export, "export_model", lambda spec, **kw: calls.append(kw) or kw["out"]
    )
    assert resolve_bundle("dists") == dest
    assert calls and calls[0]["force"] and calls[0]["fp16"] and not calls[0]["int8"]
    m["head_numerics"] = 2
    (dest / "manifest.json").write_text(json.dumps(m))
    assert resolve_bundle("dists") == dest and len(calls) == 1  # current: used as it is


@pytest.mark.slow  # a whole export of its own
def test_unwritable_output_folder(tmp_path, weights_file) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BundleError, match="cannot write the bundle"):
        export_model("lpips-squeeze", weights=weights_file("squeezenet1_1"), out=blocker / "b")


def test_refuses_non_empty_foreign_folder(tmp_path, weights_file) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not empty"):
        export_model("lpips-squeeze", weights=weights_file("squeezenet1_1"), out=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_refuses_transformer_architecture() -> None:
    with pytest.raises(UnknownModelError, match="any input size"):
        export_model("dps-vit_b_16+encoder")
