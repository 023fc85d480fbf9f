"""Every suggested `dps-fast export` command is complete and, run as printed, makes the bundle the
user needs: the model, the --weights file the bundle was made from, the precision variants it
had plus the one asked for, --out outside the cache, --force over an existing bundle."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dps_fast.bundle as bundle_mod
from dps_fast.bundle import MANIFEST, read_bundle
from dps_fast.cache import bundle_dir, weights_key
from dps_fast.cli import app
from dps_fast.engine import Engine
from dps_fast.errors import BundleError
from dps_fast.hashing import sha256_file
from dps_fast.hub import weights_sha256
from dps_fast.manifest import content_sha256
from dps_fast.reexport import export_command, reexport_command
from tests.helpers import images as im

RUNNER = CliRunner()
MODEL = "lpips-squeeze"
ARCH = "squeezenet1_1"
COMMAND = re.compile(r"`(dps-fast export [^`]+)`")


def _cli(*args: Any, code: int = 0) -> Any:
    res = RUNNER.invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    return res


def _suggested(message: str) -> list[str]:
    """The export command a message suggests (exactly one), split as a shell would."""
    found = COMMAND.findall(message)
    assert len(found) == 1, message
    assert "MODEL" not in found[0] and "FILE" not in found[0], found[0]
    return shlex.split(found[0])


def _run(args: list[str]) -> Path:
    """Run a suggested command in-process, as the user would; the bundle folder it printed."""
    assert args[:2] == ["dps-fast", "export"], args
    return Path(_cli(*args[1:]).stdout.strip().splitlines()[-1])


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("DPS_FAST_HOME", str(h))
    return h


@pytest.fixture()
def spaced_weights(weights_file: Any, tmp_path: Path) -> Path:
    """The seeded random weights under a path a shell must quote."""
    w = tmp_path / "my weights" / "squeeze 1.pth"
    w.parent.mkdir()
    shutil.copyfile(weights_file(ARCH), w)
    return w


def _rewrite(path: Path, edit: Any) -> None:
    """Edit a bundle's manifest and re-seal its content digest (a bundle as an older dps-fast
    wrote it, not a tampered one)."""
    d = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    edit(d)
    d["content_sha256"] = content_sha256(d)
    (path / MANIFEST).write_text(json.dumps(d, indent=2), encoding="utf-8")


# -- the formatter -------------------------------------------------------------------------------


def test_export_command_is_quoted_and_ordered() -> None:
    cmd = export_command(
        "dps-resnet18+layer1+layer2", weights="a b/w.pth", precisions=("int8", "fp32", "fp16"),
        out="out dir", force=True,
    )  # fmt: skip
    assert cmd == (
        "dps-fast export dps-resnet18+layer1+layer2 --weights 'a b/w.pth' --fp16 --int8 "
        "--out 'out dir' --force"
    )
    assert export_command("lpips-alex") == "dps-fast export lpips-alex"
    with pytest.raises(ValueError, match="fp64"):
        export_command("lpips-alex", precisions=("fp64",))


def test_reexport_command_from_manifests(tmp_path: Path, home: Path) -> None:
    w = tmp_path / "w.pth"
    w.write_bytes(b"x")
    sha = sha256_file(w)
    graphs = {"trunk": {}, "pair": {}, "head": {}, "pair@fp16": {}, "trunk@fp16@uint8-nhwc": {}}
    made = {"source": "file", "name": "w.pth", "path": str(w), "sha256": sha}
    new = {"model": "lpips-alex", "graphs": graphs, "weights": made}
    old = {**new, "weights": {"source": "file", "name": str(w), "sha256": sha}}  # before `path`
    out = tmp_path / "b"
    want = f"dps-fast export lpips-alex --weights {w} --fp16 --int8 --out {out}"
    assert reexport_command(out, new, precision="int8") == want
    assert reexport_command(out, old, precision="int8") == want
    # In the cache folder those weights select: no --out (export writes there itself).
    cached = bundle_dir("lpips-alex", weights_key(sha))
    assert reexport_command(cached, new) == f"dps-fast export lpips-alex --weights {w} --fp16"
    tv = {"model": "lpips-alex", "graphs": {"pair": {}}, "weights": {"source": "torchvision"}}
    assert reexport_command(bundle_dir("lpips-alex"), tv) == "dps-fast export lpips-alex"
    # A weights file that moved: the hash cache knows where a file with that sha256 is now.
    moved = tmp_path / "moved.pth"
    w.rename(moved)
    assert weights_sha256(moved) == sha
    assert f"--weights {moved} " in reexport_command(out, new)


# -- each suggestion, run as printed -------------------------------------------------------------


@pytest.mark.slow  # runs the printed command: a real export
def test_corrupt_bundle_outside_the_cache_is_repaired(
    tmp_path: Path, home: Path, spaced_weights: Path
) -> None:
    src = tmp_path / "made"
    _cli("export", MODEL, "--weights", spaced_weights, "--out", src)
    p = tmp_path / "my bundle"
    shutil.copytree(src, p)
    trunk = p / "trunk.onnx"
    raw = bytearray(trunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    trunk.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="corrupt") as e:
        read_bundle(p)
    args = _suggested(str(e.value))
    assert args[args.index("--weights") + 1] == str(spaced_weights)
    assert args[args.index("--out") + 1] == str(p) and "--force" in args
    assert _run(args) == p
    fixed = read_bundle(p)  # every hash checked
    assert fixed.manifest.weights is not None
    assert fixed.manifest.weights.sha256 == sha256_file(spaced_weights)
    assert fixed.manifest.weights.path == str(spaced_weights)
    assert fixed.manifest.weights.name == spaced_weights.name


@pytest.mark.slow  # runs the printed command: a real export
def test_unreadable_and_stale_manifests_in_the_cache_are_repaired(
    tmp_path: Path, home: Path, spaced_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = Path(_cli("export", MODEL, "--weights", spaced_weights).stdout.strip())
    assert cached == bundle_dir(MODEL, weights_key(sha256_file(spaced_weights)))
    good = read_bundle(cached).sha256
    # An older dps-fast's bundle, stale for today's numerics (here: LPIPS needing revision 2).
    monkeypatch.setitem(bundle_mod.MIN_HEAD_NUMERICS, "lpips", 2)

    def old(d: dict[str, Any]) -> None:
        d["head_numerics"] = 1
        d["weights"]["name"] = d["weights"].pop("path")  # as bundles recorded it before

    _rewrite(cached, old)
    with pytest.raises(BundleError, match="accuracy fix") as e:
        read_bundle(cached)
    args = _suggested(str(e.value))
    assert "--out" not in args and args[args.index("--weights") + 1] == str(spaced_weights)
    assert _run(args) == cached
    assert read_bundle(cached).manifest.head_numerics == 2
    # A manifest cut in half: the cache folder and the hash cache still say what to run.
    text = (cached / MANIFEST).read_text(encoding="utf-8")
    (cached / MANIFEST).write_text(text[: len(text) // 3], encoding="utf-8")
    with pytest.raises(BundleError, match="unreadable") as e:
        read_bundle(cached)
    args = _suggested(str(e.value))
    assert args[2] == MODEL and args[args.index("--weights") + 1] == str(spaced_weights)
    assert _run(args) == cached
    assert read_bundle(cached).sha256 != good  # made again (a new export date)


def test_missing_folder_suggests_making_it(tmp_path: Path, home: Path) -> None:
    with pytest.raises(Exception, match="no bundle") as e:
        read_bundle(tmp_path / "nothing here")
    args = _suggested(str(e.value))
    assert args[2] == "lpips-alex" and args[args.index("--out") + 1] == str(
        tmp_path / "nothing here"
    )


@pytest.mark.slow  # exports twice, the second with the int8 variants
def test_missing_precision_through_the_cli_keeps_the_weights(
    tmp_path: Path, home: Path, spaced_weights: Path
) -> None:
    """The issue's case: `export --weights W`, then `score --precision int8` suggested a command
    without --weights that built a bundle for other weights."""
    cached = Path(_cli("export", MODEL, "--weights", spaced_weights, "--fp16").stdout.strip())
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(2):
        im.save_array(im.textured(64, 64, i), a / f"{i}.png")
        im.save_array(im.textured(64, 64, i + 10), b / f"{i}.png")
    res = _cli("score", a, b, "-m", MODEL, "--precision", "int8", code=2)
    args = _suggested(res.stderr)
    assert args[args.index("--weights") + 1] == str(spaced_weights)
    assert {"--int8", "--fp16", "--force"} <= set(args) and "--out" not in args
    assert _run(args) == cached
    engine = Engine(cached, device="cpu", precision="int8")
    assert engine.bundle.has_graph("pair@fp16")  # the variant it had is kept
    res = _cli("score", a, b, "-m", MODEL, "--precision", "int8")
    assert res.exit_code == 0


# -- an alias whose bundle is gone ---------------------------------------------------------------


def test_gone_alias_command_from_the_alias_table(tmp_path: Path, home: Path) -> None:
    """An alias recorded before it kept its weights path: the hash cache says which file."""
    from dps_fast.hub import alias_gone_message

    w = tmp_path / "my w.pth"
    w.write_bytes(b"weights")
    key = weights_key(weights_sha256(w))
    table = {
        "mine": {"model": "lpips-alex", "key": key},
        "tv": {"model": "lpips-alex", "key": weights_key(None)},
        "lost": {"model": "lpips-alex", "key": "sha256-0123456789abcdef"},
    }
    home.mkdir(exist_ok=True)
    (home / "aliases.json").write_text(json.dumps(table), encoding="utf-8")
    assert _suggested(alias_gone_message("mine") or "") == shlex.split(
        f"dps-fast export lpips-alex --weights '{w}' --alias mine"
    )
    assert _suggested(alias_gone_message("tv") or "")[2:] == ["lpips-alex", "--alias", "tv"]
    lost = alias_gone_message("lost") or ""
    assert "no weights file with its key (sha256-0123456789abcdef) is known" in lost
    assert alias_gone_message("lpips-alex") is None  # not an alias


@pytest.mark.slow  # runs the printed command: a real export
def test_info_of_a_gone_alias_makes_it_again(
    tmp_path: Path, home: Path, spaced_weights: Path
) -> None:
    """Issue 15 item 4: `info ALIAS` with its bundle gone suggested `export <model>` without the
    alias's weights or --alias; running it made another bundle and left the alias broken."""
    res = _cli("export", MODEL, "--weights", spaced_weights, "--alias", "my-sq")
    cached = Path(res.stdout.strip())
    shutil.rmtree(cached)
    res = _cli("info", "my-sq", code=2)
    args = _suggested(res.stderr)
    assert args[args.index("--weights") + 1] == str(spaced_weights)
    assert args[args.index("--alias") + 1] == "my-sq" and "--out" not in args
    a, b = tmp_path / "A", tmp_path / "B"
    im.save_array(im.textured(64, 64, 1), a / "0.png")
    im.save_array(im.textured(64, 64, 2), b / "0.png")
    assert _suggested(_cli("score", a, b, "-m", "my-sq", code=2).stderr) == args
    assert _run(args) == cached
    assert f"bundle     {cached}" in _cli("info", "my-sq").stdout
    assert read_bundle(cached).manifest.weights.sha256 == sha256_file(spaced_weights)  # type: ignore[union-attr]


