"""The model bundle: the contract between the torch-side export and the torch-free engine.

A bundle is a folder with ``manifest.json``, ONNX graphs by role and ``head.npz``. It is written
to a temporary sibling folder and renamed into place, and read back with checks (schema version,
every file's sha256) whose errors name the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError, BundleNotFoundError
from .hashing import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
HEAD_NPZ = "head.npz"
# Revision of the heads' numerics inside the graphs, manifest key "head_numerics" (absent: 1).
# 2: spatial means as two reductions and DISTS' structure term without cancellation; DISTS
# graphs of revision 1 lose up to half the score on photograph-sized images, so bundles with
# them are refused (and re-exported when they are in the cache, see hub.resolve_bundle).
HEAD_NUMERICS = 2
MIN_HEAD_NUMERICS = {"dists": 2}


@dataclass(frozen=True)
class TapInfo:
    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]
    head_weights: dict[str, np.ndarray]
    # Graph roles whose file hash was checked (all at read time, or each on first use).
    verified: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def head(self) -> str:
        return str(self.manifest["head"])

    @property
    def reduce(self) -> str:
        return str(self.manifest.get("reduce", "sum"))

    @property
    def taps(self) -> list[TapInfo]:
        return [
            TapInfo(t["name"], int(t["channels"]), int(t["stride"])) for t in self.manifest["taps"]
        ]

    @property
    def min_size(self) -> tuple[int, int]:
        h, w = self.manifest["input"]["min_size"]
        return int(h), int(w)

    @property
    def lpips_version(self) -> str | None:
        v = self.manifest.get("lpips_version")
        return None if v is None else str(v)

    @property
    def sha256(self) -> str:
        """Hash of the manifest (which holds every other file's hash): names the bundle."""
        return sha256_file(self.path / MANIFEST)

    def has_graph(self, role: str) -> bool:
        return role in self.manifest["graphs"]

    def graph_path(self, role: str) -> Path:
        graphs = self.manifest["graphs"]
        if role not in graphs:
            flag = next((f" --{v}" for v in ("fp16", "int8") if f"@{v}" in role), "")
            raise BundleError(
                f"bundle {self.path} has no {role!r} graph (it has: {', '.join(graphs)}); "
                f"re-export it with that variant: dps-fast export {self.model}{flag} --force"
            )
        return self.path / graphs[role]["file"]

    def checked_graph_path(self, role: str) -> Path:
        """:meth:`graph_path`, after checking the file's sha256 once (lazily opened bundles)."""
        f = self.graph_path(role)
        if role not in self.verified:
            _check_sha(self.path, f, self.manifest["graphs"][role]["sha256"], self.model)
            self.verified.add(role)
        return f


def write_bundle(
    dest: Path,
    manifest: dict[str, Any],
    files: dict[str, Path],
    head_weights: dict[str, np.ndarray],
    *,
    force: bool = False,
) -> Path:
    """Write a bundle atomically: files are copied into a temp folder beside ``dest`` and renamed.

    ``files`` maps a file name inside the bundle to a source path. Hashes are filled in here.
    """
    dest = Path(dest)
    check_destination(dest, force=force)
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o755)
    except OSError as e:
        raise BundleError(f"cannot write the bundle to {dest}: {e.strerror or e}") from None
    try:
        manifest = json.loads(json.dumps(manifest))  # deep copy, JSON-only values
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
        arrays: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in head_weights.items()}
        np.savez(tmp / HEAD_NPZ, **arrays)
        for g in manifest["graphs"].values():
            g["sha256"] = sha256_file(tmp / g["file"])
        manifest["head_file"] = {"file": HEAD_NPZ, "sha256": sha256_file(tmp / HEAD_NPZ)}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=parent))
            os.replace(dest, old / "b")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"cannot write the bundle to {dest}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def check_destination(dest: Path, *, force: bool) -> None:
    """Refuse to overwrite a bundle without ``force``, or any folder that is not a bundle."""
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"cannot write the bundle to {dest}: it exists and is not a folder")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    if not (dest / MANIFEST).exists():
        raise BundleError(
            f"cannot write the bundle to {dest}: the folder is not empty and holds no bundle; "
            "choose an empty or new folder"
        )
    if not force:
        raise BundleError(f"a bundle already exists at {dest}; pass --force to overwrite it")


def _check_sha(root: Path, f: Path, want: str, model: str) -> None:
    sha = sha256_file(f)
    if sha != want:
        raise BundleError(
            f"bundle {root}: {f.name} is corrupt (sha256 {sha[:16]}…, manifest says "
            f"{want[:16]}…); re-export it: dps-fast export {model} --force"
        )


def is_stale(manifest: dict[str, Any]) -> bool:
    """Whether a manifest's graphs predate a numerics fix its head needs (``HEAD_NUMERICS``)."""
    need = MIN_HEAD_NUMERICS.get(str(manifest.get("head")), 1)
    got = manifest.get("head_numerics", 1)
    return not isinstance(got, int) or got < need


def stale_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of the bundle folder ``path`` if it :func:`is_stale`, else None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and "head" in manifest and is_stale(manifest):
        return manifest
    return None


def read_bundle(path: str | os.PathLike[str], *, verify: bool | str = True) -> Bundle:
    """Open a bundle folder, check its schema and (``verify``) every file's sha256.

    ``verify="lazy"`` checks the head weights now and each graph when first used
    (:meth:`Bundle.checked_graph_path`): what the engine does, so that opening a bundle with
    many variants does not hash hundreds of megabytes it will not run.
    """
    if verify not in (True, False, "lazy"):
        raise ValueError(f"expected verify True, False or 'lazy', got {verify!r}")
    p = Path(path)
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise BundleNotFoundError(
            f"no bundle at {p} ({MANIFEST} missing); "
            f"make one with `dps-fast export MODEL --out {p}`"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(
            f"bundle manifest {mpath} is unreadable ({e}); re-export it: "
            "dps-fast export MODEL --force"
        ) from None
    model = manifest.get("model", "MODEL") if isinstance(manifest, dict) else "MODEL"
    fix = f"re-export it: dps-fast export {model} --force"
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        got = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise BundleError(
            f"bundle {p} has schema version {got!r}, this dps-fast reads {SCHEMA_VERSION}; {fix}"
        )
    for key in ("model", "head", "taps", "input", "graphs", "head_file"):
        if key not in manifest:
            raise BundleError(f"bundle manifest {mpath} lacks {key!r}; {fix}")
    if is_stale(manifest):
        raise BundleError(
            f"bundle {p} was exported before the {manifest['head']} head's accuracy fix "
            f"(head numerics {manifest.get('head_numerics', 1)}, this dps-fast needs "
            f"{MIN_HEAD_NUMERICS[str(manifest['head'])]}): its scores can be far off on large "
            f"images; {fix}"
        )
    entries = [(role, g) for role, g in manifest["graphs"].items()]
    entries.append(("head weights", manifest["head_file"]))
    verified: set[str] = set()
    for role, g in entries:
        f = p / g["file"]
        if not f.is_file():
            raise BundleError(
                f"bundle {p} is incomplete: {role} file {g['file']} is missing; {fix}"
            )
        if verify is True or (verify == "lazy" and role == "head weights"):
            _check_sha(p, f, g["sha256"], str(model))
            verified.add(role)
    try:
        with np.load(p / manifest["head_file"]["file"]) as z:
            head = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"bundle {p}: head weights unreadable ({e}); {fix}") from None
    return Bundle(path=p, manifest=manifest, head_weights=head, verified=verified)
