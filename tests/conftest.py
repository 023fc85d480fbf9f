"""Shared fixtures: seeded random torchvision-format weights and exported bundles.

No network here: backbone weights are random but saved in torchvision's key format and passed
as a weights file (the offline user's path); LPIPS lin and DISTS alpha/beta weights are real.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Some backbones are large: their classifier heads are not needed by any trunk and are
# left out of the saved state dict (the loader only requires the keys the trunk uses).
FULL_STATE_ARCHS = {"squeezenet1_1", "mobilenet_v3_large", "efficientnet_b0", "resnet18"}


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("dps_fast_home")
    os.environ["DPS_FAST_HOME"] = str(home)
    os.environ.setdefault("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


def make_random_weights(arch: str, path: Path, seed: int = 0) -> Path:
    """A seeded random state dict of torchvision's ``arch``, saved like torchvision's files."""
    from dps_fast.bench import make_random_weights as make

    return make(arch, path, seed, full=arch in FULL_STATE_ARCHS)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    root = tmp_path_factory.mktemp("weights")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = make_random_weights(arch, root / f"{arch}-random.pth")
        return made[arch]

    return get


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, weights_file: Callable[[str], Path]
) -> Callable[[str], Path]:
    """Export a model once per test session (into a temp folder) and return the bundle path."""
    from dps_fast.export import export_model
    from dps_fast.registry import get_model

    root = tmp_path_factory.mktemp("bundles")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            spec = get_model(name)
            made[name] = export_model(spec, weights=weights_file(spec.arch), out=root / name)
        return made[name]

    return get


@pytest.fixture(scope="session")
def engines(bundle: Callable[[str], Path]) -> Callable[[str], Any]:
    """One CPU Engine per exported model, shared by the tests of a session."""
    from dps_fast import Engine

    cache: dict[str, Engine] = {}

    def get(name: str) -> Engine:
        if name not in cache:
            cache[name] = Engine(bundle(name), device="cpu")
        return cache[name]

    return get
