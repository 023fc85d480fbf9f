"""The scorer core: pairs in, one record per pair out, in order, with one engine or several.

:class:`PairScorer` splits the pairs into decode windows (:mod:`.windows`, or :mod:`.gpu` for
JPEGs decoded on the device), scores each window batch by batch with every engine (reusing the
features of shared images, :mod:`.features`), and turns each pair into its record
(:mod:`.records`) as soon as every model has scored or failed it.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine
from ..io.decode import ImageDecodeError, ResizeSpec, check_pixels, parse_resize
from ..io.gpu_decode import BatchDecoder
from ..io.heatmap import HeatmapWriter
from ..io.pairing import Pair
from .features import DEFAULT_FEATURE_CACHE_BYTES, FeatureCache, per_tap_reusing_features
from .gpu import GpuWindows, choose_decoder
from .items import PairItem, Record, describe, item_paths
from .loader import ImageLoader
from .records import RecordMaker, RunStats
from .windows import (
    DECODE_CACHE_BYTES,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_GPU,
    WindowLoader,
    default_workers,
    first_hw,
    split_windows,
)

log = logging.getLogger("dps_fast.pipeline")


class PairScorer:
    """Scores a list of pairs with one engine, or several (each image decoded once for all):
    windows decoded ahead in a thread pool.

    ``decode_cache_bytes``: decoded images of files several pairs use are kept for the run up
    to this many bytes (a shared reference is decoded once per run, not once per window).
    ``decodes`` counts the decodes of each file over the scorer's runs.
    """

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
        decode_cache_bytes: int = DECODE_CACHE_BYTES,
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
        self.engine = first = self.engines[0]
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
        if self.spatial_dir is not None and not first.bundle.has_graph("pair_spatial"):
            raise ValueError(
                f"--spatial-dir needs an LPIPS-family model; {first.bundle.model} has no "
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
        self.loader = ImageLoader(self.resize, (min(h for h, _ in sizes), min(w for _, w in sizes)))
        # Seconds per stage (GPU decoding path); stages in other threads overlap the scoring.
        self.timings: dict[str, float] = {}
        style = None if self.heatmaps is None else self.heatmaps.style
        self.decoder, self.decode_mode, self.decode_reason = choose_decoder(
            decode, decoder, self.engines, self.resize, style, self._tick
        )
        log.info("decoding on the %s: %s", self.decode_mode.upper(), self.decode_reason)
        self._window_given = window
        default = DEFAULT_WINDOW_GPU if self.decoder is not None else DEFAULT_WINDOW
        self.window = max(1, window or default)
        self.cache = FeatureCache(feature_cache_bytes)
        self.decode_cache_bytes = decode_cache_bytes
        self.decodes: Counter[Path] = Counter()
        self.stats = RunStats()
        if self.multi:
            self.stats.model_scores = {n: [] for n in self.names}
        self.records = RecordMaker(self.engines, self.names, per_layer, self.stats)
        self._uses: Counter[Path | None] = Counter()
        self.taps = first.tap_names

    # -- the run ----------------------------------------------------------------------------
    def run(self, pairs: Iterable[Pair]) -> Iterator[Record]:
        """Yield one record per pair, in order; decoding of window k+1 overlaps window k."""
        items = [PairItem(p, error=p.error) for p in pairs]
        # How often each file is used: decoded images and features are kept only for those
        # used more than once.
        self._uses = Counter(item_paths(items))
        cpu = WindowLoader(lambda: self.loader, self._uses, self.decode_cache_bytes, self.decodes)
        windows = split_windows(
            items,
            window=self.window,
            given=self._window_given is not None,
            gpu=self.decoder is not None,
            hw=first_hw(items, self.resize),
            batch_len=self.engine.batch_len,
        )
        if self.decoder is not None:
            yield from self._run_gpu(windows, cpu, self.decoder)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dps-fast-decode") as pool:
            pending = cpu.submit(pool, windows[0]) if windows else []
            for k in range(len(windows)):
                current = pending
                if k + 1 < len(windows):
                    pending = cpu.submit(pool, windows[k + 1])
                cpu.finish(current)
                # Records go out in order as soon as their batch is scored (an interrupted
                # run keeps every scored pair up to the first unscored one).
                window, pos = windows[k], 0
                for _ in itertools.chain(self._window_steps(window), [None]):
                    while pos < len(window) and self._done(window[pos]):
                        rec = self.records(window[pos])
                        window[pos].a = window[pos].b = None
                        yield rec
                        pos += 1
                for it in window[pos:]:  # not scored (should not happen): their rows say so
                    yield self.records(it)

    def _run_gpu(
        self, windows: list[list[PairItem]], cpu: WindowLoader, decoder: BatchDecoder
    ) -> Iterator[Record]:
        """Windows prepared (read, GPU-decoded, packed) ahead of scoring, in order."""
        gpu = GpuWindows(decoder, cpu, self.engine.batch_len, self.workers, self._tick,
                         self.decodes)  # fmt: skip
        for items, prep in gpu.prepared(windows):
            t1 = time.perf_counter()
            on_cpu = {id(it) for it in prep.cpu}  # _run_window counts those
            self._progress(sum(1 for it in items if it.error and id(it) not in on_cpu))
            for chunk, a, b in prep.batches:
                hw = tuple(a.shape[1:3])
                self._each_engine(
                    chunk, hw, lambda k, c, a=a, b=b: self._score_batch(k, c, a, b)
                )  # fmt: skip
                self._progress(len(chunk))
                gpu.release(a)
                gpu.release(b)
            prep.batches.clear()
            t2 = time.perf_counter()
            self._run_window(prep.cpu)
            self._tick("score on GPU", t2 - t1)
            self._tick("CPU fallback", time.perf_counter() - t2)
            for it in items:
                rec = self.records(it)
                it.a = it.b = None
                yield rec

    # -- inference --------------------------------------------------------------------------
    def _score_batch(self, k: int, items: list[PairItem], a: Any, b: Any) -> None:
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

    def _each_engine(self, items: list[PairItem], hw: tuple[int, ...], run: Any) -> None:
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
                    it.model_errors[k] = f"scoring failed: {describe(e)}"

    def _run_group(self, k: int, items: list[PairItem]) -> None:
        """Score pairs of one image size with engine ``k``; fills ``per_tap`` (and maps)."""
        eng = self.engines[k]
        shared = any(self._uses[p] > 1 for it in items for p in (it.pair.a_path, it.pair.b_path))
        if self.spatial_dir is not None or eng.device == "cuda" or not shared:
            # The pair graph (both trunks and the head in one run) is the fastest way when no
            # image is reused (figures: benchmarks/results/engine-defaults.md). On a GPU it also
            # keeps features on the device, where host round trips cost more than recomputing a
            # reused image's trunk. Heatmaps need it too (pair_spatial).
            a = np.stack([it.a for it in items if it.a is not None])
            b = np.stack([it.b for it in items if it.b is not None])
            self._score_batch(k, items, a, b)
            return
        sides = [((it.pair.a_path, it.a), (it.pair.b_path, it.b)) for it in items]
        per_tap = per_tap_reusing_features(k, eng, sides, self.cache, self._uses)  # type: ignore[arg-type]
        for it, p in zip(items, per_tap, strict=True):
            it.per_tap[k] = p

    # -- windows, batch by batch ------------------------------------------------------------
    def _progress(self, n: int) -> None:
        if self.on_progress is not None and n:
            self.on_progress(n)

    def _done(self, it: PairItem) -> bool:
        """Whether every model has scored (or failed) the pair: its record can go out."""
        n = len(self.engines)
        return bool(it.error) or all(k in it.per_tap or k in it.model_errors for k in range(n))

    def _run_window(self, items: list[PairItem]) -> None:
        for _ in self._window_steps(items):
            pass

    def _window_steps(self, items: list[PairItem]) -> Iterator[None]:
        """Score a window batch by batch, yielding after each batch (records can go out)."""
        groups: dict[tuple[int, ...], list[PairItem]] = {}
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

    def _tick(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def columns(self, with_id: bool = False) -> list[str]:
        """The result columns of this scorer's records (``with_id``: an ``id`` column)."""
        from ..io.results import result_columns

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