# -- classical measures: shipped in the package, never exported -----------------------------------


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's classical bundles, standing in for the package's own folder."""
    import dps_fast.classical.graphs as graphs
    import dps_fast.classical.measures as measures

    pkg = tmp_path / "site-packages" / "dps_fast" / "classical" / "bundles"
    shutil.copytree(measures.BUNDLES, pkg)
    monkeypatch.setattr(measures, "BUNDLES", pkg)
    monkeypatch.setattr(graphs, "BUNDLES", pkg)
    return pkg


def test_damaged_classical_bundle_says_reinstall(
    shipped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dps_fast.reexport import reinstall_hint

    ssim = shipped / "ssim"
    text = (ssim / MANIFEST).read_text(encoding="utf-8")
    (ssim / MANIFEST).write_text(text.replace('"reduce": "sum"', '"reduce": "mean"'))
    with pytest.raises(BundleError) as e:
        read_bundle(ssim)
    msg = str(e.value)
    assert "dps-fast export" not in msg and "re-export" not in msg, msg
    assert "shipped inside dps-fast" in msg and "damaged" in msg and reinstall_hint() in msg
    im.save_array(im.textured(32, 32, 1), tmp_path / "A" / "0.png")
    im.save_array(im.textured(32, 32, 2), tmp_path / "B" / "0.png")
    res = _cli("score", tmp_path / "A", tmp_path / "B", "-m", "ssim", code=2)  # the CLI too
    assert reinstall_hint() in " ".join(res.stderr.split()) and "dps-fast export" not in res.stderr
    # A graph byte flipped (found when the engine first uses it), a manifest deleted.
    (ssim / MANIFEST).write_text(text)
    pair = ssim / "pair.onnx"
    raw = bytearray(pair.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pair.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="corrupt") as e:
        read_bundle(ssim)
    assert "damaged" in str(e.value) and "dps-fast export" not in str(e.value)
    (shipped / "psnr" / MANIFEST).unlink()
    with pytest.raises(BundleError, match="missing") as e:
        read_bundle(shipped / "psnr")
    assert reinstall_hint() in str(e.value) and "dps-fast export" not in str(e.value)
    # In this editable install the files are the clone's: regenerate them, as printed.
    assert "`python -m dps_fast.classical.graphs`" in reinstall_hint()
    import dps_fast.classical.graphs as graphs

    graphs.main([])  # `python -m dps_fast.classical.graphs`, in-process
    assert read_bundle(ssim).manifest.reduce == "sum" and read_bundle(shipped / "psnr")
    # A damaged copy elsewhere: use the shipped one.
    copy = tmp_path / "my ssim"
    shutil.copytree(ssim, copy)
    (copy / "head.npz").write_bytes(b"")
    with pytest.raises(BundleError) as e:
        read_bundle(copy)
    assert "copy of the classical measure ssim" in str(e.value) and "`-m ssim`" in str(e.value)
    assert "dps-fast export" not in str(e.value)


def test_reinstall_command_follows_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from dps_fast import __version__
    from dps_fast.reexport import reinstall_hint

    class Dist:
        def __init__(self, text: str | None) -> None:
            self.text = text

        def read_text(self, name: str) -> str | None:
            return self.text if name == "direct_url.json" else None

    def installed(direct: dict[str, Any] | None) -> str:
        d = Dist(None if direct is None else json.dumps(direct))
        monkeypatch.setattr(importlib.metadata, "distribution", lambda name: d)
        return reinstall_hint()

    clone = {"url": "file:///home/me/dps%20fast", "dir_info": {}}
    assert installed(clone) == (
        "reinstall dps-fast: `pip install --force-reinstall --no-deps '/home/me/dps fast'`"
    )
    assert installed(None) == (
        f"reinstall dps-fast: `pip install --force-reinstall --no-deps dps-fast=={__version__}`"
    )
    editable = installed({**clone, "dir_info": {"editable": True}})
    assert "/home/me/dps fast" in editable and "python -m dps_fast.classical.graphs" in editable


# -- a non-finite score --------------------------------------------------------------------------


def test_non_finite_score_says_what_fixes_it(engines: Any) -> None:
    """A NaN score is not fixed by a re-export (the bundle's hashes were checked: the same
    weights give the same graphs); the row says what is."""
    from types import SimpleNamespace

    import numpy as np

    from dps_fast.pipeline.records import checked_score, non_finite_fix

    deep = engines(MODEL)
    nan = np.full(len(deep.tap_names), np.nan, np.float32)
    score, err = checked_score(deep, nan)
    w = deep.bundle.manifest.weights
    assert score is None and err.startswith("the model gave a non-finite score (nan): ")
    assert "re-export the model" not in err and f"({w.name}, sha256 {w.sha256[:16]}…)" in err
    psnr = Engine("psnr")
    score, err = checked_score(psnr, np.array([np.nan], np.float32))
    assert score is None and "dps-fast bug" in err
    half = SimpleNamespace(precision="fp16", bundle=deep.bundle)
    assert "--precision fp32" in non_finite_fix(half)  # type: ignore[arg-type]
