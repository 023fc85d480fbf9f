"""Benchmarks: the engine against the reference packages and a tuned PyTorch path.

Tooling, not runtime: nothing in the engine, io or pipeline imports this package. The protocol
(docs/benchmarks.md): contenders run in turn (A B C A B C …) after a warm-up, with a short
pause between contenders so that spinning worker threads go idle, and medians are compared.
FLOPs count 2 per multiply-add; the ceiling is the best of a few 4096² float32 NumPy matrix
products, measured in the same run.

One module per job: :mod:`.timing` (ceiling, foreign load, interleaved rounds), :mod:`.flops`,
:mod:`.env` (machine and versions), :mod:`.contenders` (bundles on random weights, reference
models, what is timed), :mod:`.suite` (``dps-fast bench``), :mod:`.report` (tables).

Library code: nothing here prints; progress goes to the ``dps_fast.bench`` logger (and to an
optional ``progress`` callback). torch, torchvision, lpips, DISTS_pytorch and onnx are imported
inside the functions that need them, so importing this package costs nothing.
"""

from .contenders import (
    CHANNELS_LAST,
    ENGINE,
    ENGINE_TRUNK,
    REFERENCE,
    build_contenders,
    default_cache_dir,
    make_random_weights,
    prepare_bundle,
    reference_model,
)
from .env import cpu_model, environment
from .flops import graph_gflops, trunk_gflops
from .report import format_table, markdown_table
from .suite import (
    CASE_BUDGET_S,
    DEFAULT_CASES,
    DEFAULT_MODELS,
    QUICK_MODELS,
    check_requirements,
    run_engine_suite,
    suite_plan,
    summarize,
)
from .timing import MATMUL, QUICK_ROUNDS, ROUND, interleaved, measure_ceiling, wait_quiet

__all__ = [
    "CASE_BUDGET_S",
    "CHANNELS_LAST",
    "DEFAULT_CASES",
    "DEFAULT_MODELS",
    "ENGINE",
    "ENGINE_TRUNK",
    "MATMUL",
    "QUICK_MODELS",
    "QUICK_ROUNDS",
    "REFERENCE",
    "ROUND",
    "build_contenders",
    "check_requirements",
    "cpu_model",
    "default_cache_dir",
    "environment",
    "format_table",
    "graph_gflops",
    "interleaved",
    "make_random_weights",
    "markdown_table",
    "measure_ceiling",
    "prepare_bundle",
    "reference_model",
    "run_engine_suite",
    "suite_plan",
    "summarize",
    "trunk_gflops",
    "wait_quiet",
]
