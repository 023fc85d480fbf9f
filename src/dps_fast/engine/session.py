"""ONNX Runtime sessions with honest provider selection.

After a session is made we check which provider it really got: onnxruntime silently falls
back to CPU when the CUDA provider fails to load, and a silent CPU run is a lie to the user.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .._install import install_command
from ..cuda import import_ort
from ..errors import ProviderError

log = logging.getLogger("dps_fast.engine")

DEVICES = ("auto", "cpu", "cuda")


def available_providers() -> list[str]:
    return list(import_ort().get_available_providers())


def session_options(threads: int | None, *, spin: bool = True) -> Any:
    """Options for every session; ``spin=False`` stops idle worker threads from spinning.

    Spinning suits back-to-back runs; a session followed by other work on the same cores (the
    NumPy head, decoders) lends them those cores instead. The memory arena, memory patterns and
    ORT_ENABLE_ALL stay on because they measured faster (benchmarks/results/engine-defaults.md).
    """
    ort = import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"expected threads ≥ 1 or None, got {threads}")
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


CUDNN_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")


def _cuda_options(prefer_nhwc: bool = False) -> dict[str, str]:
    """CUDA provider options; ``DPS_FAST_CUDNN_ALGO_SEARCH`` picks cuDNN's algorithm search.

    HEURISTIC (default) costs nothing per new input shape; EXHAUSTIVE benchmarks every
    convolution for each new shape (slow first batches, sometimes faster steady state).
    ``prefer_nhwc`` asks for channels-last convolutions (tensor-core friendly; figures in
    benchmarks/results/engine-defaults.md); ``DPS_FAST_CUDA_PREFER_NHWC=0|1`` overrides it.
    """
    algo = os.environ.get("DPS_FAST_CUDNN_ALGO_SEARCH", "HEURISTIC").upper()
    if algo not in CUDNN_ALGO_SEARCH:
        raise ValueError(
            f"expected DPS_FAST_CUDNN_ALGO_SEARCH one of {', '.join(CUDNN_ALGO_SEARCH)}, "
            f"got {algo!r}"
        )
    opts = {"cudnn_conv_algo_search": algo, "do_copy_in_default_stream": "1"}
    nhwc = os.environ.get("DPS_FAST_CUDA_PREFER_NHWC", "").strip()
    if nhwc not in ("", "0", "1"):
        raise ValueError(f"expected DPS_FAST_CUDA_PREFER_NHWC 0 or 1 (or unset), got {nhwc!r}")
    if (nhwc == "1") if nhwc else prefer_nhwc:
        opts["prefer_nhwc"] = "1"
    return opts


def make_session(
    path: Path,
    device: str,
    threads: int | None,
    *,
    prefer_nhwc: bool = False,
    spin: bool = True,
) -> tuple[Any, str]:
    """A session on ``device`` ("cpu" | "cuda" | "auto") and the device it really runs on.

    ``spin`` applies to CPU sessions (see :func:`session_options`).
    """
    if device not in DEVICES:
        raise ValueError(f"expected device one of {', '.join(DEVICES)}, got {device!r}")
    ort = import_ort()
    avail = ort.get_available_providers()
    want_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in avail)
    if want_cuda:
        if "CUDAExecutionProvider" not in avail:
            raise ProviderError(
                "device='cuda' needs onnxruntime-gpu with a working CUDA: this onnxruntime "
                f"offers {', '.join(avail)}. Install the [gpu] extra instead of [cpu] "
                f"(pip uninstall -y onnxruntime, then {install_command('gpu')}) or use "
                "device='cpu' / 'auto'."
            )
        sess = ort.InferenceSession(
            str(path),
            session_options(threads),
            providers=[
                ("CUDAExecutionProvider", _cuda_options(prefer_nhwc)),
                "CPUExecutionProvider",
            ],
        )
        got = sess.get_providers()
        if got and got[0] == "CUDAExecutionProvider":
            return sess, "cuda"
        if device == "cuda":
            raise ProviderError(
                "the CUDA provider is installed but did not load (missing CUDA/cuDNN libraries "
                f"or no GPU); the session got {got}. Check `nvidia-smi` and the CUDA libraries, "
                "or use device='cpu'."
            )
        log.warning("CUDA provider did not load (session got %s); running on CPU", got)
    so = session_options(threads, spin=spin)  # CPU only: CUDA sessions keep the default
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, "cpu"
