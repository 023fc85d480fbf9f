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


def bench_case(net, h, w, n, eng, eng16, weights, dev, tdev, sync, args) -> dict:
    """pairs/s of each contender on one case, interleaved."""
    import onnxruntime as ort

    a, b = distortion_pairs(n, h, w, seed=1)
    a8 = (a * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    b8 = (b * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
    ta, tb = torch.from_numpy(a).to(tdev), torch.from_numpy(b).to(tdev)
    ref = lpips_ref(net, weights, str(tdev))
    ref16 = lpips_ref(net, weights, str(tdev)).half()
    ta16, tb16 = ta.half(), tb.half()
    sess, _ = eng._session("pair")
    io = sess.io_binding()
    io.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, dev, 0))
    io.bind_ortvalue_input("b", ort.OrtValue.ortvalue_from_numpy(b, dev, 0))
    io.bind_output("per_tap", dev)

    def t_fp32() -> None:
        with torch.inference_mode():
            ref(ta, tb, normalize=True)

    def t_fp16() -> None:
        with torch.inference_mode():
            ref16(ta16, tb16, normalize=True)

    def on_device() -> None:
        sess.run_with_iobinding(io)

    contenders = {
        "torch fp32": lambda: timed(t_fp32, sync),
        "torch fp16": lambda: timed(t_fp16, sync),
        "engine f32 host": lambda: timed(lambda: eng.score(a, b), lambda: None),
        "engine u8 host": lambda: timed(lambda: eng.score(a8, b8), lambda: None),
        "engine f32 on-device": lambda: timed(on_device, io.synchronize_outputs),
    }
    sess16, _ = eng16._session("pair")
    io16 = sess16.io_binding()
    io16.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, dev, 0))
    io16.bind_ortvalue_input("b", ort.OrtValue.ortvalue_from_numpy(b, dev, 0))
    io16.bind_output("per_tap", dev)
    contenders["engine fp16 u8 host"] = lambda: timed(lambda: eng16.score(a8, b8), lambda: None)
    contenders["engine fp16 on-device"] = lambda: timed(
        lambda: sess16.run_with_iobinding(io16), io16.synchronize_outputs
    )
    med = interleaved(contenders, 2 if args.dry_run else args.rounds)
    row: dict = {"case": f"{net} {h}x{w} x{n}"}
    row.update({k: n / v for k, v in med.items()})
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="tiny CPU run to check the script")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--e2e-pairs", type=int, default=256)
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
    for n, e in engines.items():
        log(f"engine {n}: device {e.device}, providers {e.info['providers']}")

    # ---- parity on the device (TF32 allowed: relative ≤ 1e-3) ---------------------------
    failures = []
    for net in NETS:
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
    for net in NETS:
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
    for net, h, w, n in cases:
        row = bench_case(
            net, h, w, n, engines[net], engines16[net], weights[net], dev, tdev, sync, args
        )
        rows.append(row)
        log("  ".join(f"{k}: {v:.0f}" if isinstance(v, float) else v for k, v in row.items()))

    # ---- end to end: dps-fast score on a JPEG folder pair, CPU decode --------------------
    from PIL import Image

    from dps_fast.io.decode import decode_image
    from dps_fast.pipeline import score_dirs

    npairs = 8 if dry else args.e2e_pairs
    eh, ew = (96, 128) if dry else (768, 1024)
    da, db = root / "A", root / "B"
    da.mkdir()
    db.mkdir()
    base_a, base_b = distortion_pairs(8, eh, ew, seed=9)

    def write(i: int) -> None:
        for arr, d in ((base_a[i % 8], da), (base_b[i % 8], db)):
            img = (np.roll(arr, i, axis=2).transpose(1, 2, 0) * 255).round().astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)

    workers = os.cpu_count() or 4
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, range(npairs)))
    files = sorted(da.iterdir()) + sorted(db.iterdir())
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode_image, files))
    decode_rate = npairs / (time.perf_counter() - t0)  # pairs/s (two images per pair)
    e2e = []
    for _ in range(2):  # the first run also pays session warm-up for new shapes
        t0 = time.perf_counter()
        recs = list(score_dirs(da, db, engine=engines16["alex"], workers=workers))
        assert all(not r["error"] for r in recs), recs[:2]
        e2e.append(npairs / (time.perf_counter() - t0))
    best = max(e2e)
    imgs = [decode_image(f) for f in files[:16]]
    ua, ub = np.stack(imgs[:8]), np.stack(imgs[8:16])
    step = engines16["alex"].batch_len(eh, ew)
    ua = np.concatenate([ua] * max(1, step // 8))[:step]
    ub = np.concatenate([ub] * max(1, step // 8))[:step]
    pre = len(ua) / timed(lambda: engines16["alex"].score(ua, ub), lambda: None)
    log(
        f"e2e {npairs} JPEG pairs {ew}x{eh}: decode-only {decode_rate:.0f} pairs/s "
        f"({workers} threads), score {best:.0f} pairs/s = {best / decode_rate:.0%} of "
        f"decode-bound; engine on pre-decoded uint8 batches {pre:.0f} pairs/s"
    )

    # ---- table last --------------------------------------------------------------------------
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = [max(len(k), 10) for k in keys]
    log("\n" + " | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for r in rows:
        cells = [
            "-" if k not in r else r[k] if isinstance(r[k], str) else f"{r[k]:,.0f}" for k in keys
        ]
        log(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    log(f"end-to-end score (lpips-alex fp16, CPU decode, {ew}x{eh} JPEG): {best:.0f} pairs/s; "
        f"decode-bound {decode_rate:.0f} pairs/s")  # fmt: skip
    if failures:
        log("PARITY FAILURES: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
