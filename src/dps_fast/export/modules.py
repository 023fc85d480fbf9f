"""PyTorch modules that become the bundle's graphs: tapped trunks, distance heads, pair graphs.

These are also the PyTorch side of export validation, so they mirror the reference packages'
numerics exactly (docs/numerics.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import ModelSpec

LPIPS_EPS = 1e-10
DISTS_C1 = 1e-6
DISTS_C2 = 1e-6
L2POOL_EPS = 1e-12


class Preprocess(nn.Module):
    """[0, 1] RGB → the backbone's input: ``(x * in_scale + in_shift - mean) / std``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        p = spec.preprocessing
        self.in_scale = float(p.in_scale)
        self.in_shift = float(p.in_shift)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.identity = p.mean == (0.0, 0.0, 0.0) and p.std == (1.0, 1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_scale != 1.0 or self.in_shift != 0.0:
            x = x * self.in_scale + self.in_shift
        if not self.identity:
            x = (x - self.mean) / self.std
        return x


class L2Pool(nn.Module):
    """DISTS' L2 pooling: ``sqrt(depthwise_conv(x², hann 3×3 / 16, stride 2, pad 1) + 1e-12)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).to(torch.float32)
        self.filter: torch.Tensor
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter, stride=2, padding=1, groups=self.channels)
        return torch.sqrt(out + L2POOL_EPS)


def _no_inplace(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False  # type: ignore[assignment]


class SequentialTrunk(nn.Module):
    """Taps of a plain ``nn.Sequential`` (``features.N``): run slices, no FX needed."""

    def __init__(self, spec: ModelSpec, features: nn.Sequential) -> None:
        super().__init__()
        self.pre = Preprocess(spec)
        idx = [int(t.name.split(".")[1]) for t in spec.taps]
        bounds = [0, *[i + 1 for i in idx]]
        self.slices = nn.ModuleList(
            nn.Sequential(*[features[j] for j in range(bounds[k], bounds[k + 1])])
            for k in range(len(idx))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.pre(x)
        outs = []
        for s in self.slices:
            h = s(h)
            outs.append(h)
        return tuple(outs)


class DistsTrunk(nn.Module):
    """DISTS' VGG16 with L2 pooling; tap 0 is the [0, 1] input itself."""

    def __init__(self, spec: ModelSpec, features: nn.Sequential) -> None:
        super().__init__()
        self.pre = Preprocess(spec)
        f = features
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*[f[i] for i in range(0, 4)]),
                nn.Sequential(L2Pool(64), *[f[i] for i in range(5, 9)]),
                nn.Sequential(L2Pool(128), *[f[i] for i in range(10, 16)]),
                nn.Sequential(L2Pool(256), *[f[i] for i in range(17, 23)]),
                nn.Sequential(L2Pool(512), *[f[i] for i in range(24, 30)]),
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.pre(x)
        outs = [x]
        for s in self.stages:
            h = s(h)
            outs.append(h)
        return tuple(outs)


class FxTrunk(nn.Module):
    """Any torchvision node names, through ``torchvision.models.feature_extraction``."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        self.pre = Preprocess(spec)
        self.names = list(spec.tap_names)
        self.body = create_feature_extractor(backbone, {n: n for n in self.names})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = self.body(self.pre(x))
        return tuple(d[n] for n in self.names)


def _is_sequential_taps(spec: ModelSpec, backbone: nn.Module) -> bool:
    feats = getattr(backbone, "features", None)
    return isinstance(feats, nn.Sequential) and all(
        t.name.startswith("features.") and t.name.split(".")[1].isdigit() and t.name.count(".") == 1
        for t in spec.taps
    )


def build_trunk(spec: ModelSpec, backbone: nn.Module) -> nn.Module:
    """The tapped trunk of ``backbone`` for ``spec``: input [0, 1] NCHW → K tap tensors."""
    _no_inplace(backbone)
    backbone.eval()
    trunk: nn.Module
    if spec.head == "dists":
        trunk = DistsTrunk(spec, backbone.features)  # type: ignore[arg-type]
    elif _is_sequential_taps(spec, backbone):
        trunk = SequentialTrunk(spec, backbone.features)  # type: ignore[arg-type]
    else:
        trunk = FxTrunk(spec, backbone)
    return trunk.eval()


def spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over H and W as two reductions, W first then H: [N, C, H, W] → [N, C].

    ONNX Runtime's one ReduceMean over both axes sums all H·W values into one float32
    accumulator, whose error DISTS' structure term amplifies to tens of percent; row by row it
    stays near 1e-7 (figures and tolerances: docs/numerics.md).
    """
    return t.mean(dim=3).mean(dim=2)


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + LPIPS_EPS)


