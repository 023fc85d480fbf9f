"""Pairing folders (stem, relpath, sorted) and reading CSV manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dps_fast.io import (
    IMAGE_EXTENSIONS,
    Pair,
    PairingError,
    list_images,
    pair_dirs,
    read_pairs_manifest,
)


def touch(root: Path, *names: str) -> None:
    """Create files (content does not matter: pairing never decodes)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    return a, b


# ---------------------------------------------------------------------------- list_images


def test_list_images(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "b.png",
        "a.JPG",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
        "ü-图.png",
    )
    assert list_images(tmp_path) == [
        "a.JPG",
        "b.png",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "ü-图.png",
    ]


def test_list_images_keeps_odd_entries(tmp_path: Path) -> None:
    touch(tmp_path, "ok.png")
    (tmp_path / "dir.png").mkdir()
    touch(tmp_path, "dir.png/inner.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "missing.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.png")
    names = list_images(tmp_path)
    assert {"ok.png", "dir.png", "dir.png/inner.png", "broken.png"} <= set(names)
    assert ("fifo.png" in names) == hasattr(os, "mkfifo")
    assert names == sorted(names)


def test_list_images_does_not_follow_symlinked_dirs(tmp_path: Path) -> None:
    touch(tmp_path, "real/x.png")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert list_images(tmp_path) == ["real/x.png"]


# ---------------------------------------------------------------------------- stem


def test_stem_pairs_across_extensions(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "0001.png", "0002.png", "sub/0003.png", "only_a.png")
    touch(b, "0002.jpg", "0001.jpg", "sub/0003.webp", "only_b.bmp")
    p = pair_dirs(a, b)
    assert p.match == "stem" and p.note == ""
    assert [(x.a, x.b) for x in p.pairs] == [
        ("0001.png", "0001.jpg"),
        ("0002.png", "0002.jpg"),
        ("sub/0003.png", "sub/0003.webp"),
    ]
    assert p.pairs[0].a_path == a / "0001.png" and p.pairs[0].b_path == b / "0001.jpg"
    assert all(x.error == "" and x.id is None for x in p.pairs)
    assert p.only_a == ["only_a.png"] and p.only_b == ["only_b.bmp"]


def test_duplicate_stem_gives_one_failing_pair(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "x.png", "x.jpg", "y.png")
    touch(b, "x.png", "y.png")
    p = pair_dirs(a, b, match="stem")
    assert len(p.pairs) == 2
    dup = p.pairs[0]
    assert dup.a == "x.jpg, x.png" and dup.b == "x.png"
    assert dup.a_path is None and dup.b_path is None
    assert dup.error == (
        f"duplicate stem 'x' in {a}: x.jpg, x.png — rename one or use --match relpath"
    )
    assert p.pairs[1] == Pair("y.png", "y.png", a / "y.png", b / "y.png")
    # relpath has no such ambiguity.
    r = pair_dirs(a, b, match="relpath")
    assert [(x.a, x.b) for x in r.pairs] == [("x.png", "x.png"), ("y.png", "y.png")]
    assert r.only_a == ["x.jpg"]


# ---------------------------------------------------------------------------- relpath, sorted


def test_relpath(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "s/1.png", "2.png", "3.png")
    touch(b, "s/1.png", "2.jpg", "4.png")
    p = pair_dirs(str(a), str(b), match="relpath")
    assert [(x.a, x.b) for x in p.pairs] == [("s/1.png", "s/1.png")]
    assert p.only_a == ["2.png", "3.png"] and p.only_b == ["2.jpg", "4.png"]


def test_sorted(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "c.png", "a.png", "b.png")
    touch(b, "z.jpg", "y.jpg", "x.jpg")
    p = pair_dirs(a, b, match="sorted")
    assert [(x.a, x.b) for x in p.pairs] == [
        ("a.png", "x.jpg"),
        ("b.png", "y.jpg"),
        ("c.png", "z.jpg"),
    ]
    assert p.note == "paired by sorted order: 3 files each side"
    assert p.only_a == [] and p.only_b == []


def test_sorted_unequal_counts(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "1.png", "2.png", "3.png", "4.png")
    touch(b, "a.png", "b.png")
    p = pair_dirs(a, b, match="sorted")
    assert [(x.a, x.b) for x in p.pairs] == [("1.png", "a.png"), ("2.png", "b.png")]
    assert p.only_a == ["3.png", "4.png"] and p.only_b == []
    assert p.note.startswith("paired by sorted order: 2 pairs")


# ---------------------------------------------------------------------------- whole-run errors


def test_bad_match(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="stem, relpath, sorted"):
        pair_dirs(*dirs, match="name")


def test_missing_folder(tmp_path: Path) -> None:
    touch(tmp_path, "A/1.png", "file.png")
    with pytest.raises(PairingError, match=r"folder not found: .*nope"):
        pair_dirs(tmp_path / "A", tmp_path / "nope")
    with pytest.raises(PairingError, match=r"folder not found: .*file\.png"):
        pair_dirs(tmp_path / "file.png", tmp_path / "A")


def test_no_images(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "1.png")
    touch(b, "readme.txt")
    with pytest.raises(PairingError) as info:
        pair_dirs(a, b)
    message = str(info.value)
    assert message.startswith(f"no images found in {b} (looked for ")
    assert all(ext in message for ext in IMAGE_EXTENSIONS)


def test_no_pairs_matched(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    touch(a, "img_001.png", "img_002.png", "img_003.png", "img_004.png")
    touch(b, "out_001.png", "out_002.png")
    with pytest.raises(PairingError) as info:
        pair_dirs(a, b, match="stem")
    message = str(info.value)
    assert f"no pairs matched between {a} and {b} with --match stem" in message
    assert "has 4 images (e.g. img_001.png, img_002.png, img_003.png, …)" in message
    assert "has 2 (e.g. out_001.png, out_002.png)" in message
    assert message.endswith("try --match sorted or relpath")
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- manifest


def test_manifest(tmp_path: Path) -> None:
    touch(tmp_path, "m/x.png")
    manifest = tmp_path / "m" / "pairs.csv"
    absolute = tmp_path / "abs.png"
    manifest.write_text(
        f"\ufeffid,a,b,comment\np1,x.png,{absolute},hello\n\np2, sub/y.png ,z.png,\np3,,z.png,\n",
        encoding="utf-8",
    )
    pairs = read_pairs_manifest(manifest)
    assert pairs[0] == Pair("x.png", str(absolute), tmp_path / "m" / "x.png", absolute, id="p1")
    assert pairs[1] == Pair(
        "sub/y.png", "z.png", tmp_path / "m" / "sub/y.png", tmp_path / "m" / "z.png", id="p2"
    )
    assert pairs[2] == Pair("", "z.png", None, None, error="row 3: empty path", id="p3")


def test_manifest_without_id(tmp_path: Path) -> None:
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("b,a\n2.png,1.png\nü.png,图.png\n", encoding="utf-8")
    pairs = read_pairs_manifest(manifest)
    assert [(p.a, p.b, p.id) for p in pairs] == [
        ("1.png", "2.png", None),
        ("图.png", "ü.png", None),
    ]


def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(PairingError, match="manifest not found"):
        read_pairs_manifest(tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PairingError, match="no header"):
        read_pairs_manifest(empty)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("left,right\n1.png,2.png\n")
    with pytest.raises(PairingError) as info:
        read_pairs_manifest(wrong)
    assert "no column 'a' or 'b'" in str(info.value)
    assert "columns found: 'left', 'right'" in str(info.value)
    only_a = tmp_path / "only_a.csv"
    only_a.write_text("a,c\n1.png,2.png\n")
    with pytest.raises(PairingError, match="no column 'b'"):
        read_pairs_manifest(only_a)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n\n")
    with pytest.raises(PairingError, match="no rows"):
        read_pairs_manifest(header_only)
