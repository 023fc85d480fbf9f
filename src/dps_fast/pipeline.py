"""Scoring many pairs: decode in threads overlapped with inference, reuse features, keep order.

``score_dirs`` and ``score_pairs`` yield one result record (a dict with the README's result
columns) per pair, in the pairing order whatever the worker count. A pair that cannot be scored (bad
file, size mismatch, too small) yields a record with ``error`` set; the run goes on.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import ProviderError
from .io.decode import (
    ImageDecodeError,
    ResizeSpec,
    check_pixels,
    decode_image,
    parse_resize,
    read_size,
    resize_image,
    short_side_size,
)
from .io.gpu_decode import BatchDecoder, shared_gpu_decoder
from .io.heatmap import HeatmapWriter
from .io.pairing import Pair, pair_dirs, read_pairs_manifest

Record = dict[str, Any]

DEFAULT_WINDOW = 64
WINDOW_BYTES = 256 * 1024 * 1024  # decoded pixels per CPU decode window (two are in flight)
# GPU decoding: windows of ~2 batches at 1024×768, prepared up to GPU_PREFETCH windows ahead,
# so that scoring starts soon and the decoder never waits for a whole window to be scored.
DEFAULT_WINDOW_GPU = 48
GPU_PREFETCH = 2
DECODE_MODES = ("auto", "cpu", "gpu")
log = logging.getLogger("dps_fast.pipeline")
DEFAULT_FEATURE_CACHE_BYTES = 512 * 1024 * 1024


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class RunStats:
    """Counters a run fills in as it goes (the CLI prints them as its summary)."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    scores: list[float] = field(default_factory=list)
    # Several models in one run: each model's scores and failures (rows count as failed when
    # any model failed them; ``scores`` stays empty).
    model_scores: dict[str, list[float]] = field(default_factory=dict)
    model_failed: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scored": self.scored, "failed": self.failed}
        if self.skipped:
            out["skipped (resume)"] = self.skipped
        out.update(_score_stats(self.scores))
        if self.model_scores:
            out["models"] = {
                m: {"scored": len(s), "failed": self.model_failed[m], **_score_stats(s)}
                for m, s in self.model_scores.items()
            }
        return out


def _score_stats(scores: list[float]) -> dict[str, Any]:
    """mean, std, median, min, max of scores (mean and std over the finite ones)."""
    s = np.asarray(scores, np.float64)
    out: dict[str, Any] = {}
    if s.size:
        # PSNR of identical images is inf: mean and std are over the finite scores, and
        # how many were infinite is said.
        fin = s[np.isfinite(s)]
        out.update(
            mean=float(fin.mean()) if fin.size else float("nan"),
            std=float(fin.std()) if fin.size else float("nan"),
            median=float(np.median(s)),
            min=float(s.min()),
            max=float(s.max()),
        )
        if fin.size < s.size:
            out["infinite"] = int(s.size - fin.size)
    return out


class _FeatureCache:
    """LRU of tap features by image key, bounded in bytes: images used by many pairs run once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[Any, list[np.ndarray]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Any) -> list[np.ndarray] | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: Any, feats: list[np.ndarray]) -> None:
        size = sum(f.nbytes for f in feats)
        if size > self.max_bytes or key in self._d:
            return
        self._d[key] = feats
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._d.popitem(last=False)
            self._bytes -= sum(f.nbytes for f in old)


class _Loader:
    """Decodes and resizes the images of pairs; one decode per distinct file per window."""

    def __init__(self, resize: ResizeSpec, min_size: tuple[int, int]) -> None:
        self.resize = resize
        self.min_size = min_size

    def decode(self, path: Path | None) -> np.ndarray:
        if path is None:
            raise ImageDecodeError("no file")
        hint = None
        if self.resize.mode == "short-side" and self.resize.n is not None:
            hint = (self.resize.n, self.resize.n)
        img = decode_image(path, reduce_to=hint)
        if self.resize.mode == "short-side" and self.resize.n is not None:
            size = short_side_size(img.shape[0], img.shape[1], self.resize.n)
            # The resized image passes the same pixel limit as a decoded one (bomb guard).
            check_pixels(*size, f"{path} resized to {self.resize}")
            img = resize_image(img, size)
        return img

    def pair_arrays(
        self, pair: Pair, a_img: np.ndarray, b_img: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.resize.mode == "to-a":
            b_img = resize_image(b_img, (a_img.shape[0], a_img.shape[1]))
        self.check_sizes(a_img.shape[:2], b_img.shape[:2])
        return a_img, b_img  # uint8 HWC: the engine takes 8-bit images as they are

    def check_sizes(self, a_hw: tuple[int, ...], b_hw: tuple[int, ...]) -> None:
        """One size on both sides, at least the model's minimum (ValueError says the fix)."""
        (ha, wa), (hb, wb) = a_hw[:2], b_hw[:2]
        if (ha, wa) != (hb, wb):
            raise ValueError(
                f"size mismatch: a is {ha}×{wa}, b is {hb}×{wb} (H×W); "
                "use --resize to-a or --resize short-side:N"
            )
        mh, mw = self.min_size
        if ha < mh or wa < mw:
            raise ValueError(
                f"image too small: {ha}×{wa} (H×W), this model needs at least {mh}×{mw}"
            )


