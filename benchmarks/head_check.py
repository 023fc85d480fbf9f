"""The LPIPS distance head on the CPU: ONNX Runtime's head graph vs NumPy, and the two engine paths.

    python benchmarks/head_check.py [--name 2026-11-26-cpu-2core-xeon-emr-head] [--rounds 7]

Per model and case (seeded random trunks, the suite's distortion pairs), interleaved with the
suite's protocol (`dps_fast.bench.interleaved`, medians):

- on the same host features: ``head-graph`` (the bundle's head.onnx in ONNX Runtime),
  ``numpy-whole`` (the NumPy head on whole taps in one thread: the previous implementation),
  ``numpy-blocked-1t`` and ``numpy-blocked`` (the cache-blocked kernel, 1 thread and default);
- whole scores: ``engine-pair`` (one pair-graph run per batch) and ``engine-split`` (trunk graph
  + blocked NumPy head), forced through ``dps_fast.engine.engine``'s switches, and what the
  engine picks by itself (``engine-auto``).

Writes JSON and markdown under benchmarks/results/ and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from dps_fast import Engine, bench
from dps_fast.engine import distances
from dps_fast.engine import engine as engine_module
from dps_fast.samples import distortion_pairs

HERE = Path(__file__).resolve().parent
WHOLE = 1 << 62  # a block size no tap reaches: whole taps, all images in one piece
CASES = {
    "lpips-alex": [(64, 64, 32), (256, 256, 8), (768, 1024, 2)],
    "lpips-squeeze": [(64, 64, 32), (128, 128, 16), (256, 256, 8), (768, 1024, 2)],
    "lpips-vgg": [(256, 256, 8)],
}


def _forced(eng: Engine, a: np.ndarray, b: np.ndarray, split: bool | None) -> np.ndarray:
    """Score with the split path forced on / off (None: the engine's own rule)."""
    m = engine_module
    saved = m.SPLIT_MIN_PIXELS, m.SPLIT_MIN_DENSITY, m.SPLIT_ANY_PIXELS
    if split is not None:
        m.SPLIT_MIN_PIXELS = m.SPLIT_ANY_PIXELS = 0 if split else 1 << 62
        m.SPLIT_MIN_DENSITY = 0.0 if split else float("inf")
    try:
        return np.asarray(eng.score(a, b))
    finally:
        m.SPLIT_MIN_PIXELS, m.SPLIT_MIN_DENSITY, m.SPLIT_ANY_PIXELS = saved


def run_case(model: str, bundle: Path, h: int, w: int, n: int, rounds: int) -> list[dict[str, Any]]:
    eng = Engine(bundle, device="cpu")
    a, b = distortion_pairs(n, h, w, seed=0)
    fa, fb = eng.features(a), eng.features(b)
    lins = (
        [eng.bundle.head_weights[f"lin{k}"] for k in range(len(fa))]
        if eng.bundle.head == "lpips"
        else None
    )
    head_sess, _ = eng._session("head")
    feed = {f"a_tap{k}": f for k, f in enumerate(fa)}
    feed.update({f"b_tap{k}": f for k, f in enumerate(fb)})
    contenders = {
        "head-graph": lambda: head_sess.run(None, feed)[0],
        "numpy-whole": lambda: distances.lpips_per_tap(
            fa, fb, lins, threads=1, block_bytes=1 << 62
        ),
        "numpy-blocked-1t": lambda: distances.lpips_per_tap(fa, fb, lins, threads=1),
        "numpy-blocked": lambda: distances.lpips_per_tap(fa, fb, lins),
        "engine-pair": lambda: _forced(eng, a, b, False),
        "engine-split": lambda: _forced(eng, a, b, True),
        "engine-auto": lambda: _forced(eng, a, b, None),
    }
    ref = np.asarray(contenders["head-graph"]())
    errs = {
        k: float(np.abs(np.asarray(contenders[k]()) - ref).max() / np.abs(ref).max())
        for k in ("numpy-whole", "numpy-blocked")
    }
    pair = _forced(eng, a, b, False)
    errs["engine-split"] = float(np.abs(_forced(eng, a, b, True) - pair).max() / np.abs(pair).max())
    times = bench.interleaved(contenders, rounds=rounds, warmup=1, pause=0.2, quiet=0.3, retries=3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return [
        {
            "model": model,
            "h": h,
            "w": w,
            "batch": n,
            "contender": k,
            "median_ms": med[k] * 1e3,
            "vs_head_graph": med["head-graph"] / med[k]
            if k.startswith(("head", "numpy"))
            else None,
            "vs_engine_pair": med["engine-pair"] / med[k] if k.startswith("engine") else None,
            "max_rel_diff": errs.get(k),
            "split_chosen": eng._split_pairs(h, w) if k == "engine-auto" else None,
            "rounds": len(times[k]),
        }
        for k in contenders
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| model | case | contender | median ms | × head graph | × engine pair | max rel Δ |"
    out = [head, "|---|---|---|---:|---:|---:|---:|"]

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        auto = (
            " (split)" if r["split_chosen"] else (" (pair)" if r["split_chosen"] is False else "")
        )
        out.append(
            f"| {r['model']} | {r['h']}×{r['w']}×{r['batch']} | {r['contender']}{auto} | "
            f"{r['median_ms']:.2f} | {f(r['vs_head_graph'], '.2f')} | "
            f"{f(r['vs_engine_pair'], '.2f')} | {f(r['max_rel_diff'], '.1e')} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=time.strftime("%Y-%m-%d") + "-cpu-head")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=None, help="bundles (default: the suite's)")
    args = ap.parse_args()
    cache = args.cache or bench.default_cache_dir()
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        bundle, _ = bench.prepare_bundle(model, cache)
        for h, w, n in CASES[model]:
            rows += run_case(model, bundle, h, w, n, args.rounds)
            print(markdown([r for r in rows if (r["model"], r["h"], r["w"]) == (model, h, w)]))
    env = bench.environment()
    env["blocked_threads"] = distances.default_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"environment": env, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    text = f"# LPIPS head on the CPU {env['date']} — {env['cpu_model']}\n\n{markdown(rows)}\n"
    (args.out / f"{args.name}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
