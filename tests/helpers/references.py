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


def dists_head_float64(
    fa: list[torch.Tensor], fb: list[torch.Tensor], alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """``DISTS_pytorch.DISTS.forward`` in float64 on given features: the package's own head code.

    A bare ``DISTS`` object (no VGG built) whose ``forward_once`` returns the features; ``chns``,
    ``alpha`` and ``beta`` sized for them. Returns scores [N].
    """
    from DISTS_pytorch import DISTS_pt

    model = DISTS_pt.DISTS.__new__(DISTS_pt.DISTS)
    torch.nn.Module.__init__(model)
    model.chns = [int(f.shape[1]) for f in fa]
    model.alpha = torch.nn.Parameter(alpha.reshape(1, -1, 1, 1).to(torch.float64))
    model.beta = torch.nn.Parameter(beta.reshape(1, -1, 1, 1).to(torch.float64))
    feats = {"a": [f.to(torch.float64) for f in fa], "b": [f.to(torch.float64) for f in fb]}
    model.forward_once = lambda x: feats[x]  # type: ignore[method-assign]
    with torch.inference_mode():
        return model.forward("a", "b").reshape(-1)
