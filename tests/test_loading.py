"""Getting an engine by model name lives above the engine (dps_fast.hub): the cache, an export
when missing — and an offline switch under which nothing is downloaded or exported."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import dps_fast
import dps_fast.export as export_pkg
from dps_fast import BundleNotFoundError, Engine
from dps_fast.cache import bundle_dir
from dps_fast.hub import is_offline


@pytest.fixture
def no_export(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any export attempt is recorded (and fails)."""
    calls: list[str] = []

    def fake(*args: object, **kwargs: object) -> Path:
        calls.append(str(args[0]))
        raise AssertionError("nothing may be exported offline")

    monkeypatch.setattr(export_pkg, "export_model", fake)
    return calls


def test_offline_env_refuses_to_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_export: list[str]
) -> None:
    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPS_FAST_OFFLINE", "1")
    for make in (lambda: Engine("lpips-squeeze"), lambda: dps_fast.load("lpips-squeeze"),
                 lambda: Engine.from_pretrained("lpips-squeeze")):  # fmt: skip
        with pytest.raises(
            BundleNotFoundError, match=r"offline mode.*dps-fast export lpips-squeez"
        ):
            make()
    assert no_export == []


def test_offline_argument_refuses_to_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_export: list[str]
) -> None:
    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DPS_FAST_OFFLINE", raising=False)
    with pytest.raises(BundleNotFoundError, match="offline=True"):
        dps_fast.load("lpips-squeeze", offline=True, precision="int8")
    with pytest.raises(BundleNotFoundError, match="--int8"):
        Engine("lpips-squeeze", offline=True, precision="int8")
    assert no_export == []


def test_offline_uses_the_cache(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bundle: Callable[[str], Path],
    no_export: list[str],
) -> None:
    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path / "home"))
    shutil.copytree(bundle("lpips-squeeze"), bundle_dir("lpips-squeeze"))
    eng = dps_fast.load("lpips-squeeze", offline=True, device="cpu")
    assert eng.bundle.path == bundle_dir("lpips-squeeze")
    monkeypatch.setenv("DPS_FAST_OFFLINE", "yes")
    assert Engine("lpips-squeeze", device="cpu").bundle.path == eng.bundle.path
    assert Engine(bundle("lpips-squeeze"), device="cpu").bundle.model == "lpips-squeeze"
    assert no_export == []


@pytest.mark.parametrize(
    ("value", "want"), [("", False), ("0", False), ("off", False), ("1", True), ("TRUE", True)]
)
def test_offline_switch_values(monkeypatch: pytest.MonkeyPatch, value: str, want: bool) -> None:
    monkeypatch.setenv("DPS_FAST_OFFLINE", value)
    assert is_offline() is want
    assert is_offline(True) is True and is_offline(False) is False


def test_offline_switch_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPS_FAST_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="DPS_FAST_OFFLINE 1 or 0"):
        is_offline()
