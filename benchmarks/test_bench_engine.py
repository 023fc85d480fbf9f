"""Engine vs the reference package vs channels_last PyTorch, with pytest-benchmark.

Not part of the main test run (``testpaths = ["tests"]``): run ``pytest benchmarks``. Each group
(one model and case) compares ``engine`` / ``reference`` / ``channels_last`` on the same pairs
and weights. pytest-benchmark times one contender after another; the interleaved protocol of
docs/benchmarks.md (A B C A B C …) is ``dps-fast bench`` / :func:`dps_fast.bench.run_engine_suite`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("torch")
pytest.importorskip("lpips")

from dps_fast.bench import (
    CHANNELS_LAST,
    DEFAULT_MODELS,
    ENGINE,
    REFERENCE,
    trunk_gflops,
)

PAUSE_S = 0.2  # between rounds, untimed: spinning worker threads of the last call go idle


@pytest.mark.parametrize("contender", [ENGINE, REFERENCE, CHANNELS_LAST])
@pytest.mark.parametrize("model", DEFAULT_MODELS)
def test_pairs(
    benchmark: Any,
    model: str,
    case: tuple[int, int, int],
    contender: str,
    contenders: Callable[[str, tuple[int, int, int]], dict[str, Any]],
    model_bundle: Callable[[str], tuple[Path, Path]],
    bench_rounds: int,
    ceiling: float,
) -> None:
    if model == "dists":
        pytest.importorskip("DISTS_pytorch")
    h, w, n = case
    benchmark.group = f"{model} {h}x{w} x{n} pairs"
    fn = contenders(model, case)[contender]

    result = benchmark.pedantic(
        fn, setup=lambda: time.sleep(PAUSE_S), rounds=bench_rounds, warmup_rounds=1
    )
    assert result is not None

    median = benchmark.stats.stats.median
    gfl = trunk_gflops(model_bundle(model)[0], h, w)
    benchmark.extra_info["pairs_per_s"] = n / median
    benchmark.extra_info["ceiling_gflops"] = ceiling
    if gfl is not None:
        gflops = gfl * 2 * n / median
        benchmark.extra_info["trunk_gflops"] = gflops
        benchmark.extra_info["ceiling_frac"] = gflops / ceiling