class Head(nn.Module):
    """Distance head: tap features of a and b → per-tap values [N, K] (and a map when spatial).

    ``lpips``: lin-weighted squared difference of unit-normalised features, mean over space.
    ``lpips-baseline`` / ``dps``: the same, summed over channels without weights.
    ``dists``: per-tap share of ``1 − Σ(α·S1 + β·S2)``, i.e. ``Σ_c α(1 − S1) + β(1 − S2)``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        channels: Sequence[int],
        head_weights: dict[str, torch.Tensor],
        spatial: bool = False,
    ) -> None:
        super().__init__()
        self.kind = spec.head
        self.k = len(channels)
        self.spatial = spatial
        if self.kind == "lpips":
            for i in range(self.k):
                w = head_weights[f"lin{i}"].reshape(1, -1, 1, 1).to(torch.float32)
                self.register_buffer(f"lin{i}", w)
        elif self.kind == "dists":
            alpha = head_weights["alpha"].reshape(-1).to(torch.float32)
            beta = head_weights["beta"].reshape(-1).to(torch.float32)
            total = alpha.sum() + beta.sum()
            alpha, beta = alpha / total, beta / total
            offs = [0]
            for c in channels:
                offs.append(offs[-1] + c)
            for i in range(self.k):
                a = alpha[offs[i] : offs[i + 1]].reshape(1, -1)
                b = beta[offs[i] : offs[i + 1]].reshape(1, -1)
                self.register_buffer(f"alpha{i}", a)
                self.register_buffer(f"beta{i}", b)

    def _tap_map(self, i: int, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        d = (_unit(fa) - _unit(fb)) ** 2
        if self.kind == "lpips":
            return torch.sum(d * getattr(self, f"lin{i}"), dim=1, keepdim=True)
        return torch.sum(d, dim=1, keepdim=True)

    def _dists_tap(self, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The reference's 1 − S1 and 1 − S2, rewritten without cancellation (same value in
        # exact arithmetic): 1 − S1 = (μx − μy)² / (μx² + μy² + c1) and, since
        # σx² + σy² − 2σxy = mean(((x − μx) − (y − μy))²), 1 − S2 = that / (σx² + σy² + c2).
        # The reference's E[xy] − μxμy loses the digits that near-identical images are made of.
        mx = spatial_mean(x)
        my = spatial_mean(y)
        xc = x - mx[:, :, None, None]
        yc = y - my[:, :, None, None]
        vx = spatial_mean(xc * xc)
        vy = spatial_mean(yc * yc)
        dc = xc - yc
        vd = spatial_mean(dc * dc)
        dm = mx - my
        d1 = dm * dm / (mx * mx + my * my + DISTS_C1)
        d2 = vd / (vx + vy + DISTS_C2)
        a = getattr(self, f"alpha{i}")
        b = getattr(self, f"beta{i}")
        return torch.sum(a * d1 + b * d2, dim=1)

    def compute(
        self, fa: Sequence[torch.Tensor], fb: Sequence[torch.Tensor], out_hw: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        per_tap = []
        total_map: torch.Tensor | None = None
        for i in range(self.k):
            if self.kind == "dists":
                per_tap.append(self._dists_tap(i, fa[i], fb[i]))
                continue
            m = self._tap_map(i, fa[i], fb[i])
            per_tap.append(spatial_mean(m).reshape(-1))
            if self.spatial and out_hw is not None:
                up = F.interpolate(
                    m, size=(out_hw.shape[2], out_hw.shape[3]), mode="bilinear", align_corners=False
                )
                total_map = up if total_map is None else total_map + up
        return torch.stack(per_tap, dim=1), total_map

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        per_tap, _ = self.compute(feats[: self.k], feats[self.k :], None)
        return per_tap


class PairGraph(nn.Module):
    """a, b → trunk on each → head: per_tap [N, K] (and map [N, 1, H, W])."""

    def __init__(self, trunk: nn.Module, head: Head) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Two branches sharing the weights rather than one trunk on cat([a, b]): no Concat of
        # the inputs and no Slice of every tap (faster; benchmarks/results/engine-defaults.md).
        fa = self.trunk(a)
        fb = self.trunk(b)
        per_tap, m = self.head.compute(fa, fb, a if self.head.spatial else None)
        if self.head.spatial:
            assert m is not None
            return per_tap, m
        return (per_tap,)


class Uint8Input(nn.Module):
    """Wraps a graph so it takes uint8 NHWC images: ``x.permute(0, 3, 1, 2) * (1 / 255)``.

    Decoded images are uint8 HWC anyway; this moves 4× fewer bytes (to a GPU, or through the
    pipeline) and does the conversion inside the graph, exactly as the host would.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.eval()  # export restores the wrapper's mode on every submodule: keep it eval

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scale = torch.tensor(1.0 / 255.0, dtype=torch.float32)
        out = self.inner(*[x.permute(0, 3, 1, 2).to(torch.float32) * scale for x in xs])
        return out if isinstance(out, tuple) else (out,)


class HalfTrunk(nn.Module):
    """The trunk in float16 with float32 input and outputs (the ``@fp16`` graph variants).

    Only the convolutions run in half precision; heads stay float32 (LPIPS' 1e-10 epsilon and
    DISTS' 1e-6 constants underflow in float16).
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        import copy

        self.trunk = copy.deepcopy(trunk).half()
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(o.to(torch.float32) for o in self.trunk(x.to(torch.float16)))
