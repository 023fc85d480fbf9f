"""``dps-fast evaluate`` against ``dps-fast score-pairs`` on the same pairs (issue 16).

    python benchmarks/evaluate_check.py [--refs 25] [--per-ref 120] [--rounds 3] [--name NAME]

A TID2013-shaped replica (``--refs`` references × ``--per-ref`` distorted BMPs of 512×384,
``mos_with_names.txt``, ``mos_std.txt``) is scored with lpips-alex (a bundle of seeded random
trunk weights; speed does not depend on the values) by two whole processes, start-up included:

- ``score-pairs``: ``dps-fast score-pairs pairs.csv --out s.csv`` over the same (distorted,
  reference) pairs in the same order;
- ``evaluate``: ``dps-fast evaluate tid2013=ROOT --out DIR`` with its defaults (every tap kept,
  1000 BCa resamples, per-type rows).

Contenders alternate (A B A B …) after no warm-up beyond the first export; medians and the
ratio are printed and written to ``benchmarks/results/NAME.md`` and ``NAME.json``. Where the
extra time goes is read from each command's own meta: seconds spent scoring (``last_run.seconds``
of the score-pairs file, ``seconds_scoring`` of evaluate), in the command after scoring
(evaluate's statistics and outputs: ``seconds`` − ``seconds_scoring``), and outside both
(process start-up, imports, engine, reading the pairs). The machine is shared: compare the
ratio, not the absolute rates.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dps_fast import bench

HERE = Path(__file__).resolve().parent
H, W = 384, 512


def make_replica(root: Path, refs: int, per_ref: int) -> None:
    """TID2013 layout: iRR_TT_L.bmp with 5 levels per type, MOS falling with the noise."""
    y, x = np.mgrid[0:H, 0:W]
    lines, stds = [], []
    for r in range(1, refs + 1):
        rng = np.random.default_rng(r)
        f = rng.uniform(4, 30, 3)
        ref = np.stack([128 + 100 * np.sin(x / f[c] + y / (f[c] + 3) + r) for c in range(3)], -1)
        ref = ref.clip(0, 255).astype(np.uint8)
        (root / "reference_images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ref).save(root / "reference_images" / f"I{r:02d}.BMP")
        for k in range(per_ref):
            t, lev = k // 5 + 1, k % 5 + 1
            name = f"i{r:02d}_{t:02d}_{lev}.bmp"
            noise = rng.normal(0, 2.0 * lev + 0.3 * t, ref.shape)
            d = (ref + noise).round().clip(0, 255).astype(np.uint8)
            (root / "distorted_images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(d).save(root / "distorted_images" / name)
            lines.append(f"{9 - 0.8 * lev + rng.normal(0, 0.5):.5f} {name}")
            stds.append("0.2")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    with open(root / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b"])
        for line in lines:
            name = line.split()[1]
            w.writerow([f"distorted_images/{name}", f"reference_images/I{name[1:3]}.BMP"])


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def split(kind: str, work: Path) -> tuple[float, float]:
    """(seconds scoring, seconds in the command after scoring) from the command's meta."""
    if kind == "score-pairs":
        last = json.loads((work / "s.csv.meta.json").read_text())["last_run"]
        return float(last["seconds"]), 0.0
    meta = json.loads((work / "e" / "meta.json").read_text())
    return float(meta["seconds_scoring"]), float(meta["seconds"]) - float(meta["seconds_scoring"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", type=int, default=25)
    ap.add_argument("--per-ref", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dps-fast-evalbench-"))
    try:
        root = work / "tid"
        make_replica(root, args.refs, args.per_ref)
        bundle_dir, _ = bench.prepare_bundle("lpips-alex", work / "cache")
        exe = [sys.executable, "-m", "dps_fast.cli"]
        common = ["--model", str(bundle_dir), "--device", "cpu"]
        runs = {
            "score-pairs": [
                *exe,
                "score-pairs",
                str(root / "pairs.csv"),
                *common,
                "--out",
                str(work / "s.csv"),
            ],
            "evaluate": [*exe, "evaluate", f"tid2013={root}", *common, "--out", str(work / "e")],
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        parts: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        loads: list[float] = []
        for _ in range(args.rounds):
            for k, cmd in runs.items():
                shutil.rmtree(work / "e", ignore_errors=True)
                times[k].append(timed(cmd))
                parts[k].append(split(k, work))
                loads.append(os.getloadavg()[0])
                print(f"{k}: {times[k][-1]:.1f} s (scoring {parts[k][-1][0]:.1f} s)", flush=True)
        n = args.refs * args.per_ref
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["evaluate"] / med["score-pairs"]
        ratios = [e / s for e, s in zip(times["evaluate"], times["score-pairs"], strict=True)]
        med_score = {k: statistics.median(p[0] for p in v) for k, v in parts.items()}
        med_after = statistics.median(p[1] for p in parts["evaluate"])
        outside = {k: statistics.median(t - a - b for t, (a, b) in zip(times[k], parts[k],
                                                                      strict=True))
                   for k in runs}  # fmt: skip
        own = med_after + outside["evaluate"] - outside["score-pairs"]
        own_ratio = 1 + own / med["score-pairs"]
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
        )
        load = os.getloadavg()
        lines = [
            f"# evaluate vs score-pairs, {time.strftime('%Y-%m-%d')}",
            "",
            f"Machine: {os.cpu_count()} vCPUs, {cpu}; **shared with other jobs** (1-minute load "
            f"average after each run {min(loads):.1f}–{max(loads):.1f}; at the end {load[0]:.1f}, "
            f"{load[1]:.1f}, {load[2]:.1f}): compare the ratio only.",
            f"Replica: TID2013-shaped, {args.refs} references × {args.per_ref} distorted, "
            f"{W}×{H} BMP, {n} pairs; lpips-alex (seeded random trunk), fp32, CPU; whole "
            f"processes, start-up included; {args.rounds} interleaved rounds, medians.",
            "",
            "| contender | seconds (each round) | median | pairs/s |",
            "|---|---|---|---|",
            *(
                f"| `{k}` | {', '.join(f'{t:.1f}' for t in v)} | {med[k]:.1f} | {n / med[k]:.1f} |"
                for k, v in times.items()
            ),
            "",
            f"evaluate / score-pairs = **{ratio:.3f}×** (ratio of the medians; per round "
            f"{', '.join(f'{r:.3f}' for r in ratios)}). The statistics (1000 BCa resamples, "
            "logistic fits, per-type rows) are included in evaluate's time.",
            "",
            "Where the time goes (medians, seconds):",
            "",
            "| contender | scoring | in the command after scoring | outside (start-up, "
            "imports, engine, reading pairs) |",
            "|---|---|---|---|",
            f"| `score-pairs` | {med_score['score-pairs']:.1f} | – | "
            f"{outside['score-pairs']:.1f} |",
            f"| `evaluate` | {med_score['evaluate']:.1f} | {med_after:.1f} | "
            f"{outside['evaluate']:.1f} |",
            "",
            f"evaluate's own work (after scoring, and start-up beyond score-pairs') is "
            f"{own:.1f} s, **{own_ratio:.3f}×** score-pairs' median time: the ratio the two "
            "would have with the scoring, which is the same code on the same pairs, at one "
            "speed (the whole-process ratio above also carries the load's swings).",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.name:
            (HERE / "results" / f"{args.name}.md").write_text(text)
            record = {
                "date": time.strftime("%Y-%m-%d"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "cpu": cpu,
                    "shared": True,
                    "load_after_each_run": loads,
                },
                "replica": {
                    "refs": args.refs,
                    "per_ref": args.per_ref,
                    "pairs": n,
                    "size": [W, H],
                },
                "model": "lpips-alex (seeded random trunk), fp32, CPU",
                "rounds": args.rounds,
                "seconds": times,
                "seconds_scoring": {k: [p[0] for p in v] for k, v in parts.items()},
                "seconds_after_scoring": [p[1] for p in parts["evaluate"]],
                "median": med,
                "ratio": ratio,
                "ratio_per_round": ratios,
                "own_work_seconds": own,
                "own_work_ratio": own_ratio,
            }
            (HERE / "results" / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
