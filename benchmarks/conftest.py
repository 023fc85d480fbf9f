"""Fixtures for the pytest-benchmark suite: seeded random trunks, bundles and contenders.

No network: trunk weights are seeded random state dicts in torchvision's format, exported into a
temporary folder once per session (the offline user's path); LPIPS lin and DISTS alpha/beta
weights are the real ones shipped in the reference wheels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

QUICK_CASES = ((64, 64, 32), (256, 256, 8))
FULL_CASES = (*QUICK_CASES, (1024, 768, 2))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dps-fast benchmarks")
    group.addoption(
        "--bench-full",
        action="store_true",
        default=False,
        help="also run 1024×768 (VGG trunks there take minutes per contender)",
    )
    group.addoption(
        "--bench-rounds",
        type=int,
        default=None,
        help="timed rounds per contender (default 3; 7 is the protocol of `dps-fast bench`)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = FULL_CASES if metafunc.config.getoption("--bench-full") else QUICK_CASES
        metafunc.parametrize("case", cases, ids=[f"{h}x{w}x{n}" for h, w, n in cases])


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DPS_FAST_HOME"] = str(tmp_path_factory.mktemp("dps_fast_home"))
    os.environ.setdefault("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


@pytest.fixture(scope="session")
def bench_rounds(request: pytest.FixtureRequest) -> int:
    r = request.config.getoption("--bench-rounds")
    return 3 if r is None else int(r)


@pytest.fixture(scope="session")
def ceiling() -> float:
    """The machine's fp32 matrix-multiply ceiling (GFLOP/s), measured once per session."""
    from dps_fast.bench import measure_ceiling

    return measure_ceiling()


@pytest.fixture(scope="session")
def model_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """model name → (bundle folder, random weights file), exported once per session."""
    from dps_fast.bench import prepare_bundle

    root = tmp_path_factory.mktemp("bench")
    made: dict[str, tuple[Path, Path]] = {}

    def get(model: str) -> tuple[Path, Path]:
        if model not in made:
            made[model] = prepare_bundle(model, root)
        return made[model]

    return get


@pytest.fixture(scope="session")
def contenders(
    model_bundle: Callable[[str], tuple[Path, Path]],
) -> Callable[[str, tuple[int, int, int]], dict[str, Any]]:
    """(model, case) → contenders on the same pairs and weights; only the latest case is kept
    alive (VGG models at 1024×768 hold a lot of memory)."""
    from dps_fast.bench import build_contenders
    from dps_fast.samples import distortion_pairs

    held: dict[tuple[str, tuple[int, int, int]], dict[str, Any]] = {}

    def get(model: str, case: tuple[int, int, int]) -> dict[str, Any]:
        key = (model, case)
        if key not in held:
            held.clear()
            bundle, weights = model_bundle(model)
            h, w, n = case
            a, b = distortion_pairs(n, h, w, seed=0)
            held[key] = build_contenders(model, bundle, weights, a, b, diagnostics=False)
        return held[key]

    return get
