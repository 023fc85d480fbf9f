"""Model specifications as data: a registry of frozen dataclasses.

Everything the export step and the engine need to know about a model lives here: the torchvision
builder, the tapped layers, preprocessing, the head kind and where its weights come from.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Literal

from .classical.measures import MEASURES
from .errors import UnknownModelError

HeadKind = Literal["lpips", "lpips-baseline", "dists", "dps", "classical"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class Preprocessing:
    """Affine map from the engine's [0, 1] RGB input to what the backbone expects.

    The trunk computes ``((x * in_scale + in_shift) - mean) / std`` per channel. LPIPS maps to
    [-1, 1] first (in_scale 2, in_shift -1), then its scaling layer (v0.1) or nothing (v0.0).
    """

    in_scale: float = 1.0
    in_shift: float = 0.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "in_scale": self.in_scale,
            "in_shift": self.in_shift,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class Tap:
    """One tapped layer: a torchvision node name and its channel count."""

    name: str
    channels: int


@dataclass(frozen=True)
class ModelSpec:
    """One model: backbone, taps, preprocessing, head and weight sources."""

    name: str
    arch: str  # torchvision builder name, e.g. "alexnet"
    head: HeadKind
    taps: tuple[Tap, ...]
    preprocessing: Preprocessing
    description: str
    lpips_version: str | None = None  # "0.1" | "0.0" for the LPIPS family
    lpips_net: str | None = None  # "alex" | "vgg" | "squeeze"
    include_input: bool = False  # DISTS: the input image itself is tap 0
    min_size: int | None = None  # smallest H and W that run; None: probed at export
    custom: bool = False
    reduce: Literal["sum", "mean"] = "sum"  # how per-tap values make the score
    tags: tuple[str, ...] = field(default=())
    # Direction: True for distances and errors (LPIPS, DISTS, DPS, MSE, MAE), False for
    # similarities (PSNR, SSIM, MS-SSIM). Bundles without the manifest key are deep distances.
    lower_is_better: bool = True

    @property
    def classical(self) -> bool:
        """A weightless classical measure, shipped as a bundle inside the package."""
        return self.head == "classical"

    @property
    def spatial_supported(self) -> bool:
        return self.head in ("lpips", "lpips-baseline")

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.taps)


def _taps(names: tuple[str, ...], channels: tuple[int, ...]) -> tuple[Tap, ...]:
    return tuple(Tap(n, c) for n, c in zip(names, channels, strict=True))


# LPIPS slices of torchvision ``.features``: the tap is the last module of each slice.
_LPIPS_NETS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...], int]] = {
    "alex": (
        "alexnet",
        ("features.1", "features.4", "features.7", "features.9", "features.11"),
        (64, 192, 384, 256, 256),
        31,
    ),
    "vgg": (
        "vgg16",
        ("features.3", "features.8", "features.15", "features.22", "features.29"),
        (64, 128, 256, 512, 512),
        16,
    ),
    "squeeze": (
        "squeezenet1_1",
        (
            "features.1",
            "features.4",
            "features.7",
            "features.9",
            "features.10",
            "features.11",
            "features.12",
        ),
        (64, 128, 256, 384, 384, 512, 512),
        17,
    ),
}

# dps-<arch>: the activation at the end of each stage, before the next downsampling.
_DPS_ARCHS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "alexnet": _LPIPS_NETS["alex"][1:3],
    "vgg16": _LPIPS_NETS["vgg"][1:3],
    "squeezenet1_1": _LPIPS_NETS["squeeze"][1:3],
    "resnet18": (
        ("relu", "layer1", "layer2", "layer3", "layer4"),
        (64, 64, 128, 256, 512),
    ),
    "resnet50": (
        ("relu", "layer1", "layer2", "layer3", "layer4"),
        (64, 256, 512, 1024, 2048),
    ),
    "efficientnet_b0": (
        ("features.1", "features.2", "features.3", "features.5", "features.8"),
        (16, 24, 40, 112, 1280),
    ),
    "mobilenet_v3_large": (
        ("features.1", "features.3", "features.6", "features.12", "features.16"),
        (16, 24, 40, 112, 960),
    ),
    "convnext_tiny": (
        ("features.1", "features.3", "features.5", "features.7"),
        (96, 192, 384, 768),
    ),
}

# Architectures refused for dps: transformers over fixed grids need a fixed input size.
_REFUSED_FAMILIES = ("vit_", "swin_", "maxvit_")


def _build_registry() -> dict[str, ModelSpec]:
    reg: dict[str, ModelSpec] = {}
    for net, (arch, names, chans, min_size) in _LPIPS_NETS.items():
        taps = _taps(names, chans)
        variants: tuple[tuple[str, HeadKind, str, str], ...] = (
            (f"lpips-{net}", "lpips", "0.1", "LPIPS v0.1"),
            (f"lpips-{net}-v0.0", "lpips", "0.0", "LPIPS v0.0"),
            (f"lpips-{net}-baseline", "lpips-baseline", "0.1", "LPIPS baseline (no lin weights)"),
        )
        for name, head, version, desc in variants:
            pre = (
                Preprocessing(in_scale=2.0, in_shift=-1.0, mean=LPIPS_SHIFT, std=LPIPS_SCALE)
                if version == "0.1"
                else Preprocessing(in_scale=2.0, in_shift=-1.0)
            )
            reg[name] = ModelSpec(
                name=name,
                arch=arch,
                head=head,
                taps=taps,
                preprocessing=pre,
                description=f"{desc}, {arch} trunk",
                lpips_version=version,
                lpips_net=net,
                min_size=min_size,
                tags=("lpips",),
            )
    reg["dists"] = ModelSpec(
        name="dists",
        arch="vgg16",
        head="dists",
        taps=_taps(
            ("input", "stage1", "stage2", "stage3", "stage4", "stage5"),
            (3, 64, 128, 256, 512, 512),
        ),
        preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        description="DISTS (VGG16 with L2 pooling; structure + texture)",
        include_input=True,
        min_size=16,
        tags=("dists",),
    )
    for arch, (names, chans) in _DPS_ARCHS.items():
        reg[f"dps-{arch}"] = ModelSpec(
            name=f"dps-{arch}",
            arch=arch,
            head="dps",
            taps=_taps(names, chans),
            preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            description=f"DPS baseline on {arch}: unit-normalised features, mean over taps",
            min_size=_LPIPS_MIN.get(arch),
            reduce="mean",
            tags=("dps",),
        )
    for name, m in MEASURES.items():
        reg[name] = ModelSpec(
            name=name,
            arch="",
            head="classical",
            taps=(Tap(name, 3),),
            preprocessing=Preprocessing(),
            description=m.description,
            min_size=m.min_size,
            lower_is_better=m.lower_is_better,
            tags=("classical",),
        )
    return reg


_LPIPS_MIN = {v[0]: v[3] for v in _LPIPS_NETS.values()}
_REGISTRY = _build_registry()
DEFAULT_MODEL = "lpips-alex"


def list_models(tag: str | None = None) -> list[ModelSpec]:
    """All registered models, in registry order; ``tag`` filters ("lpips", "dists", "dps",
    "classical")."""
    return [s for s in _REGISTRY.values() if tag is None or tag in s.tags]


def model_names() -> list[str]:
    return list(_REGISTRY)


_CUSTOM_RE = re.compile(r"^dps-([A-Za-z0-9_]+)\+(.+)$")


def check_dps_arch(arch: str) -> None:
    """Raise UnknownModelError unless ``arch`` is a convolutional torchvision classifier."""
    if any(arch.startswith(p) for p in _REFUSED_FAMILIES):
        raise UnknownModelError(
            f"architecture {arch!r} is not supported for dps: it does not accept any input size "
            "(transformers and fixed-grid models such as ViT, Swin and MaxViT are refused). "
            f"Choose a convolutional backbone, e.g. {', '.join(sorted(_DPS_ARCHS))}."
        )
    if not re.fullmatch(r"[a-z0-9_]+", arch):
        raise UnknownModelError(f"invalid architecture name {arch!r}: expected torchvision's name")


def custom_dps_spec(arch: str, taps: list[str] | tuple[str, ...]) -> ModelSpec:
    """Spec of ``dps-fast export dps --arch A --taps T1,T2``; channels are filled at export."""
    check_dps_arch(arch)
    if not taps:
        raise ValueError("expected at least one tap name (--taps T1,T2), got none")
    if len(set(taps)) != len(taps):
        raise ValueError(f"expected distinct tap names, got {list(taps)}")
    for t in taps:
        if not re.fullmatch(r"[A-Za-z0-9_.]+", t):
            raise ValueError(f"invalid tap name {t!r}: expected a torchvision node name")
    return ModelSpec(
        name=f"dps-{arch}+" + "+".join(taps),
        arch=arch,
        head="dps",
        taps=tuple(Tap(t, 0) for t in taps),
        preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        description=f"custom DPS on {arch}, taps {', '.join(taps)}",
        reduce="mean",
        custom=True,
        tags=("dps", "custom"),
    )


def get_model(name: str) -> ModelSpec:
    """Look a model up by name, including custom ``dps-<arch>+<tap>+…`` names."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    m = _CUSTOM_RE.match(name)
    if m:
        return custom_dps_spec(m.group(1), m.group(2).split("+"))
    if name.startswith("dps-"):
        arch = name[4:]
        check_dps_arch(arch)
        # Any other convolutional torchvision backbone needs explicit taps.
        raise UnknownModelError(
            f"dps-{arch} has no registered taps: export it with "
            f"`dps-fast export dps --arch {arch} --taps T1,T2` (torchvision node names), "
            f"or choose one of: {', '.join(n for n in _REGISTRY if n.startswith('dps-'))}"
        )
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Valid models: {', '.join(_REGISTRY)}; "
        "or dps-<arch>+<tap>+… for a custom export."
    )
