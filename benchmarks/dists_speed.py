"""DISTS throughput before and after the accuracy fix of issue 18, interleaved in one run.

    python benchmarks/dists_speed.py [--name 2026-12-02-cpu-2core-epyc-dists-numerics] [--rounds 15]

Both contenders are DISTS pair graphs (what ``Engine.score`` runs on the CPU) exported from the
same seeded random VGG16 trunk and the real α/β, and run in sessions made like the engine's:
``before`` has the previous head (one ReduceMean over H·W, E[xy] − μxμy), ``after`` the
current one (``dps_fast.export.modules.Head``). Rounds alternate before/after (the suite's
``dps_fast.bench.interleaved``); the report gives medians, min–max, the paired per-round ratio
and the CPU cores other processes used during the calls (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dps_fast import bench
from dps_fast.engine.session import make_session
from dps_fast.export.exporter import _export
from dps_fast.export.modules import DISTS_C1, DISTS_C2, Head, PairGraph, build_trunk
from dps_fast.export.weights import build_backbone, dists_head_weights
from dps_fast.registry import get_model
from dps_fast.samples import distortion_pairs

HERE = Path(__file__).resolve().parent
CASES = [(256, 256, 2), (768, 1024, 1)]


class HeadBefore(Head):
    """The DISTS head as it was before issue 18's fix (for timing only: it loses digits)."""

    def _dists_tap(self, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mx = x.mean(dim=(2, 3))
        my = y.mean(dim=(2, 3))
        vx = ((x - mx[:, :, None, None]) ** 2).mean(dim=(2, 3))
        vy = ((y - my[:, :, None, None]) ** 2).mean(dim=(2, 3))
        cxy = (x * y).mean(dim=(2, 3)) - mx * my
        s1 = (2 * mx * my + DISTS_C1) / (mx**2 + my**2 + DISTS_C1)
        s2 = (2 * cxy + DISTS_C2) / (vx + vy + DISTS_C2)
        a = getattr(self, f"alpha{i}")
        b = getattr(self, f"beta{i}")
        return torch.sum(a * (1 - s1) + b * (1 - s2), dim=1)


def export_pairs(out: Path, weights: Path) -> dict[str, Path]:
    """The before and after pair graphs of one trunk, as the exporter writes them."""
    spec = get_model("dists")
    backbone = build_backbone(spec.arch)
    backbone.load_state_dict(torch.load(weights, weights_only=True), strict=False)
    trunk = build_trunk(spec, backbone)
    hw, _ = dists_head_weights()
    channels = [t.channels for t in spec.taps]
    ex = torch.rand(2, 3, 64, 64)
    nchw = {0: "N", 2: "H", 3: "W"}
    paths = {}
    for name, cls in (("before", HeadBefore), ("after", Head)):
        pair = PairGraph(trunk, cls(spec, channels, hw).eval()).eval()
        paths[name] = out / f"pair-{name}.onnx"
        dyn = {"a": nchw, "b": nchw, "per_tap": {0: "N"}}
        _export(pair, (ex, torch.rand_like(ex)), paths[name], ["a", "b"], ["per_tap"], dyn)
    return paths


def run_case(paths: dict[str, Path], h: int, w: int, n: int, rounds: int) -> dict[str, Any]:
    a, b = distortion_pairs(n, h, w, seed=1)
    sessions = {k: make_session(p, "cpu", None)[0] for k, p in paths.items()}
    feed = {"a": a, "b": b}
    outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
    foreign: dict[str, list[float | None]] = {}
    times = bench.interleaved(
        {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()},
        rounds=rounds,
        foreign=foreign,
    )
    ratios = [aft / bef for bef, aft in zip(times["before"], times["after"], strict=True)]
    load = [v for v in foreign.get("(round)", []) if v is not None]
    return {
        "h": h,
        "w": w,
        "batch": n,
        "rounds": len(ratios),
        "before_s": times["before"],
        "after_s": times["after"],
        "median_before_s": statistics.median(times["before"]),
        "median_after_s": statistics.median(times["after"]),
        "throughput_after_vs_before": statistics.median(times["before"])
        / statistics.median(times["after"]),
        "paired_ratio_median": statistics.median(ratios),
        "paired_ratio_min": min(ratios),
        "paired_ratio_max": max(ratios),
        "foreign_cores_median": statistics.median(load) if load else None,
        "score_diff_after_minus_before": (outs["after"].sum(1) - outs["before"].sum(1)).tolist(),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| size × batch | rounds | before s (median, min–max) | after s (median, min–max) "
        "| throughput after / before | per-round time ratio after / before (median, min–max) "
        "| other processes' cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, a = r["before_s"], r["after_s"]
        fc = r["foreign_cores_median"]
        out.append(
            f"| {r['h']}×{r['w']} ×{r['batch']} | {r['rounds']} | {r['median_before_s']:.3f} "
            f"({min(b):.3f}–{max(b):.3f}) | {r['median_after_s']:.3f} ({min(a):.3f}–{max(a):.3f})"
            f" | {r['throughput_after_vs_before']:.3f} | {r['paired_ratio_median']:.3f} "
            f"({r['paired_ratio_min']:.3f}–{r['paired_ratio_max']:.3f}) | "
            f"{'—' if fc is None else f'{fc:.2f}'} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=time.strftime("%Y-%m-%d") + "-cpu-dists-numerics")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dps-dists-speed-") as td:
        weights = bench.make_random_weights("vgg16", Path(td) / "vgg16.pth", 0)
        paths = export_pairs(Path(td), weights)
        for h, w, n in CASES:
            rows.append(run_case(paths, h, w, n, args.rounds))
            print(markdown(rows[-1:]), flush=True)
    env = bench.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"environment": env, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    text = (
        f"# DISTS pair graph before / after the accuracy fix (issue 18), {env['date']} — "
        f"{env['cpu_model']}\n\n{__doc__.split(chr(10) + chr(10), 2)[2]}\n{markdown(rows)}\n"
    )
    (args.out / f"{args.name}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
