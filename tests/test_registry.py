from __future__ import annotations

import pytest

from dps_fast.errors import UnknownModelError
from dps_fast.registry import custom_dps_spec, get_model, list_models, model_names

CONTRACT_NAMES = [
    "lpips-alex", "lpips-vgg", "lpips-squeeze",
    "lpips-alex-v0.0", "lpips-vgg-v0.0", "lpips-squeeze-v0.0",
    "lpips-alex-baseline", "lpips-vgg-baseline", "lpips-squeeze-baseline",
    "dists",
    "dps-alexnet", "dps-vgg16", "dps-squeezenet1_1", "dps-resnet18", "dps-resnet50",
    "dps-efficientnet_b0", "dps-mobilenet_v3_large", "dps-convnext_tiny",
]  # fmt: skip


def test_registry_has_every_contract_name() -> None:
    assert set(CONTRACT_NAMES) <= set(model_names())
    assert model_names()[0] == "lpips-alex"


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_specs_are_consistent(spec) -> None:
    assert get_model(spec.name) is spec
    assert spec.taps and all(t.channels > 0 for t in spec.taps)
    assert spec.reduce == ("mean" if spec.head == "dps" else "sum")
    assert spec.spatial_supported == spec.name.startswith("lpips-")
    if spec.head == "dists":
        assert sum(t.channels for t in spec.taps) == 1475


def test_lpips_preprocessing() -> None:
    v1, v0 = get_model("lpips-vgg").preprocessing, get_model("lpips-vgg-v0.0").preprocessing
    assert (v1.in_scale, v1.in_shift) == (2.0, -1.0) == (v0.in_scale, v0.in_shift)
    assert v1.mean == (-0.030, -0.088, -0.188) and v1.std == (0.458, 0.448, 0.450)
    assert v0.mean == (0.0, 0.0, 0.0) and v0.std == (1.0, 1.0, 1.0)


def test_unknown_model_lists_valid_names_and_close_matches() -> None:
    with pytest.raises(UnknownModelError) as e:
        get_model("lpips-alx")
    msg = str(e.value)
    assert "'lpips-alex'" in msg and "dists" in msg and "dps-resnet50" in msg


@pytest.mark.parametrize("arch", ["vit_b_16", "swin_t", "maxvit_t"])
def test_refuses_fixed_size_architectures(arch: str) -> None:
    with pytest.raises(UnknownModelError, match="any input size"):
        custom_dps_spec(arch, ["x"])


def test_custom_spec_name_round_trips() -> None:
    spec = custom_dps_spec("resnet34", ["layer1", "layer3"])
    assert spec.name == "dps-resnet34+layer1+layer3"
    assert get_model(spec.name).tap_names == ("layer1", "layer3")


def test_unregistered_dps_arch_says_how_to_export() -> None:
    with pytest.raises(UnknownModelError, match="--taps"):
        get_model("dps-resnet34")
