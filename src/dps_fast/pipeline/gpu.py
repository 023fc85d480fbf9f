"""The GPU decode path: which decoder a run uses, and windows decoded on the device ahead of
scoring.

A window's files are read in threads; the decode thread hands the bytes the decoder accepts to
it in one batch call and packs the images of one size into device batches of at most one
engine batch; whatever it refuses or fails goes to the CPU window loader. Windows are prepared
up to ``GPU_PREFETCH`` ahead of the one being scored. The decoder is any
:class:`~dps_fast.io.gpu_decode.BatchDecoder`: the nvImageCodec one, or a test double.
Decoded device images are recycled after packing and batches released after scoring, so the
decoder can reuse their memory; they are not kept across windows (a shared file's bytes are
decoded again in each window that uses it).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import InputTypeError, ProviderError
from ..io.decode import ResizeSpec
from ..io.gpu_decode import BatchDecoder, shared_gpu_decoder
from .items import PairItem, describe, item_paths
from .windows import WindowLoader

GPU_PREFETCH = 2
DECODE_MODES = ("auto", "cpu", "gpu")
log = logging.getLogger("dps_fast.pipeline")
Tick = Callable[[str, float], None]
_DECODER_METHODS = ("accepts", "decode", "stack", "recycle", "release")


def choose_decoder(
    decode: str,
    decoder: BatchDecoder | None,
    engines: Sequence[Engine],
    resize: ResizeSpec,
    heatmap_style: str | None,
    tick: Tick,
) -> tuple[BatchDecoder | None, str, str]:
    """The batch (GPU) decoder to use, or None for CPU decoding; with the mode and the reason.

    ``heatmap_style``: the style of the run's heatmaps, None when it writes none.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"expected decode one of {', '.join(DECODE_MODES)}, got {decode!r}")
    if decode == "cpu":
        return None, "cpu", "asked for"
    if decoder is not None:
        if not isinstance(decoder, BatchDecoder):
            missing = [m for m in _DECODER_METHODS if m not in dir(decoder)]
            raise InputTypeError(
                f"decoder {type(decoder).__name__} lacks {', '.join(missing)}: a batch decoder "
                f"implements {', '.join(_DECODER_METHODS)} (dps_fast.io.gpu_decode.BatchDecoder)"
            )
        return decoder, "gpu", f"decoder {type(decoder).__name__} given"
    why_not = None
    cpu = next((e for e in engines if e.device != "cuda"), None)
    no_u8 = next((e for e in engines if not e.accepts_uint8), None)
    if cpu is not None:
        why_not = f"the engine runs on {cpu.device}; GPU decoding needs device='cuda'"
    elif resize.mode != "none":
        why_not = f"resize {resize} runs on the CPU; GPU decoding works with resize 'none'"
    elif heatmap_style == "panel":
        why_not = "heatmap panels draw the images on the host; GPU decoding keeps them there"
    elif any(e.crop_border for e in engines):
        why_not = "crop_border crops host images; GPU decoding works with crop_border 0"
    elif no_u8 is not None:
        why_not = f"the bundle has no @uint8-nhwc graphs; {no_u8.bundle.reexport_hint()}"
    if why_not is None:
        try:
            t0 = time.perf_counter()
            dec = shared_gpu_decoder()
            tick("GPU decoder start", time.perf_counter() - t0)
            return dec, "gpu", "nvImageCodec on the engine's GPU"
        except (ProviderError, RuntimeError, OSError) as e:  # no nvImageCodec, no GPU …
            why_not = str(e)
    if decode == "gpu":
        raise ValueError(f"decode='gpu' is not possible: {why_not}; or use decode='cpu'")
    return None, "cpu", why_not


@dataclass
class Prepared:
    """A window after GPU decoding: packed device batches, and the pairs left to the CPU."""

    batches: list[tuple[list[PairItem], Any, Any]] = field(default_factory=list)
    cpu: list[PairItem] = field(default_factory=list)


