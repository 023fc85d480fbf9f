"""The model bundle: the contract between the torch-side export and the torch-free engine.

A bundle is a folder with ``manifest.json`` (typed in :mod:`dps_fast.manifest`), ONNX graphs
by role and ``head.npz``; docs/bundle-format.md specifies it. It is written to a temporary
sibling folder and renamed into place, and read back with checks (format version, the
manifest's fields and content digest, file names confined to the folder, every file's sha256)
whose errors name the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._tempdirs import owned_tempdir
from .errors import BundleError, BundleNotFoundError
from .hashing import sha256_file
from .manifest import FORMAT_VERSION, FileEntry, Manifest, TapInfo, check_file_name, parse_role
from .reexport import as_hint, make_command, repair_hint, shipped_measure

MANIFEST = "manifest.json"
HEAD_NPZ = "head.npz"
# Revision of the heads' numerics inside the graphs, manifest key "head_numerics" (absent: 1).
# 2: spatial means as two reductions and DISTS' structure term without cancellation; DISTS
# graphs of revision 1 lose up to half the score on photograph-sized images, so bundles with
# them are refused (and re-exported when they are in the cache, see hub.resolve_bundle).
HEAD_NUMERICS = 2
MIN_HEAD_NUMERICS = {"dists": 2}
# Manifests larger than this are refused unread (a real one is a few tens of kB).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

__all__ = [
    "FORMAT_VERSION",
    "HEAD_NPZ",
    "MANIFEST",
    "Bundle",
    "Manifest",
    "TapInfo",
    "check_destination",
    "read_bundle",
    "write_bundle",
]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest
    head_weights: dict[str, np.ndarray]
    # Graph roles whose file hash was checked (all at read time, or each on first use).
    verified: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def head(self) -> str:
        return self.manifest.head

    @property
    def reduce(self) -> str:
        return self.manifest.reduce

    @property
    def taps(self) -> tuple[TapInfo, ...]:
        return self.manifest.taps

    @property
    def min_size(self) -> tuple[int, int]:
        return self.manifest.min_size

    @property
    def lpips_version(self) -> str | None:
        return self.manifest.lpips_version

    @property
    def sha256(self) -> str:
        """Hash of the manifest (which holds every other file's hash): names the bundle."""
        return sha256_file(self.path / MANIFEST)

    def has_graph(self, role: str) -> bool:
        return role in self.manifest.graphs

    def reexport_hint(self, precision: str | None = None, lead: str = "re-export it") -> str:
        """What error messages tell the user to do: ``"<lead>: `dps-fast export …`"`` with the
        complete command that makes this bundle again (``precision``'s variants added), or for
        a classical measure's bundle, what fixes it instead (see :func:`repair_hint`)."""
        return repair_hint(self.path, self.manifest.to_dict(), precision=precision, lead=lead)

    def graph_path(self, role: str) -> Path:
        graphs = self.manifest.graphs
        if role not in graphs:
            try:
                precision = parse_role(role)[1]
            except ValueError:
                precision = "fp32"
            raise BundleError(
                f"bundle {self.path} has no {role!r} graph (it has: {', '.join(graphs)}); "
                f"{self.reexport_hint(precision, 're-export it with that variant')}"
            )
        return _inside(self.path, graphs[role].file)

    def checked_graph_path(self, role: str) -> Path:
        """:meth:`graph_path`, after checking the file's sha256 once (lazily opened bundles)."""
        f = self.graph_path(role)
        if role not in self.verified:
            _check_sha(self.path, f, self.manifest.graphs[role].sha256, self.reexport_hint)
            self.verified.add(role)
        return f


def write_bundle(
    dest: Path,
    manifest: Manifest,
    files: dict[str, Path],
    head_weights: dict[str, np.ndarray],
    *,
    force: bool = False,
) -> Path:
    """Write a bundle atomically: files are copied into a temp folder beside ``dest`` and renamed.

    ``files`` maps a file name inside the bundle to a source path. The graphs' and head
    weights' hashes are filled in here (whatever ``manifest`` says), then the content digest.
    """
    dest = Path(dest)
    check_destination(dest, force=force)
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with owned_tempdir(f".{dest.name}.tmp-", parent) as tmp:
            os.chmod(tmp, 0o755)
            _write_into(tmp, dest, manifest, files, head_weights)
    except OSError as e:
        raise BundleError(f"cannot write the bundle to {dest}: {e.strerror or e}") from None
    return dest


def _write_into(
    tmp: Path,
    dest: Path,
    manifest: Manifest,
    files: dict[str, Path],
    head_weights: dict[str, np.ndarray],
) -> None:
    """Fill ``tmp`` with the bundle's files and manifest, then rename it to ``dest``."""
    for name, src in files.items():
        shutil.copyfile(src, _inside(tmp, name))
    arrays: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in head_weights.items()}
    np.savez(tmp / HEAD_NPZ, **arrays)
    graphs = {
        role: dataclasses.replace(g, sha256=sha256_file(_inside(tmp, g.file)))
        for role, g in manifest.graphs.items()
    }
    head_file = FileEntry(HEAD_NPZ, sha256_file(tmp / HEAD_NPZ))
    manifest = dataclasses.replace(manifest, graphs=graphs, head_file=head_file)
    with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=2, sort_keys=False)
        f.write("\n")
    if dest.exists():
        with owned_tempdir(f".{dest.name}.old-", dest.parent) as old:
            os.replace(dest, old / "b")
            os.replace(tmp, dest)
    else:
        os.replace(tmp, dest)


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


