"""The few CUDA runtime calls the GPU path needs (streams, device copies), through ctypes.

Used by both the engine and the GPU decoder (io), so it lives below both.

No torch, no CuPy: onnxruntime-gpu already loads ``libcudart``; we find that library and call
it. Device buffers themselves are allocated by ONNX Runtime (:class:`DeviceBatch`), so freeing
them is ONNX Runtime's job too.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._install import install_command
from .errors import ProviderError

DEVICE_TO_DEVICE = 3  # cudaMemcpyKind
_LIB_NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
_lock = threading.Lock()
_runtime: CudaRuntime | None = None


def import_ort() -> Any:
    """The ``onnxruntime`` module, or a ProviderError saying which extra installs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ProviderError(
            f"onnxruntime is not installed: {install_command('cpu')} (or the [gpu] extra "
            "for CUDA; never both)"
        ) from None
    if os.environ.get("ORT_DISABLE_TELEMETRY", "1") != "0":
        ort.disable_telemetry_events()  # the API switch (dps_fast/__init__ sets the variable)
    return ort


def _candidates() -> list[str]:
    """Library names first (found if already loaded or on the search path), then wheel folders."""
    found = list(_LIB_NAMES)
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels

        for root in getattr(nvidia, "__path__", []):
            for name in _LIB_NAMES:
                found += sorted(glob.glob(os.path.join(root, "*", "lib", name)))
    except ImportError:
        pass
    return found


class CudaRuntime:
    """ctypes bindings of cudart: stream create/synchronize and (2-D) async copies."""

    def __init__(self) -> None:
        errors = []
        self._lib: Any = None
        for cand in _candidates():
            try:
                self._lib = ctypes.CDLL(cand)
                self.path = cand
                break
            except OSError as e:
                errors.append(f"{cand}: {e}")
        if self._lib is None:
            raise ProviderError(
                "the CUDA runtime library (libcudart) was not found; install the [gpu] extra "
                f"({install_command('gpu')}), which brings a CUDA build of onnxruntime-gpu, "
                "or use device='cpu'. Tried: " + "; ".join(errors[:3])
            )
        lib = self._lib
        vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [i]
        lib.cudaStreamCreateWithFlags.argtypes = [ctypes.POINTER(vp), ctypes.c_uint]
        lib.cudaStreamSynchronize.argtypes = [vp]
        lib.cudaMemcpyAsync.argtypes = [vp, vp, sz, i, vp]
        lib.cudaMemcpy2DAsync.argtypes = [vp, sz, vp, sz, sz, sz, i, vp]
        for f in ("cudaStreamCreateWithFlags", "cudaStreamSynchronize", "cudaMemcpyAsync",
                  "cudaMemcpy2DAsync"):  # fmt: skip
            getattr(lib, f).restype = i

    def check(self, code: int, what: str) -> None:
        if code != 0:
            msg = self._lib.cudaGetErrorString(code).decode(errors="replace")
            raise RuntimeError(f"CUDA error in {what}: {msg} (code {code})")

    def stream_create(self) -> int:
        """A new non-blocking stream (it does not serialise with the legacy default stream)."""
        s = ctypes.c_void_p()
        self.check(self._lib.cudaStreamCreateWithFlags(ctypes.byref(s), 1), "cudaStreamCreate")
        return int(s.value or 0)

    def synchronize(self, stream: int) -> None:
        self.check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSync")

    def copy_2d(
        self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, stream: int
    ) -> None:
        """Device-to-device copy of ``height`` rows of ``width`` bytes, async on ``stream``."""
        self.check(
            self._lib.cudaMemcpy2DAsync(
                ctypes.c_void_p(dst), dpitch, ctypes.c_void_p(src), spitch, width, height,
                DEVICE_TO_DEVICE, ctypes.c_void_p(stream),
            ),
            "cudaMemcpy2DAsync",
        )  # fmt: skip

    def copy(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        """Device-to-device copy of ``nbytes``, async on ``stream``."""
        self.check(
            self._lib.cudaMemcpyAsync(
                ctypes.c_void_p(dst), ctypes.c_void_p(src), nbytes, DEVICE_TO_DEVICE,
                ctypes.c_void_p(stream),
            ),
            "cudaMemcpyAsync",
        )  # fmt: skip


def runtime() -> CudaRuntime:
    """The process-wide :class:`CudaRuntime` (loaded on first use)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = CudaRuntime()
        return _runtime


@dataclass(frozen=True)
class CudaArrayView:
    """What ``__cuda_array_interface__`` says about a device array, checked."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    stream: int | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def is_cuda_array(x: object) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def cuda_array_view(x: object, what: str) -> CudaArrayView:
    """Pointer, shape, dtype and producer stream of a CUDA array; C-contiguous only."""
    cai = x.__cuda_array_interface__  # type: ignore[attr-defined]
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if strides is not None:
        expect, acc = [], dtype.itemsize
        for s in reversed(shape):
            expect.append(acc)
            acc *= s
        if tuple(strides) != tuple(reversed(expect)) and int(np.prod(shape)) > 1:
            raise ValueError(
                f"expected a C-contiguous device array for {what}, got strides {tuple(strides)} "
                f"for shape {shape}; make it contiguous first (e.g. .contiguous() in torch)"
            )
    ptr = int(cai["data"][0] or 0)
    stream = cai.get("stream")
    return CudaArrayView(ptr, shape, dtype, None if stream is None else int(stream))


class DeviceBatch:
    """A C-contiguous CUDA buffer owned by ONNX Runtime, usable wherever a CUDA array is.

    It exposes ``__cuda_array_interface__`` (so CuPy, torch and :meth:`Engine.score` take it)
    and keeps its ``OrtValue`` alive for as long as the batch lives.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.uint8, device_id: int = 0) -> None:
        ort = import_ort()
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.device_id = device_id
        self.ortvalue = ort.OrtValue.ortvalue_from_shape_and_type(
            list(self.shape), self.dtype.type, "cuda", device_id
        )
        self.ptr = int(self.ortvalue.data_ptr())

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "strides": None,
            "version": 3,
            "stream": None,  # filled by synchronous copies: nothing to wait for
        }
