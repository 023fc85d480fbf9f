"""int8 graph variants against float32 on the CPU: speed (interleaved) and error.

    python benchmarks/int8_check.py [--rounds 5] [--models lpips-alex,lpips-vgg] [--name NAME]

Bundles are exported once with ``--int8`` from seeded random trunk weights (no network), into
``$TMPDIR/dps-fast-int8``. Speed: ``Engine(precision="fp32")`` and ``Engine(precision="int8")``
on the same uint8 pairs (the pipeline's input), in turn after a warm-up, medians over the rounds,
with the quiet-CPU guard of the suite (``fgn``: most cores other processes used in a kept
round). Error, against the float32 engine: max |Δ| and relative error (max |Δ| / max |score|) of
the scores of ``distortion_pairs`` (noise, blur, shift, unrelated images), and the 2AFC flip
rate: for 48 images x and two distortions d1 (noise of random strength), d2 (box blur 3–7),
how often ``sign(s(x, d1) − s(x, d2))`` differs — as ``gpu_check.py`` measures fp16 flips.
Random trunks: the errors of trained (ImageNet) trunks are not measured here.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dps_fast import Engine, bench
from dps_fast.samples import box_blur, distortion_pairs

HERE = Path(__file__).resolve().parent
CASES = ((64, 64, 32), (256, 256, 8), (1024, 768, 2))  # W, H, pairs
QUIET = 0.3
log = logging.getLogger("int8")


def u8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def errors(e32: Engine, e8: Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    a, b = distortion_pairs(32, 256, 256, seed=5)
    r, g = e32.score(u8(a), u8(b)), e8.score(u8(a), u8(b))
    d = np.abs(g.astype(np.float64) - r)
    out["max_abs"] = float(d.max())
    out["rel"] = float(d.max() / np.abs(r).max())
    out["median_pair_rel"] = float(np.median(d / np.maximum(np.abs(r), 1e-12)))
    out["score_range"] = [float(r.min()), float(r.max())]
    rng = np.random.default_rng(7)
    flips = 0
    n = 0
    for hw in ((128, 128), (256, 256)):
        x, _ = distortion_pairs(48, *hw, seed=21)
        strength = rng.uniform(0.02, 0.12, (48, 1, 1, 1)).astype(np.float32)
        d1 = np.clip(x + rng.normal(0, 1, x.shape).astype(np.float32) * strength, 0, 1)
        d2 = np.stack(
            [box_blur(i, int(k)) for i, k in zip(x, rng.choice([3, 5, 7], 48), strict=True)]
        )
        xs, d1s, d2s = u8(x), u8(d1), u8(d2)
        r1, r2 = e32.score(xs, d1s), e32.score(xs, d2s)
        g1, g2 = e8.score(xs, d1s), e8.score(xs, d2s)
        flips += int(np.sum(np.sign(r1 - r2) != np.sign(g1 - g2)))
        n += 48
    out["flips"] = flips
    out["triplets"] = n
    return out


def _call(eng: Engine, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    return lambda: eng.score(a, b)


def run(models: list[str], rounds: int, root: Path) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        bundle, _ = bench.prepare_bundle(model, root, int8=True)
        e32 = Engine(bundle, device="cpu")
        e8 = Engine(bundle, device="cpu", precision="int8")
        err = errors(e32, e8)
        log.info("%s error vs fp32: %s", model, err)
        for w, h, n in CASES:
            a, b = distortion_pairs(n, h, w, seed=1)
            ua, ub = u8(a), u8(b)
            foreign: dict[str, list[float | None]] = {}
            times = bench.interleaved(
                {"fp32": _call(e32, ua, ub), "int8": _call(e8, ua, ub)},
                rounds=rounds, warmup=1, budget_s=240, foreign=foreign, quiet=QUIET,
                retries=rounds,
            )  # fmt: skip
            med = {k: statistics.median(v) for k, v in times.items()}
            fg = [x for x in foreign.get(bench.ROUND, []) if x is not None]
            rows.append({
                "model": model, "size": f"{w}x{h}", "pairs": n, "rounds": len(times["fp32"]),
                "fp32_ms": med["fp32"] * 1e3, "int8_ms": med["int8"] * 1e3,
                "speedup": med["fp32"] / med["int8"],
                "fp32_pairs_s": n / med["fp32"], "int8_pairs_s": n / med["int8"],
                "fgn_max": max(fg) if fg else None, "times": times, "error": err,
            })  # fmt: skip
            log.info("%s", {k: v for k, v in rows[-1].items() if k not in ("times", "error")})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| model | size (W×H) × pairs | rounds | fp32 ms | int8 ms | int8 speed-up | "
        "fp32 pairs/s | int8 pairs/s | fgn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fg = "-" if r["fgn_max"] is None else f"{r['fgn_max']:.2f}"
        out.append(
            f"| {r['model']} | {r['size']} ×{r['pairs']} | {r['rounds']} | {r['fp32_ms']:.1f} | "
            f"{r['int8_ms']:.1f} | {r['speedup']:.2f}× | {r['fp32_pairs_s']:.2f} | "
            f"{r['int8_pairs_s']:.2f} | {fg} |"
        )
    out += [
        "",
        "| model | max abs Δ score | relative (max abs Δ / max score) | median per-pair rel | "
        "fp32 score range | 2AFC flips |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in rows:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        e = r["error"]
        out.append(
            f"| {r['model']} | {e['max_abs']:.3g} | {e['rel']:.3g} | {e['median_pair_rel']:.3g} | "
            f"{e['score_range'][0]:.3g}–{e['score_range'][1]:.3g} | "
            f"{e['flips']}/{e['triplets']} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="lpips-alex,lpips-vgg")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dps-fast-int8")
    ap.add_argument("--name", default=None, help="write results/NAME.{json,md}")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_before = Path("/proc/loadavg").read_text().strip()
    rows = run(args.models.split(","), args.rounds, args.work)
    env = bench.environment()
    env.update(loadavg_before=load_before, loadavg_after=Path("/proc/loadavg").read_text().strip())
    md = markdown(rows)
    print(md)
    if args.name:
        res = HERE / "results"
        res.mkdir(exist_ok=True)
        (res / f"{args.name}.json").write_text(
            json.dumps({"environment": env, "rows": rows}, indent=2) + "\n", encoding="utf-8"
        )
        head = f"# {args.name}: {env['cpu_model']}, {env['cpu_count']} cores, {env['date']}\n\n"
        (res / f"{args.name}.md").write_text(head + md, encoding="utf-8")


if __name__ == "__main__":
    main()
