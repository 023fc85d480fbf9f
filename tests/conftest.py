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

from tests.helpers.weights import make_random_weights

# The fast lane, `pytest -m "not slow"` (README, Development), exports only the two small LPIPS
# trunks, lpips-alex and lpips-squeeze. A test whose id names any other model (VGG16-sized
# trunks, DISTS, other LPIPS versions, DPS backbones) is marked slow here; other slow tests
# carry @pytest.mark.slow where they are defined. The default run (and CI) runs everything.
SLOW_IN_ID = (
    "vgg", "dists", "v0.0", "0.0-", "baseline", "resnet", "efficientnet", "mobilenet", "convnext",
    "dps-alexnet", "dps-squeezenet",
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "[" in item.name and any(s in item.name.partition("[")[2] for s in SLOW_IN_ID):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("dps_fast_home")
    os.environ["DPS_FAST_HOME"] = str(home)
    os.environ.setdefault("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


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
