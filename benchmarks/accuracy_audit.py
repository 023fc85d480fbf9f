"""Worst relative error of every distance head against float64, per family and image size.

    python benchmarks/accuracy_audit.py [--name NAME] [--max-channels 8] [--sizes 1024x768,…]

The long reductions of the heads — spatial means over every position of a tap (LPIPS, DPS,
DISTS' moments), DISTS' structure term, LPIPS' upsampled spatial maps — are measured on the
same float32 features that a float64 evaluation of the reference formula gets, so the error is
the heads' own. Features: ``dps_fast.samples.photo_features`` (tap-like maps of a photo-like
image and its JPEG q55 copy, the hardest case: near-identical maps with large means), plus the
same with a 5×5 blur and with noise, at each family's real tap strides (probed from the trunk),
so every reduction has its real length; channels are capped at ``--max-channels`` per tap to
keep 2048×1536 in memory (the spatial reductions are per channel; LPIPS' channel sums are
at most 512 long).

Contenders: the head graph (``dps_fast.export.modules.Head`` exported as the bundles do, in
ONNX Runtime on the CPU), the NumPy head (``dps_fast.engine.distances``, the engine's CPU
path), and for DISTS the graph as it was before issue 18 (``before``). Scores are the sum (LPIPS,
DISTS) or mean (DPS) over taps; the float64 reference follows ``lpips`` / ``DISTS_pytorch``
(DISTS with E[xy] − μxμy, as the package does). Writes JSON and markdown to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dps_fast import bench
from dps_fast.engine import distances
from dps_fast.export.exporter import _export
from dps_fast.export.modules import Head, build_trunk
from dps_fast.export.weights import build_backbone, dists_head_weights, lpips_head_weights
from dps_fast.registry import get_model
from dps_fast.samples import box_blur, photo_like

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dists_speed import HeadBefore

HERE = Path(__file__).resolve().parent
FAMILIES = [
    "lpips-alex",
    "lpips-squeeze",
    "lpips-vgg",
    "lpips-vgg-baseline",
    "dists",
    "dps-resnet18",
]
SIZES = [(256, 256), (512, 512), (768, 1024), (1536, 2048)]


def strides(name: str) -> list[int]:
    """Each tap's stride, probed from the (randomly initialised) trunk at 224²."""
    spec = get_model(name)
    trunk = build_trunk(spec, build_backbone(spec.arch))
    with torch.inference_mode():
        outs = trunk(torch.rand(1, 3, 224, 224))
    return [2 ** max(0, round(math.log2(224 / o.shape[2]))) for o in outs]


def _tap(
    img: np.ndarray, g: tuple[int, int, int, int], mix: np.ndarray, off: np.ndarray
) -> np.ndarray:
    """A ReLU'd channel mix plus offset of ``img`` area-averaged to (g[0], g[2])."""
    x = img[: g[0] * g[1], : g[2] * g[3]].astype(np.float32) / 255
    x = x.reshape(*g, 3).mean(axis=(1, 3))
    return np.maximum(np.einsum("kc,hwc->khw", mix, x) + off, 0)


