"""The interleaved suite behind `dps-fast bench`: plan, run, one row per contender and case."""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._install import install_command
from .contenders import (
    CHANNELS_LAST,
    REFERENCE,
    build_contenders,
    default_cache_dir,
    prepare_bundle,
)
from .flops import trunk_gflops
from .timing import MATMUL, QUICK_ROUNDS, ROUND, interleaved, matmul_4096, measure_ceiling

log = logging.getLogger("dps_fast.bench")

DEFAULT_MODELS: tuple[str, ...] = ("lpips-alex", "lpips-vgg", "lpips-squeeze", "dists")
# Quick mode: the two small LPIPS trunks (VGG-sized exports alone take minutes on 2 cores).
QUICK_MODELS: tuple[str, ...] = ("lpips-alex", "lpips-squeeze")
DEFAULT_CASES: tuple[tuple[int, int, int], ...] = ((64, 64, 32), (256, 256, 8), (1024, 768, 2))
# A case whose full run would take longer than this gets only QUICK_ROUNDS rounds.
CASE_BUDGET_S = 180.0
# Trunks built on VGG16 (slow at large sizes: quick runs skip them above 256²).
_VGG_FAMILY = ("lpips-vgg", "dists")
# Quick mode waits at most this long for a quiet machine before a call (a full run: 30 s), and
# never runs a round again: on a busy machine the full run's waits took 15 minutes. Noisy
# rounds stay in, with the foreign load measured during them in the rows.
QUICK_MAX_WAIT_S = 0.4
# Quick mode's ceiling: 2048² products (a 4096² one takes seconds on 2 cores), measured once.
QUICK_CEILING_N = 2048


def check_requirements(models: Sequence[str] = DEFAULT_MODELS) -> None:
    """Raise ImportError naming every package the suite needs for ``models`` and lacks."""
    import importlib.util

    need = ["torch", "torchvision", "onnx", "onnxruntime", "lpips"]
    if any(m == "dists" for m in models):
        need.append("DISTS_pytorch")
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"the benchmark suite needs {', '.join(missing)}: {install_command('export,cpu')}"
        )


def suite_plan(
    quick: bool,
    models: Sequence[str] = DEFAULT_MODELS,
    cases: Sequence[tuple[int, int, int]] = DEFAULT_CASES,
) -> list[tuple[str, tuple[int, int, int]]]:
    """(model, (H, W, N)) pairs the suite runs: quick keeps cases up to 256² and skips VGG
    trunks above 256²."""
    plan = []
    for m in models:
        for c in cases:
            h, w, n = (int(v) for v in c)
            if quick and (h * w > 256 * 256 or (m in _VGG_FAMILY and h * w > 256 * 256)):
                continue
            plan.append((m, (h, w, n)))
    return plan


def summarize(
    model: str,
    case: tuple[int, int, int],
    times: dict[str, list[float]],
    gflop_per_image: float | None,
    ceiling: float | None,
    *,
    planned_rounds: int,
    foreign: dict[str, list[float | None]] | None = None,
) -> list[dict[str, Any]]:
    """One row per contender: medians, pairs/s, trunk GFLOP/s, share of ceiling, speed-ups."""
    h, w, n = case
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    rl = [v for v in (foreign or {}).get(ROUND, []) if v is not None]
    local = 2.0 * 4096**3 / min(times[MATMUL]) / 1e9 if MATMUL in times else None
    for name, ts in times.items():
        if name == MATMUL:
            continue
        m = med[name]
        fl = [v for v in (foreign or {}).get(name, []) if v is not None]
        gfs = None if gflop_per_image is None else gflop_per_image * 2 * n / m
        rows.append(
            {
                "model": model,
                "h": h,
                "w": w,
                "batch": n,
                "contender": name,
                "median_s": m,
                "min_s": min(ts),
                "max_s": max(ts),
                "pairs_per_s": n / m,
                "trunk_gflop_per_image": gflop_per_image,
                "trunk_gflops": gfs,
                "ceiling_gflops": ceiling,
                "ceiling_frac": None if (gfs is None or not ceiling) else gfs / ceiling,
                "local_ceiling_gflops": local,
                "local_ceiling_frac": None if (gfs is None or not local) else gfs / local,
                "speedup_vs_reference": med[REFERENCE] / m if REFERENCE in med else None,
                "speedup_vs_channels_last": (
                    med[CHANNELS_LAST] / m if CHANNELS_LAST in med else None
                ),
                "rounds": len(ts),
                "rounds_reduced": len(ts) < planned_rounds,
                "rounds_s": list(ts),
                "foreign_cores_max": max(fl) if fl else None,
                "foreign_cores_median": statistics.median(fl) if fl else None,
                "foreign_cores_round_max": max(rl) if rl else None,
            }
        )
    return rows


