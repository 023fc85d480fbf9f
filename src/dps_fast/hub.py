"""Find a model's bundle: a folder, or the cache; export it when missing and torch is there.

This layer sits above the engine: ``dps_fast.load(name)`` and ``Engine(name)`` (through the
resolver installed below) come here, so the engine itself never imports the exporter. Offline
(``offline=True`` or ``DPS_FAST_OFFLINE=1``) nothing is downloaded or exported: a bundle missing
from the cache is an error saying how to make it. This module never imports torch at import
time; the export step is imported lazily.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .bundle import MANIFEST, stale_manifest
from .cache import bundle_dir, weights_key
from .engine import Engine, set_bundle_resolver
from .errors import BundleNotFoundError, WeightsNotFoundError
from .hashing import sha256_file
from .registry import get_model

log = logging.getLogger("dps_fast")

OFFLINE_ENV = "DPS_FAST_OFFLINE"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else ``$DPS_FAST_OFFLINE`` (1/true/yes/on; unset or 0: online)."""
    if offline is not None:
        return bool(offline)
    raw = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise ValueError(f"expected {OFFLINE_ENV} 1 or 0 (or unset), got {raw!r}")
    return raw in _TRUE


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
        raise WeightsNotFoundError(f"weights file not found: {wp}")
    return bundle_dir(spec.name, weights_key(sha256_file(wp)))


def resolve_bundle(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    precision: str = "fp32",
    offline: bool | None = None,
) -> Path:
    """Path of the bundle for ``model`` (a bundle folder or a registry name) and ``weights``.

    A name missing from the cache is exported (torch needed), unless :func:`is_offline`.
    """
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
    if (dest / MANIFEST).is_file() and (
        stale is None or not _torch_available() or is_offline(offline)
    ):
        return dest  # stale, without torch or offline: the engine refuses it, naming the fix
    if is_offline(offline):
        raise BundleNotFoundError(
            f"no bundle for {spec.name} ({key}) in the cache at {dest}, and offline mode "
            f"(offline=True or {OFFLINE_ENV}=1) downloads and exports nothing. Make it with "
            f"`{export_command(spec.name, weights, precision)}` (online, with PyTorch), or pass "
            "a bundle folder as the model."
        )
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


def load(
    model: str | os.PathLike[str] = "lpips-alex",
    *,
    device: str = "auto",
    precision: str = "fp32",
    weights: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    offline: bool | None = None,
) -> Engine:
    """An :class:`~dps_fast.Engine` for a model name or bundle folder: the shortest way in.

    The bundle is found in the cache, or exported when missing (torch needed), unless offline.
    """
    path = resolve_bundle(model, weights, precision=precision, offline=offline)
    return Engine(path, device=device, precision=precision, threads=threads,
                  batch_size=batch_size)  # fmt: skip


def _engine_resolver(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None,
    precision: str,
    offline: bool | None,
) -> Path:
    return resolve_bundle(model, weights, precision=precision, offline=offline)


set_bundle_resolver(_engine_resolver)