def _read_bytes(path: Path) -> bytes | None:
    """A regular file's bytes, or None (the CPU path then reports what is wrong with it)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never block on a FIFO
            return None
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class GpuWindows:
    """Prepares windows on the device (read, decode, pack) ahead of the scoring thread."""

    def __init__(
        self,
        decoder: BatchDecoder,
        cpu: WindowLoader,
        batch_len: Callable[[int, int], int],
        workers: int,
        tick: Tick,
        decodes: Counter[Path],
    ) -> None:
        self.decoder = decoder
        self.cpu = cpu
        self.batch_len = batch_len
        self.workers = workers
        self.tick = tick
        self.decodes = decodes

    def prepared(self, windows: list[list[PairItem]]) -> Iterator[tuple[list[PairItem], Prepared]]:
        """Each window with its prepared batches, in order; the caller scores them, then calls
        :meth:`release` on each batch."""
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="dps-fast-read") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="dps-fast-gpu-decode") as dec,
        ):
            pending: deque[Future[Prepared]] = deque()
            for k in range(len(windows)):
                while len(pending) <= GPU_PREFETCH and k + len(pending) < len(windows):
                    w = windows[k + len(pending)]
                    reads = self._submit_reads(pool, w)
                    pending.append(dec.submit(self._prepare, pool, w, reads))
                t0 = time.perf_counter()
                prep = pending.popleft().result()
                self.tick("wait for decode", time.perf_counter() - t0)
                yield windows[k], prep

    def release(self, batch: Any) -> None:
        """A scored batch: its device memory goes back to the decoder's pool."""
        self.decoder.release(batch)

    def _submit_reads(
        self, pool: ThreadPoolExecutor, items: list[PairItem]
    ) -> dict[Path, Future[bytes | None]]:
        """Start reading a window's files (before its turn in the decode thread)."""
        paths = dict.fromkeys(p for p in item_paths(items) if p is not None)
        return {p: pool.submit(_read_bytes, p) for p in paths}

    def _prepare(
        self,
        pool: ThreadPoolExecutor,
        items: list[PairItem],
        reads: dict[Path, Future[bytes | None]],
    ) -> Prepared:
        """Decode a window's JPEGs on the GPU into packed batches, the rest on the CPU.

        Runs in the decode thread while the main thread scores earlier windows.
        """
        t0 = time.perf_counter()
        datas: dict[Path, bytes] = {}
        for p, f in reads.items():
            data = f.result()
            if data is not None and self.decoder.accepts(data):
                datas[p] = data
        images: dict[Path, Any] = {}
        t1 = time.perf_counter()
        self.tick("read files", t1 - t0)
        if datas:
            try:
                decoded = self.decoder.decode(list(datas.values()))
                images = {p: im for p, im in zip(datas, decoded, strict=True) if im is not None}
            except (RuntimeError, ValueError, OSError) as e:
                log.warning("GPU decoding of a window failed (%s); decoding it on the CPU", e)
            self.decodes.update(images.keys())
        t2 = time.perf_counter()
        self.tick("GPU decode", t2 - t1)
        prep = Prepared()
        groups: dict[tuple[int, ...], list[PairItem]] = {}
        for it in items:
            if it.error:
                continue
            pa, pb = it.pair.a_path, it.pair.b_path
            ia = None if pa is None else images.get(pa)
            ib = None if pb is None else images.get(pb)
            if ia is None or ib is None:
                prep.cpu.append(it)
                continue
            try:
                self.cpu.loader.check_sizes(tuple(ia.shape), tuple(ib.shape))
            except ValueError as e:
                it.error = describe(e)
                continue
            groups.setdefault(tuple(ia.shape), []).append(it)
        for shape, group in groups.items():
            step = self.batch_len(shape[0], shape[1])
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
        self.decoder.recycle(list(images.values()))
        images.clear()  # only the packed batches stay on the device
        self.tick("pack batches", time.perf_counter() - t2)
        if prep.cpu:
            self.cpu.finish(self.cpu.submit(pool, prep.cpu))
        return prep
