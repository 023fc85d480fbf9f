"""Find a model's bundle: a folder, or the cache; export it when missing and torch is there.

This module never imports torch at import time; the export step is imported lazily.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .bundle import MANIFEST, stale_manifest
from .cache import bundle_dir, weights_key
from .errors import BundleNotFoundError
from .hashing import sha256_file
from .registry import get_model

log = logging.getLogger("dps_fast")


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def export_command(
    model: str, weights: str | os.PathLike[str] | None, precision: str = "fp32"
) -> str:
    w = f" --weights {weights}" if weights is not None else ""
    flag = f" --{precision}" if precision in ("fp16", "int8") else ""
    return f"dps-fast export {model}{w}{flag}"


def cached_bundle_path(model: str, weights: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder of registry model ``model`` with ``weights`` (which may not exist yet)."""
    spec = get_model(model)  # raises UnknownModelError listing valid names
    if weights is None:
        return bundle_dir(spec.name, weights_key(None))
    wp = Path(weights).expanduser()
    if not wp.is_file():
        raise FileNotFoundError(f"weights file not found: {wp}")
    return bundle_dir(spec.name, weights_key(sha256_file(wp)))


def resolve_bundle(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    precision: str = "fp32",
) -> Path:
    """Path of the bundle for ``model`` (a bundle folder or a registry name) and ``weights``."""
    p = Path(model)
    if isinstance(model, os.PathLike) or (p / MANIFEST).is_file() or os.sep in str(model):
        if weights is not None:
            raise ValueError(
                "weights= selects which bundle to use for a model name; with a bundle folder "
                f"({p}) the weights are already baked in — pass one or the other"
            )
        if not (p / MANIFEST).is_file():
            raise BundleNotFoundError(
                f"no bundle at {p} (no {MANIFEST}); make one with `dps-fast export MODEL --out {p}`"
            )
        return p
    dest = cached_bundle_path(str(model), weights)
    spec = get_model(str(model))
    key = dest.name
    stale = stale_manifest(dest)
    if (dest / MANIFEST).is_file() and (stale is None or not _torch_available()):
        return dest  # a stale bundle without torch: the engine refuses it, naming the fix
    if not _torch_available():
        raise BundleNotFoundError(
            f"no bundle for {spec.name} ({key}) in the cache at {dest}, and PyTorch is not "
            f"installed here to make one. Make it where PyTorch is (pip install "
            f"'dps-fast[export]') with `{export_command(spec.name, weights, precision)}`, "
            f"then copy the folder to {dest} or pass the bundle folder as the model."
        )
    from .export import export_model

    why = "no cached bundle" if stale is None else "the cached bundle predates a numerics fix"
    log.info("%s for %s (%s): exporting it now", why, spec.name, key)
    had = "".join(stale["graphs"]) if stale is not None else ""  # keep its precision variants
    return export_model(
        spec, weights=weights, out=dest, force=True, fp16=precision == "fp16" or "@fp16" in had,
        int8=precision == "int8" or "@int8" in had,
    )  # fmt: skip
