"""Where bundles live.

``$DPS_FAST_HOME``, else ``$XDG_CACHE_HOME/dps-fast``, else ``~/.cache/dps-fast``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder, from the environment at call time."""
    home = os.environ.get("DPS_FAST_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "dps-fast"
    return Path.home() / ".cache" / "dps-fast"


def weights_key(weights_sha256: str | None) -> str:
    """``torchvision`` for the official weights, else ``sha256-<first 16 hex>`` of the file."""
    return "torchvision" if weights_sha256 is None else f"sha256-{weights_sha256[:16]}"


def bundle_dir(model: str, key: str = "torchvision") -> Path:
    return cache_root() / "bundles" / model / key


def hash_cache_file() -> Path:
    """Where weights files' sha256 are remembered by file identity (path, size, mtime, inode)."""
    return cache_root() / "weights-sha256.json"


def default_file(model: str) -> Path:
    """The file naming the weights key of ``model``'s default bundle (its last export)."""
    return cache_root() / "bundles" / model / "DEFAULT"


def aliases_file() -> Path:
    """Aliases given with ``dps-fast export … --alias NAME``: name → model and weights key."""
    return cache_root() / "aliases.json"


def cached_bundles() -> dict[str, list[str]]:
    """Model name → weights keys that have a complete bundle (a manifest) in the cache."""
    root = cache_root() / "bundles"
    out: dict[str, list[str]] = {}
    if not root.is_dir():
        return out
    for mdir in sorted(root.iterdir()):
        keys = sorted(k.name for k in mdir.iterdir() if (k / "manifest.json").is_file())
        if keys:
            out[mdir.name] = keys
    return out
