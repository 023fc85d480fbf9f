"""Pairing images: two folders (by stem, relative path or sorted order) or a CSV manifest.

Problems that concern one pair (a duplicate stem, an empty manifest cell) become a
:class:`Pair` with ``error`` set, so that the run reports them on their own row and goes on;
problems that make the whole run pointless raise :class:`PairingError`.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import PairingError
from .decode import IMAGE_EXTENSIONS

__all__ = [
    "MATCH_MODES",
    "Pair",
    "Pairing",
    "PairingError",
    "list_images",
    "pair_dirs",
    "read_pairs_manifest",
]

MATCH_MODES: tuple[str, ...] = ("stem", "relpath", "sorted")
"""Ways to pair two folders (the ``--match`` option)."""

_EXAMPLES = 3


@dataclass(frozen=True)
class Pair:
    """One pair to score.

    ``a`` and ``b`` are display names (POSIX paths relative to DIR_A / DIR_B, or the manifest
    cells as written) and form the resume key; ``a_path``/``b_path`` are the files to decode.
    A non-empty ``error`` means the pair fails on its own row without decoding.
    """

    a: str
    b: str
    a_path: Path | None
    b_path: Path | None
    error: str = ""
    id: str | None = None


@dataclass(frozen=True)
class Pairing:
    """The result of pairing two folders: pairs in order, the unpaired names, and how."""

    pairs: list[Pair]
    only_a: list[str]
    only_b: list[str]
    match: str
    note: str = ""


def _is_image_name(name: str) -> bool:
    """True when the name's extension (case-insensitive) is an image extension."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(root: Path) -> list[str]:
    """Sorted POSIX paths, relative to ``root``, of every entry named like an image.

    Recursive; hidden entries (name starting with '.') are skipped and symlinked folders are not
    followed (no cycles). Entries are listed by name whatever they are — broken links, folders,
    FIFOs named ``x.png`` — so that they fail on their own row instead of vanishing.
    """
    found: list[str] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            if not prefix:
                raise PairingError(f"cannot list folder {root}: {e.strerror or e}") from None
            continue  # an unreadable subfolder: named like an image, it is already listed
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            if _is_image_name(entry.name):
                found.append(rel)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((entry.path, rel + "/"))
    return sorted(set(found))


def _check_folder(folder: Path) -> None:
    """Raise PairingError unless ``folder`` is an existing folder."""
    if not folder.exists():
        raise PairingError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise PairingError(f"folder not found: {folder} (it is a file, not a folder)")


def _images_or_error(folder: Path) -> list[str]:
    """The images of ``folder``; PairingError when it holds none."""
    names = list_images(folder)
    if not names:
        looked = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise PairingError(f"no images found in {folder} (looked for {looked})")
    return names


def _stem(rel: str) -> str:
    """Relative path without its (image) extension: 'sub/0001.png' -> 'sub/0001'."""
    return os.path.splitext(rel)[0]


def _examples(names: list[str]) -> str:
    """A few names for an error message."""
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (", …" if len(names) > _EXAMPLES else "")


def pair_dirs(dir_a: str | Path, dir_b: str | Path, match: str = "stem") -> Pairing:
    """Pair the images of two folders.

    ``match``: ``stem`` pairs relative paths without extension (a/0001.png with b/0001.jpg);
    ``relpath`` pairs identical relative paths; ``sorted`` pairs the two sorted lists in order.
    Pairs come in sorted order of their key; unpaired names are listed in ``only_a``/``only_b``.
    A stem held by several files on one side gives one failing pair naming them.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match: expected one of {', '.join(MATCH_MODES)}, got {match!r}")
    folder_a, folder_b = Path(dir_a), Path(dir_b)
    _check_folder(folder_a)
    _check_folder(folder_b)
    names_a = _images_or_error(folder_a)
    names_b = _images_or_error(folder_b)

    if match == "sorted":
        n = min(len(names_a), len(names_b))
        pairs = [
            Pair(a, b, folder_a / a, folder_b / b)
            for a, b in zip(names_a[:n], names_b[:n], strict=True)
        ]
        if len(names_a) == len(names_b):
            note = f"paired by sorted order: {n} files each side"
        else:
            note = (
                f"paired by sorted order: {n} pairs ({len(names_a)} files in {folder_a}, "
                f"{len(names_b)} in {folder_b}; the rest are unpaired)"
            )
        return Pairing(pairs, names_a[n:], names_b[n:], match, note)

    key = _stem if match == "stem" else (lambda rel: rel)
    groups_a: dict[str, list[str]] = defaultdict(list)
    groups_b: dict[str, list[str]] = defaultdict(list)
    for rel in names_a:
        groups_a[key(rel)].append(rel)
    for rel in names_b:
        groups_b[key(rel)].append(rel)

    pairs = []
    for k in sorted(groups_a.keys() & groups_b.keys()):
        ga, gb = groups_a[k], groups_b[k]
        if len(ga) == 1 and len(gb) == 1:
            pairs.append(Pair(ga[0], gb[0], folder_a / ga[0], folder_b / gb[0]))
            continue
        where = [
            f"in {folder}: {', '.join(group)}"
            for folder, group in ((folder_a, ga), (folder_b, gb))
            if len(group) > 1
        ]
        error = f"duplicate stem {k!r} {'; '.join(where)} — rename one or use --match relpath"
        pairs.append(Pair(", ".join(ga), ", ".join(gb), None, None, error=error))
    only_a = sorted(rel for k, group in groups_a.items() if k not in groups_b for rel in group)
    only_b = sorted(rel for k, group in groups_b.items() if k not in groups_a for rel in group)
    if not pairs:
        others = " or ".join(m for m in ("sorted", "relpath", "stem") if m != match)
        raise PairingError(
            f"no pairs matched between {folder_a} and {folder_b} with --match {match}: "
            f"{folder_a} has {len(names_a)} images (e.g. {_examples(names_a)}), "
            f"{folder_b} has {len(names_b)} (e.g. {_examples(names_b)}); try --match {others}"
        )
    return Pairing(pairs, only_a, only_b, match, "")


def parse_columns(spec: str | tuple[str, str] | list[str]) -> tuple[str, str]:
    """``"ref,dist"`` → ("ref", "dist"): the manifest's columns holding the a and b paths."""
    parts = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else list(spec)
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise PairingError(
            f"expected two different column names for a and b, e.g. 'ref,dist', got {spec!r}"
        )
    return parts[0], parts[1]


