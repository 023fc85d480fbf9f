"""What a bundle records about its backbone weights: the file (name, path) and, for torchvision's
own weights, their ImageNet top-1 accuracy, which the backbone sweep of `evaluate` uses."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dps_fast.bundle import MANIFEST, read_bundle
from dps_fast.engine import Engine
from dps_fast.errors import BundleError
from dps_fast.evaluate.sweep import accuracy_of
from dps_fast.hashing import sha256_file
from dps_fast.manifest import content_sha256
from dps_fast.registry import list_models

# torchvision's published ImageNet-1K acc@1 of its IMAGENET1K_V1 weights (its model docs).
PUBLISHED_ACC1 = {
    "alexnet": 56.522, "vgg16": 71.592, "squeezenet1_1": 58.178, "resnet18": 69.758,
    "resnet50": 76.13, "convnext_tiny": 82.52, "efficientnet_b0": 77.692,
    "mobilenet_v3_large": 74.042,
}  # fmt: skip


def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the accuracy lookup tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("arch", sorted({s.arch for s in list_models() if s.arch}))
def test_torchvision_acc1_of_each_registry_arch(arch: str, monkeypatch) -> None:
    from dps_fast.export.weights import torchvision_acc1

    _no_download(monkeypatch)
    assert arch in PUBLISHED_ACC1, f"add torchvision's published acc@1 of {arch}"
    assert torchvision_acc1(arch) == pytest.approx(PUBLISHED_ACC1[arch], abs=1e-9)


def test_torchvision_acc1_unknown_weights_is_none() -> None:
    from dps_fast.export.weights import torchvision_acc1

    assert torchvision_acc1("alexnet", "NO_SUCH_WEIGHTS") is None


def test_a_weights_file_bundle_records_its_file_but_no_accuracy(bundle, weights_file) -> None:
    m = read_bundle(bundle("lpips-squeeze")).manifest
    w = weights_file("squeezenet1_1")
    assert m.weights is not None and m.weights.source == "file"
    assert m.weights.imagenet_acc1 is None
    assert m.weights.name == w.name and m.weights.path == str(w.resolve())
    raw = json.loads((bundle("lpips-squeeze") / MANIFEST).read_text(encoding="utf-8"))
    assert "imagenet_acc1" not in raw["weights"]
    table = SimpleNamespace(model="lpips-squeeze", meta={"weights_meta": m.weights.to_dict()})
    assert math.isnan(accuracy_of(table, {}))  # the sweep needs --accuracy for it
    assert accuracy_of(table, {"lpips-squeeze": 60.0}) == 60.0


@pytest.mark.slow  # an export of its own
def test_torchvision_weights_bundle_records_acc1(
    weights_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export 'with torchvision's weights' (a stand-in file named as torchvision names its own,
    hash prefix included, since nothing can be downloaded here): acc@1 is recorded, flows to
    Engine.info and the sweep, and --accuracy still wins."""
    import dps_fast.export.weights as W
    from dps_fast.export import export_model

    src = weights_file("squeezenet1_1")
    fake = tmp_path / f"squeezenet1_1-{sha256_file(src)[:8]}.pth"
    shutil.copyfile(src, fake)
    monkeypatch.setattr(W, "torchvision_weights_file", lambda arch: fake)
    _no_download(monkeypatch)
    out = export_model("lpips-squeeze", out=tmp_path / "b")
    m = read_bundle(out).manifest
    assert m.weights is not None and m.weights.source == "torchvision"
    assert m.weights.imagenet_acc1 == pytest.approx(PUBLISHED_ACC1["squeezenet1_1"])
    assert m.weights.path is None and m.weights.name == fake.name
    info = Engine(out, device="cpu").info["weights"]
    table = SimpleNamespace(model="lpips-squeeze", meta={"weights_meta": info})
    assert accuracy_of(table, {}) == pytest.approx(58.178)
    assert accuracy_of(table, {"lpips-squeeze": 1.5}) == 1.5


def _edited(src: Path, dst: Path, edit: Any) -> Path:
    shutil.copytree(src, dst)
    d = json.loads((dst / MANIFEST).read_text(encoding="utf-8"))
    edit(d["weights"])
    d["content_sha256"] = content_sha256(d)
    (dst / MANIFEST).write_text(json.dumps(d), encoding="utf-8")
    return dst


def test_older_bundles_stay_readable_and_bad_accuracies_are_refused(bundle, tmp_path) -> None:
    src = bundle("lpips-squeeze")

    def old(w: dict[str, Any]) -> None:  # as exported before `path`: the path in `name`
        w["name"] = w.pop("path")

    m = read_bundle(_edited(src, tmp_path / "old", old)).manifest
    assert m.weights is not None and m.weights.path is None
    assert m.weights.file == m.weights.name and Path(m.weights.name).is_absolute()
    assert Engine(tmp_path / "old", device="cpu").info["weights"] == m.weights.to_dict()
    assert "path" not in m.weights.to_dict()  # resumed runs compare this dict: unchanged

    def good(w: dict[str, Any]) -> None:
        w["imagenet_acc1"] = 70

    ok = read_bundle(_edited(src, tmp_path / "int", good)).manifest
    assert ok.weights is not None and ok.weights.imagenet_acc1 == 70.0
    for i, bad in enumerate((150, "high", True)):

        def edit(w: dict[str, Any], bad: Any = bad) -> None:
            w["imagenet_acc1"] = bad

        with pytest.raises(BundleError, match="imagenet_acc1"):
            read_bundle(_edited(src, tmp_path / f"bad{i}", edit))
