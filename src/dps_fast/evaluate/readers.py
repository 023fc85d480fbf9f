"""Dataset readers: BAPPS (2AFC, JND), TID2013, KADID-10k, PIPAL, LIVE R2, a generic manifest.

Each reader validates the whole layout before anything is scored and raises
:class:`LayoutError` naming the exact missing file, column or count mismatch. Names are paired
by stem (never by sorted order); TID2013 names resolve case-insensitively (copies differ).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .items import Dataset, Item, ItemPair, LayoutError

KINDS = ("bapps", "tid2013", "kadid10k", "pipal", "live", "mos")
BAPPS_VAL_2AFC = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _need_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise LayoutError(f"{what}: folder {p} not found")
    return p


def _need_file(p: Path, what: str) -> Path:
    if not p.is_file():
        raise LayoutError(f"{what}: file {p} not found")
    return p


def _by_stem(folder: Path, suffixes: Iterable[str]) -> dict[str, Path]:
    """Files of ``folder`` by stem (one level); two files with one stem is a layout error."""
    out: dict[str, Path] = {}
    sfx = tuple(suffixes)
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        if e.name.startswith(".") or not e.name.lower().endswith(sfx):
            continue
        stem = os.path.splitext(e.name)[0]
        if stem in out:
            raise LayoutError(
                f"{folder}: two files with stem {stem!r} ({out[stem].name}, {e.name})"
            )
        out[stem] = Path(e.path)
    return out


class _CaseIndex:
    """Files of one folder by lower-cased name: 'I01.BMP' and 'i01.bmp' are one name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}
        dup: dict[str, list[str]] = {}
        for e in os.scandir(folder):
            key = e.name.lower()
            if key in self.files:
                dup.setdefault(key, [self.files[key].name]).append(e.name)
            self.files[key] = Path(e.path)
        self.ambiguous = dup

    def find(self, name: str, what: str) -> Path:
        key = name.lower()
        if key in self.ambiguous:
            raise LayoutError(
                f"{what}: {name!r} matches several files in {self.folder} when case is ignored "
                f"({', '.join(sorted(self.ambiguous[key]))}); keep one"
            )
        p = self.files.get(key)
        if p is None:
            raise LayoutError(f"{what}: {name} not found in {self.folder} (case ignored)")
        return p


def _split_subset(s: str) -> tuple[str, str]:
    return (s.split("/", 1)[0], s.split("/", 1)[1]) if "/" in s else ("val", s)


def _bapps_subsets(base: Path, subsets: list[str] | None, kind: str) -> list[tuple[str, str]]:
    """(split, subset) pairs present (or asked for) under ``base`` = ROOT/2afc or ROOT/jnd."""
    if subsets:
        return [_split_subset(s) for s in subsets]
    val = base / "val"
    if not val.is_dir():
        raise LayoutError(f"BAPPS {kind}: folder {val} not found")
    return [("val", d.name) for d in sorted(val.iterdir()) if d.is_dir()]


def _bapps_folder(
    root: Path, folder: Path, image_roles: tuple[str, ...], label: str, kind: str
) -> list[tuple[str, dict[str, Path], float]]:
    """Validate one BAPPS subset folder; returns (stem, {role: file}, label) per item."""
    _need_dir(folder, f"BAPPS {kind}")
    by_role: dict[str, dict[str, Path]] = {}
    for role in (*image_roles, label):
        d = _need_dir(folder / role, f"BAPPS {kind} {_rel(root, folder)}")
        by_role[role] = _by_stem(d, (".npy",) if role == label else IMAGE_SUFFIXES)
    first = by_role[image_roles[0]]
    if not first:
        raise LayoutError(f"BAPPS {kind}: no images in {folder / image_roles[0]}")
    # Against the first role first: "p1/000001.png missing" before "ref/000009.png missing".
    checks = [(r, image_roles[0]) for r in by_role] + [(r, o) for r in by_role for o in by_role]
    for role, other_role in checks:
        files, other = by_role[role], by_role[other_role]
        missing = sorted(set(other) - set(files))
        if missing:
            ext = ".npy" if role == label else ".png"
            raise LayoutError(
                f"BAPPS {kind} {_rel(root, folder)}: {role}/{missing[0]}{ext} missing "
                f"({other_role}/{other[missing[0]].name} exists; {len(missing)} missing in "
                f"{role}/: {len(files)} files there, {len(other)} in {other_role}/)"
            )
    out = []
    for stem in sorted(first):
        f = by_role[label][stem]
        try:
            v = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise LayoutError(f"BAPPS {kind}: cannot read {f}: {e}") from None
        v = np.asarray(v, np.float64).ravel()
        if v.size != 1 or not (0.0 <= float(v[0]) <= 1.0):
            raise LayoutError(
                f"BAPPS {kind}: {f} must hold one fraction in [0, 1], got {v[:4].tolist()}"
            )
        out.append((stem, {r: by_role[r][stem] for r in image_roles}, float(v[0])))
    return out


