"""The pip command that installs an extra of dps-fast the way this copy was installed.

The README installs dps-fast from a clone (`pip install ".[cpu,export]"`), so a message saying
`pip install 'dps-fast[export]'` would send pip looking for a package by name. pip records
where a distribution came from in its ``direct_url.json``: a folder (plain or editable) gives a
command on that folder, anything else the package name.
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from dataclasses import dataclass
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class InstallSource:
    """Where this dps-fast was installed from: a local folder (``path``) or by name (None)."""

    path: str | None
    editable: bool = False


def install_source() -> InstallSource:
    """Read pip's record of this installation; by name when there is none (e.g. a wheel)."""
    try:
        text = importlib.metadata.distribution("dps-fast").read_text("direct_url.json")
        direct = json.loads(text or "null")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return InstallSource(None)
    url = direct.get("url") if isinstance(direct, dict) else None
    if not (isinstance(url, str) and url.startswith("file://")):
        return InstallSource(None)
    info = direct.get("dir_info")
    editable = isinstance(info, dict) and bool(info.get("editable"))
    return InstallSource(unquote(urlparse(url).path), editable)


def install_command(extras: str, *, source: InstallSource | None = None) -> str:
    """``pip install …`` adding ``extras`` (e.g. ``"export"``) to this installation.

    From a folder: that folder with the extras (``-e`` when it was editable); otherwise the
    package name. Quoted for a POSIX shell.
    """
    src = install_source() if source is None else source
    if src.path is None:
        return f"pip install {shlex.quote(f'dps-fast[{extras}]')}"
    edit = "-e " if src.editable else ""
    return f"pip install {edit}{shlex.quote(f'{src.path}[{extras}]')}"


def upgrade_hint() -> str:
    """How to get a newer dps-fast: update the clone and install it again, or upgrade by name."""
    src = install_source()
    if src.path is None:
        return "upgrade dps-fast (pip install -U dps-fast)"
    again = "" if src.editable else f", then pip install {shlex.quote(src.path)}"
    return f"upgrade dps-fast (update its clone at {src.path}, e.g. git pull{again})"
