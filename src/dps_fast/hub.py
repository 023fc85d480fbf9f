"""Find a model's bundle: a folder, or the cache; export it when missing and torch is there.

This layer sits above the engine: ``dps_fast.load(name)`` and ``Engine(name)`` (through the
resolver installed below) come here, so the engine itself never imports the exporter. Offline
(``offline=True`` or ``DPS_FAST_OFFLINE=1``) nothing is downloaded or exported: a bundle missing
from the cache is an error saying how to make it. This module never imports torch at import
time; the export step is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

from ._install import install_command
from .bundle import MANIFEST, read_bundle, stale_manifest
from .cache import aliases_file, bundle_dir, default_file, hash_cache_file, weights_key
from .engine import Engine, set_bundle_resolver
from .errors import BundleNotFoundError, WeightsNotFoundError
from .hashing import sha256_file_cached
from .reexport import alias_command, as_hint, reexport_command
from .reexport import export_command as _export_command
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
    """The complete ``dps-fast export`` command that makes ``model``'s bundle for ``weights``
    in the cache (:func:`dps_fast.reexport.export_command`)."""
    return _export_command(model, weights=weights, precisions=(precision,))


def weights_sha256(weights: str | os.PathLike[str]) -> str:
    """sha256 of a weights file, hashed once per file identity (path, size, mtime, inode)."""
    wp = Path(weights).expanduser()
    if not wp.is_file():
        raise WeightsNotFoundError(f"weights file not found: {wp}")
    return sha256_file_cached(wp, hash_cache_file())


def read_aliases() -> dict[str, dict[str, str]]:
    """Aliases made by ``export --alias``: name → {"model", "key"} (empty when none)."""
    try:
        table = json.loads(aliases_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def default_key(model: str) -> str | None:
    """Weights key of ``model``'s default bundle (its last export), if that bundle exists."""
    try:
        key = default_file(model).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return key if key and (bundle_dir(model, key) / MANIFEST).is_file() else None


def remember_export(path: Path, alias: str | None = None) -> None:
    """Make a bundle in the cache (``bundles/<model>/<key>``) its model's default, and give it
    ``alias`` when asked: later commands find it by name, without ``--weights``."""
    model, key = path.parent.name, path.name
    if path != bundle_dir(model, key):
        if alias is not None:
            raise ValueError(f"--alias names bundles in the cache; {path} is outside it")
        return
    default_file(model).write_text(key + "\n", encoding="utf-8")
    if alias is not None:
        check_alias(alias)
        table = read_aliases()
        entry = {"model": model, "key": key}
        made = _weights_path(path)
        if made is not None:  # to make the bundle again if it goes (alias_gone_message)
            entry["weights"] = made
        table[alias] = entry
        _write_json(aliases_file(), table)


def _weights_path(path: Path) -> str | None:
    """The weights file a bundle's manifest says it was made from (``weights.path``)."""
    try:
        w = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        return None
    made = w.get("path") if isinstance(w, dict) and w.get("source") == "file" else None
    return made if isinstance(made, str) and made else None


def alias_gone_message(alias: str) -> str | None:
    """When ``alias``'s bundle is gone: the message with the complete command that makes it
    again under that alias (its model, the weights it was made from, ``--alias``); else None."""
    entry = read_aliases().get(alias)
    if not isinstance(entry, dict):
        return None
    model, key = str(entry.get("model", "")), str(entry.get("key", ""))
    dest = bundle_dir(model, key)
    if (dest / MANIFEST).is_file():
        return None
    made = entry.get("weights")
    try:
        cmd = alias_command(alias, model, key, made if isinstance(made, str) else None)
    except LookupError:
        return (
            f"alias {alias!r} names the bundle {dest}, which is gone, and no weights file with "
            f"its key ({key}) is known here: make it again with `dps-fast export {model} "
            f"--weights <that file> --alias {alias}`"
        )
    return f"alias {alias!r} names the bundle {dest}, which is gone; make it again: {as_hint(cmd)}"


