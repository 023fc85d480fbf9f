"""Ray backend overhead: ``score_pairs_ray`` with one actor against in-process ``score_pairs``.

    python benchmarks/ray_overhead.py [--pairs 500] [--unit-size 32] [--rounds 3] [--name NAME]

Same manifest for both (``--pairs`` JPEG pairs of 1024×768, quality 90: 100 generated pairs
copied to distinct files, so every file is read and decoded), same lpips-alex bundle (seeded
random trunk), CPU:

- ``in-process``: ``Engine(bundle, device="cpu")`` then every record of
  ``dps_fast.score_pairs(manifest, engine=…)`` (what ``dps-fast score-pairs`` runs);
- ``ray``: ``score_pairs_ray(manifest, OUT, …)`` on a local Ray started once by this script
  (``ray.init(num_cpus=cores)``, its start-up reported apart), one actor with every core
  (``cpus_per_actor=cores``), units of ``--unit-size`` pairs, shards written by the driver.
  Timed: the whole call (planning, actor start and engine load, units, shards, marker).

Protocol: one warm-up each (unless ``--no-warmup``), then rounds alternating the order (A B,
B A, …); medians. For the Ray runs, the driver's progress callback gives the time to the first
finished unit (start-up overhead) and the median time between units (seconds per unit).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dps_fast import bench  # noqa: E402
from e2e_folder import make_folders, replicate_folders  # noqa: E402

log = logging.getLogger("ray-overhead")


def make_manifest(work: Path, pairs: int) -> Path:
    base = make_folders(work / "jpeg-1024x768-100", 1024, 768, min(100, pairs), seed=2000)
    da, _ = replicate_folders(base, work / f"jpeg-1024x768-{pairs}", pairs)
    manifest = work / f"pairs-{pairs}.csv"
    rel = da.parent.relative_to(work)  # paths relative to the manifest's folder
    rows = ["a,b,id"] + [f"{rel}/A/{i:04d}.jpg,{rel}/B/{i:04d}.jpg,p{i}" for i in range(pairs)]
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def run_in_process(bundle: Path, manifest: Path) -> dict[str, Any]:
    import dps_fast

    t0 = time.perf_counter()
    eng = dps_fast.Engine(bundle, device="cpu")
    n = sum(1 for r in dps_fast.score_pairs(manifest, engine=eng) if r["score"] is not None)
    return {"seconds": time.perf_counter() - t0, "scored": n}


def run_ray(bundle: Path, manifest: Path, out: Path, unit_size: int, cpus: int) -> dict[str, Any]:
    from dps_fast.distributed import RayOptions, score_pairs_ray

    shutil.rmtree(out, ignore_errors=True)
    stamps: list[float] = []
    t0 = time.perf_counter()
    run = score_pairs_ray(
        manifest, out, model=bundle, device="cpu",
        options=RayOptions(unit_size=unit_size, cpus_per_actor=cpus),
        progress=lambda done, total: stamps.append(time.perf_counter()),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "seconds": seconds,
        "scored": run.scored,
        "units": run.units,
        "first_unit_s": stamps[0] - t0 if stamps else None,
        "s_per_unit": statistics.median(gaps) if gaps else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--unit-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up runs")
    ap.add_argument(
        "--work", type=Path, default=bench.default_cache_dir().with_name("dps-fast-ray")
    )
    ap.add_argument("--name", default=None, help="write results/NAME.{json,md}")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import ray

    cores = os.cpu_count() or 1
    load_before = Path("/proc/loadavg").read_text().strip()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle, _ = bench.prepare_bundle("lpips-alex", args.work)
    manifest = make_manifest(args.work, args.pairs)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    out = args.work / "ray-out"
    rows: dict[str, list[dict[str, Any]]] = {"in-process": [], "ray": []}
    try:
        runners = {
            "in-process": lambda: run_in_process(bundle, manifest),
            "ray": lambda: run_ray(bundle, manifest, out, args.unit_size, cores),
        }
        for name, fn in runners.items():  # warm-up (file cache, imports, first actor)
            if not args.no_warmup:
                log.info("warm-up %s", name)
                fn()
        for r in range(args.rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(list(runners)))
            for name in order:
                res = runners[name]()
                res["round"] = r
                res["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
                rows[name].append(res)
                log.info("round %d %s: %.1f s, %.2f pairs/s", r, name, res["seconds"],
                         args.pairs / res["seconds"])  # fmt: skip
    finally:
        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in rows.items()}
    ratios = [
        a["seconds"] / b["seconds"] for a, b in zip(rows["in-process"], rows["ray"], strict=True)
    ]
    summary = {
        "pairs": args.pairs,
        "unit_size": args.unit_size,
        "units": rows["ray"][0]["units"],
        "ray_init_s": init_s,
        "in_process_pairs_s": args.pairs / med["in-process"],
        "ray_pairs_s": args.pairs / med["ray"],
        "ray_over_in_process": med["in-process"] / med["ray"],
        "per_round_ratio": ratios,
        "ray_first_unit_s": statistics.median(x["first_unit_s"] for x in rows["ray"]),
        "ray_s_per_unit": statistics.median(x["s_per_unit"] for x in rows["ray"]),
    }
    env = bench.environment()
    env.update(loadavg_before=load_before, loadavg_after=Path("/proc/loadavg").read_text().strip())
    md = markdown(summary, rows, env)
    print(md)
    if args.name:
        res_dir = HERE / "results"
        res_dir.mkdir(exist_ok=True)
        (res_dir / f"{args.name}.json").write_text(
            json.dumps({"environment": env, "summary": summary, "rounds": rows}, indent=2) + "\n"
        )
        (res_dir / f"{args.name}.md").write_text(md)


def markdown(s: dict[str, Any], rows: dict[str, list[dict[str, Any]]], env: dict[str, Any]) -> str:
    lines = [
        f"# Ray backend overhead: {env['cpu_model']}, {env['cpu_count']} cores, {env['date']}",
        "",
        f"{s['pairs']} pairs of 1024×768 JPEGs, lpips-alex fp32 on the CPU; Ray: 1 actor with "
        f"{env['cpu_count']} CPUs, units of {s['unit_size']} pairs ({s['units']} units). "
        f"Medians of {len(rows['ray'])} interleaved rounds. The machine's CPUs were shared with "
        f"other jobs (load average before/after: {env['loadavg_before']} / "
        f"{env['loadavg_after']}).",
        "",
        "| backend | median s | pairs/s | first unit s | s per unit |",
        "|---|---|---|---|---|",
        f"| in-process `score_pairs` | {s['pairs'] / s['in_process_pairs_s']:.1f} | "
        f"{s['in_process_pairs_s']:.2f} | | |",
        f"| Ray, 1 actor | {s['pairs'] / s['ray_pairs_s']:.1f} | {s['ray_pairs_s']:.2f} | "
        f"{s['ray_first_unit_s']:.1f} | {s['ray_s_per_unit']:.2f} |",
        "",
        f"Ray / in-process throughput: **{s['ray_over_in_process']:.0%}** (per round: "
        + ", ".join(f"{r:.0%}" for r in s["per_round_ratio"])
        + f"). `ray.init` (once, not in the times): {s['ray_init_s']:.1f} s.",
        "",
        "| round | in-process s | Ray s | Ray first unit s | Ray s per unit | load |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in zip(rows["in-process"], rows["ray"], strict=True):
        lines.append(
            f"| {a['round']} | {a['seconds']:.1f} | {b['seconds']:.1f} | "
            f"{b['first_unit_s']:.1f} | {b['s_per_unit']:.2f} | {a['loadavg']}/{b['loadavg']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
