"""A bundle is checked before it is trusted: its manifest (format, fields, content digest,
agreement with the registry), its file names (inside the folder) and its graphs (hashes, and
what ONNX Runtime can load). Every failure is a BundleError naming the field or file and the
fix; ``dps-fast score`` turns it into exit 2, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dps_fast import Engine, read_bundle
from dps_fast.cli import app
from dps_fast.errors import BundleError
from dps_fast.manifest import content_sha256, graph_role, parse_role

MODEL = "lpips-squeeze"
RUNNER = CliRunner()


@pytest.fixture
def copy(bundle: Callable[[str], Path], tmp_path: Path) -> Path:
    """A private copy of an exported lpips-squeeze bundle, free to tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle(MODEL), dst)
    return dst


def _edit(p: Path, change: Callable[[dict[str, Any]], Any], *, rehash: bool = True) -> None:
    """Change manifest.json; ``rehash`` recomputes its content digest (a deliberate edit)."""
    m = json.loads((p / "manifest.json").read_text())
    change(m)
    if rehash and isinstance(m, dict):
        m["content_sha256"] = content_sha256(m)
    (p / "manifest.json").write_text(json.dumps(m))


def _sha(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def _pairs(root: Path) -> tuple[Path, Path]:
    a, b = root / "A", root / "B"
    a.mkdir()
    b.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        x = rng.integers(0, 256, (40, 48, 3), np.uint8)
        Image.fromarray(x).save(a / f"{i}.png")
        Image.fromarray(255 - x).save(b / f"{i}.png")
    return a, b


# -- the manifest's own integrity (issue 12, item 7) --------------------------------------------


def test_hand_edit_is_caught_by_the_content_digest(copy: Path) -> None:
    _edit(copy, lambda m: m.update(reduce="mean"), rehash=False)
    fix = r"re-export it: `dps-fast export lpips-squeeze --weights"
    with pytest.raises(BundleError, match=r"changed after export.*" + fix):
        read_bundle(copy)


def test_reduce_must_agree_with_the_registry(copy: Path) -> None:
    """An edit that also recomputes the digest still cannot change how scores are made."""
    _edit(copy, lambda m: m.update(reduce="mean"))
    with pytest.raises(BundleError, match=r"'reduce' is 'mean', but model lpips-squeeze has 'sum'"):
        read_bundle(copy)


def test_min_size_below_the_registry_is_refused(copy: Path) -> None:
    _edit(copy, lambda m: m["input"].update(min_size=[1, 1]))
    with pytest.raises(BundleError, match=r"'input\.min_size' is \[1, 1\], below 17"):
        read_bundle(copy)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("head", "dists", "'head' is 'dists'"),
        ("lpips_version", "0.0", "'lpips_version' is '0.0'"),
        ("lower_is_better", False, "'lower_is_better' is False"),
        ("head", "gauss", "expected one of lpips, lpips-baseline"),
        ("reduce", "max", "expected one of sum, mean"),
    ],
)
def test_semantic_fields_are_checked(copy: Path, field: str, value: Any, words: str) -> None:
    _edit(copy, lambda m: m.update({field: value}))
    with pytest.raises(BundleError, match=words):
        read_bundle(copy)


def test_tap_channels_must_agree_with_the_registry(copy: Path) -> None:
    _edit(copy, lambda m: m["taps"][0].update(channels=3))
    with pytest.raises(BundleError, match=r"tap features\.1 has 3 channels"):
        read_bundle(copy)


# -- file names confined to the bundle folder -------------------------------------------------


@pytest.mark.parametrize("where", ["absolute", "parent", "subfolder"])
def test_graph_files_outside_the_bundle_are_refused(copy: Path, tmp_path: Path, where: str) -> None:
    """A graph outside the folder, with a matching hash, is not loaded (it used to be)."""
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(copy / "pair.onnx", outside)
    name = {"absolute": str(outside), "parent": "../elsewhere.onnx", "subfolder": "x/pair.onnx"}
    _edit(copy, lambda m: m["graphs"]["pair"].update(file=name[where], sha256=_sha(outside)))
    with pytest.raises(BundleError, match="expected a plain file name inside the bundle"):
        read_bundle(copy)


def test_symbolic_link_out_of_the_bundle_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(copy / "pair.onnx", outside)
    os.symlink(outside, copy / "pair.onnx")
    with pytest.raises(BundleError, match="outside the bundle folder"):
        read_bundle(copy)


# -- malformed manifests: a BundleError naming the field (issue 12, item 14) ------------------


def test_deeply_nested_json(copy: Path) -> None:
    (copy / "manifest.json").write_text("[" * 200_000)
    with pytest.raises(BundleError, match="unreadable"):
        read_bundle(copy)


def _drop(path: list[str | int]) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        node: Any = m
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m.update(graphs=list(m["graphs"].values())), "'graphs': expected a JSON object"),
        (_drop(["graphs", "pair", "file"]), "'graphs.pair.file' is missing"),
        (_drop(["taps", 0, "stride"]), r"'taps\[0\].stride' is missing"),
        (_drop(["export"]), "'export' is missing"),
        (lambda m: m.update(taps="features.1"), "'taps': expected a JSON list, got str"),
        (lambda m: m["input"].update(min_size=[17]), r"'input.min_size': expected \[h, w\]"),
        (lambda m: m["graphs"].update(bogus=m["graphs"]["pair"]), "got 'bogus'"),
        (lambda m: m["taps"][0].update(channels="64"), "expected an integer, got str"),
    ],
    ids=["graphs-list", "no-file", "no-stride", "no-export", "taps-str", "min-size", "role",
         "channels-str"],
)  # fmt: skip
def test_malformed_manifest_names_the_field(
    copy: Path, change: Callable[[dict[str, Any]], None], words: str
) -> None:
    _edit(copy, change)
    with pytest.raises(BundleError, match=words) as e:
        read_bundle(copy)
    # The complete command: the weights file it was made from, this folder, --force.
    assert "re-export it: `dps-fast export lpips-squeeze --weights " in str(e.value)
    assert f"--out {copy} --force`" in str(e.value)