def run_engine_suite(
    quick: bool,
    models: Sequence[str] = DEFAULT_MODELS,
    cases: Sequence[tuple[int, int, int]] = DEFAULT_CASES,
    *,
    rounds: int | None = None,
    pause: float = 0.2,
    cache_dir: str | os.PathLike[str] | None = None,
    diagnostics: bool = True,
    case_budget_s: float | None = CASE_BUDGET_S,
    ceiling: float | None = None,
    seed: int = 0,
    quiet: float | None = 0.3,
    max_wait_s: float | None = None,
    local_ceiling: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Engine vs reference package vs channels_last PyTorch, per model and case (H, W, N pairs).

    Exports each model once (seeded random trunk weights in torchvision format, under
    ``cache_dir``, default ``$TMPDIR/dps-fast-bench``), then times the contenders of
    :func:`build_contenders` on the same inputs with :func:`interleaved`. ``quick``: 3 rounds,
    cases up to 256², no VGG trunk above 256². A case whose rounds would take longer than
    ``case_budget_s`` runs 3 rounds (``rounds_reduced`` in its rows). Returns one row per
    contender and case (see :func:`summarize`); the ceiling (measured first unless given) is in
    every row. ``quiet`` (cores; None: off): on a shared machine, wait for other processes to
    go quiet before each call (at most ``max_wait_s``: 30 s, quick 0.4 s) and, in a full run, run
    a round again when they used more than that during it (:func:`interleaved`); the rows keep
    the foreign load seen per call. ``quick`` measures the ceiling on 2048² products
    and exports lean bundles (the float graphs the engine runs here). ``local_ceiling``: a 4096²
    matrix product runs in every round too, and the best of them is each case's own
    ceiling (``local_ceiling_gflops``, ``local_ceiling_frac``): on a virtual machine whose
    speed drifts, that is the fairer yardstick. ``progress`` receives one line per step
    (ceiling, export, each round of each case).
    """
    check_requirements(models)
    import torch

    from ..samples import distortion_pairs

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    n_rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else 7)
    wait_s = max_wait_s if max_wait_s is not None else (QUICK_MAX_WAIT_S if quick else 30.0)
    ceiling_kw: dict[str, Any] = {"quiet": quiet, "max_wait_s": wait_s}
    if quick:
        ceiling_kw.update(n=QUICK_CEILING_N, repeats=3)
    torch.set_num_threads(os.cpu_count() or 1)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        log.info("%s", msg)
        if progress is not None:
            progress(msg)

    measured = ceiling is None
    if ceiling is None:
        say("measuring the fp32 matrix-multiply ceiling …")
        ceiling = measure_ceiling(**ceiling_kw)
        log.info("fp32 matmul ceiling (start): %.1f GFLOP/s", ceiling)
    raw: list[Any] = []
    prepared: dict[str, tuple[Path, Path]] = {}
    plan = suite_plan(quick, models, cases)
    for i, (model, (h, w, n)) in enumerate(plan, 1):
        if model not in prepared:
            say(f"exporting {model} (random trunk weights) into {cache} …")
            t0 = time.perf_counter()
            prepared[model] = prepare_bundle(model, cache, seed, lean=quick)
            say(f"exported {model} in {time.perf_counter() - t0:.0f} s")
        bundle, weights = prepared[model]
        label = f"[{i}/{len(plan)}] {model} {h}×{w} ×{n}"
        say(f"{label}: warm-up")
        a, b = distortion_pairs(n, h, w, seed=seed)
        contenders = build_contenders(model, bundle, weights, a, b, diagnostics=diagnostics)
        if local_ceiling:
            contenders[MATMUL] = matmul_4096()
        log.info("%s %d×%d ×%d: %d rounds of %s", model, h, w, n, n_rounds, list(contenders))
        loads: dict[str, list[float | None]] = {}
        times = interleaved(
            contenders,
            rounds=n_rounds,
            warmup=1,
            pause=pause,
            budget_s=case_budget_s,
            min_rounds=min(QUICK_ROUNDS, n_rounds),
            foreign=loads,
            quiet=quiet,
            max_wait_s=wait_s,
            retries=n_rounds if quiet is not None and not quick else 0,
            on_round=functools.partial(_round_done, say, label),
        )
        del contenders
        raw.append((model, (h, w, n), times, loads, trunk_gflops(bundle, h, w)))
    if measured:
        # Best of the ceilings measured before and after: the machine's clock and neighbours
        # move during a long run; the best is the honest upper bound.
        say("measuring the ceiling again …")
        end = measure_ceiling(**ceiling_kw)
        log.info("fp32 matmul ceiling (end): %.1f GFLOP/s", end)
        ceiling = max(ceiling, end)
    rows: list[dict[str, Any]] = []
    for model, case, times, loads, gfl in raw:
        rows += summarize(model, case, times, gfl, ceiling, planned_rounds=n_rounds, foreign=loads)
    say(f"done in {time.perf_counter() - t_start:.0f} s")
    return rows


def _round_done(say: Callable[[str], None], label: str, done: int, planned: int) -> None:
    say(f"{label}: round {done}/{planned}")
