"""Shared fixtures: seeded random torchvision-format weights and exported bundles.

No network here: backbone weights are random but saved in torchvision's key format and passed
as a weights file (the offline user's path); LPIPS lin and DISTS alpha/beta weights are real.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
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


# What an exported test bundle depends on: the exporter and the modules that decide what it
# writes, the seeded weights, and the versions of the packages that trace and check it.
EXPORT_SOURCES = ("export", "classical", "registry.py", "manifest.py", "bundle.py", "samples.py",
                  "reexport.py", "hashing.py", "_version.py", "bench/contenders.py")  # fmt: skip
EXPORT_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime")


def export_key() -> str:
    """A digest of everything an exported test bundle depends on (sources and versions)."""
    import dps_fast

    src = Path(dps_fast.__file__).parent
    files: list[Path] = [Path(__file__).parent / "helpers" / "weights.py"]
    for name in EXPORT_SOURCES:
        f = src / name
        files += sorted(f.rglob("*.py")) if f.is_dir() else [f] if f.exists() else []
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for dist in EXPORT_PACKAGES:
        h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def export_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's seeded weights and exported bundles live.

    With pytest's cache on (the default), they are kept between runs in ``.pytest_cache``,
    keyed by :func:`export_key`: the fast lane exports only after the exporter, the registry
    or torch/onnx changed. ``pytest --cache-clear``, ``-p no:cacheprovider`` or
    ``DPS_FAST_TEST_FRESH_EXPORTS=1`` export afresh; CI (a fresh clone) always does.
    """
    cache = getattr(request.config, "cache", None)
    if cache is None or os.environ.get("DPS_FAST_TEST_FRESH_EXPORTS", "") not in ("", "0"):
        return tmp_path_factory.mktemp("exports")
    return Path(cache.mkdir(f"dps-fast-exports-{export_key()}"))


def _made_once(target: Path, make: Callable[[Path], Path]) -> Path:
    """``target`` if an earlier run finished making it, else made beside it and renamed in."""
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    made = make(tmp)
    try:
        os.replace(made, target)
    except OSError:  # another run finished it first
        shutil.rmtree(made, ignore_errors=True) if made.is_dir() else made.unlink()
    return target


@pytest.fixture(scope="session")
def weights_file(export_root: Path) -> Callable[[str], Path]:
    root = export_root / "weights"
    root.mkdir(exist_ok=True)

    def get(arch: str) -> Path:
        return _made_once(root / f"{arch}-random.pth", lambda p: make_random_weights(arch, p))

    return get


@pytest.fixture(scope="session")
def bundle(export_root: Path, weights_file: Callable[[str], Path]) -> Callable[[str], Path]:
    """Export a model once (per session, or kept between runs: see ``export_root``) and return
    the bundle path. Tests that change a bundle work on a copy."""
    from dps_fast.export import export_model
    from dps_fast.registry import get_model

    root = export_root / "bundles"
    root.mkdir(exist_ok=True)

    def get(name: str) -> Path:
        spec = get_model(name)
        return _made_once(
            root / name, lambda p: export_model(spec, weights=weights_file(spec.arch), out=p)
        )

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