def test_manifest_not_an_object(copy: Path) -> None:
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="manifest: expected a JSON object, got list"):
        read_bundle(copy)


# -- versions ----------------------------------------------------------------------------------


def test_format_1_bundles_are_still_read(copy: Path, bundle: Callable[[str], Path]) -> None:
    """A bundle written before format 2 (``schema_version`` 1, no digest) reads and scores
    the same."""

    def to_format_1(m: dict[str, Any]) -> None:
        for k in ("format_version", "content_sha256", "lower_is_better"):
            del m[k]
        m["schema_version"] = 1

    _edit(copy, to_format_1, rehash=False)
    b = read_bundle(copy)
    assert b.manifest.format_version == 1 and b.manifest.lower_is_better
    x = np.random.default_rng(1).random((2, 3, 40, 40), dtype=np.float32)
    y = np.random.default_rng(2).random((2, 3, 40, 40), dtype=np.float32)
    new = Engine(bundle(MODEL), device="cpu").score(x, y)
    np.testing.assert_array_equal(Engine(copy, device="cpu").score(x, y), new)


def test_graph_roles_are_named_in_one_place() -> None:
    assert graph_role("pair", "int8", uint8=True) == "pair@int8@uint8-nhwc"
    assert graph_role("trunk") == "trunk"
    for role in ("pair", "trunk@fp16", "pair_spatial@int8@uint8-nhwc", "head"):
        base, precision, uint8 = parse_role(role)
        assert graph_role(base, precision, uint8=uint8) == role
    for bad in ("pair@uint8-nhwc@fp16", "pair@fp32", "tail", "pair@int8@int8"):
        with pytest.raises(ValueError, match="expected a graph role"):
            parse_role(bad)


# -- load failures in `score`: exit 2 with the fix (issue 12, item 6) ---------------------------


def _flip_byte(copy: Path) -> None:
    f = copy / "pair_uint8-nhwc.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def _garbage_graph(copy: Path) -> None:
    """Not a protobuf at all, with its hash updated (ONNX Runtime's InvalidProtobuf)."""
    f = copy / "pair_uint8-nhwc.onnx"
    f.write_bytes(b"not a graph " * 64)
    _edit(copy, lambda m: m["graphs"]["pair@uint8-nhwc"].update(sha256=_sha(f)))


def _external_data_outside(copy: Path) -> None:
    """A graph whose weights point at external data outside the bundle (ONNX Runtime refuses)."""
    import onnx

    f = copy / "pair_uint8-nhwc.onnx"
    model = onnx.load(str(f))
    t = model.graph.initializer[0]
    n = len(t.raw_data) or 4
    (copy.parent / "outside.bin").write_bytes(b"\0" * n)
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", "../outside.bin"), ("offset", "0"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    t.ClearField("raw_data")
    f.write_bytes(model.SerializeToString())
    _edit(copy, lambda m: m["graphs"]["pair@uint8-nhwc"].update(sha256=_sha(f)))


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        (_flip_byte, "pair_uint8-nhwc.onnx is corrupt"),
        (_garbage_graph, "ONNX Runtime cannot load the 'pair@uint8-nhwc' graph"),
        (_external_data_outside, "ONNX Runtime cannot load the 'pair@uint8-nhwc' graph"),
    ],
    ids=["flipped-byte", "invalid-protobuf", "external-data"],
)
def test_score_exits_2_when_a_graph_fails_to_load(
    copy: Path, tmp_path: Path, tamper: Callable[[Path], None], words: str
) -> None:
    a, b = _pairs(tmp_path)
    tamper(copy)
    r = RUNNER.invoke(app, ["score", str(a), str(b), "--model", str(copy), "--device", "cpu"])
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert words in r.stderr and "`dps-fast export lpips-squeeze --weights " in r.stderr
    assert f"--out {copy} --force`" in r.stderr
    assert "Traceback" not in r.stderr


def test_optional_fields_and_unknown_fields(copy: Path) -> None:
    """Bundles from other tools (graphs built without torch): no backbone weights, no
    preprocessing, an export record of their own, fields this dps-fast does not know."""

    def other_tool(m: dict[str, Any]) -> None:
        m.update(arch=None, weights=None, preprocessing=None, conventions={"kind": "x"})
        del m["head_weights"]
        m["export"] = {"generator": "a script", "opset": 17}

    _edit(copy, other_tool)
    m = read_bundle(copy).manifest
    assert m.weights is None and m.head_weights is None and m.arch == "" and m.preprocessing == {}
    assert m.extra == {"conventions": {"kind": "x"}}
    assert m.export.opset == 17 and m.export.other == {"generator": "a script"}
    assert m.to_dict()["conventions"] == {"kind": "x"}


def test_manifest_round_trips(bundle: Callable[[str], Path]) -> None:
    """What the exporter writes is what Manifest.to_dict gives back, digest included."""
    p = bundle(MODEL)
    assert read_bundle(p).manifest.to_dict() == json.loads((p / "manifest.json").read_text())