def check_alias(alias: str) -> None:
    """An alias must not shadow a registry name or look like a path."""
    from .registry import list_models

    if not alias or "/" in alias or os.sep in alias or alias in {s.name for s in list_models()}:
        raise ValueError(
            f"expected an alias that is neither a registry model name nor a path, got {alias!r}"
        )


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def cached_bundle_path(model: str, weights: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder of ``model`` (a registry name or an alias) with ``weights``, which may not
    exist yet. Without ``weights``: the model's default bundle (its last export), else the
    torchvision-weights one."""
    alias = read_aliases().get(model)
    if alias is not None and weights is None:
        return bundle_dir(alias["model"], alias["key"])
    spec = get_model(model)  # raises UnknownModelError listing valid names
    if spec.classical:
        return _classical_bundle(spec.name, weights)
    if weights is None:
        return bundle_dir(spec.name, default_key(spec.name) or weights_key(None))
    return bundle_dir(spec.name, weights_key(weights_sha256(weights)))


def needs_export(
    model: str | os.PathLike[str], weights: str | os.PathLike[str] | None
) -> Path | None:
    """The cache folder a registry model's bundle would be exported to, or None when it exists
    (or ``model`` is a folder): lets the CLI say so before a long first run."""
    p = Path(model)
    if isinstance(model, os.PathLike) or (p / MANIFEST).is_file() or os.sep in str(model):
        return None
    try:
        dest = cached_bundle_path(str(model), weights)
    except (ValueError, FileNotFoundError):
        return None  # resolve_bundle reports it
    return None if (dest / MANIFEST).is_file() else dest


def _classical_bundle(name: str, weights: str | os.PathLike[str] | None) -> Path:
    """The bundle shipped in the package for classical measure ``name`` (no weights)."""
    from .classical import bundle_path

    if weights is not None:
        raise ValueError(
            f"{name} is a classical measure with no weights; drop --weights/weights= "
            f"(got {weights})"
        )
    return bundle_path(name)


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
            read_bundle(p)  # raises BundleNotFoundError with the command that makes one
        return p
    spec0 = get_model(str(model)) if str(model) not in read_aliases() else None
    if spec0 is not None and spec0.classical:
        if precision != "fp32":
            raise ValueError(
                f"{spec0.name} is a classical measure and runs in float32 only; got precision "
                f"{precision!r}: drop --precision (or pass fp32)"
            )
        return _classical_bundle(spec0.name, weights)
    dest = cached_bundle_path(str(model), weights)
    gone = alias_gone_message(str(model)) if weights is None else None
    if gone is not None:
        raise BundleNotFoundError(gone)
    spec = get_model(dest.parent.name)
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
            f"installed here to make one. Make it where PyTorch is "
            f"({install_command('export')}) with "
            f"`{export_command(spec.name, weights, precision)}`, "
            f"then copy the folder to {dest} or pass the bundle folder as the model."
        )
    from .export import export_model

    made_from = stale.get("weights") if stale is not None else None
    if weights is None and isinstance(made_from, dict) and made_from.get("source") == "file":
        # A default or alias bundle made from a weights file: the file it records (or, moved,
        # a file the hash cache knows with the same sha256).
        cmd = reexport_command(dest, stale)
        args = shlex.split(cmd)
        weights = args[args.index("--weights") + 1] if "--weights" in args else None
        if weights is None or not Path(weights).is_file():
            raise BundleNotFoundError(
                f"the cached bundle {dest} predates a numerics fix and the weights file it was "
                f"made from ({made_from.get('path') or made_from.get('name')}) is gone; "
                f"re-export it with `{cmd}`, giving the weights file's current path"
            )
    why = "no cached bundle" if stale is None else "the cached bundle predates a numerics fix"
    log.info("%s for %s (%s): exporting it now", why, spec.name, key)
    had = "".join(stale["graphs"]) if stale is not None else ""  # keep its precision variants
    path = export_model(
        spec, weights=weights, out=dest, force=True, fp16=precision == "fp16" or "@fp16" in had,
        int8=precision == "int8" or "@int8" in had,
    )  # fmt: skip
    remember_export(path)
    return path


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
