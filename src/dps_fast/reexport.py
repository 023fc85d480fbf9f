"""The ``dps-fast export`` command that makes or repairs a bundle, written in this one place.

Every message that tells the user to export (no bundle, a stale, corrupt or incomplete one, a
missing precision or input variant) takes its command from here, so that following it rebuilds
the bundle the user needs: the model, ``--weights`` with the file the bundle was made from (the
path its manifest records), the precision variants the bundle has plus the one asked for,
``--out`` when the bundle is not the cache's folder for that model and weights, and ``--force``
when a bundle is to be replaced, ``--alias`` when the bundle an alias named is gone. A classical
measure's bundle is never exported (it ships inside the package): its damaged files are fixed by
reinstalling dps-fast (:func:`repair_hint`). Torch-free: the engine's errors use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._install import install_source
from ._version import __version__
from .cache import bundle_dir, cache_root, hash_cache_file, weights_key
from .manifest import PRECISIONS, parse_role

MANIFEST = "manifest.json"
# Said instead of a model name when a manifest is too broken to tell (never for a cache folder).
UNKNOWN_MODEL = "MODEL"


def export_command(
    model: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    precisions: Iterable[str] = (),
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    alias: str | None = None,
) -> str:
    """``dps-fast export MODEL [--weights W] [--fp16] [--int8] [--out DIR] [--force]
    [--alias NAME]``, quoted for a POSIX shell. ``precisions``: the variants to make (``fp32``
    is always made)."""
    want = set(precisions)
    bad = want - set(PRECISIONS)
    if bad:
        raise ValueError(f"expected precisions among {', '.join(PRECISIONS)}, got {sorted(bad)}")
    parts = ["dps-fast", "export", model]
    if weights is not None:
        parts += ["--weights", os.fspath(weights)]
    parts += [f"--{p}" for p in PRECISIONS[1:] if p in want]
    if out is not None:
        parts += ["--out", os.fspath(out)]
    if force:
        parts.append("--force")
    if alias is not None:
        parts += ["--alias", alias]
    return " ".join(shlex.quote(p) for p in parts)


def reexport_command(
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any] | None = None,
    *,
    precision: str | None = None,
) -> str:
    """The command that writes a fresh bundle at ``path``, made as its manifest says (``None``:
    read what can be read of ``path``'s manifest), with ``precision``'s variants added."""
    p = Path(path)
    raw: Mapping[str, Any] = manifest if manifest is not None else _read_leniently(p)
    cached = _cache_slot(p)
    model = _text(raw.get("model")) or (cached[0] if cached else None)
    weights, key = _weights(raw, cached)
    precisions = set(_precisions(raw.get("graphs")))
    if precision is not None:
        precisions.add(precision)
    in_cache = cached is not None and model == cached[0] and key in (None, cached[1])
    return export_command(
        model or UNKNOWN_MODEL,
        weights=weights,
        precisions=precisions,
        out=None if in_cache else p,
        force=_holds_bundle(p),
    )


def alias_command(alias: str, model: str, key: str, weights: str | None = None) -> str:
    """The command that makes the bundle alias ``alias`` named (``model``, weights ``key``) again
    and gives it the alias: ``--weights`` is the file recorded with the alias (``weights``) or,
    moved, a file the hash cache knows with that key; None when the key is torchvision's."""
    if key == weights_key(None):
        return export_command(model, alias=alias)
    if weights is None or not Path(weights).is_file():
        weights = _file_for_key(key) or weights
    if weights is None:
        raise LookupError(f"no weights file known for {key}")
    return export_command(model, weights=weights, alias=alias)


def repair_hint(
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any] | None = None,
    *,
    precision: str | None = None,
    lead: str = "re-export it",
) -> str:
    """What an error tells the user to do about a broken bundle (or one without ``precision``'s
    variants): ``"<lead>: `dps-fast export …`"``, or for a classical measure's bundle (shipped
    in the package, never exported) to reinstall dps-fast or use the shipped one."""
    p = Path(path)
    raw: Mapping[str, Any] = manifest if manifest is not None else _read_leniently(p)
    measure = _classical_name(p, raw)
    if measure is None:
        return f"{lead}: {as_hint(reexport_command(p, raw, precision=precision))}"
    if precision not in (None, "fp32"):
        return f"{measure} is a classical measure and runs in float32 only: drop --precision"
    from .classical.measures import BUNDLES

    if _is_under(p, BUNDLES):
        return (
            f"this is the classical measure {measure}'s bundle shipped inside dps-fast (nothing "
            f"exports it): the package's files are damaged or missing; {reinstall_hint()}"
        )
    shipped = BUNDLES / measure
    return (
        f"this is a copy of the classical measure {measure}'s bundle shipped inside dps-fast "
        f"(nothing exports it): use the shipped one, `-m {measure}` (at {shipped}), or copy "
        f"{shipped} again"
    )


