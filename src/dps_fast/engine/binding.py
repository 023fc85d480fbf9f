"""ONNX Runtime IO binding in one place: inputs from host arrays or device pointers, outputs
copied to the host or left on the device.

The engine's CUDA paths all run a session this way (host batches copied to the device once,
CUDA arrays read in place, features kept on the device for the all-pairs matrix); only where
inputs come from and where outputs go differ. IO binding works on every execution provider,
so the same sequence runs, and is tested, on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BoundTensor", "run_bound"]


@dataclass(frozen=True)
class BoundTensor:
    """A tensor already in some device's memory, bound by pointer (not copied).

    ``device`` is ONNX Runtime's device name (``"cuda"``, or ``"cpu"`` for host memory the
    caller keeps alive), ``ptr`` the address of element 0 of a C-contiguous array.
    """

    ptr: int
    shape: Sequence[int]
    dtype: np.dtype[Any]
    device: str = "cuda"
    device_id: int = 0


def run_bound(
    session: Any,
    feed: Mapping[str, np.ndarray | BoundTensor],
    *,
    outputs_on: str = "cpu",
    to_host: bool = True,
) -> list[Any]:
    """Run ``session`` with IO binding; every graph output bound on ``outputs_on``.

    ``feed`` values are host arrays (copied to the session's device by ONNX Runtime) or
    :class:`BoundTensor` (read in place). With ``to_host`` the outputs come back as NumPy
    arrays (only they cross to the host); without, as ONNX Runtime ``OrtValue`` objects that
    stay where they were bound (``data_ptr()``, ``shape()``), synchronized and ready to read.
    """
    io = session.io_binding()
    for name, value in feed.items():
        if isinstance(value, BoundTensor):
            io.bind_input(name, value.device, value.device_id, np.dtype(value.dtype).type,
                          [int(s) for s in value.shape], value.ptr)  # fmt: skip
        else:
            io.bind_cpu_input(name, np.ascontiguousarray(value))
    for out in session.get_outputs():
        io.bind_output(out.name, outputs_on)
    session.run_with_iobinding(io)
    if to_host:
        return list(io.copy_outputs_to_cpu())
    io.synchronize_outputs()
    return list(io.get_outputs())
