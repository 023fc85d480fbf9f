"""The reference packages (lpips, DISTS_pytorch) loaded with the same random trunk weights."""

from __future__ import annotations

from pathlib import Path

import torch

LPIPS_NET = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _features_state(weights: Path) -> dict[str, torch.Tensor]:
    return torch.load(weights, map_location="cpu", weights_only=True)


def lpips_reference(net: str, version: str, lpips_on: bool, spatial: bool, weights: Path):
    """``lpips.LPIPS`` with random trunk (pnet_rand) replaced by our weights; checks the load."""
    import lpips

    model = lpips.LPIPS(
        net=net, version=version, lpips=lpips_on, spatial=spatial, pnet_rand=True, verbose=False
    ).eval()
    sd = _features_state(weights)
    # lpips' slices keep torchvision's module indices: slice1.0 == features.0, …
    mapped = {k: sd["features." + k.split(".", 1)[1]] for k in model.net.state_dict()}
    model.net.load_state_dict(mapped, strict=True)
    return model


def dists_reference(weights: Path, monkeypatch):
    """``DISTS_pytorch.DISTS`` built offline: its VGG16 gets our weights, alpha/beta the wheel's."""
    import DISTS_pytorch
    import torchvision
    from DISTS_pytorch import DISTS_pt

    sd = _features_state(weights)
    original = torchvision.models.vgg16  # DISTS_pt.models is torchvision.models itself

    def vgg16(*args, **kwargs):
        m = original(weights=None)
        m.load_state_dict(sd, strict=False)
        return m

    monkeypatch.setattr(DISTS_pt.models, "vgg16", vgg16)
    model = DISTS_pt.DISTS(load_weights=False)
    w = torch.load(
        Path(DISTS_pytorch.__file__).parent / "weights.pt", map_location="cpu", weights_only=True
    )
    model.alpha.data = w["alpha"]
    model.beta.data = w["beta"]
    return model.eval()