def reinstall_hint() -> str:
    """How to put dps-fast's own files back: reinstall it from where it was installed from (a
    clone, as the README installs it, or a release), or in an editable install (the files are
    the clone's) regenerate the classical bundles there."""
    src = install_source()
    if src.path is not None:
        if src.editable:
            return (
                f"dps-fast runs from its source folder {src.path} (an editable install), so "
                "reinstalling would not restore them: regenerate the classical bundles there "
                "with `python -m dps_fast.classical.graphs` (needs the onnx package)"
            )
        return (
            f"reinstall dps-fast: `pip install --force-reinstall --no-deps {shlex.quote(src.path)}`"
        )
    return f"reinstall dps-fast: `pip install --force-reinstall --no-deps dps-fast=={__version__}`"


def _classical_name(p: Path, raw: Mapping[str, Any]) -> str | None:
    """The classical measure a bundle is (by its manifest, or its folder in the package)."""
    from .classical.measures import is_classical

    model = _text(raw.get("model"))
    if model is not None and is_classical(model) and (raw.get("head") in (None, "classical")):
        return model
    return shipped_measure(p)


def shipped_measure(path: str | os.PathLike[str]) -> str | None:
    """The classical measure whose bundle folder inside the package ``path`` is, else None."""
    from .classical.measures import BUNDLES, is_classical

    p = Path(path)
    return p.resolve().name if _is_under(p, BUNDLES) and is_classical(p.resolve().name) else None


def _is_under(p: Path, root: Path) -> bool:
    try:
        return p.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def make_command(path: str | os.PathLike[str]) -> str:
    """The command that makes a bundle where there is none: the cache folder's own model and
    weights, else ``lpips-alex`` written to ``path`` (the default model)."""
    p = Path(path)
    cached = _cache_slot(p)
    if cached is None:
        return export_command("lpips-alex", out=p, force=_holds_bundle(p))
    weights, _ = _weights({}, cached)
    return export_command(cached[0], weights=weights)


def as_hint(command: str) -> str:
    """The command in backticks, as messages show it, and a note when its ``--weights`` file is
    not there any more (the user must name where it is now)."""
    args = shlex.split(command)
    note = ""
    if "--weights" in args:
        w = args[args.index("--weights") + 1]
        if not Path(w).is_file():
            note = f" (the weights file it was made from, {w}, is not there: give its current path)"
    return f"`{command}`{note}"


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _cache_slot(p: Path) -> tuple[str, str] | None:
    """(model, weights key) when ``p`` is a bundle folder of the cache, else None."""
    try:
        bundles = (cache_root() / "bundles").resolve()
        if p.resolve().parent.parent != bundles:
            return None
    except OSError:
        return None
    model, key = p.resolve().parent.name, p.resolve().name
    return (model, key) if bundle_dir(model, key).resolve() == p.resolve() else None


def _weights(
    raw: Mapping[str, Any], cached: tuple[str, str] | None
) -> tuple[str | None, str | None]:
    """(the ``--weights`` to pass or None, the cache key those weights select or None if
    unknown). The manifest's ``weights.path`` (``name`` in bundles from before it existed)."""
    w = raw.get("weights")
    if isinstance(w, Mapping):
        if w.get("source") == "torchvision":
            return None, weights_key(None)
        if w.get("source") == "file":
            sha = _text(w.get("sha256"))
            key = weights_key(sha) if sha else None
            made = _text(w.get("path")) or _text(w.get("name"))
            if (made is None or not Path(made).is_file()) and key is not None:
                made = _file_for_key(key) or made  # moved: the hash cache may know it
            return made, key
    if cached is not None:  # manifest unreadable: the cache folder's key says which weights
        key = cached[1]
        if key == weights_key(None):
            return None, key
        return _file_for_key(key), key
    return None, None


def _file_for_key(key: str) -> str | None:
    """A weights file whose sha256 starts as ``key`` says, from the hash cache, if it exists."""
    try:
        table = json.loads(hash_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(table, dict):
        return None
    for ident, sha in table.items():
        if isinstance(sha, str) and weights_key(sha) == key and isinstance(ident, str):
            f = ident.split("\0", 1)[0]
            if Path(f).is_file():
                return f
    return None


def _precisions(graphs: Any) -> list[str]:
    out = []
    if isinstance(graphs, Mapping):
        for role in graphs:
            try:
                out.append(parse_role(str(role))[1])
            except ValueError:
                continue
    return out


def _holds_bundle(p: Path) -> bool:
    """Whether exporting to ``p`` needs ``--force``: a bundle (or a manifest of one) is there."""
    return (p / MANIFEST).exists()


def _read_leniently(p: Path) -> Mapping[str, Any]:
    """What can be read of a manifest: the parsed object, or from a broken one the ``model``
    and weights entries found in its text (enough to name the command)."""
    try:
        text = (p / MANIFEST).read_text(encoding="utf-8", errors="replace")[: 1 << 20]
    except OSError:
        return {}
    try:
        d = json.loads(text)
        if isinstance(d, dict):
            return d
    except (ValueError, RecursionError):
        pass
    found: dict[str, Any] = {}
    m = re.search(r'"model"\s*:\s*"([A-Za-z0-9_.+-]+)"', text)
    if m:
        found["model"] = m.group(1)
    w = re.search(r'"weights"\s*:\s*(\{[^{}]*\})', text)
    if w:
        with contextlib.suppress(ValueError):
            found["weights"] = json.loads(w.group(1))
    return found
