"""Seeded random backbone weights in torchvision's format: the offline user's ``--weights`` path."""

from __future__ import annotations

from pathlib import Path

# Some backbones are large: their classifier heads are not needed by any trunk and are
# left out of the saved state dict (the loader only requires the keys the trunk uses).
FULL_STATE_ARCHS = {"squeezenet1_1", "mobilenet_v3_large", "efficientnet_b0", "resnet18"}


def make_random_weights(arch: str, path: Path, seed: int = 0) -> Path:
    """A seeded random state dict of torchvision's ``arch``, saved like torchvision's files."""
    from dps_fast.bench import make_random_weights as make

    return make(arch, path, seed, full=arch in FULL_STATE_ARCHS)
