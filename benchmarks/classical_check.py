"""Classical measures: the engine against piq, and several models in one run against one run each.

    python benchmarks/classical_check.py [--rounds 7] [--folder-rounds 3] [--name NAME]

1. In-process, 2 pairs of 1024×768 (W×H) per call: ``Engine.score`` for ``psnr``, ``ssim``,
   ``ssim-fullres`` and ``ms-ssim`` against piq's ``psnr``, ``ssim`` (downsampling on / off) and
   ``multi_scale_ssim`` (torch CPU), on the same float32 NCHW arrays in [0, 1]; the engine also
   on the uint8 NHWC arrays those came from (what the pipeline passes it).
2. Whole processes (start-up included), 48 JPEG pairs (quality 90) at 256×256 and 1024×768:
   ``dps-fast score A B --model BUNDLE,ssim,psnr`` (lpips-alex on seeded random trunk weights)
   against three ``dps-fast score`` runs, one per model; the ratio is the multi-model run's time
   over the three runs' sum, per round (median). The scores of both are compared.
3. Where the time goes (in-process, the same folders): decoding the 96 JPEGs in the pipeline's
   thread pool, and each model's ``Engine.score`` on the decoded uint8 arrays in the pipeline's
   batches. A run of the three models does at least the lpips-alex run's work, so that run's
   share of the sum is the floor of the ratio.

``--render RESULT.json`` writes ``RESULT.md`` again from the recorded figures.

Protocol: contenders in turn after one warm-up each, medians over rounds (``bench.interleaved``);
the machine may be shared: ``fgn`` is the most CPU cores other processes used in a kept round.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dps_fast import Engine, bench

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_folder import _env, make_folders  # noqa: E402


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _max_load(loads: dict[str, list[float | None]]) -> float | None:
    vals = [v for v in loads.get(bench.ROUND, []) if v is not None]
    return max(vals) if vals else None


def engine_vs_piq(rounds: int) -> list[dict[str, Any]]:
    """Seconds per call (2 pairs of 1024×768) of the engine and of piq, interleaved."""
    import piq
    import torch

    from dps_fast.samples import distortion_pairs

    a, b = distortion_pairs(2, 768, 1024, seed=3)  # float32 (2, 3, 768, 1024) in [0, 1]
    ua = (a * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    ub = (b * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    a, b = ua.transpose(0, 3, 1, 2) / np.float32(255), ub.transpose(0, 3, 1, 2) / np.float32(255)
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cases: list[tuple[str, str, Callable[[], object]]] = [
        ("psnr", "psnr", lambda: piq.psnr(ta, tb, reduction="none")),
        ("ssim", "ssim", lambda: piq.ssim(ta, tb, reduction="none")),
        ("ssim-fullres", "ssim (downsample=False)",
         lambda: piq.ssim(ta, tb, downsample=False, reduction="none")),
        ("ms-ssim", "multi_scale_ssim", lambda: piq.multi_scale_ssim(ta, tb, reduction="none")),
    ]  # fmt: skip
    rows = []
    for model, piq_name, ref in cases:
        eng = Engine(model, device="cpu")
        got, want = eng.score(a, b), ref().numpy()
        rel = float(np.max(np.abs(got - want) / np.abs(want)))
        loads: dict[str, list[float | None]] = {}
        t = bench.interleaved(
            {
                "engine float32": lambda eng=eng: eng.score(a, b),
                "engine uint8": lambda eng=eng: eng.score(ua, ub),
                "piq": ref,
            },
            rounds=rounds,
            foreign=loads,
        )
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append({
            "model": model, "piq": piq_name, "rel_vs_piq_fp32": rel,
            "engine_s": med["engine float32"], "engine_u8_s": med["engine uint8"],
            "piq_s": med["piq"], "speedup": med["piq"] / med["engine float32"],
            "speedup_u8": med["piq"] / med["engine uint8"], "rounds": len(t["piq"]),
            "fgn": _max_load(loads), "torch_threads": torch.get_num_threads(),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _scores(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["a"]: r for r in csv.DictReader(f)}


def _process(key: str, cmd: list[str], env: dict[str, str]) -> Callable[[], None]:
    """A contender: ``cmd`` as a whole process (its failure stops the benchmark)."""
    import subprocess

    def run() -> None:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{key} failed ({r.returncode}): {r.stderr[-2000:]}")

    return run


def multi_vs_separate(work: Path, rounds: int) -> list[dict[str, Any]]:
    """Whole ``dps-fast score`` processes: one run of three models against three runs."""
    bundle, _ = bench.prepare_bundle("lpips-alex", bench.default_cache_dir())
    env = _env()
    rows = []
    for w, h in ((256, 256), (1024, 768)):
        da, db = make_folders(work / f"jpeg-{w}x{h}", w, h, 48)
        outs = {m: work / f"out-{w}-{m}.csv" for m in ("multi", "alex", "ssim", "psnr")}
        models = {"multi": f"{bundle},ssim,psnr", "alex": str(bundle), "ssim": "ssim",
                  "psnr": "psnr"}  # fmt: skip

        base = [sys.executable, "-m", "dps_fast.cli", "score", str(da), str(db), "--device", "cpu"]
        cmds = {k: [*base, "-o", str(outs[k]), "--model", models[k]] for k in outs}

        loads: dict[str, list[float | None]] = {}
        t = bench.interleaved({k: _process(k, c, env) for k, c in cmds.items()}, rounds=rounds,
                              foreign=loads, children=True)  # fmt: skip
        ratios = [m / (x + y + z) for m, x, y, z in
                  zip(t["multi"], t["alex"], t["ssim"], t["psnr"], strict=True)]  # fmt: skip
        multi = _scores(outs["multi"])
        worst = 0.0
        for key, col in (("alex", "score_lpips-alex"), ("ssim", "score_ssim"),
                         ("psnr", "score_psnr")):  # fmt: skip
            for name, r in _scores(outs[key]).items():
                d = abs(float(multi[name][col]) - float(r["score"]))
                worst = max(worst, d / max(abs(float(r["score"])), 1e-12))
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append({
            "size": f"{w}x{h}", "pairs": 48, "multi_s": med["multi"], "alex_s": med["alex"],
            "ssim_s": med["ssim"], "psnr_s": med["psnr"],
            "sum_s": med["alex"] + med["ssim"] + med["psnr"],
            "ratio": statistics.median(ratios), "ratios": ratios,
            "ratio_of_medians": med["multi"] / (med["alex"] + med["ssim"] + med["psnr"]),
            "max_rel_diff_scores": worst, "rounds": len(ratios), "fgn": _max_load(loads),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def breakdown(work: Path, rounds: int) -> list[dict[str, Any]]:
    """Seconds (medians) of decoding the folders and of each model's scoring, in-process."""
    from concurrent.futures import ThreadPoolExecutor

    from dps_fast.io.decode import decode_image
    from dps_fast.pipeline import default_workers

    bundle, _ = bench.prepare_bundle("lpips-alex", bench.default_cache_dir())
    rows = []
    for w, h in ((256, 256), (1024, 768)):
        da, db = make_folders(work / f"jpeg-{w}x{h}", w, h, 48)
        files = sorted(da.glob("*.jpg")) + sorted(db.glob("*.jpg"))
        with ThreadPoolExecutor(default_workers()) as pool:
            imgs = list(pool.map(decode_image, files))
        a, b = np.stack(imgs[:48]), np.stack(imgs[48:])
        engines = {
            "lpips-alex": Engine(str(bundle), device="cpu"),
            "ssim": Engine("ssim", device="cpu"),
            "psnr": Engine("psnr", device="cpu"),
        }

        def decode(files: list[Path] = files) -> None:
            with ThreadPoolExecutor(default_workers()) as pool:
                list(pool.map(decode_image, files))

        def scorer(
            eng: Engine, a: np.ndarray = a, b: np.ndarray = b, hw: tuple[int, int] = (h, w)
        ) -> Callable[[], object]:
            step = eng.batch_len(*hw)
            return lambda: [eng.score(a[i : i + step], b[i : i + step]) for i in range(0, 48, step)]

        loads: dict[str, list[float | None]] = {}
        t = bench.interleaved({"decode": decode, **{k: scorer(e) for k, e in engines.items()}},
                              rounds=rounds, foreign=loads)  # fmt: skip
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append({"size": f"{w}x{h}", **{f"{k}_s": v for k, v in med.items()},
                     "rounds": len(t["decode"]), "fgn": _max_load(loads)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(
    env: dict[str, Any],
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    c: list[dict[str, Any]] | None = None,
) -> str:
    """The results file: the parts that ran (``a`` engine vs piq, ``b`` folders, ``c`` where
    the time goes)."""
    date = env.get("date") or time.strftime("%Y-%m-%d", time.gmtime())
    lines = [
        "# Classical measures: engine vs piq, several models in one run",
        "",
        f"`benchmarks/classical_check.py`, {date}; "
        f"{env['cpu_model']}, {env['cpu_count']} vCPUs; onnxruntime "
        f"{env['versions'].get('onnxruntime')}, torch {env['versions'].get('torch')}, piq "
        f"{env['versions'].get('piq') or _version('piq')}. **The CPUs were shared with other "
        "jobs** (fgn: the most cores other processes used in a kept round); compare ratios "
        "within this run.",
    ]
    if a:
        lines += [
            "",
            "## Engine vs piq, 2 pairs of 1024×768 per call (seconds, medians)",
            "",
            "| model | piq | engine (float32 NCHW) | engine (uint8 NHWC) | piq | speed-up | "
            "speed-up (uint8) | rel. diff vs piq float32 | rounds | fgn |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in a:
        lines.append(
            f"| {r['model']} | {r['piq']} | {r['engine_s']:.4f} | {r['engine_u8_s']:.4f} | "
            f"{r['piq_s']:.4f} | {r['speedup']:.2f}× | {r['speedup_u8']:.2f}× | "
            f"{r['rel_vs_piq_fp32']:.1e} | {r['rounds']} | {r['fgn'] or 0:.2f} |"
        )
    if b:
        lines += [
            "",
            "## `--model lpips-alex,ssim,psnr` vs three runs, 48 JPEG pairs (whole processes, s)",
            "",
            "A run of the three models does at least the lpips-alex run's work, so the "
            "lpips-alex run's share of the sum (floor) is the least ratio any one run can reach "
            "(up to the noise of a shared machine).",
            "",
            "| size | one run, three models | lpips-alex | ssim | psnr | sum of three | ratio "
            "(median per round) | ratio of medians | floor: lpips-alex / sum | max rel. diff of "
            "scores | rounds | fgn |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in b:
        lines.append(
            f"| {r['size']} | {r['multi_s']:.2f} | {r['alex_s']:.2f} | {r['ssim_s']:.2f} | "
            f"{r['psnr_s']:.2f} | {r['sum_s']:.2f} | {r['ratio']:.3f} | "
            f"{r['multi_s'] / r['sum_s']:.3f} | {r['alex_s'] / r['sum_s']:.3f} | "
            f"{r['max_rel_diff_scores']:.1e} | {r['rounds']} | {r['fgn'] or 0:.2f} |"
        )
    if c:
        lines += [
            "",
            "## Where the time goes, 48 pairs in-process (s, medians)",
            "",
            "| size | decode 96 JPEGs (thread pool) | lpips-alex scoring | ssim scoring | "
            "psnr scoring | lpips-alex share of the scoring | rounds | fgn |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in c or []:
        share = r["lpips-alex_s"] / (r["lpips-alex_s"] + r["ssim_s"] + r["psnr_s"])
        lines.append(
            f"| {r['size']} | {r['decode_s']:.3f} | {r['lpips-alex_s']:.3f} | "
            f"{r['ssim_s']:.3f} | {r['psnr_s']:.3f} | {share:.1%} | {r['rounds']} | "
            f"{r['fgn'] or 0:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--folder-rounds", type=int, default=3)
    ap.add_argument("--name", default=None, help="results file stem under benchmarks/results/")
    ap.add_argument("--skip-folder", action="store_true", help="only the engine vs piq part")
    ap.add_argument("--skip-piq", action="store_true", help="only the folder part")
    ap.add_argument("--breakdown-rounds", type=int, default=5)
    ap.add_argument("--render", type=Path, default=None,
                    help="write RESULT.md again from RESULT.json (no measuring)")  # fmt: skip
    args = ap.parse_args()
    if args.render is not None:
        d = json.loads(args.render.read_text(encoding="utf-8"))
        text = markdown(d["environment"], d.get("engine_vs_piq", []),
                        d.get("multi_vs_separate", []), d.get("breakdown", []))  # fmt: skip
        args.render.with_suffix(".md").write_text(text, encoding="utf-8")
        return
    env = bench.environment()
    a = [] if args.skip_piq else engine_vs_piq(args.rounds)
    with tempfile.TemporaryDirectory(prefix="dps-fast-classical-") as tmp:
        b = [] if args.skip_folder else multi_vs_separate(Path(tmp), args.folder_rounds)
        c = [] if args.skip_folder else breakdown(Path(tmp), args.breakdown_rounds)
    text = markdown(env, a, b, c)
    print(text)
    if args.name:
        out = HERE / "results" / args.name
        out.with_suffix(".md").write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(
            json.dumps({"environment": env, "engine_vs_piq": a, "multi_vs_separate": b,
                        "breakdown": c},
                       indent=2) + "\n", encoding="utf-8")  # fmt: skip


if __name__ == "__main__":
    main()
