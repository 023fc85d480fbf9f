"""CPU decode windows: pairs split into windows decoded ahead in a thread pool.

A window's files are decoded once each; a file that several pairs use (a reference shared by
many distorted images) is decoded once per run, not once per window, while the decoded images
kept for that fit a byte budget (least recently used dropped first).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..io.decode import ImageDecodeError, ResizeSpec, read_size, short_side_size
from .items import PairItem, describe
from .loader import ImageLoader

DEFAULT_WINDOW = 64
WINDOW_BYTES = 256 * 1024 * 1024  # decoded pixels per CPU decode window (two are in flight)
# GPU decoding: windows of ~2 batches at 1024×768, so that scoring starts soon and the decoder
# never waits for a whole window to be scored.
DEFAULT_WINDOW_GPU = 48
DECODE_CACHE_BYTES = 256 * 1024 * 1024  # decoded images of shared files kept for the run

Loading = list[tuple[PairItem, "Future[np.ndarray] | None", "Future[np.ndarray] | None"]]


def default_workers() -> int:
    """Decode threads by default: the CPU count, 1 to 8."""
    return max(1, min(8, os.cpu_count() or 1))


def first_hw(items: list[PairItem], resize: ResizeSpec) -> tuple[int, int] | None:
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
        if resize.mode == "short-side" and resize.n is not None:
            return short_side_size(h, w, resize.n)
        return h, w
    return None


def split_windows(
    items: list[PairItem],
    *,
    window: int,
    given: bool,
    gpu: bool,
    hw: tuple[int, int] | None,
    batch_len: Callable[[int, int], int],
) -> list[list[PairItem]]:
    """Split the pairs into decode windows, sized from the first image's ``hw``.

    The first window is one engine batch, so scoring starts as soon as it is decoded.
    CPU decoding: later windows hold at most ``WINDOW_BYTES`` of decoded pixels (memory
    stays bounded for large photos). GPU decoding: two full engine batches per window (no
    small tail batch per window, and scoring of one batch overlaps decoding of the next).
    ``given``: ``window`` was asked for, not a default (used as it is).
    """
    first = window
    if hw is not None:
        step = batch_len(*hw)
        if not given:
            if gpu:
                window = max(8, 2 * step)
            else:
                per_pair = 2 * 3 * hw[0] * hw[1]
                window = max(step, min(window, WINDOW_BYTES // per_pair))
        first = min(window, step)
    windows = [items[:first]] + [items[i : i + window] for i in range(first, len(items), window)]
    return [w for w in windows if w]


class WindowLoader:
    """Decodes windows of pairs in a thread pool, one run's worth.

    ``uses`` counts how many pairs of the run use each file: a file used more than once is
    decoded once for the run and kept (LRU, at most ``cache_bytes`` of decoded pixels; 0 keeps
    nothing beyond a window). Every decode is counted in ``decodes``. The loader is read from
    ``loader()`` at each decode, so a caller may wrap the scorer's loader.
    """

    def __init__(
        self,
        loader: Callable[[], ImageLoader],
        uses: Counter[Path | None],
        cache_bytes: int,
        decodes: Counter[Path],
    ) -> None:
        self._loader = loader
        self.uses = uses
        self.cache_bytes = cache_bytes
        self.decodes = decodes
        self._lock = threading.Lock()
        self._kept: OrderedDict[Path, Future[np.ndarray]] = OrderedDict()
        self._sizes: dict[Path, int] = {}
        self._bytes = 0

    @property
    def loader(self) -> ImageLoader:
        """The scorer's image loader, as it is now."""
        return self._loader()

    def _decode(self, path: Path) -> np.ndarray:
        with self._lock:
            self.decodes[path] += 1
        return self.loader.decode(path)

    def _shared(self, pool: ThreadPoolExecutor, path: Path) -> Future[np.ndarray]:
        """The run's one decode of a file several pairs use."""
        with self._lock:
            fut = self._kept.get(path)
            if fut is not None:
                self._kept.move_to_end(path)
                return fut
            fut = self._kept[path] = pool.submit(self._decode, path)
        fut.add_done_callback(lambda f: self._account(path, f))
        return fut

    def _account(self, path: Path, fut: Future[Any]) -> None:
        """A kept decode finished: count its bytes, drop the least recently used beyond budget."""
        ok = not fut.cancelled() and fut.exception() is None
        size = int(fut.result().nbytes) if ok else 0
        with self._lock:
            if self._kept.get(path) is not fut:
                return  # dropped before it finished
            self._sizes[path] = size
            self._bytes += size
            while self._bytes > self.cache_bytes and self._kept:
                old, _ = self._kept.popitem(last=False)
                self._bytes -= self._sizes.pop(old, 0)

    def submit(self, pool: ThreadPoolExecutor, items: list[PairItem]) -> Loading:
        """Start decoding a window's images; :meth:`finish` waits for them."""
        window: dict[Path, Future[np.ndarray]] = {}

        def get(p: Path | None) -> Future[np.ndarray] | None:
            if p is None:
                return None
            fut = window.get(p)
            if fut is None:
                shared = self.uses[p] > 1 and self.cache_bytes > 0
                fut = self._shared(pool, p) if shared else pool.submit(self._decode, p)
                window[p] = fut
            return fut

        return [
            (it, None, None) if it.error else (it, get(it.pair.a_path), get(it.pair.b_path))
            for it in items
        ]

    def finish(self, loading: Loading) -> None:
        """Wait for a window's images and set each pair's arrays (or its error)."""
        loader = self.loader
        for it, fa, fb in loading:
            if it.error:
                continue
            try:
                if fa is None or fb is None:
                    raise ValueError("no file to decode")
                a_img = _result(fa, "a")
                b_img = _result(fb, "b")
                it.a, it.b = loader.pair_arrays(it.pair, a_img, b_img)
            except (ValueError, OSError) as e:
                it.error = describe(e)


def _result(f: Future[np.ndarray], side: str) -> np.ndarray:
    try:
        return f.result()
    except ImageDecodeError as e:
        raise ValueError(f"{side}: {describe(e)}") from None
    except OSError as e:
        raise ValueError(f"{side}: cannot read: {describe(e)}") from None
