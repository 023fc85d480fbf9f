"""GPU check for the H100 machine: CUDA parity with the lpips package, then a throughput table.

Run on the GPU machine (onnxruntime-gpu staged by ../shared/device/ort-gpu-stage.sh):

    PYTHONPATH=src:$PYTHONPATH python3 benchmarks/gpu_check.py

Backbone weights are seeded random (no network there); lin weights are the lpips wheel's.
Prints the parity results, then the table last. ``--dry-run`` runs tiny cases on the CPU to
check the script itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dps_fast import Engine
from dps_fast.export import export_model
from dps_fast.samples import distortion_pairs

NETS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
CASES = [("alex", 64, 64, 256), ("alex", 256, 256, 64), ("alex", 768, 1024, 8),
         ("vgg", 256, 256, 16), ("squeeze", 256, 256, 64)]  # fmt: skip


def log(*a: object) -> None:
    print(*a, flush=True)


def make_weights(arch: str, root: Path) -> Path:
    torch.manual_seed(0)
    sd = torchvision.models.get_model(arch, weights=None).state_dict()
    sd = {k: v for k, v in sd.items() if k.startswith("features.")}
    p = root / f"{arch}.pth"
    torch.save(sd, p)
    return p


def lpips_ref(net: str, weights: Path, device: str):
    import lpips

    m = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    sd = torch.load(weights, weights_only=True)
    m.net.load_state_dict({k: sd["features." + k.split(".", 1)[1]] for k in m.net.state_dict()})
    return m.to(device)


def timed(fn: Callable[[], object], sync: Callable[[], None], min_s: float = 0.25) -> float:
    """Seconds per call: repeat until ``min_s`` has passed."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    res: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, f in contenders.items():
            res[k].append(f())
            time.sleep(0.05)
    return {k: statistics.median(v) for k, v in res.items()}


def bench_case(net, h, w, n, eng32c, eng, eng16c, eng16, weights, dev, tdev, sync, args) -> dict:
    """pairs/s of each contender on one case, interleaved."""
    import onnxruntime as ort

    a, b = distortion_pairs(n, h, w, seed=1)
    a8 = (a * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    b8 = (b * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    ta, tb = torch.from_numpy(a).to(tdev), torch.from_numpy(b).to(tdev)
    ta8, tb8 = torch.from_numpy(a8).to(tdev), torch.from_numpy(b8).to(tdev)
    ref = lpips_ref(net, weights, str(tdev))
    ref16 = lpips_ref(net, weights, str(tdev)).half()
    ta16, tb16 = ta.half(), tb.half()

    def bound(engine):  # the pair graph with float inputs and the output on the device
        sess, _ = engine._session("pair")
        io = sess.io_binding()
        io.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, dev, 0))
        io.bind_ortvalue_input("b", ort.OrtValue.ortvalue_from_numpy(b, dev, 0))
        io.bind_output("per_tap", dev)
        return lambda: timed(lambda: sess.run_with_iobinding(io), io.synchronize_outputs)

    def t_fp32() -> None:
        with torch.inference_mode():
            ref(ta, tb, normalize=True)

    def t_fp16() -> None:
        with torch.inference_mode():
            ref16(ta16, tb16, normalize=True)

    contenders = {
        "torch fp32": lambda: timed(t_fp32, sync),
        "torch fp16": lambda: timed(t_fp16, sync),
        "engine f32 nchw on-device": bound(eng32c),
        "engine f32 on-device": bound(eng),  # the default: NHWC convolutions
        "engine fp16 nchw on-device": bound(eng16c),
        "engine fp16 on-device": bound(eng16),
        # the public API on device tensors: uint8 CUDA arrays bound in place, scores to host
        "engine fp16 cuda-u8 API": lambda: timed(lambda: eng16.score(ta8, tb8), lambda: None),
    }
    med = interleaved(contenders, 2 if args.dry_run else args.rounds)
    row: dict = {"case": f"{net} {h}x{w} x{n}"}
    row.update({k: n / v for k, v in med.items()})
    return row


