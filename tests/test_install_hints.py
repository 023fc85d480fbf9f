"""Install commands in messages follow how this dps-fast was installed (pip's direct_url.json)."""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from typing import Any

import pytest

from dps_fast._install import InstallSource, install_command, install_source, upgrade_hint


class _Dist:
    def __init__(self, direct: dict[str, Any] | None) -> None:
        self.text = None if direct is None else json.dumps(direct)

    def read_text(self, name: str) -> str | None:
        return self.text if name == "direct_url.json" else None


@pytest.mark.parametrize(
    ("direct", "want"),
    [
        ({"url": "file:///home/me/dps%20fast", "dir_info": {}},
         "pip install '/home/me/dps fast[export]'"),
        ({"url": "file:///src/dps-fast", "dir_info": {"editable": True}},
         "pip install -e '/src/dps-fast[export]'"),
        (None, "pip install 'dps-fast[export]'"),
        ({"url": "https://example.invalid/dps_fast-0.1.0-py3-none-any.whl", "archive_info": {}},
         "pip install 'dps-fast[export]'"),
    ],
    ids=["clone", "editable", "by-name", "wheel-url"],
)  # fmt: skip
def test_install_command_follows_the_installation(
    direct: dict[str, Any] | None, want: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _Dist(direct))
    assert install_command("export") == want


def test_not_installed_at_all_gives_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert install_source() == InstallSource(None)
    assert install_command("gpu") == "pip install 'dps-fast[gpu]'"


def test_this_checkout_names_its_own_folder() -> None:
    """The test run's own installation (the README's `pip install -e ".[…]"`) is a folder, and
    the command names it, not a package index's dps-fast."""
    src = install_source()
    assert src.path is not None
    edit = "-e " if src.editable else ""
    assert install_command("eval") == f"pip install {edit}{shlex.quote(src.path + '[eval]')}"


@pytest.mark.parametrize(
    ("direct", "want"),
    [
        ({"url": "file:///src/dps-fast", "dir_info": {"editable": True}},
         "upgrade dps-fast (update its clone at /src/dps-fast, e.g. git pull)"),
        ({"url": "file:///src/dps-fast", "dir_info": {}},
         "upgrade dps-fast (update its clone at /src/dps-fast, e.g. git pull, then pip install "
         "/src/dps-fast)"),
        (None, "upgrade dps-fast (pip install -U dps-fast)"),
    ],
    ids=["editable", "clone", "by-name"],
)  # fmt: skip
def test_upgrade_hint_follows_the_installation(
    direct: dict[str, Any] | None, want: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _Dist(direct))
    assert upgrade_hint() == want
