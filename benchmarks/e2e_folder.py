"""End-to-end folder scoring: ``dps-fast score`` against a one-pair-at-a-time PyTorch loop.

    python benchmarks/e2e_folder.py [--rounds 3] [--pairs 48] [--precisions fp32,int8] [--name NAME]
    python benchmarks/e2e_folder.py --memory [--name NAME]

Both contenders run as whole processes, start-up included (wall clock of the subprocess):

- ``dps-fast``: ``python -m dps_fast.cli score A B -o out.csv --model BUNDLE --device cpu``
  (lpips-alex, an exported bundle of seeded random trunk weights; once per ``--precisions``
  entry: fp32, and int8 from the same bundle exported with ``--int8``);
- ``reference-loop``: ``benchmarks/reference_loop.py`` — Pillow decode, ``lpips.LPIPS(net='alex')``
  with the same trunk weights, one pair per forward under ``no_grad``, a CSV row each.

Inputs: JPEG folder pairs (quality 90) made from ``dps_fast.samples.distortion_pairs`` (gradients,
shapes and pixel noise, so the files are not trivially compressible), 512×384 and 1024×768
(W×H). In-process, the script also times decoding alone (``decode_image``, one thread) and the
engine alone (``Engine.score`` on the decoded uint8 arrays, in the pipeline's batches), per
pair, and reports the e2e rate as a fraction of ``1 / (decode + engine)``.

Protocol: contenders in turn (A B A B …) after one warm-up each, medians over ``--rounds``; each
call waits until other processes use < 0.3 cores, and a round they disturbed is run again (up to
``--rounds`` times); ``fgn`` is the most CPU cores other processes used during a kept round.

``--memory``: peak RSS (``/usr/bin/time -v``, else psutil polling) of ``dps-fast score`` with
lpips-alex over 100 and 500 pairs of 1024×768 and lpips-vgg over 20 pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dps_fast import bench
from dps_fast.samples import distortion_pairs

HERE = Path(__file__).resolve().parent
SIZES = ((512, 384), (1024, 768))  # W×H
QUALITY = 90
QUIET = 0.3  # cores other processes may use while we time

log = logging.getLogger("e2e")


# -- inputs ---------------------------------------------------------------------------------


def make_folders(root: Path, w: int, h: int, n: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` JPEG pairs (A/NNNN.jpg, B/NNNN.jpg) of W×H; made once (a marker file says done)."""
    da, db = root / "A", root / "B"
    done = root / ".done"
    if done.is_file() and done.read_text() == f"{w}x{h}x{n}q{QUALITY}s{seed}":
        return da, db
    shutil.rmtree(root, ignore_errors=True)
    da.mkdir(parents=True)
    db.mkdir(parents=True)
    for s in range(0, n, 8):  # chunks: 48 float32 pairs at 1024×768 would be ~0.9 GB
        k = min(8, n - s)
        a, b = distortion_pairs(k, h, w, seed=seed + s)
        for i in range(k):
            for arr, d in ((a[i], da), (b[i], db)):
                u8 = (arr * 255).round().astype(np.uint8).transpose(1, 2, 0)
                Image.fromarray(u8).save(d / f"{s + i:04d}.jpg", quality=QUALITY)
    done.write_text(f"{w}x{h}x{n}q{QUALITY}s{seed}")
    return da, db


def replicate_folders(src: tuple[Path, Path], root: Path, n: int) -> tuple[Path, Path]:
    """``n`` pairs made of copies of ``src``'s pairs (cycled): many files, little generation."""
    da, db = root / "A", root / "B"
    done = root / ".done"
    tag = f"{src[0]}:{n}"
    if done.is_file() and done.read_text() == tag:
        return da, db
    shutil.rmtree(root, ignore_errors=True)
    da.mkdir(parents=True)
    db.mkdir(parents=True)
    names = sorted(p.name for p in src[0].iterdir())
    for i in range(n):
        name = names[i % len(names)]
        shutil.copyfile(src[0] / name, da / f"{i:04d}.jpg")
        shutil.copyfile(src[1] / name, db / f"{i:04d}.jpg")
    done.write_text(tag)
    return da, db


# -- contenders -----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The child's environment: this checkout's sources first on the path."""
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def score_cmd(bundle: Path, da: Path, db: Path, out: Path, precision: str = "fp32") -> list[str]:
    return [sys.executable, "-m", "dps_fast.cli", "score", str(da), str(db), "-o", str(out),
            "--model", str(bundle), "--device", "cpu", "--precision", precision]  # fmt: skip


def reference_cmd(net: str, weights: Path, da: Path, db: Path, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "reference_loop.py"), str(da), str(db), str(out),
            "--net", net, "--weights", str(weights)]  # fmt: skip


def _runner(cmd: list[str], loop_rates: list[float] | None = None) -> Callable[[], None]:
    """A contender; with ``loop_rates``, each call's CLI summary pairs/s is appended to it."""
    env = _env()
    meta = Path(cmd[cmd.index("-o") + 1] + ".meta.json") if loop_rates is not None else None

    def run() -> None:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[1:3]} failed ({r.returncode}): {r.stderr[-2000:]}")
        if meta is not None and loop_rates is not None:
            loop_rates.append(json.loads(meta.read_text())["summary"]["pairs_per_s"])

    return run


