"""Pure NumPy distances on tap features: the reference, the CPU path and cached features.

Every function takes lists of K float32 arrays [N, C_k, h_k, w_k] for images a and b and
returns per-tap values [N, K] (or maps). They mirror the reference packages' numerics
(docs/numerics.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

LPIPS_EPS = 1e-10
DISTS_C1 = 1e-6
DISTS_C2 = 1e-6

Feats = Sequence[np.ndarray]


def unit_normalize(f: np.ndarray) -> np.ndarray:
    """``f / (sqrt(Σ_c f²) + 1e-10)`` over the channel axis (LPIPS' normalize_tensor)."""
    norm = np.sqrt(np.einsum("nchw,nchw->nhw", f, f, dtype=np.float32))[:, None]
    norm += np.float32(LPIPS_EPS)
    return f / norm


def _sq_diff(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    d = unit_normalize(fa)
    d -= unit_normalize(fb)
    np.square(d, out=d)
    return d


def lpips_tap_map(fa: np.ndarray, fb: np.ndarray, lin: np.ndarray | None) -> np.ndarray:
    """[N, h, w] map of one tap: lin-weighted (or plain) channel sum of squared differences."""
    d = _sq_diff(fa, fb)
    if lin is None:
        return d.sum(axis=1, dtype=np.float32)
    return np.einsum("nchw,c->nhw", d, lin.astype(np.float32, copy=False), dtype=np.float32)


# The blocked LPIPS head works on pieces of about this many bytes per side, so that the
# chain normalise → subtract → square → weight stays in the core's L2 cache (why, with the
# figures: benchmarks/results/engine-defaults.md).
BLOCK_BYTES = 1 << 20


Item = tuple[int, int, int, int, int]


def _blocks(shapes: Sequence[tuple[int, ...]], block_bytes: int) -> list[Item]:
    """Work items ``(tap, n0, n1, p0, p1)``: images n0..n1, flat positions p0..p1 of a tap."""
    items: list[Item] = []
    for t, (n, c, h, w) in enumerate(shapes):
        p = h * w
        per_pos = c * 4
        span = block_bytes // per_pos
        if span >= p:  # whole maps: several images per item
            g = max(1, block_bytes // (per_pos * p))
            items += [(t, i, min(n, i + g), 0, p) for i in range(0, n, g)]
        else:
            span = max(64, span)
            items += [
                (t, i, i + 1, q, min(p, q + span)) for i in range(n) for q in range(0, p, span)
            ]
    return items


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 work arrays of ``shape``, kept per thread and reused: fresh megabyte arrays
    cost page faults every piece (figures: benchmarks/results/engine-defaults.md)."""
    size = int(np.prod(shape))
    if size * 4 > 4 * BLOCK_BYTES:  # pieces far over the block size are not kept
        return np.empty(shape, np.float32), np.empty(shape, np.float32)
    bufs: tuple[np.ndarray, np.ndarray] | None = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].size < size:
        bufs = _SCRATCH.bufs = (np.empty(size, np.float32), np.empty(size, np.float32))
    return bufs[0][:size].reshape(shape), bufs[1][:size].reshape(shape)


def _lpips_block_sums(
    fa: Feats, fb: Feats, lins: Sequence[np.ndarray] | None, items: Sequence[Item]
) -> list[np.ndarray]:
    """For each item, the per-image sum over its positions of the (weighted) squared difference."""
    out = []
    eps = np.float32(LPIPS_EPS)
    for t, n0, n1, p0, p1 in items:
        c = fa[t].shape[1]
        x = fa[t][n0:n1].reshape(n1 - n0, c, -1)[:, :, p0:p1]
        y = fb[t][n0:n1].reshape(n1 - n0, c, -1)[:, :, p0:p1]
        nx = np.sqrt(np.einsum("ncl,ncl->nl", x, x, dtype=np.float32))
        nx += eps
        ny = np.sqrt(np.einsum("ncl,ncl->nl", y, y, dtype=np.float32))
        ny += eps
        d, e = _scratch(x.shape)
        np.divide(x, nx[:, None], out=d)
        np.divide(y, ny[:, None], out=e)
        d -= e
        d *= d
        m = d.sum(axis=1, dtype=np.float32) if lins is None else np.matmul(lins[t], d)
        out.append(m.sum(axis=1, dtype=np.float32))
    return out


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="dps-head")
        return pool


# At most this many head threads by default: the head is bound by memory bandwidth, and a
# container's CPU quota does not show in the affinity mask (64 host cores, 2 allowed).
MAX_DEFAULT_THREADS = 8


def default_threads() -> int:
    """Threads for the NumPy head: the cores this process may use (NumPy releases the GIL),
    at most ``MAX_DEFAULT_THREADS``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_DEFAULT_THREADS))


def lpips_per_tap(
    fa: Feats,
    fb: Feats,
    lins: Sequence[np.ndarray] | None = None,
    *,
    threads: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> np.ndarray:
    """LPIPS per tap [N, K]; ``lins=None`` is the baseline (and DPS): channels summed.

    Cache-blocked: each tap is cut into pieces of about ``block_bytes`` per side (positions of
    one image, or whole maps of several) and the pieces are shared by ``threads`` threads.
    ``fa`` or ``fb`` may be a broadcast view (1-vs-N).
    """
    k = len(fa)
    if len(fb) != k:
        raise ValueError(f"expected as many taps on both sides, got {k} and {len(fb)}")
    shapes = [
        tuple(int(v) for v in np.broadcast_shapes(a.shape, b.shape))
        for a, b in zip(fa, fb, strict=True)
    ]
    n = shapes[0][0] if shapes else 0
    w = None if lins is None else [np.asarray(v, np.float32).reshape(-1) for v in lins]
    items = _blocks(shapes, block_bytes)
    nt = min(threads or default_threads(), len(items))
    if nt <= 1:
        parts = [(items, _lpips_block_sums(fa, fb, w, items))]
    else:
        chunks = [items[i::nt] for i in range(nt)]
        sums = _pool(nt).map(lambda its: _lpips_block_sums(fa, fb, w, its), chunks)
        parts = list(zip(chunks, sums, strict=True))
    out = np.zeros((n, k), np.float32)
    for its, vals in parts:
        for (t, n0, n1, _, _), v in zip(its, vals, strict=True):
            out[n0:n1, t] += v
    for t, (_, _, h, w_) in enumerate(shapes):
        out[:, t] /= np.float32(h * w_)
    return out


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights of PyTorch's bilinear resize with align_corners=False (no antialias)."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = (src - i0).astype(np.float32)
    m = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def upsample_bilinear(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize maps [N, h, w] to [N, H, W] like ``F.interpolate(bilinear, align_corners=False)``."""
    h, w = m.shape[1:]
    mh = _bilinear_matrix(size[0], h)
    mw = _bilinear_matrix(size[1], w)
    return np.einsum("Hh,nhw,Ww->nHW", mh, m, mw, dtype=np.float32, optimize=True)


def lpips_spatial(
    fa: Feats, fb: Feats, size: tuple[int, int], lins: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per tap [N, K] and the summed upsampled map [N, H, W] (LPIPS ``spatial=True``)."""
    total = None
    cols = []
    for k, (a, b) in enumerate(zip(fa, fb, strict=True)):
        m = lpips_tap_map(a, b, None if lins is None else lins[k])
        cols.append(m.mean(axis=(1, 2), dtype=np.float32))
        up = upsample_bilinear(m, size)
        total = up if total is None else total + up
    assert total is not None
    return np.stack(cols, axis=1), total


def _dists_moments(x: np.ndarray, y: np.ndarray, block_bytes: int) -> np.ndarray:
    """[5, N, C] float32: μx, μy, σx², σy² and mean(((x − μx) − (y − μy))²) per channel.

    Two-pass centred moments on blocks of channels of one image (about ``block_bytes`` per
    side, so the passes stay in cache), each a pairwise float32 sum along contiguous
    positions. The last one equals the reference's σx² + σy² − 2σxy without its cancellation.
    """
    n, c, h, w = x.shape
    p = h * w
    out = np.empty((5, n, c), np.float32)
    step = max(1, block_bytes // (4 * p))
    for i in range(n):
        xi = x[i].reshape(c, p)
        yi = y[i].reshape(c, p)
        for c0 in range(0, c, step):
            c1 = min(c, c0 + step)
            xs, ys = xi[c0:c1], yi[c0:c1]
            mx = xs.mean(axis=1, dtype=np.float32)
            my = ys.mean(axis=1, dtype=np.float32)
            xc, yc = _scratch(xs.shape)
            np.subtract(xs, mx[:, None], out=xc)
            np.subtract(ys, my[:, None], out=yc)
            vd = np.subtract(xc, yc)
            vx = np.square(xc, out=xc).mean(axis=1, dtype=np.float32)
            vy = np.square(yc, out=yc).mean(axis=1, dtype=np.float32)
            out[:, i, c0:c1] = mx, my, vx, vy, np.square(vd, out=vd).mean(axis=1, dtype=np.float32)
    return out


def dists_per_tap(
    fa: Feats, fb: Feats, alpha: np.ndarray, beta: np.ndarray, *, block_bytes: int = BLOCK_BYTES
) -> np.ndarray:
    """DISTS per tap [N, K]: ``Σ_c α(1 − S1) + β(1 − S2)`` with α, β normalised to sum 1.

    Their sum over taps is ``1 − Σ(α·S1 + β·S2)``, the DISTS score. Computed as
    ``1 − S1 = (μx − μy)² / (μx² + μy² + c1)`` and ``1 − S2 = mean((x̃ − ỹ)²) / (σx² + σy² + c2)``
    (x̃, ỹ centred): the reference's value without its cancellations, which cost up to 1e-2
    relative on 1024×768 images in float32 (docs/numerics.md).
    """
    alpha = alpha.reshape(-1).astype(np.float64)
    beta = beta.reshape(-1).astype(np.float64)
    total = alpha.sum() + beta.sum()
    alpha = (alpha / total).astype(np.float32)
    beta = (beta / total).astype(np.float32)
    cols = []
    off = 0
    for x, y in zip(fa, fb, strict=True):
        c = x.shape[1]
        a_k, b_k = alpha[off : off + c], beta[off : off + c]
        off += c
        mx, my, vx, vy, vd = _dists_moments(x, y, block_bytes)
        dm = mx - my
        d1 = dm * dm / (mx * mx + my * my + np.float32(DISTS_C1))
        d2 = vd / (vx + vy + np.float32(DISTS_C2))
        cols.append((a_k * d1 + b_k * d2).sum(axis=1, dtype=np.float32))
    if off != alpha.size:
        raise ValueError(f"expected features with {alpha.size} channels in all, got {off}")
    return np.stack(cols, axis=1).astype(np.float32, copy=False)


def reduce_taps(per_tap: np.ndarray, how: str) -> np.ndarray:
    """Score from per-tap values: ``sum`` (LPIPS, DISTS) or ``mean`` (DPS)."""
    if how == "sum":
        return per_tap.sum(axis=1, dtype=np.float32)
    if how == "mean":
        return per_tap.mean(axis=1, dtype=np.float32)
    raise ValueError(f"expected reduce 'sum' or 'mean', got {how!r}")


def per_tap_distance(
    head: str,
    fa: Feats,
    fb: Feats,
    head_weights: dict[str, np.ndarray],
    *,
    threads: int | None = None,
) -> np.ndarray:
    """Dispatch on the bundle's head kind: ``lpips``, ``lpips-baseline``, ``dps`` or ``dists``.

    ``threads`` caps the LPIPS family's threads (None: one per core this process may use).
    """
    if head == "lpips":
        lins = [head_weights[f"lin{k}"] for k in range(len(fa))]
        return lpips_per_tap(fa, fb, lins, threads=threads)
    if head in ("lpips-baseline", "dps"):
        return lpips_per_tap(fa, fb, None, threads=threads)
    if head == "dists":
        return dists_per_tap(fa, fb, head_weights["alpha"], head_weights["beta"])
    raise ValueError(f"unknown head kind {head!r}; expected lpips, lpips-baseline, dps or dists")
