"""JPEG decoding on the GPU with nvImageCodec, into batches that stay in CUDA memory.

The folder pipeline reads file bytes in threads, asks :meth:`accepts` which files this decoder
takes, decodes those in one batch call (:meth:`decode`), and packs images of one size into a
uint8 (N, H, W, 3) :class:`~dps_fast.cuda.DeviceBatch` (:meth:`stack`) that the engine
binds to the ``@uint8-nhwc`` graphs by pointer; decoded images (:meth:`recycle`) and scored
batches (:meth:`release`) come back to the decoder for reuse. Whatever this decoder refuses
(PNG and other formats, JPEGs with an ICC profile or CMYK, over the pixel limit, or broken)
goes to the CPU decoder in the same run, so results match the CPU path up to JPEG decoder
rounding.

nvImageCodec (``nvidia-nvimgcodec-cu13`` with ``nvidia-nvjpeg``, the ``[gpu]`` extra) is
imported only when a decoder is made.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from typing import Any, Protocol, runtime_checkable

from .._install import install_command
from .decode import max_pixels_limit

log = logging.getLogger("dps_fast.io")

_JPEG_MAGIC = b"\xff\xd8\xff"
_ICC_MARKER = b"ICC_PROFILE\x00"
_HEADER_SCAN = 1 << 18  # APPn segments (EXIF, ICC) come before the image data
POOL_BYTES = 1 << 30  # released device batches kept for reuse, at most this many bytes


@runtime_checkable
class BatchDecoder(Protocol):
    """Everything the folder pipeline calls on a batch decoder (the GPU one, or a test double).

    The pipeline calls :meth:`recycle` after packing a window and :meth:`release` after
    scoring each batch, always: a decoder with no memory to reuse implements them as no-ops.
    """

    def accepts(self, data: bytes) -> bool:
        """Whether this decoder takes the file (else it is decoded on the CPU)."""
        ...

    def decode(self, datas: list[bytes]) -> list[Any | None]:
        """Decoded images (objects with ``.shape == (H, W, 3)``), None where decoding failed."""
        ...

    def stack(self, images: list[Any]) -> Any:
        """Images of one size as one uint8 (N, H, W, 3) batch the engine accepts."""
        ...

    def recycle(self, images: list[Any]) -> None:
        """Decoded images the pipeline is done with (after :meth:`stack`)."""
        ...

    def release(self, batch: Any) -> None:
        """A batch from :meth:`stack` the pipeline is done with (scored)."""
        ...


def import_nvimgcodec() -> Any:
    from ..errors import ProviderError

    # nvImageCodec logs decode failures to stderr itself; they come back to us as None and go
    # to the CPU decoder, whose error names the file. Quiet unless the user asked otherwise.
    os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")
    try:
        nvimgcodec = importlib.import_module("nvidia.nvimgcodec")
    except ImportError:
        raise ProviderError(
            f"GPU decoding needs nvImageCodec: {install_command('gpu')} (it brings "
            "nvidia-nvimgcodec-cu13 and nvidia-nvjpeg), or decode on the CPU (--decode cpu)"
        ) from None
    return nvimgcodec


def is_plain_jpeg(data: bytes) -> bool:
    """A JPEG without an embedded ICC profile (those are colour-managed on the CPU path)."""
    return data[:3] == _JPEG_MAGIC and _ICC_MARKER not in data[:_HEADER_SCAN]


_shared: dict[int, GpuJpegDecoder] = {}
_shared_lock = threading.Lock()


def shared_gpu_decoder(device_id: int = 0) -> GpuJpegDecoder:
    """One decoder per GPU and process: making one (codec plugins, nvJPEG state) is costly."""
    with _shared_lock:
        dec = _shared.get(device_id)
        if dec is None:
            dec = _shared[device_id] = GpuJpegDecoder(device_id)
        return dec


class GpuJpegDecoder:
    """Batch JPEG decoding into CUDA memory (nvImageCodec: nvJPEG, hardware decoder if any).

    EXIF orientation is applied and grey JPEGs become RGB, as on the CPU path. Chroma is
    upsampled with libjpeg's "fancy" filter, as Pillow does. Thread-safe (calls serialise).
    ``DPS_FAST_GPU_DECODE_REUSE=1`` recycles decoded images' buffers between batches.
    """

    def __init__(self, device_id: int = 0, max_pixels: int | None = None) -> None:
        from ..cuda import runtime

        n = import_nvimgcodec()
        self._n = n
        self.device_id = device_id
        self.max_pixels = max_pixels_limit(max_pixels)
        self._rt = runtime()
        self._lock = threading.RLock()
        self._free: list[Any] = []  # decoded images whose buffers may be reused
        self._reuse = os.environ.get("DPS_FAST_GPU_DECODE_REUSE", "0") == "1"
        self._batches: dict[tuple[int, ...], list[Any]] = {}  # released DeviceBatches by shape
        self._pooled = 0
        self._stream = self._rt.stream_create()
        backend = os.environ.get("DPS_FAST_NVIMGCODEC_BACKEND", "auto")
        kinds = {"hw": "HW_GPU_ONLY", "gpu": "GPU_ONLY", "hybrid": "HYBRID_CPU_GPU"}
        if backend not in ("auto", *kinds):
            raise ValueError(
                f"expected DPS_FAST_NVIMGCODEC_BACKEND auto, hw, gpu or hybrid, got {backend!r}"
            )
        backends = None
        if backend != "auto":  # the chosen backend first, the CPU as the last resort
            backends = [n.Backend(getattr(n.BackendKind, kinds[backend])),
                        n.Backend(n.BackendKind.CPU_ONLY)]  # fmt: skip
        threads = int(os.environ.get("DPS_FAST_NVIMGCODEC_THREADS", "0"))
        try:
            self._decoder = n.Decoder(
                device_id=device_id, max_num_cpu_threads=threads, backends=backends,
                options=":fancy_upsampling=1",
            )  # fmt: skip
        except RuntimeError as e:
            from ..errors import ProviderError

            raise ProviderError(
                f"nvImageCodec could not start a GPU decoder on device {device_id} ({e}); "
                "check `nvidia-smi`, or decode on the CPU (--decode cpu)"
            ) from None
        self._params = n.DecodeParams(
            apply_exif_orientation=True,
            color_spec=n.ColorSpec.SRGB,
            allow_any_depth=False,
            sample_format=n.SampleFormat.I_RGB,
        )

    def accepts(self, data: bytes) -> bool:
        if not is_plain_jpeg(data):
            return False
        try:
            cs = self._n.CodeStream(data)
        except RuntimeError:  # unreadable header: the CPU path says what is wrong
            return False
        return (
            cs.codec_name == "jpeg"
            and cs.num_channels in (1, 3)
            and 0 < cs.height * cs.width <= self.max_pixels
        )

    def decode(self, datas: list[bytes]) -> list[Any | None]:
        if not datas:
            return []
        streams = [self._n.CodeStream(d) for d in datas]
        with self._lock:
            reuse = None
            if self._reuse and len(self._free) >= len(streams):
                reuse, self._free = self._free[: len(streams)], self._free[len(streams) :]
            images = self._decoder.decode(
                streams, images=reuse, params=self._params, cuda_stream=self._stream
            )
        return [
            im if im is not None and len(im.shape) == 3 and im.shape[2] == 3 else None
            for im in images
        ]

    def recycle(self, images: list[Any]) -> None:
        """Images the caller is done with (after :meth:`stack`): their buffers may be reused."""
        if self._reuse:
            with self._lock:
                self._free.extend(images)
                del self._free[: max(0, len(self._free) - 512)]

    def release(self, batch: Any) -> None:
        """A batch the caller is done with (scored): kept for reuse, no free and re-allocate."""
        with self._lock:
            if self._pooled + batch.nbytes <= POOL_BYTES:
                self._batches.setdefault(batch.shape, []).append(batch)
                self._pooled += batch.nbytes

    def stack(self, images: list[Any]) -> Any:
        with self._lock:
            return self._stack(images)

    def _stack(self, images: list[Any]) -> Any:
        from ..cuda import DeviceBatch

        h, w = int(images[0].shape[0]), int(images[0].shape[1])
        shape = (len(images), h, w, 3)
        free = self._batches.get(shape)
        if free:
            batch = free.pop()
            self._pooled -= batch.nbytes
        else:
            batch = DeviceBatch(shape, device_id=self.device_id)
        row, size = w * 3, h * w * 3
        waited: set[int] = set()
        for i, im in enumerate(images):
            cai = im.__cuda_array_interface__
            if tuple(cai["shape"]) != (h, w, 3) or cai["typestr"] != "|u1":
                raise ValueError(f"expected decoded images of {(h, w, 3)} uint8, got {cai}")
            stream = cai.get("stream")
            if stream is not None and stream != self._stream and stream not in waited:
                self._rt.synchronize(int(stream))
                waited.add(stream)
            strides = cai.get("strides")
            pitch = int(strides[0]) if strides else row
            src = int(cai["data"][0])
            self._rt.copy_2d(batch.ptr + i * size, row, src, pitch, row, h, self._stream)
        self._rt.synchronize(self._stream)  # the batch is complete before ONNX Runtime reads it
        return batch