def read_scores(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["a"]: float(row["score"]) for row in csv.DictReader(f)}


# -- in-process parts -----------------------------------------------------------------------


def in_process_parts(
    bundle: Path, da: Path, db: Path, rounds: int, precisions: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Per precision, per pair: decode time (one thread, both images) and engine time
    (pipeline batches). Each round decodes once and runs every precision's engine on it."""
    from dps_fast import Engine
    from dps_fast.io.decode import decode_image

    names = sorted(p.name for p in da.iterdir())
    engines = {p: Engine(bundle, device="cpu", precision=p) for p in precisions}
    a0 = decode_image(da / names[0])
    steps = {p: e.batch_len(*a0.shape[:2]) for p, e in engines.items()}
    dec: list[float] = []
    run: dict[str, list[float]] = {p: [] for p in precisions}
    for r in range(rounds + 1):  # the first round warms up (file cache, sessions)
        bench.wait_quiet(QUIET, 30.0)
        t0 = time.perf_counter()
        imgs = [(decode_image(da / n), decode_image(db / n)) for n in names]
        t_dec = time.perf_counter() - t0
        a = np.stack([x for x, _ in imgs])
        b = np.stack([y for _, y in imgs])
        if r:
            dec.append(t_dec / len(names))
        for p, eng in engines.items():
            step = steps[p]
            bench.wait_quiet(QUIET, 30.0)
            t0 = time.perf_counter()
            for s in range(0, len(names), step):
                eng.score(a[s : s + step], b[s : s + step])
            if r:
                run[p].append((time.perf_counter() - t0) / len(names))
    return {
        p: {
            "decode_s_per_pair": statistics.median(dec),
            "engine_s_per_pair": statistics.median(run[p]),
            "batch": steps[p],
        }
        for p in precisions
    }


# -- the benchmark --------------------------------------------------------------------------


def run_e2e(
    work: Path, rounds: int, pairs: int, precisions: tuple[str, ...] = ("fp32",)
) -> list[dict[str, Any]]:
    """One row per (size, precision); every precision and the reference loop interleaved."""
    int8 = "int8" in precisions
    bundle, weights = bench.prepare_bundle("lpips-alex", work / "cache", int8=int8)
    rows = []
    for w, h in SIZES:
        da, db = make_folders(work / f"jpeg-{w}x{h}-{pairs}", w, h, pairs)
        kb = statistics.mean(p.stat().st_size for p in da.iterdir()) / 1024
        out_r = work / f"out-ref-{w}x{h}.csv"
        outs = {p: work / f"out-engine-{p}-{w}x{h}.csv" for p in precisions}
        # every call's CLI summary pairs/s, warm-up and discarded rounds included
        loop_rates: dict[str, list[float]] = {p: [] for p in precisions}
        contenders = {
            f"dps-fast-{p}": _runner(score_cmd(bundle, da, db, outs[p], p), loop_rates[p])
            for p in precisions
        }
        contenders["reference-loop"] = _runner(reference_cmd("alex", weights, da, db, out_r))
        foreign: dict[str, list[float | None]] = {}
        log.info("e2e %dx%d: %d pairs, %.0f KB per JPEG", w, h, pairs, kb)
        times = bench.interleaved(contenders, rounds=rounds, warmup=1, pause=0.5,
                                  foreign=foreign, quiet=QUIET, retries=rounds,
                                  children=True)  # fmt: skip
        sr = read_scores(out_r)
        fg = foreign.get(bench.ROUND, [])
        t_ref = statistics.median(times["reference-loop"])
        all_parts = in_process_parts(bundle, da, db, rounds, precisions)
        for p in precisions:
            se = read_scores(outs[p])
            diff = max(abs(se[k] - sr[k]) for k in sr)
            parts = all_parts[p]
            t_e = statistics.median(times[f"dps-fast-{p}"])
            ideal = 1.0 / (parts["decode_s_per_pair"] + parts["engine_s_per_pair"])
            # The CLI's own timing (start-up excluded): median over all its calls.
            loop_rate = statistics.median(loop_rates[p])
            rows.append({
                "size": f"{w}x{h}", "precision": p, "pairs": pairs, "jpeg_kb": round(kb, 1),
                "rounds": len(times[f"dps-fast-{p}"]),
                "dps_fast_s": t_e, "reference_s": t_ref, "speedup": t_ref / t_e,
                "dps_fast_pairs_s": pairs / t_e, "reference_pairs_s": pairs / t_ref,
                "cli_loop_pairs_s": loop_rate,
                "decode_ms": parts["decode_s_per_pair"] * 1e3,
                "engine_ms": parts["engine_s_per_pair"] * 1e3, "engine_batch": parts["batch"],
                "ideal_pairs_s": ideal, "cli_loop_rates": loop_rates[p],
                "frac_ideal_process": pairs / t_e / ideal,
                "frac_ideal_loop": loop_rate / ideal,
                "max_abs_diff_vs_reference": diff,
                "times": {k: times[k] for k in (f"dps-fast-{p}", "reference-loop")},
                "parts": parts,
                "fgn_max": max((x for x in fg if x is not None), default=None), "fgn_rounds": fg,
            })  # fmt: skip
            log.info("%s", {k: v for k, v in rows[-1].items() if k not in ("times", "parts")})
    return rows


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a command, from /usr/bin/time -v or psutil polling."""
    t0 = time.perf_counter()
    if Path("/usr/bin/time").is_file():
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], env=_env(), capture_output=True,
                           text=True)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"failed ({r.returncode}): {r.stderr[-2000:]}")
        for line in r.stderr.splitlines():
            if "Maximum resident set size" in line:
                return int(line.rsplit(":", 1)[1]) / 1024, time.perf_counter() - t0
        raise RuntimeError("no 'Maximum resident set size' in /usr/bin/time's report")
    import psutil

    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    return peak / 2**20, time.perf_counter() - t0


def run_memory(work: Path) -> list[dict[str, Any]]:
    base = make_folders(work / "jpeg-1024x768-100", 1024, 768, 100, seed=1000)
    cases = [("lpips-alex", 100), ("lpips-alex", 500), ("lpips-vgg", 20)]
    rows = []
    for model, n in cases:
        bundle, _ = bench.prepare_bundle(model, work / "cache")
        da, db = base if n == 100 else replicate_folders(base, work / f"jpeg-1024x768-{n}", n)
        mb, wall = peak_rss_mb(score_cmd(bundle, da, db, work / f"mem-{model}-{n}.csv"))
        rows.append({"model": model, "pairs": n, "size": "1024x768", "peak_rss_mb": round(mb, 1),
                     "wall_s": round(wall, 2)})  # fmt: skip
        log.info("%s", rows[-1])
    return rows


def markdown(rows: list[dict[str, Any]], mem: list[dict[str, Any]]) -> str:
    out = []
    if rows:
        out += [
            "| size (W×H) | precision | pairs | JPEG KB | rounds | dps-fast s | reference s | "
            "speed-up | "
            "dps-fast pairs/s (process / CLI loop) | decode ms/pair | engine ms/pair | "
            "1/(decode+engine) pairs/s | e2e / ideal (process / loop) | max abs Δ score | fgn |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            fg = "-" if r["fgn_max"] is None else f"{r['fgn_max']:.2f}"
            out.append(
                f"| {r['size']} | {r['precision']} | {r['pairs']} | "
                f"{r['jpeg_kb']:.0f} | {r['rounds']} | "
                f"{r['dps_fast_s']:.2f} | {r['reference_s']:.2f} | {r['speedup']:.2f}× | "
                f"{r['dps_fast_pairs_s']:.1f} / {r['cli_loop_pairs_s']:.1f} | "
                f"{r['decode_ms']:.1f} | {r['engine_ms']:.1f} | {r['ideal_pairs_s']:.1f} | "
                f"{r['frac_ideal_process']:.0%} / {r['frac_ideal_loop']:.0%} | "
                f"{r['max_abs_diff_vs_reference']:.2g} | {fg} |"
            )
    if mem:
        out += ["", "| model | pairs (1024×768) | peak RSS MB | wall s |", "|---|---|---|---|"]
        out += [f"| {m['model']} | {m['pairs']} | {m['peak_rss_mb']:.0f} | {m['wall_s']:.1f} |"
                for m in mem]  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--memory", action="store_true", help="peak RSS runs instead of timing")
    ap.add_argument("--precisions", default="fp32,int8",
                    help="comma-separated engine precisions (int8: exported variant)")  # fmt: skip
    default_work = bench.default_cache_dir().with_name("dps-fast-e2e")
    ap.add_argument("--work", type=Path, default=default_work)
    ap.add_argument("--name", default=None, help="write results/NAME.{json,md}")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_before = Path("/proc/loadavg").read_text().strip()
    precisions = tuple(args.precisions.split(","))
    rows = [] if args.memory else run_e2e(args.work, args.rounds, args.pairs, precisions)
    mem = run_memory(args.work) if args.memory else []
    env = bench.environment()
    env.update(loadavg_before=load_before, loadavg_after=Path("/proc/loadavg").read_text().strip())
    md = markdown(rows, mem)
    print(md)
    if args.name:
        res = HERE / "results"
        res.mkdir(exist_ok=True)
        (res / f"{args.name}.json").write_text(
            json.dumps({"environment": env, "e2e": rows, "memory": mem}, indent=2) + "\n",
            encoding="utf-8",
        )
        head = f"# {args.name}: {env['cpu_model']}, {env['cpu_count']} cores, {env['date']}\n\n"
        (res / f"{args.name}.md").write_text(head + md, encoding="utf-8")


if __name__ == "__main__":
    main()