def _check_sha(root: Path, f: Path, want: str, hint: Callable[[], str]) -> None:
    sha = sha256_file(f)
    if sha != want:
        raise BundleError(
            f"bundle {root}: {f.name} is corrupt (sha256 {sha[:16]}…, manifest says "
            f"{want[:16]}…); {hint()}"
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


def _inside(root: Path, name: str) -> Path:
    """``root / name`` for a plain file name that stays inside ``root`` (symbolic links too)."""
    check_file_name(name)
    f = root / name
    if f.is_symlink() and f.resolve().parent != root.resolve():
        raise BundleError(
            f"bundle {root}: {name} links to {f.resolve()}, outside the bundle folder; "
            "copy the file into the bundle instead"
        )
    return f


def read_bundle(path: str | os.PathLike[str], *, verify: bool | str = True) -> Bundle:
    """Open a bundle folder, check its manifest and (``verify``) every file's sha256.

    ``verify="lazy"`` checks the head weights now and each graph when first used
    (:meth:`Bundle.checked_graph_path`): what the engine does, so that opening a bundle with
    many variants does not hash hundreds of megabytes it will not run.
    """
    if verify not in (True, False, "lazy"):
        raise ValueError(f"expected verify True, False or 'lazy', got {verify!r}")
    p = Path(path)
    mpath = p / MANIFEST
    if not mpath.is_file():
        if shipped_measure(p) is not None:  # the package's own classical bundle: no export
            raise BundleNotFoundError(f"no bundle at {p} ({MANIFEST} missing); {repair_hint(p)}")
        cmd = make_command(p)
        other = " (or the model you want: `dps-fast models`)" if "--out" in cmd else ""
        raise BundleNotFoundError(
            f"no bundle at {p} ({MANIFEST} missing); make one with {as_hint(cmd)}{other}"
        )
    raw: Any = None
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"over {MAX_MANIFEST_BYTES // 2**20} MiB")
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise BundleError(
            f"bundle manifest {mpath} is unreadable ({why}); {repair_hint(p)}"
        ) from None

    def hint() -> str:
        return repair_hint(p, raw if isinstance(raw, dict) else None)

    if isinstance(raw, dict) and is_stale(raw):
        raise BundleError(
            f"bundle {p} was exported before the {raw.get('head')} head's accuracy fix "
            f"(head numerics {raw.get('head_numerics', 1)}, this dps-fast needs "
            f"{MIN_HEAD_NUMERICS.get(str(raw.get('head')), 1)}): its scores can be far off on "
            f"large images; {hint()}"
        )
    try:
        manifest = Manifest.from_dict(raw)
    except BundleError as e:
        raise BundleError(f"bundle {p}: {e}; {hint()}") from None
    entries = [(role, g.file, g.sha256) for role, g in manifest.graphs.items()]
    entries.append(("head weights", manifest.head_file.file, manifest.head_file.sha256))
    verified: set[str] = set()
    for role, name, sha in entries:
        f = _inside(p, name)
        if not f.is_file():
            raise BundleError(f"bundle {p} is incomplete: {role} file {name} is missing; {hint()}")
        if verify is True or (verify == "lazy" and role == "head weights"):
            _check_sha(p, f, sha, hint)
            verified.add(role)
    try:
        with np.load(_inside(p, manifest.head_file.file), allow_pickle=False) as z:
            head = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"bundle {p}: head weights unreadable ({e}); {hint()}") from None
    return Bundle(path=p, manifest=manifest, head_weights=head, verified=verified)
