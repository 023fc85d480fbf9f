"""The ``dps-fast export`` command that makes or repairs a bundle, written in this one place.

Every message that tells the user to export (no bundle, a stale, corrupt or incomplete one, a
missing precision or input variant) takes its command from here, so that following it rebuilds
the bundle the user needs: the model, ``--weights`` with the file the bundle was made from (the
path its manifest records), the precision variants the bundle has plus the one asked for,
``--out`` when the bundle is not the cache's folder for that model and weights, and ``--force``
when a bundle is to be replaced. Torch-free: the engine's errors use it.
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
) -> str:
    """``dps-fast export MODEL [--weights W] [--fp16] [--int8] [--out DIR] [--force]``, quoted
    for a POSIX shell. ``precisions``: the variants to make (``fp32`` is always made)."""
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