def read_pairs_manifest(
    path: Path, columns: str | tuple[str, str] | list[str] = ("a", "b")
) -> list[Pair]:
    """Read a CSV manifest whose header names the path columns (``a`` and ``b`` unless
    ``columns`` names others, e.g. ``"ref,dist"``; ``id`` optional).

    Paths are relative to the manifest's folder unless absolute; ``a``/``b`` keep the cells as
    written (whitespace around them stripped). Other columns are ignored; the order is kept.
    An empty ``a`` or ``b`` cell gives a failing pair ("row N: empty path", N counting data
    rows from 1).
    """
    path = Path(path)
    col_a, col_b = parse_columns(columns)
    named = f"{col_a} and {col_b}"
    if not path.exists():
        raise PairingError(f"manifest not found: {path}")
    if not path.is_file():
        raise PairingError(f"manifest is not a file: {path}")
    base = path.parent
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            # strict: an unterminated quote is an error, not one cell holding the rest of the file
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise PairingError(
                    f"manifest {path} has no header: its first line must name columns {named} "
                    f"(and optionally id), e.g. '{col_a},{col_b}'"
                )
            found = [cell.strip() for cell in header]
            used = (col_a, col_b, "id")
            twice = sorted({c for c in found if c in used and found.count(c) > 1})
            if twice:
                raise PairingError(
                    f"manifest {path} names column {' and '.join(repr(c) for c in twice)} more "
                    f"than once (columns found: {', '.join(repr(c) for c in found)}); "
                    "rename or remove the extra column"
                )
            missing = [c for c in (col_a, col_b) if c not in found]
            if missing:
                raise PairingError(
                    f"manifest {path} has no column {' or '.join(repr(c) for c in missing)} "
                    f"(columns found: {', '.join(repr(c) for c in found)}); "
                    f"its header must name columns {named}, or name yours with "
                    f"--columns A_COLUMN,B_COLUMN (e.g. --columns {','.join(found[:2])})"
                )
            ia, ib = found.index(col_a), found.index(col_b)
            iid = found.index("id") if "id" in found else None
            pairs: list[Pair] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                n = len(pairs) + 1
                a = row[ia].strip() if ia < len(row) else ""
                b = row[ib].strip() if ib < len(row) else ""
                pid = None
                if iid is not None:
                    pid = row[iid].strip() if iid < len(row) else ""
                if not a or not b:
                    pairs.append(Pair(a, b, None, None, error=f"row {n}: empty path", id=pid))
                    continue
                pairs.append(Pair(a, b, base / a, base / b, id=pid))
    except UnicodeDecodeError as e:
        raise PairingError(
            f"manifest {path} is not UTF-8 text ({e.reason}); save it as UTF-8"
        ) from None
    except csv.Error as e:
        raise PairingError(
            f"manifest {path} is not valid CSV (line {reader.line_num}: {e}); check its quotes — "
            'a cell that starts with " must end with " (write a quote inside it as "")'
        ) from None
    except OSError as e:
        raise PairingError(f"cannot read manifest {path}: {e.strerror or e}") from None
    if not pairs:
        raise PairingError(f"manifest {path} has a header but no rows")
    return pairs
