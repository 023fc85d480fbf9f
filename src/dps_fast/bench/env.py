"""The machine and software a benchmark ran on, recorded with every result."""

from __future__ import annotations

import logging
import os
import platform
import time
from typing import Any

import numpy as np

log = logging.getLogger("dps_fast.bench")

# CPU flags worth recording with results (float and int8 matrix units).
_ISA_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_int8", "avx_vnni"}
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else platform.processor())."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def environment(ceiling_gflops: float | None = None) -> dict[str, Any]:
    """Versions, CPU and thread counts of this run (and the ceiling when given)."""
    from importlib import metadata

    from .._version import __version__

    versions: dict[str, str | None] = {"dps_fast": __version__, "numpy": np.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "onnx", "lpips"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        versions["DISTS_pytorch"] = metadata.version("DISTS_pytorch")
    except metadata.PackageNotFoundError:
        versions["DISTS_pytorch"] = None
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_vendor": info.get("vendor_id"),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cpu_isa": sorted(flags & _ISA_FLAGS),
        "hypervisor": "hypervisor" in flags,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }
    if ceiling_gflops is not None:
        env["ceiling_gflops"] = ceiling_gflops
    return env