def end_to_end(root, eng16, eng32, dry, args, tdev, sync) -> dict:
    """``score`` on a generated JPEG folder pair: CPU decode vs GPU decode vs pre-decoded."""
    import traceback

    from PIL import Image

    from dps_fast.io.decode import decode_image

    out: dict = {}
    npairs = 8 if dry else args.e2e_pairs
    eh, ew = (96, 128) if dry else (768, 1024)
    da, db = root / "A", root / "B"
    da.mkdir()
    db.mkdir()
    base_a, base_b = distortion_pairs(8, eh, ew, seed=9)

    def write(i: int) -> None:
        for arr, d in ((base_a[i % 8], da), (base_b[i % 8], db)):
            img = (np.roll(arr, 7 * i, axis=2).transpose(1, 2, 0) * 255).round().astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)

    workers = os.cpu_count() or 4
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, range(npairs)))
    files = sorted(da.iterdir()) + sorted(db.iterdir())
    mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
    log(f"e2e folder: {npairs} pairs of {ew}x{eh} JPEG (q90, {mb:.2f} MB each)")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode_image, files))
    out["CPU decode only, pairs/s"] = npairs / (time.perf_counter() - t0)

    def e2e(engine, decode: str, label: str = "") -> tuple[float, list]:
        from dps_fast.io.pairing import pair_dirs
        from dps_fast.pipeline import PairScorer

        rates, recs, timings = [], [], {}
        for _ in range(1 if dry else 3):  # the first run also pays warm-up for new shapes
            t0 = time.perf_counter()
            scorer = PairScorer(engine, workers=workers, decode=decode)
            recs = list(scorer.run(pair_dirs(da, db).pairs))
            rates.append(npairs / (time.perf_counter() - t0))
            errs = [r for r in recs if r["error"]]
            assert not errs, errs[:2]
            timings = scorer.timings
        log(f"  e2e {decode} decode {label}, {engine.precision}: runs "
            f"{[round(r) for r in rates]} pairs/s; last run's stages (s): "
            + ", ".join(f"{k} {v:.3f}" for k, v in timings.items()))  # fmt: skip
        return max(rates), recs

    cpu_rate, cpu_recs = e2e(eng16, "cpu")
    out["e2e score fp16, CPU decode, pairs/s"] = cpu_rate
    out["  = of CPU decode-bound"] = f"{cpu_rate / out['CPU decode only, pairs/s']:.0%}"
    if dry:
        return out
    step = eng16.batch_len(eh, ew)
    try:  # pre-decoded device tensors of the same shapes: the engine's own ceiling here
        imgs = [decode_image(f) for f in files[: 2 * 8]]
        ua = np.stack([imgs[i % 8] for i in range(step)])
        ub = np.stack([imgs[8 + i % 8] for i in range(step)])
        ta, tb = torch.from_numpy(ua).to(tdev), torch.from_numpy(ub).to(tdev)
        pre = step / timed(lambda: eng16.score(ta, tb), lambda: None, min_s=1.0)
        out[f"engine fp16 on pre-decoded device uint8 (batches of {step}), pairs/s"] = pre
    except Exception:
        traceback.print_exc()
        pre = float("nan")
    try:
        from dps_fast.io.gpu_decode import GpuJpegDecoder

        dec = GpuJpegDecoder()
        datas = [f.read_bytes() for f in files]
        assert all(dec.accepts(d) for d in datas[:4])
        got = dec.decode(datas[:16])
        diffs = [
            int(np.abs(np.asarray(g.cpu()).astype(int) - decode_image(f)).max()) if g else -1
            for g, f in zip(got, files[:16], strict=True)
        ]
        out["GPU vs Pillow decode, max pixel |Δ| (16 images)"] = max(diffs)
        for _ in range(2):
            t0 = time.perf_counter()
            for i in range(0, len(datas), 2 * step):
                ims = dec.decode(datas[i : i + 2 * step])
                dec.stack(ims)
            gpu_dec = npairs / (time.perf_counter() - t0)
        out[f"GPU decode + pack only (batches of {2 * step}), pairs/s"] = gpu_dec
    except Exception:
        traceback.print_exc()
    try:
        gpu_rate, gpu_recs = e2e(eng16, "gpu")
        out["e2e score fp16, GPU decode, pairs/s"] = gpu_rate
        out["  = of engine on pre-decoded"] = f"{gpu_rate / pre:.0%}"
        d = [abs(c["score"] - g["score"]) for c, g in zip(cpu_recs, gpu_recs, strict=True)]
        rel = max(x / max(c["score"], 1e-12) for x, c in zip(d, cpu_recs, strict=True))
        out["scores GPU vs CPU decode, max |Δ|"] = f"{max(d):.3g} (relative {rel:.3g})"
        import dps_fast.io.gpu_decode as gd

        for env, label in [
            ({"DPS_FAST_GPU_DECODE_REUSE": "1"}, "image buffers reused"),
            ({"DPS_FAST_NVIMGCODEC_BACKEND": "hw"}, "hardware decoder first"),
            ({"DPS_FAST_NVIMGCODEC_BACKEND": "gpu"}, "CUDA decoder first"),
            ({"DPS_FAST_NVIMGCODEC_THREADS": "4"}, "4 decoder CPU threads"),
        ]:
            gd._shared.clear()  # a decoder made with these settings
            os.environ.update(env)
            try:
                rate, _ = e2e(eng16, "gpu", f"({label})")
                out[f"e2e score fp16, GPU decode, {label}, pairs/s"] = rate
            except Exception:
                traceback.print_exc()
            for k in env:
                del os.environ[k]
        gd._shared.clear()
        gpu32, _ = e2e(eng32, "gpu")
        out["e2e score fp32, GPU decode, pairs/s"] = gpu32
    except Exception:
        traceback.print_exc()
    try:  # the command line as a user runs it: a whole process, start-up included
        import subprocess

        cmd = [sys.executable, "-c", "from dps_fast.cli import main; main()", "score",
               str(da), str(db), "-m", str(root / "alex"), "--precision", "fp16",
               "--decode", "gpu", "-o", str(root / "cli.csv")]  # fmt: skip
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
        summary = [ln for ln in res.stderr.splitlines() if "pairs/s" in ln or "summary" in ln]
        log(f"  CLI: exit {res.returncode}, {wall:.1f} s wall for {npairs} pairs; {summary}")
        out["CLI dps-fast score --decode gpu fp16: process wall s"] = wall
    except Exception:
        traceback.print_exc()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU run to check the script")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--e2e-pairs", type=int, default=512)
    ap.add_argument("--sections", default="parity,table,matrix,e2e", help="comma list to run")
    args = ap.parse_args()
    dry = args.dry_run
    dev = "cpu" if dry else "cuda"
    tdev = torch.device("cuda" if not dry else "cpu")
    sync = torch.cuda.synchronize if not dry else (lambda: None)
    import onnxruntime as ort

    log(f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"providers {ort.get_available_providers()}")  # fmt: skip
    if not dry:
        log(f"GPU: {torch.cuda.get_device_name(0)}; TF32 (cuDNN conv) "
            f"{torch.backends.cudnn.allow_tf32}")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    bundles, weights = {}, {}
    for net, arch in NETS.items():
        weights[net] = make_weights(arch, root)
        t0 = time.perf_counter()
        bundles[net] = export_model(f"lpips-{net}", weights=weights[net], out=root / net, fp16=True)
        log(f"exported lpips-{net} in {time.perf_counter() - t0:.1f} s")
    engines = {n: Engine(b, device=dev) for n, b in bundles.items()}
    engines16 = {n: Engine(b, device=dev, precision="fp16") for n, b in bundles.items()}

    def with_layout(nhwc: str, precision: str) -> dict:
        os.environ["DPS_FAST_CUDA_PREFER_NHWC"] = nhwc  # read when a session is made
        out = {n: Engine(b, device=dev, precision=precision) for n, b in bundles.items()}
        for e in out.values():
            e._session("pair"), e._session("pair", True)
        del os.environ["DPS_FAST_CUDA_PREFER_NHWC"]
        return out

    sections = set(args.sections.split(","))
    table = "table" in sections
    engines32c = with_layout("0", "fp32") if table else {}
    engines16c = with_layout("0", "fp16") if table else {}
    for n, e in engines.items():
        log(f"engine {n}: device {e.device}, providers {e.info['providers']}")

    # ---- parity on the device (TF32 allowed: relative ≤ 1e-3) ---------------------------
    failures = []
    for net in NETS if "parity" in sections else []:
        ref = lpips_ref(net, weights[net], str(tdev))
        for h, w in [(97, 131), (256, 256)]:
            a, b = distortion_pairs(8, h, w, seed=h + w)
            with torch.inference_mode():
                r = ref(torch.from_numpy(a).to(tdev), torch.from_numpy(b).to(tdev),
                        normalize=True).reshape(-1).float().cpu().numpy()  # fmt: skip
            g = engines[net].score(a, b)
            rel = float(np.abs(g - r).max() / np.abs(r).max())
            ok = rel <= 1e-3
            log(
                f"parity lpips-{net} {h}x{w}: max|Δ| {np.abs(g - r).max():.3g}, relative "
                f"{rel:.3g} {'ok' if ok else 'FAIL'} (scores {r.min():.4f}…{r.max():.4f})"
            )
            if not ok:
                failures.append(f"{net} {h}x{w}: {rel:.3g}")

    # ---- fp16 vs the float32 reference: relative error and 2AFC flips -----------------------
    from dps_fast.samples import box_blur

    rng = np.random.default_rng(7)
    for net in NETS if "parity" in sections else []:
        ref = lpips_ref(net, weights[net], str(tdev))
        x, _ = distortion_pairs(48, 128, 128, seed=21)
        d1 = np.clip(
            x
            + rng.normal(0, 1, x.shape).astype(np.float32)
            * rng.uniform(0.02, 0.12, (48, 1, 1, 1)).astype(np.float32),
            0,
            1,
        )
        d2 = np.stack(
            [box_blur(i, int(k)) for i, k in zip(x, rng.choice([3, 5, 7], 48), strict=True)]
        )
        tx = torch.from_numpy(x).to(tdev)
        with torch.inference_mode():
            r1 = ref(tx, torch.from_numpy(d1).to(tdev), normalize=True).reshape(-1).cpu().numpy()
            r2 = ref(tx, torch.from_numpy(d2).to(tdev), normalize=True).reshape(-1).cpu().numpy()
        g1, g2 = engines16[net].score(x, d1), engines16[net].score(x, d2)
        rel = max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in ((g1, r1), (g2, r2)))
        flips = int(np.sum(np.sign(r1 - r2) != np.sign(g1 - g2)))
        log(f"fp16 lpips-{net} 128x128: relative {rel:.3g} vs torch fp32, 2AFC flips {flips}/48")
        if rel > 1e-2:
            failures.append(f"fp16 {net}: {rel:.3g}")

    # ---- throughput ------------------------------------------------------------------------
    rows = []
    cases = [(n, 64, 64, 4) for n in ("alex", "squeeze")] if dry else CASES
    for net, h, w, n in cases if table else []:
        engs = (engines32c[net], engines[net], engines16c[net], engines16[net])
        row = bench_case(net, h, w, n, *engs, weights[net], dev, tdev, sync, args)
        rows.append(row)
        log("  ".join(f"{k}: {v:.0f}" if isinstance(v, float) else v for k, v in row.items()))

    # ---- all-pairs matrix: features kept on the device vs host features ---------------------
    if "matrix" in sections:
        import dps_fast.engine.engine as em

        for net in ("alex", "squeeze"):
            eng = engines[net]
            x, _ = distortion_pairs(8 if dry else 96, 256, 256, seed=5)
            i, j = np.triu_indices(len(x), 1)
            t0 = time.perf_counter()
            m = eng.pairwise(x)
            t_dev = time.perf_counter() - t0
            want = eng.score(x[i], x[j])
            rel = float(np.abs(m[i, j] - want).max() / np.abs(want).max())
            budget, em.DEVICE_FEATURE_BYTES = em.DEVICE_FEATURE_BYTES, 0  # force host features
            t0 = time.perf_counter()
            m_host = eng.pairwise(x)
            t_host = time.perf_counter() - t0
            em.DEVICE_FEATURE_BYTES = budget
            log(f"matrix lpips-{net} {len(x)} images 256x256 ({len(i)} pairs): device features "
                f"{t_dev:.2f} s, host features {t_host:.2f} s; vs pair scores relative {rel:.2g}, "
                f"device vs host max |Δ| {np.abs(m - m_host).max():.2g}")  # fmt: skip
            if rel > 1e-3:
                failures.append(f"matrix {net}: {rel:.3g}")

    # ---- end to end: dps-fast score on a JPEG folder pair, CPU and GPU decode ---------------
    e2e = {}
    if "e2e" in sections:
        e2e = end_to_end(root, engines16["alex"], engines["alex"], dry, args, tdev, sync)

    # ---- table last --------------------------------------------------------------------------
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = [max(len(k), 10) for k in keys]
    log("\n" + " | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for r in rows:
        cells = [
            "-" if k not in r else r[k] if isinstance(r[k], str) else f"{r[k]:,.0f}" for k in keys
        ]
        log(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    for k, v in e2e.items():
        log(f"{k}: {v:,.4g}" if isinstance(v, float) else f"{k}: {v}")
    if failures:
        log("PARITY FAILURES: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
