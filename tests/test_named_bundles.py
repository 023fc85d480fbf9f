"""Weights-keyed bundles found by name: the last export is the default, or an alias; weights
hashed once per file identity; every suggested command complete (no placeholder, --weights kept)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dps_fast.hashing as hashing
from dps_fast.cache import weights_key
from dps_fast.cli import app
from dps_fast.hub import cached_bundle_path, export_command, weights_sha256
from tests.helpers import images as im

RUNNER = CliRunner()


def _cli(*args: Any, code: int = 0, env: dict[str, str] | None = None) -> Any:
    res = RUNNER.invoke(app, [str(a) for a in args], env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


def test_weights_hashed_once_per_file_identity(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path / "home"))
    w = tmp_path / "w.pth"
    w.write_bytes(os.urandom(1 << 16))
    calls: list[str] = []
    real = hashing.sha256_file

    def counting(path: Any, chunk: int = 1 << 20) -> str:
        calls.append(str(path))
        return real(path, chunk)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    sha = weights_sha256(w)
    assert sha == real(w) and len(calls) == 1
    for _ in range(3):
        assert weights_sha256(w) == sha
        assert cached_bundle_path("lpips-alex", w).name == weights_key(sha)
    assert len(calls) == 1  # remembered: path, size, mtime and inode unchanged
    w.write_bytes(os.urandom(1 << 16))  # new content (and mtime): hashed again
    assert weights_sha256(w) == real(w) != sha and len(calls) == 2
    (tmp_path / "home" / "weights-sha256.json").write_text("{broken")
    assert weights_sha256(w) == real(w) and len(calls) == 3  # a broken cache is only a miss


@pytest.mark.slow  # a whole export of its own
def test_export_makes_the_default_and_an_alias(weights_file, tmp_path) -> None:
    home = tmp_path / "home"
    env = {"DPS_FAST_HOME": str(home)}
    w = weights_file("squeezenet1_1")
    res = _cli("export", "lpips-squeeze", "--weights", w, "--alias", "my-sq", env=env)
    cached = Path(res.stdout.strip())
    assert cached == home / "bundles" / "lpips-squeeze" / weights_key(hashing.sha256_file(w))
    assert "-m my-sq" in res.stderr
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(2):
        im.save_array(im.textured(64, 64, i), a / f"{i}.png")
        im.save_array(im.textured(64, 64, i + 10), b / f"{i}.png")
    out = tmp_path / "s.csv"
    for name in ("lpips-squeeze", "my-sq"):  # no --weights: found by name
        _cli("score", a, b, "-m", name, "--out", out, env=env)
        meta = json.loads((tmp_path / "s.csv.meta.json").read_text(encoding="utf-8"))
        assert Path(meta["bundle"]) == cached and meta["weights"]["sha256"] == hashing.sha256_file(
            w
        )
        res = _cli("info", name, env=env)
        assert f"bundle     {cached}" in res.stdout
    res = _cli("export", "lpips-squeeze", "--alias", "lpips-alex", env=env, code=2)
    assert "alias" in res.stderr and "registry" in res.stderr


def test_suggested_commands_keep_the_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DPS_FAST_HOME", str(tmp_path / "home"))
    assert export_command("lpips-alex", "my w.pth", "int8") == (
        "dps-fast export lpips-alex --weights 'my w.pth' --int8"
    )
    res = _cli("info", "lpips-alex", code=2)  # nothing in this cache
    assert "MODEL" not in res.stderr and "dps-fast export lpips-alex`" in res.stderr
    res = _cli("info", "lpips-alex", "--weights", tmp_path / "w.pth", code=2)
    assert "weights file not found" in res.stderr
