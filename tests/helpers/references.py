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


class CachedTrunk(torch.nn.Module):
    """A reference package's trunk run once per distinct input image, outputs in float64.

    ``fn`` maps [1, 3, H, W] to a sequence of tap tensors. Images are told apart by their
    bytes, so LPIPS variants fed the same tensors (v0.1 and baseline) share the runs.
    """

    def __init__(self, fn, cache: dict[str, list[torch.Tensor]]) -> None:
        super().__init__()
        self.fn = fn
        self.cache = cache

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        import hashlib

        outs = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1]
            key = f"{xi.dtype}{tuple(xi.shape)}" + hashlib.sha1(xi.numpy().tobytes()).hexdigest()
            if key not in self.cache:
                self.cache[key] = [o.double() for o in self.fn(xi)]
            outs.append(self.cache[key])
        return [torch.cat([o[k] for o in outs]) for k in range(len(outs[0]))]


def lpips_float64(
    net: str, version: str, lpips_on: bool, weights: Path, cache: dict, trunk32: bool = False
):
    """``lpips.LPIPS`` in float64 (its head always; its trunk unless ``trunk32``)."""
    import copy

    model = lpips_reference(net, version, lpips_on, False, weights).double()
    inner = model.net
    if trunk32:
        inner32 = copy.deepcopy(inner).float()
        model.net = CachedTrunk(lambda x: inner32(x.float()), cache)
    else:
        model.net = CachedTrunk(inner, cache)
    return model


def dists_float64(weights: Path, monkeypatch, cache: dict, trunk32: bool = False):
    """``DISTS_pytorch.DISTS`` in float64 (its head always; its trunk unless ``trunk32``)."""
    import copy

    model = dists_reference(weights, monkeypatch).double()
    if trunk32:
        m32 = copy.deepcopy(model).float()
        model.forward_once = CachedTrunk(lambda x: m32.forward_once(x.float()), cache)
    else:
        model.forward_once = CachedTrunk(model.forward_once, cache)
    return model


def dps_float64(arch: str, tap_names: list[str], weights: Path, x: torch.Tensor) -> torch.Tensor:
    """Per-tap DPS inputs: the torchvision ``arch``'s taps of ImageNet-normalised ``x``, float64."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    m = torchvision.models.get_model(arch)
    m.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    fe = create_feature_extractor(m.eval().double(), tap_names)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    with torch.inference_mode():
        return fe((x - mean) / std)


def dps_score_float64(fa: dict, fb: dict, tap_names: list[str]) -> torch.Tensor:
    """DPS by its definition in float64: mean over taps of mean over space of Σ_c (âc − b̂c)²."""
    vals = []
    for n in tap_names:
        ua = fa[n] / (fa[n].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ub = fb[n] / (fb[n].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        vals.append((ua - ub).pow(2).sum(1).mean((1, 2)))
    return torch.stack(vals, 1).mean(1)