def read_bapps(root: Path, subsets: list[str] | None = None, jnd: bool = True) -> list[Dataset]:
    """BAPPS: ``2afc/<split>/<subset>/{ref,p0,p1,judge}`` and ``jnd/val/<subset>/{p0,p1,same}``.

    ``judge`` is the fraction of raters who chose p1; ``same`` the fraction saying identical.
    ``subsets`` names subsets (``cnn`` = ``val/cnn``, or ``train/cnn``); default: every val
    subset found. The LPIPS protocol resizes to 64 (``short-side:64``).
    """
    _need_dir(root, "BAPPS")
    out: list[Dataset] = []
    if not (root / "2afc").is_dir() and not (root / "jnd").is_dir():
        raise LayoutError(f"BAPPS: neither {root / '2afc'} nor {root / 'jnd'} found")
    if (root / "2afc").is_dir():
        items = []
        for split, sub in _bapps_subsets(root / "2afc", subsets, "2afc"):
            folder = root / "2afc" / split / sub
            name = sub if split == "val" else f"{split}/{sub}"
            for stem, f, j in _bapps_folder(root, folder, ("ref", "p0", "p1"), "judge", "2afc"):
                pairs = tuple(
                    ItemPair(r, _rel(root, f[r]), _rel(root, f["ref"]), f[r], f["ref"])
                    for r in ("p0", "p1")
                )
                items.append(Item(f"{name}/{stem}", name, j, pairs, group=f"{name}/{stem}"))
        out.append(Dataset("bapps-2afc", "bapps", "2afc", root, items, resize="short-side:64"))
    if jnd and (root / "jnd").is_dir():
        wanted = None
        if subsets:
            avail = {d.name for d in (root / "jnd" / "val").iterdir() if d.is_dir()}
            wanted = [s for s in subsets if _split_subset(s)[1] in avail]
        items = []
        if wanted is None or wanted:
            for split, sub in _bapps_subsets(root / "jnd", wanted, "jnd"):
                folder = root / "jnd" / split / sub
                name = sub if split == "val" else f"{split}/{sub}"
                for stem, f, s in _bapps_folder(root, folder, ("p0", "p1"), "same", "jnd"):
                    pair = ItemPair("d", _rel(root, f["p0"]), _rel(root, f["p1"]), f["p0"], f["p1"])
                    items.append(Item(f"{name}/{stem}", name, s, (pair,), group=f"{name}/{stem}"))
        if items:
            out.append(Dataset("bapps-jnd", "bapps", "jnd", root, items, resize="short-side:64"))
    return out


def _mos_item(
    root: Path,
    ident: str,
    label: float,
    dist: Path,
    ref: Path,
    *,
    group: str,
    dtype: str = "",
    std: float = math.nan,
) -> Item:
    pair = ItemPair("d", _rel(root, dist), _rel(root, ref), dist, ref)
    return Item(ident, "all", label, (pair,), group=group, dtype=dtype, label_std=std)