@dataclass
class _Item:
    pair: Pair
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    error: str = ""  # the pair failed for every model (unreadable file, size mismatch …)
    per_tap: dict[int, np.ndarray] = field(default_factory=dict)  # by engine index
    model_errors: dict[int, str] = field(default_factory=dict)  # one model failed the pair


@dataclass
class _Prepared:
    """A window after GPU decoding: packed device batches, and the pairs left to the CPU."""

    batches: list[tuple[list[_Item], Any, Any]] = field(default_factory=list)
    cpu: list[_Item] = field(default_factory=list)


def _paths(items: list[_Item]) -> Iterator[Path | None]:
    """The a and b files of the pairs still to score, once per use."""
    return (p for it in items if not it.error for p in (it.pair.a_path, it.pair.b_path))


def _read_bytes(path: Path) -> bytes | None:
    """A regular file's bytes, or None (the CPU path then reports what is wrong with it)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never block on a FIFO
            return None
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _describe(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return " ".join(msg.split())


class PairScorer:
    """Scores a list of pairs with one engine, or several (each image decoded once for all):
    windows decoded ahead in a thread pool."""

    def __init__(
        self,
        engine: Engine | Sequence[Engine],
        *,
        resize: str | ResizeSpec = "none",
        per_layer: bool = False,
        spatial_dir: str | os.PathLike[str] | None = None,
        workers: int | None = None,
        window: int | None = None,
        feature_cache_bytes: int = DEFAULT_FEATURE_CACHE_BYTES,
        decode: str = "auto",
        decoder: BatchDecoder | None = None,
        vmax: float | None = None,
        heatmap_style: str = "map",
        spatial_npy: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        # One engine (or an engine-like object, e.g. a wrapper in tests), or a list of them.
        self.engines: list[Engine] = (
            list(engine) if isinstance(engine, (list, tuple)) else [engine]  # type: ignore[list-item]
        )
        if not self.engines:
            raise ValueError("expected at least one engine, got none")
        self.names = [e.bundle.model for e in self.engines]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"expected distinct models, got {', '.join(self.names)}")
        self.engine = engine = self.engines[0]
        self.multi = len(self.engines) > 1
        # Called with a number of pairs each time a batch is scored (or pairs fail before
        # scoring): progress per batch, ahead of the window's records.
        self.on_progress = on_progress
        self.resize = parse_resize(resize) if isinstance(resize, str) else resize
        self.per_layer = per_layer
        self.spatial_dir = None if spatial_dir is None else Path(spatial_dir)
        if self.spatial_dir is not None and self.multi:
            raise ValueError(
                f"--spatial-dir writes one model's heatmaps; got {len(self.names)} models "
                f"({', '.join(self.names)}): run the LPIPS model on its own for heatmaps"
            )
        if self.spatial_dir is not None and not engine.bundle.has_graph("pair_spatial"):
            raise ValueError(
                f"--spatial-dir needs an LPIPS-family model; {engine.bundle.model} has no "
                "spatial map"
            )
        if self.spatial_dir is not None:
            _check_writable_dir(self.spatial_dir)
        # Maps of one run share one scale (``vmax``, or chosen from the first maps).
        self.heatmaps = (
            None
            if self.spatial_dir is None
            else HeatmapWriter(self.spatial_dir, vmax=vmax, style=heatmap_style, npy=spatial_npy)
        )
        if workers is not None and workers < 1:
            raise ValueError(f"expected workers ≥ 1, got {workers}")
        self.workers = workers or default_workers()
        if self.resize.mode == "short-side" and self.resize.n is not None:
            n = self.resize.n  # every image resized so has at least n×n pixels
            try:
                check_pixels(n, n, f"resize {self.resize}")
            except ImageDecodeError as e:
                raise ValueError(f"{e}; or use a smaller N") from None
        # The smallest size any model takes; each model checks its own minimum when scoring.
        sizes = [e.bundle.min_size for e in self.engines]
        self.loader = _Loader(self.resize, (min(h for h, _ in sizes), min(w for _, w in sizes)))
        # Seconds per stage (GPU decoding path); stages in other threads overlap the scoring.
        self.timings: dict[str, float] = {}
        self.decoder, self.decode_mode, self.decode_reason = self._choose_decoder(decode, decoder)
        log.info("decoding on the %s: %s", self.decode_mode.upper(), self.decode_reason)
        self._window_given = window
        default = DEFAULT_WINDOW_GPU if self.decoder is not None else DEFAULT_WINDOW
        self.window = max(1, window or default)
        self.cache = _FeatureCache(feature_cache_bytes)
        self.stats = RunStats()
        if self.multi:
            self.stats.model_scores = {n: [] for n in self.names}
        self._uses: Counter[Path | None] = Counter()
        self.taps = engine.tap_names

    # -- decoding ---------------------------------------------------------------------------
    def _choose_decoder(
        self, decode: str, decoder: BatchDecoder | None
    ) -> tuple[BatchDecoder | None, str, str]:
        """The batch (GPU) decoder to use, or None for CPU decoding; with the reason."""
        if decode not in DECODE_MODES:
            raise ValueError(f"expected decode one of {', '.join(DECODE_MODES)}, got {decode!r}")
        if decode == "cpu":
            return None, "cpu", "asked for"
        if decoder is not None:
            return decoder, "gpu", f"decoder {type(decoder).__name__} given"
        why_not = None
        cpu = next((e for e in self.engines if e.device != "cuda"), None)
        no_u8 = next((e for e in self.engines if not e.accepts_uint8), None)
        if cpu is not None:
            why_not = f"the engine runs on {cpu.device}; GPU decoding needs device='cuda'"
        elif self.resize.mode != "none":
            why_not = f"resize {self.resize} runs on the CPU; GPU decoding works with resize 'none'"
        elif self.heatmaps is not None and self.heatmaps.style == "panel":
            why_not = "heatmap panels draw the images on the host; GPU decoding keeps them there"
        elif any(e.crop_border for e in self.engines):
            why_not = "crop_border crops host images; GPU decoding works with crop_border 0"
        elif no_u8 is not None:
            why_not = (
                "the bundle has no @uint8-nhwc graphs; re-export it with "
                f"`dps-fast export {no_u8.bundle.model} --force`"
            )
        if why_not is None:
            try:
                t0 = time.perf_counter()
                dec = shared_gpu_decoder()
                self._tick("GPU decoder start", time.perf_counter() - t0)
                return dec, "gpu", "nvImageCodec on the engine's GPU"
            except (ProviderError, RuntimeError, OSError) as e:  # no nvImageCodec, no GPU …
                why_not = str(e)
        if decode == "gpu":
            raise ValueError(f"decode='gpu' is not possible: {why_not}; or use decode='cpu'")
        return None, "cpu", why_not

    def _load_window(
        self, pool: ThreadPoolExecutor, items: list[_Item]
    ) -> list[tuple[_Item, Future[np.ndarray] | None, Future[np.ndarray] | None]]:
        decoded: dict[Path, Future[np.ndarray]] = {}

        def submit(p: Path | None) -> Future[np.ndarray] | None:
            if p is None:
                return None
            if p not in decoded:
                decoded[p] = pool.submit(self.loader.decode, p)
            return decoded[p]

        return [
            (it, None, None) if it.error else (it, submit(it.pair.a_path), submit(it.pair.b_path))
            for it in items
        ]

    def _finish_loading(
        self, loaded: list[tuple[_Item, Future[np.ndarray] | None, Future[np.ndarray] | None]]
    ) -> None:
        for it, fa, fb in loaded:
            if it.error:
                continue
            try:
                if fa is None or fb is None:
                    raise ValueError("no file to decode")
                a_img = _result(fa, "a")
                b_img = _result(fb, "b")
                it.a, it.b = self.loader.pair_arrays(it.pair, a_img, b_img)
            except (ValueError, OSError) as e:
                it.error = _describe(e)

    # -- inference --------------------------------------------------------------------------
    def _features(
        self, k: int, keys: list[Any], arrays: list[np.ndarray]
    ) -> list[list[np.ndarray]]:
        """Tap features per image for engine ``k``, from the cache or computed in batches."""
        out: list[list[np.ndarray] | None] = [self.cache.get((k, *key)) for key in keys]
        todo = [i for i, f in enumerate(out) if f is None]
        if todo:
            batch = np.stack([arrays[i] for i in todo])
            feats = self.engines[k].features(batch)
            for j, i in enumerate(todo):
                f = [t[j : j + 1] for t in feats]
                out[i] = f
                if self._uses[keys[i][0]] > 1:
                    self.cache.put((k, *keys[i]), f)
        return [f for f in out if f is not None]

    def _score_batch(self, k: int, items: list[_Item], a: Any, b: Any) -> None:
        """Engine ``k``'s pair graph on one batch (host arrays or CUDA batches); fills
        ``per_tap`` (and writes maps)."""
        eng = self.engines[k]
        if self.heatmaps is None:
            per_tap = eng.score(a, b, per_layer=True)
        else:
            per_tap, maps = eng.score(a, b, spatial=True, per_layer=True)
            host = isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 4
            self.heatmaps.write(
                maps, [(it.pair.a, it.pair.b) for it in items],
                scores=[float(s) for s in eng.reduce(np.asarray(per_tap))],
                a=list(a) if host else None, b=list(b) if host else None,
            )  # fmt: skip
        for it, p in zip(items, per_tap, strict=True):
            it.per_tap[k] = p

    def _each_engine(self, items: list[_Item], hw: tuple[int, ...], run: Any) -> None:
        """``run(k, items)`` for every engine on one batch (the callers size it: at most every
        engine's batch size, or a packed device batch); a failure (or an image below that
        model's minimum) is that model's error on those pairs."""
        h, w = hw
        for k, eng in enumerate(self.engines):
            mh, mw = eng.bundle.min_size
            if h < mh or w < mw:  # the loader let it through for a model with a lower minimum
                for it in items:
                    it.model_errors[k] = (
                        f"image too small: {h}×{w} (H×W), this model needs at least {mh}×{mw}"
                    )
                continue
            try:
                run(k, items)
            except (ValueError, OSError, RuntimeError) as e:
                for it in items:
                    it.model_errors[k] = f"scoring failed: {_describe(e)}"

    def _run_group(self, k: int, items: list[_Item]) -> None:
        """Score pairs of one image size with engine ``k``; fills ``per_tap`` (and maps)."""
        eng = self.engines[k]
        shared = any(self._uses[p] > 1 for it in items for p in (it.pair.a_path, it.pair.b_path))
        if self.spatial_dir is not None or eng.device == "cuda" or not shared:
            # The pair graph (both trunks and the head in one run) is the fastest way when no
            # image is reused: measured 1.7× the trunk + head graphs at 64² on the CPU. On a GPU
            # it also keeps features on the device, where host round trips cost more than
            # recomputing a reused image's trunk. Heatmaps need it too (pair_spatial).
            a = np.stack([it.a for it in items if it.a is not None])
            b = np.stack([it.b for it in items if it.b is not None])
            self._score_batch(k, items, a, b)
            return
        keys: list[Any] = []
        arrays: list[np.ndarray] = []
        index: dict[Any, int] = {}
        pairs_idx = []
        for it in items:
            ij = []
            for p, arr in ((it.pair.a_path, it.a), (it.pair.b_path, it.b)):
                key = (p, arr.shape) if arr is not None else None
                if key not in index:
                    index[key] = len(keys)
                    keys.append(key)
                    arrays.append(arr)  # type: ignore[arg-type]
                ij.append(index[key])
            pairs_idx.append(ij)
        feats = self._features(k, keys, arrays)
        n_taps = len(eng.tap_names)
        fa = [np.concatenate([feats[i][t] for i, _ in pairs_idx]) for t in range(n_taps)]
        fb = [np.concatenate([feats[j][t] for _, j in pairs_idx]) for t in range(n_taps)]
        per_tap = eng.per_tap_from_features(fa, fb)
        for it, p in zip(items, per_tap, strict=True):
            it.per_tap[k] = p

    def _progress(self, n: int) -> None:
        if self.on_progress is not None and n:
            self.on_progress(n)

    def _done(self, it: _Item) -> bool:
        """Whether every model has scored (or failed) the pair: its record can go out."""
        n = len(self.engines)
        return bool(it.error) or all(k in it.per_tap or k in it.model_errors for k in range(n))

    def _run_window(self, items: list[_Item]) -> None:
        for _ in self._window_steps(items):
            pass

    def _window_steps(self, items: list[_Item]) -> Iterator[None]:
        """Score a window batch by batch, yielding after each batch (records can go out)."""
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for it in items:
            if not it.error and it.a is not None:
                groups.setdefault(it.a.shape, []).append(it)
        self._progress(sum(1 for it in items if it.error or it.a is None))
        for group in groups.values():
            h, w = group[0].a.shape[:2]  # type: ignore[union-attr]
            # One batch (the smallest of the engines' batch sizes) at a time: progress and the
            # records go out per batch, not per group.
            step = max(1, min(e.batch_len(h, w) for e in self.engines))
            for s in range(0, len(group), step):
                chunk = group[s : s + step]
                self._each_engine(chunk, (h, w), self._run_group)
                self._progress(len(chunk))
                yield

    def _record(self, it: _Item) -> Record:
        if self.multi:
            return self._record_multi(it)
        if not it.error and 0 in it.model_errors:
            it.error = it.model_errors[0]
        rec: Record = {"a": it.pair.a, "b": it.pair.b, "score": None, "error": it.error}
        if not it.error and 0 in it.per_tap:
            pt = np.asarray(it.per_tap[0], np.float32)
            score = float(self.engine.reduce(pt[None])[0])
            # PSNR of identical images is +inf by definition (classical measures only).
            inf_ok = self.engine.bundle.head == "classical" and not np.isnan(pt).any()
            if not inf_ok and not (np.isfinite(score) and np.isfinite(pt).all()):
                # NaN or Inf from the model (e.g. NaN in its weights): an error, not a score
                it.error = (
                    f"the model gave a non-finite score ({score}) — check the bundle and its "
                    "weights (re-export the model)"
                )
                it.per_tap = {}
                return self._record(it)
            rec["score"] = score
            self.stats.scored += 1
            self.stats.scores.append(score)
            if self.per_layer:
                for name, v in zip(self.taps, pt, strict=True):
                    rec[f"tap_{name}"] = float(v)
        else:
            if not rec["error"]:
                rec["error"] = "not scored"
            self.stats.failed += 1
            if self.per_layer:
                for name in self.taps:
                    rec[f"tap_{name}"] = None
        if it.pair.id is not None:
            rec["id"] = it.pair.id
        return rec

    def _record_multi(self, it: _Item) -> Record:
        """One row for several models: ``score_<model>`` each, one ``error`` naming the
        models that failed the pair (the others' scores stay)."""
        rec: Record = {"a": it.pair.a, "b": it.pair.b}
        errors = []
        for k, (name, eng) in enumerate(zip(self.names, self.engines, strict=True)):
            err = it.error or it.model_errors.get(k) or ("" if k in it.per_tap else "not scored")
            pt = None if err else np.asarray(it.per_tap[k], np.float32)
            if pt is None:
                rec[f"score_{name}"] = None
                self.stats.model_failed[name] += 1
                if not it.error:
                    errors.append(f"{name}: {err}")
            else:
                score = float(eng.reduce(pt[None])[0])
                rec[f"score_{name}"] = score
                self.stats.model_scores.setdefault(name, []).append(score)
            if self.per_layer:
                for tap, v in zip(eng.tap_names, pt if pt is not None else [None] * 99,
                                  strict=False):  # fmt: skip
                    rec[f"tap_{name}_{tap}"] = None if v is None else float(v)
        rec["error"] = it.error or "; ".join(errors)
        if rec["error"]:
            self.stats.failed += 1
        else:
            self.stats.scored += 1
        if it.pair.id is not None:
            rec["id"] = it.pair.id
        return rec

    # -- GPU decoding -------------------------------------------------------------------------
    def _submit_reads(
        self, pool: ThreadPoolExecutor, items: list[_Item]
    ) -> dict[Path, Future[bytes | None]]:
        """Start reading a window's files (before its turn in the decode thread)."""
        paths = dict.fromkeys(p for p in _paths(items) if p is not None)
        return {p: pool.submit(_read_bytes, p) for p in paths}

    def _prepare_gpu(
        self, pool: ThreadPoolExecutor, items: list[_Item], reads: dict[Path, Future[bytes | None]]
    ) -> _Prepared:
        """Decode a window's JPEGs on the GPU into packed batches, the rest on the CPU.

        Runs in the decode thread while the main thread scores earlier windows.
        """
        assert self.decoder is not None
        t0 = time.perf_counter()
        datas: dict[Path, bytes] = {}
        for p, f in reads.items():
            data = f.result()
            if data is not None and self.decoder.accepts(data):
                datas[p] = data
        images: dict[Path, Any] = {}
        t1 = time.perf_counter()
        self._tick("read files", t1 - t0)
        if datas:
            try:
                decoded = self.decoder.decode(list(datas.values()))
                images = {p: im for p, im in zip(datas, decoded, strict=True) if im is not None}
            except (RuntimeError, ValueError, OSError) as e:
                log.warning("GPU decoding of a window failed (%s); decoding it on the CPU", e)
        t2 = time.perf_counter()
        self._tick("GPU decode", t2 - t1)
        prep = _Prepared()
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for it in items:
            if it.error:
                continue
            ia, ib = images.get(it.pair.a_path), images.get(it.pair.b_path)  # type: ignore[arg-type]
            if ia is None or ib is None:
                prep.cpu.append(it)
                continue
            try:
                self.loader.check_sizes(tuple(ia.shape), tuple(ib.shape))
            except ValueError as e:
                it.error = _describe(e)
                continue
            groups.setdefault(tuple(ia.shape), []).append(it)
        for shape, group in groups.items():
            step = self.engine.batch_len(shape[0], shape[1])
            for s in range(0, len(group), step):
                chunk = group[s : s + step]
                try:
                    a = self.decoder.stack([images[it.pair.a_path] for it in chunk])  # type: ignore[index]
                    b = self.decoder.stack([images[it.pair.b_path] for it in chunk])  # type: ignore[index]
                except (RuntimeError, ValueError) as e:
                    log.warning("GPU batch failed (%s); decoding its pairs on the CPU", e)
                    prep.cpu.extend(chunk)
                    continue
                prep.batches.append((chunk, a, b))
        if hasattr(self.decoder, "recycle"):
            self.decoder.recycle(list(images.values()))
        images.clear()  # only the packed batches stay on the device
        self._tick("pack batches", time.perf_counter() - t2)
        if prep.cpu:
            self._finish_loading(self._load_window(pool, prep.cpu))
        return prep

    def _run_gpu(self, windows: list[list[_Item]]) -> Iterator[Record]:
        """Windows prepared (read, GPU-decoded, packed) up to GPU_PREFETCH ahead of scoring."""
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="dps-fast-read") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="dps-fast-gpu-decode") as dec,
        ):
            pending: deque[Future[_Prepared]] = deque()
            for k in range(len(windows)):
                while len(pending) <= GPU_PREFETCH and k + len(pending) < len(windows):
                    w = windows[k + len(pending)]
                    reads = self._submit_reads(pool, w)
                    pending.append(dec.submit(self._prepare_gpu, pool, w, reads))
                t0 = time.perf_counter()
                prep = pending.popleft().result()
                t1 = time.perf_counter()
                release = getattr(self.decoder, "release", None)
                on_cpu = {id(it) for it in prep.cpu}  # _run_window counts those
                self._progress(sum(1 for it in windows[k] if it.error and id(it) not in on_cpu))
                for chunk, a, b in prep.batches:
                    hw = tuple(a.shape[1:3])
                    self._each_engine(
                        chunk, hw, lambda k, c, a=a, b=b: self._score_batch(k, c, a, b)
                    )  # fmt: skip
                    self._progress(len(chunk))
                    if release is not None:  # device buffers go back to the decoder's pool
                        release(a)
                        release(b)
                prep.batches.clear()
                t2 = time.perf_counter()
                self._run_window(prep.cpu)
                self._tick("wait for decode", t1 - t0)
                self._tick("score on GPU", t2 - t1)
                self._tick("CPU fallback", time.perf_counter() - t2)
                for it in windows[k]:
                    rec = self._record(it)
                    it.a = it.b = None
                    yield rec

    def _first_hw(self, items: list[_Item]) -> tuple[int, int] | None:
        """(H, W) the first readable image will have after resizing (read from its header).

        The probe applies the decode path's checks (regular file, opened without blocking,
        pixel limit), so a FIFO or a bomb header among the first pairs fails its own row later
        instead of hanging or ending the run here.
        """
        for it in items[:8]:
            if it.error or it.pair.a_path is None:
                continue
            try:
                h, w = read_size(it.pair.a_path)
            except (OSError, ValueError):
                continue
            if self.resize.mode == "short-side" and self.resize.n is not None:
                return short_side_size(h, w, self.resize.n)
            return h, w
        return None

    def _windows(self, items: list[_Item]) -> list[list[_Item]]:
        """Split the pairs into decode windows, sized from the first image.

        The first window is one engine batch, so scoring starts as soon as it is decoded.
        CPU decoding: later windows hold at most ``WINDOW_BYTES`` of decoded pixels (memory
        stays bounded for large photos). GPU decoding: two full engine batches per window (no
        small tail batch per window, and scoring of one batch overlaps decoding of the next).
        """
        window, first = self.window, self.window
        hw = self._first_hw(items)
        if hw is not None:
            step = self.engine.batch_len(*hw)
            if self._window_given is None:
                if self.decoder is not None:
                    window = max(8, 2 * step)
                else:
                    per_pair = 2 * 3 * hw[0] * hw[1]
                    window = max(step, min(self.window, WINDOW_BYTES // per_pair))
            first = min(window, step)
        windows = [items[:first]] + [
            items[i : i + window] for i in range(first, len(items), window)
        ]
        return [w for w in windows if w]

    def _tick(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def run(self, pairs: Iterable[Pair]) -> Iterator[Record]:
        """Yield one record per pair, in order; decoding of window k+1 overlaps window k."""
        items = [_Item(p, error=p.error) for p in pairs]
        # How often each file is used: features are cached and reused only for shared images.
        self._uses = Counter(_paths(items))
        windows = self._windows(items)
        if self.decoder is not None:
            yield from self._run_gpu(windows)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dps-fast-decode") as pool:
            pending = self._load_window(pool, windows[0]) if windows else []
            for k in range(len(windows)):
                current = pending
                if k + 1 < len(windows):
                    pending = self._load_window(pool, windows[k + 1])
                self._finish_loading(current)
                # Records go out in order as soon as their batch is scored (an interrupted
                # run keeps every scored pair up to the first unscored one).
                window, pos = windows[k], 0
                for _ in itertools.chain(self._window_steps(window), [None]):
                    while pos < len(window) and self._done(window[pos]):
                        rec = self._record(window[pos])
                        window[pos].a = window[pos].b = None
                        yield rec
                        pos += 1
                for it in window[pos:]:  # not scored (should not happen): their rows say so
                    yield self._record(it)

    def columns(self, with_id: bool = False) -> list[str]:
        from .io.results import result_columns

        if self.multi:
            taps = [f"{m}_{t}" for m, e in zip(self.names, self.engines, strict=True)
                    for t in e.tap_names] if self.per_layer else []  # fmt: skip
            return result_columns(taps, with_id=with_id, models=self.names)
        return result_columns(self.taps if self.per_layer else (), with_id=with_id)


def _check_writable_dir(folder: Path) -> None:
    """Create ``folder`` and write a probe file there, so an unwritable heatmap folder stops
    the run before scoring (ValueError saying what to do) instead of failing every pair."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".dps-fast-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"cannot write heatmaps to --spatial-dir {folder}: {e.strerror or e}; choose a "
            "folder you can write to"
        ) from None


def _result(f: Future[np.ndarray], side: str) -> np.ndarray:
    try:
        return f.result()
    except ImageDecodeError as e:
        raise ValueError(f"{side}: {_describe(e)}") from None
    except OSError as e:
        raise ValueError(f"{side}: cannot read: {_describe(e)}") from None


def model_list(model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Model names of ``"lpips-alex,ssim,psnr"`` or a list of names (bundle folders too)."""
    if isinstance(model, str):
        names = [m.strip() for m in model.split(",")] if "," in model else [model]
    elif isinstance(model, os.PathLike):
        names = [os.fspath(model)]
    else:
        names = [os.fspath(m) for m in model]
    if not names or any(not m for m in names):
        raise ValueError(f"expected model names separated by commas, got {model!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"expected each model once, got {', '.join(names)}")
    return names


def _engine(engine: Engine | None, options: dict[str, Any]) -> Engine:
    """The one engine of a run that takes a single model (matrix, score_iter)."""
    eng = _engines(engine, options)
    if isinstance(eng, list):
        raise ValueError(f"this takes one model, got {len(eng)}: run it once per model")
    return eng


def _engines(
    engine: Engine | Sequence[Engine] | None, options: dict[str, Any]
) -> Engine | list[Engine]:
    """The engine(s) of a run: given, or made from the engine options (``model`` may name
    several models, comma-separated or as a list: one engine each, sharing the options)."""
    eng_keys = ("model", "device", "precision", "weights", "threads", "batch_size", "crop_border")
    eng_opts = {k: options.pop(k) for k in eng_keys if k in options}
    if engine is not None:
        if eng_opts:
            raise ValueError(f"pass either engine= or engine options {sorted(eng_opts)}, not both")
        return engine if isinstance(engine, Engine) else list(engine)
    names = model_list(eng_opts.pop("model", "lpips-alex"))
    if len(names) > 1 and eng_opts.get("weights") is not None:
        raise ValueError("weights= selects one model's bundle; with several models pass engines")
    engines = [Engine(m, **eng_opts) for m in names]
    return engines[0] if len(engines) == 1 else engines


def score_dirs(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    *,
    engine: Engine | Sequence[Engine] | None = None,
    match: str = "stem",
    skip: Iterable[tuple[str, str]] = (),
    **options: Any,
) -> Iterator[Record]:
    """Score the image pairs of two folders; yields records in the sorted pairing order.

    Options: ``model``, ``device``, ``precision``, ``weights``, ``threads``, ``batch_size``,
    ``crop_border`` (or an ``engine``, or a list of engines), ``resize``, ``per_layer``,
    ``spatial_dir``, ``workers``, ``decode``. ``model="lpips-alex,ssim,psnr"`` (or a list)
    scores several models, decoding each image once: records then have ``score_<model>``
    columns instead of ``score``.
    (``auto`` | ``cpu`` | ``gpu``: JPEGs decoded on the GPU for a cuda engine).
    """
    pairing = pair_dirs(Path(dir_a), Path(dir_b), match=match)
    eng = _engines(engine, options)
    done = set(skip)
    yield from PairScorer(eng, **options).run(p for p in pairing.pairs if (p.a, p.b) not in done)


def score_pairs(
    manifest: str | os.PathLike[str] | Iterable[Any],
    *,
    engine: Engine | Sequence[Engine] | None = None,
    skip: Iterable[tuple[str, str]] = (),
    columns: str | tuple[str, str] = ("a", "b"),
    **options: Any,
) -> Iterator[Record]:
    """Score the pairs listed in a CSV manifest (columns a, b or ``columns``, optional id), in
    its order; or, given an iterable of pairs instead of a path, :func:`dps_fast.score_iter`
    (one model)."""
    if not isinstance(manifest, str | os.PathLike):
        from .stream import score_iter

        if tuple(skip):
            raise ValueError("skip= goes with a manifest path; filter the iterable instead")
        if engine is not None and not isinstance(engine, Engine):
            raise ValueError("an iterable of pairs is scored by one engine; pass one")
        yield from score_iter(manifest, engine=engine, **options)
        return
    pairs = read_pairs_manifest(Path(manifest), columns)
    eng = _engines(engine, options)
    done = set(skip)
    yield from PairScorer(eng, **options).run(p for p in pairs if (p.a, p.b) not in done)


def distance_matrix(
    folder: str | os.PathLike[str],
    *,
    engine: Engine | None = None,
    resize: str = "none",
    crop: str | None = None,
    workers: int | None = None,
    max_feature_bytes: int | None = None,
    **options: Any,
) -> tuple[np.ndarray, list[str]]:
    """All-pairs distances of a folder's images (features computed once per image while they
    fit ``max_feature_bytes``, default 1 GiB; else block by block).

    Returns a symmetric float32 [N, N] matrix with a zero diagonal, and the image labels. An
    unreadable image gets a NaN row and column (:func:`dps_fast.matrix.compute_matrix` also
    says why). All images must have one size after ``resize`` (``none``, ``short-side:N`` or
    ``WxH``, with ``crop="center"``): otherwise a ValueError lists the sizes.
    """
    from .matrix import DEFAULT_FEATURE_BUDGET, compute_matrix

    eng = _engine(engine, options)
    budget = DEFAULT_FEATURE_BUDGET if max_feature_bytes is None else max_feature_bytes
    res = compute_matrix(folder, engine=eng, resize=resize, crop=crop, workers=workers,
                         max_feature_bytes=budget)  # fmt: skip
    return res.matrix, res.labels