def features(
    taps: list[tuple[int, int]], h: int, w: int, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """[3, C, h/s, w/s] per tap for a against JPEG q55, 5×5 blur and noise of it."""
    from dps_fast.samples import jpeg_roundtrip

    a = photo_like(h, w, seed)
    blur = box_blur(a.transpose(2, 0, 1).astype(np.float32), 5).transpose(1, 2, 0)
    rng = np.random.default_rng(seed)
    noisy = a.astype(np.float32) + rng.normal(0, 25, a.shape).astype(np.float32)
    bs = [jpeg_roundtrip(a, 55), blur, noisy]
    bs = [np.clip(np.round(x), 0, 255).astype(np.uint8) for x in bs]
    fa, fb = [], []
    for c, s in taps:
        hs, ws = max(1, h // s), max(1, w // s)
        sh, sw = h // hs, w // ws
        mix = rng.normal(0, 1, (c, 3)).astype(np.float32)
        off = rng.uniform(0, 2, (c, 1, 1)).astype(np.float32)
        g = (hs, sh, ws, sw)
        ta = _tap(a, g, mix, off)
        fa.append(np.stack([ta, ta, ta]))
        fb.append(np.stack([_tap(b, g, mix, off) for b in bs]))
    return fa, fb


def lpips_f64(fa, fb, lins) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per tap [N, K] and per-tap maps of ``lpips`` in float64 (row blocks keep memory low)."""
    cols, maps = [], []
    for k, (x, y) in enumerate(zip(fa, fb, strict=True)):
        n, _, h, w = x.shape
        m = np.empty((n, h, w))
        for r in range(0, h, 64):
            xa = x[:, :, r : r + 64].astype(np.float64)
            xb = y[:, :, r : r + 64].astype(np.float64)
            ua = xa / (np.sqrt((xa * xa).sum(1, keepdims=True)) + 1e-10)
            ub = xb / (np.sqrt((xb * xb).sum(1, keepdims=True)) + 1e-10)
            d = (ua - ub) ** 2
            m[:, r : r + 64] = d.sum(1) if lins is None else np.einsum("nchw,c->nhw", d, lins[k])
        cols.append(m.mean(axis=(1, 2)))
        maps.append(m)
    return np.stack(cols, 1), maps


def run(name: str, h: int, w: int, cap: int, tmp: Path) -> dict[str, Any]:
    spec = get_model(name)
    st = strides(name)
    chans = [min(cap, t.channels) for t in spec.taps]
    fa, fb = features(list(zip(chans, st, strict=True)), h, w, seed=7)
    head_w: dict[str, torch.Tensor]
    if spec.head == "lpips":
        full, _ = lpips_head_weights(spec)
        head_w = {f"lin{k}": full[f"lin{k}"].reshape(-1)[:c] for k, c in enumerate(chans)}
    elif spec.head == "dists":
        full, _ = dists_head_weights()
        al, be = full["alpha"].reshape(-1), full["beta"].reshape(-1)
        offs = np.cumsum([0] + [t.channels for t in spec.taps])
        idx = np.concatenate([np.arange(o, o + c) for o, c in zip(offs, chans, strict=False)])
        head_w = {"alpha": al[idx].reshape(1, -1, 1, 1), "beta": be[idx].reshape(1, -1, 1, 1)}
    else:
        head_w = {}
    npw = {k: v.numpy().astype(np.float32) for k, v in head_w.items()}
    # float64 reference
    maps64 = None
    if spec.head == "dists":
        a64 = npw["alpha"].reshape(-1).astype(np.float64)
        b64 = npw["beta"].reshape(-1).astype(np.float64)
        tot = a64.sum() + b64.sum()
        a64, b64 = a64 / tot, b64 / tot
        cols, off = [], 0
        for x, y in zip(fa, fb, strict=True):
            c = x.shape[1]
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            mx, my = x64.mean((2, 3)), y64.mean((2, 3))
            vx = ((x64 - mx[..., None, None]) ** 2).mean((2, 3))
            vy = ((y64 - my[..., None, None]) ** 2).mean((2, 3))
            cxy = (x64 * y64).mean((2, 3)) - mx * my
            s1 = (2 * mx * my + 1e-6) / (mx**2 + my**2 + 1e-6)
            s2 = (2 * cxy + 1e-6) / (vx + vy + 1e-6)
            cols.append((a64[off : off + c] * (1 - s1) + b64[off : off + c] * (1 - s2)).sum(1))
            off += c
        per64 = np.stack(cols, 1)
    else:
        lins = (
            [npw[f"lin{k}"].astype(np.float64) for k in range(len(chans))]
            if spec.head == "lpips"
            else None
        )
        per64, maps64 = lpips_f64(fa, fb, lins)
    reduce = np.mean if spec.reduce == "mean" else np.sum
    ref = reduce(per64, axis=1)
    out: dict[str, Any] = {"model": name, "h": h, "w": w, "channels": chans, "strides": st}
    out["ref_scores"] = ref.tolist()

    def rel(got: np.ndarray) -> float:
        return float(np.max(np.abs(got.astype(np.float64) - ref) / np.abs(ref)))

    # NumPy head (the engine's CPU path)
    per_np = distances.per_tap_distance(spec.head, fa, fb, npw)
    out["numpy"] = rel(reduce(per_np.astype(np.float64), axis=1))
    # head graph, after (and for DISTS before) the fix
    k = len(chans)
    names = [f"a_tap{i}" for i in range(k)] + [f"b_tap{i}" for i in range(k)]
    ex = tuple(torch.rand(1, c, 4, 4) for c in chans) * 2
    dyn = {n: {0: "N", 2: f"h{i % k}", 3: f"w{i % k}"} for i, n in enumerate(names)}
    dyn["per_tap"] = {0: "N"}
    graphs = {"graph": Head}
    if spec.head == "dists":
        graphs["graph_before"] = HeadBefore
    import onnxruntime as ort

    for label, cls in graphs.items():
        p = tmp / f"{label}.onnx"
        _export(cls(spec, chans, head_w).eval(), ex, p, names, ["per_tap"], dyn)
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        per = s.run(None, dict(zip(names, fa + fb, strict=True)))[0]
        out[label] = rel(reduce(per.astype(np.float64), axis=1))
    if maps64 is not None:  # LPIPS spatial maps: the NumPy kernel's map per tap, not upsampled
        lins32 = None if spec.head != "lpips" else [npw[f"lin{i}"] for i in range(k)]
        worst = 0.0
        for i in range(k):
            m = distances.lpips_tap_map(fa[i], fb[i], None if lins32 is None else lins32[i])
            worst = max(worst, float(np.max(np.abs(m - maps64[i])) / np.max(np.abs(maps64[i]))))
        out["numpy_map"] = worst
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.1e}"

    out = [
        "| model | size | graph | NumPy head | NumPy maps | DISTS graph before the fix |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['w']}×{r['h']} | {f(r['graph'])} | {f(r['numpy'])} | "
            f"{f(r.get('numpy_map'))} | {f(r.get('graph_before'))} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=time.strftime("%Y-%m-%d") + "-cpu-accuracy")
    ap.add_argument("--max-channels", type=int, default=8)
    ap.add_argument("--models", default=",".join(FAMILIES))
    ap.add_argument("--sizes", default=",".join(f"{w}x{h}" for h, w in SIZES))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dps-audit-") as td:
        for name in args.models.split(","):
            for h, w in sizes:
                rows.append(run(name, h, w, args.max_channels, Path(td)))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    env = bench.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"environment": env, "max_channels": args.max_channels, "rows": rows}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    doc = __doc__.split("\n\n", 2)[2]
    text = (
        f"# Heads against float64, worst relative error over 3 pairs (JPEG q55, blur, noise), "
        f"{env['date']} — {env['cpu_model']}\n\n{doc}\n{markdown(rows)}\n"
    )
    (args.out / f"{args.name}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