def _float(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise LayoutError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise LayoutError(f"{where}: expected a finite number, got {text!r}")
    return v


_TID_NAME = re.compile(r"^(i\d\d)_(\d\d)_(\d)\.bmp$", re.IGNORECASE)


def read_tid2013(root: Path) -> Dataset:
    """TID2013: ``reference_images/``, ``distorted_images/``, ``mos_with_names.txt`` (``MOS
    name`` per line), optional ``mos_std.txt`` in the same order. MOS 0–9, higher is better."""
    refs = _CaseIndex(_need_dir(root / "reference_images", "TID2013"))
    dists = _CaseIndex(_need_dir(root / "distorted_images", "TID2013"))
    mos_file = _need_file(root / "mos_with_names.txt", "TID2013")
    lines = [ln.split() for ln in mos_file.read_text(encoding="latin-1").splitlines() if ln.strip()]
    std_file = root / "mos_std.txt"
    stds: list[float] | None = None
    if std_file.is_file():
        sl = [
            ln.strip() for ln in std_file.read_text(encoding="latin-1").splitlines() if ln.strip()
        ]
        if len(sl) != len(lines):
            raise LayoutError(
                f"TID2013: {std_file} has {len(sl)} lines, {mos_file.name} has {len(lines)}; "
                "they must list the same images in the same order"
            )
        stds = [_float(s, f"{std_file} line {i + 1}") for i, s in enumerate(sl)]
    items = []
    for i, parts in enumerate(lines):
        where = f"{mos_file} line {i + 1}"
        if len(parts) != 2:
            raise LayoutError(f"{where}: expected 'MOS name', got {' '.join(parts)!r}")
        m = _TID_NAME.match(parts[1])
        if m is None:
            raise LayoutError(f"{where}: expected a name like i01_01_1.bmp, got {parts[1]!r}")
        ref = refs.find(f"{m.group(1)}.bmp", where)
        dist = dists.find(parts[1], where)
        items.append(
            _mos_item(
                root,
                parts[1].lower(),
                _float(parts[0], where),
                dist,
                ref,
                group=m.group(1).upper(),
                dtype=m.group(2),
                std=stds[i] if stds else math.nan,
            )
        )
    if not items:
        raise LayoutError(f"TID2013: {mos_file} lists no images")
    return Dataset("tid2013", "tid2013", "mos", root, items, higher_better=True)


def _csv_rows(path: Path, need: tuple[str, ...], what: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in need if c not in fields]
        if missing:
            raise LayoutError(
                f"{what}: {path} has no column {', '.join(missing)} (header: "
                f"{','.join(fields) or '(empty)'}; expected {','.join(need)})"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if not rows:
        raise LayoutError(f"{what}: {path} has no rows")
    return rows


def read_kadid10k(root: Path) -> Dataset:
    """KADID-10k: ``images/`` and ``dmos.csv`` (``dist_img,ref_img,dmos,var``); the ``dmos``
    column is a 1–5 rating where higher is better; its spread is √var."""
    images = _need_dir(root / "images", "KADID-10k")
    path = _need_file(root / "dmos.csv", "KADID-10k")
    rows = _csv_rows(path, ("dist_img", "ref_img", "dmos", "var"), "KADID-10k")
    items = []
    for i, r in enumerate(rows):
        where = f"{path} row {i + 2}"
        dist, ref = images / r["dist_img"], images / r["ref_img"]
        _need_file(dist, where)
        _need_file(ref, where)
        parts = Path(r["dist_img"]).stem.split("_")
        var = _float(r["var"], where)
        items.append(
            _mos_item(
                root,
                r["dist_img"],
                _float(r["dmos"], where),
                dist,
                ref,
                group=Path(r["ref_img"]).stem,
                dtype=parts[1] if len(parts) > 1 else "",
                std=math.sqrt(var) if var >= 0 else math.nan,
            )
        )
    return Dataset("kadid10k", "kadid10k", "mos", root, items, higher_better=True)


def read_pipal(root: Path) -> Dataset:
    """PIPAL (train): ``Train_Label/*.txt`` lines ``A0001_00_00.bmp,<Elo>``; references in
    ``Train_Ref/``, distorted images in ``Distortion_*/`` or ``Train_Dis/``. Higher Elo is
    better."""
    labels = _need_dir(root / "Train_Label", "PIPAL")
    refs = _need_dir(root / "Train_Ref", "PIPAL")
    dist_dirs = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and (p.name.startswith("Distortion_") or p.name == "Train_Dis")
    )
    if not dist_dirs:
        raise LayoutError(f"PIPAL: no Distortion_1..4/ (or Train_Dis/) folder in {root}")
    where_dist: dict[str, Path] = {}
    for d in dist_dirs:
        for e in os.scandir(d):
            where_dist.setdefault(e.name, Path(e.path))
    files = sorted(labels.glob("*.txt"))
    if not files:
        raise LayoutError(f"PIPAL: no label .txt files in {labels}")
    items = []
    for lf in files:
        for n, line in enumerate(lf.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{lf} line {n}"
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2:
                raise LayoutError(f"{where}: expected 'name,elo', got {line!r}")
            name = parts[0]
            dist = where_dist.get(name)
            if dist is None:
                raise LayoutError(
                    f"{where}: {name} not found in {', '.join(d.name for d in dist_dirs)}"
                )
            ref = _need_file(refs / (name.split("_")[0] + ".bmp"), where)
            bits = Path(name).stem.split("_")
            items.append(
                _mos_item(
                    root,
                    name,
                    _float(parts[1], where),
                    dist,
                    ref,
                    group=bits[0],
                    dtype=bits[1] if len(bits) > 1 else "",
                )
            )
    return Dataset("pipal", "pipal", "mos", root, items, higher_better=True)


def _loadmat(path: Path) -> dict[str, Any]:
    from .deps import need

    sio = need("scipy.io")
    try:
        return dict(sio.loadmat(str(path)))
    except (OSError, ValueError, NotImplementedError) as e:
        raise LayoutError(f"LIVE: cannot read {path}: {e}") from None


def read_live(root: Path) -> Dataset:
    """LIVE R2: ``jp2k jpeg wn gblur fastfading /img{k}.bmp``, ``refimgs/``, ``dmos.mat``
    (``dmos``, ``orgs``: entries with ``orgs == 1`` are the references, dropped) and
    ``refnames_all.mat``. Lower DMOS is better."""
    mat = _loadmat(_need_file(root / "dmos.mat", "LIVE"))
    names_mat = _loadmat(_need_file(root / "refnames_all.mat", "LIVE"))
    for key, d, f in (
        ("dmos", mat, "dmos.mat"),
        ("orgs", mat, "dmos.mat"),
        ("refnames_all", names_mat, "refnames_all.mat"),
    ):
        if key not in d:
            raise LayoutError(f"LIVE: {root / f} has no variable {key!r}")
    dmos = np.asarray(mat["dmos"], np.float64).ravel()
    orgs = np.asarray(mat["orgs"]).ravel()
    names = [str(np.asarray(x).ravel()[0]) for x in np.asarray(names_mat["refnames_all"]).ravel()]
    total = sum(n for _, n in LIVE_FOLDERS)
    if not (len(dmos) == len(orgs) == len(names) == total):
        raise LayoutError(
            f"LIVE: dmos ({len(dmos)}), orgs ({len(orgs)}) and refnames_all ({len(names)}) must "
            f"all have {total} entries ({', '.join(f'{f} {n}' for f, n in LIVE_FOLDERS)})"
        )
    refdir = _need_dir(root / "refimgs", "LIVE")
    items = []
    i = 0
    for folder, n in LIVE_FOLDERS:
        fdir = _need_dir(root / folder, "LIVE")
        for k in range(1, n + 1):
            if not orgs[i]:
                dist = _need_file(fdir / f"img{k}.bmp", f"LIVE entry {i + 1}")
                ref = _need_file(refdir / names[i], f"LIVE entry {i + 1}")
                items.append(
                    _mos_item(
                        root,
                        f"{folder}/img{k}.bmp",
                        float(dmos[i]),
                        dist,
                        ref,
                        group=Path(names[i]).stem,
                        dtype=folder,
                    )
                )
            i += 1
    return Dataset("live", "live", "mos", root, items, higher_better=False)


def read_mos_manifest(path: Path, higher_better: bool | None) -> Dataset:
    """A generic manifest ``ref,dist,score[,std][,group]`` (paths relative to the CSV);
    ``higher_better`` says which way the scores go (required)."""
    if higher_better is None:
        raise LayoutError(
            f"mos={path}: say which way its scores go: --higher-better (e.g. MOS) or "
            "--lower-better (e.g. DMOS)"
        )
    _need_file(path, "mos manifest")
    rows = _csv_rows(path, ("ref", "dist", "score"), "mos manifest")
    root = path.parent
    items = []
    for i, r in enumerate(rows):
        where = f"{path} row {i + 2}"
        dist, ref = root / r["dist"], root / r["ref"]
        _need_file(dist, where)
        _need_file(ref, where)
        std = _float(r["std"], where) if r.get("std") else math.nan
        items.append(
            _mos_item(
                root,
                r["dist"],
                _float(r["score"], where),
                dist,
                ref,
                group=r.get("group") or r["ref"],
                dtype=r.get("group", ""),
                std=std,
            )
        )
    return Dataset(path.stem, "mos", "mos", root, items, higher_better=higher_better)


def read_dataset(
    kind: str,
    path: Path,
    *,
    subsets: list[str] | None = None,
    jnd: bool = True,
    higher_better: bool | None = None,
) -> list[Dataset]:
    """Read ``KIND=PATH`` into validated datasets (BAPPS gives 2AFC and JND)."""
    readers: dict[str, Callable[[], list[Dataset]]] = {
        "bapps": lambda: read_bapps(path, subsets, jnd),
        "tid2013": lambda: [read_tid2013(path)],
        "kadid10k": lambda: [read_kadid10k(path)],
        "pipal": lambda: [read_pipal(path)],
        "live": lambda: [read_live(path)],
        "mos": lambda: [read_mos_manifest(path, higher_better)],
    }
    if kind not in readers:
        raise LayoutError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind != "mos":
        _need_dir(path, kind)
    return readers[kind]()


def parse_dataset_arg(arg: str) -> tuple[str, Path]:
    """``KIND=PATH`` → (kind, path)."""
    kind, sep, path = arg.partition("=")
    if not sep or not path or kind not in KINDS:
        raise LayoutError(f"expected KIND=PATH with KIND one of {', '.join(KINDS)}, got {arg!r}")
    return kind, Path(path)
