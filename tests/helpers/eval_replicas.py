"""Small synthetic replicas of the evaluation datasets' layouts, with each one's quirks.

BAPPS (.npy judges, 2AFC and JND), TID2013 (``I01.BMP`` next to ``i25``-style lower case, a
mixed-case distorted name, ``mos_std.txt``), KADID-10k (``dmos.csv``), PIPAL (``Train_Label``),
LIVE R2 (``.mat`` labels with reference entries to drop) and a generic manifest. Images are
a smooth base plus seeded noise whose strength grows with the distortion level, so a sane
distance ranks them and the ratings are known by construction.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def base_image(h: int, w: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    f = rng.uniform(3, 9, 3)
    img = np.stack([128 + 90 * np.sin(x / f[c] + y / (f[c] + 2) + seed) for c in range(3)], -1)
    return img.clip(0, 255).astype(np.uint8)


def distort(img: np.ndarray, level: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 1, img.shape) * level
    return (img.astype(np.float64) + noise).round().clip(0, 255).astype(np.uint8)


def save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "BMP" if path.suffix.lower() == ".bmp" else "PNG"
    Image.fromarray(img).save(path, format=fmt)
    return path


def make_bapps(
    root: Path,
    twoafc: dict[str, int] | None = None,
    jnd: dict[str, int] | None = None,
    size: int = 64,
) -> Path:
    """``2afc/val/<subset>/{ref,p0,p1,judge}`` and ``jnd/val/<subset>/{p0,p1,same}``."""
    twoafc = {"traditional": 4, "cnn": 3} if twoafc is None else twoafc
    jnd = {"traditional": 4} if jnd is None else jnd
    judges = [0.0, 0.2, 0.6, 1.0, 0.4, 0.8]
    for s, (sub, n) in enumerate(twoafc.items()):
        d = root / "2afc" / "val" / sub
        for i in range(n):
            stem = f"{i:06d}"
            ref = base_image(size, size, 100 * s + i)
            save(ref, d / "ref" / f"{stem}.png")
            save(distort(ref, 4 + 10 * (i % 2), i), d / "p0" / f"{stem}.png")
            save(distort(ref, 14 - 10 * (i % 2), i + 50), d / "p1" / f"{stem}.png")
            (d / "judge").mkdir(parents=True, exist_ok=True)
            np.save(d / "judge" / f"{stem}.npy", np.array([judges[i % len(judges)]]))
    for s, (sub, n) in enumerate(jnd.items()):
        d = root / "jnd" / "val" / sub
        for i in range(n):
            stem = f"{i:06d}"
            a = base_image(size, size, 500 + 10 * s + i)
            save(a, d / "p0" / f"{stem}.png")
            save(distort(a, 2 + 8 * i, i), d / "p1" / f"{stem}.png")
            (d / "same").mkdir(parents=True, exist_ok=True)
            np.save(d / "same" / f"{stem}.npy", np.array([1.0 / (1 + i)]))
    return root


def make_tid2013(
    root: Path,
    n_ref: int = 3,
    n_types: int = 2,
    n_levels: int = 2,
    size: tuple[int, int] = (48, 64),
    std: bool = True,
) -> Path:
    """TID2013 layout; the last reference is lower case (``i03.bmp``, like ``i25.bmp``), one
    distorted name is upper case on disk (``I01_01_1.BMP``) but lower case in the MOS file."""
    lines, stds = [], []
    jitter = np.random.default_rng(0).normal(0, 0.6, n_ref * n_types * n_levels)
    for r in range(1, n_ref + 1):
        ref = base_image(*size, r)
        rname = f"I{r:02d}.BMP" if r < n_ref else f"i{r:02d}.bmp"
        save(ref, root / "reference_images" / rname)
        for t in range(1, n_types + 1):
            for lev in range(1, n_levels + 1):
                name = f"i{r:02d}_{t:02d}_{lev}.bmp"
                disk = name.upper() if (r, t, lev) == (1, 1, 1) else name
                strength = 3.0 * lev * t + r
                save(distort(ref, strength, 7 * r + t + lev), root / "distorted_images" / disk)
                lines.append(f"{9 - strength / 4 + jitter[len(lines)]:.5f} {name}")
                stds.append(f"{0.1 + 0.05 * lev:.4f}")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    if std:
        (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    return root


def make_kadid(root: Path, n_ref: int = 2, n_dist: int = 3, size: int = 48) -> Path:
    rows = []
    for r in range(1, n_ref + 1):
        ref = base_image(size, size, 30 + r)
        save(ref, root / "images" / f"I{r:02d}.png")
        for k in range(1, n_dist + 1):
            name = f"I{r:02d}_{k:02d}_01.png"
            save(distort(ref, 5.0 * k, r * 10 + k), root / "images" / name)
            rows.append([name, f"I{r:02d}.png", 5 - k, 0.04 * k])
    with open(root / "dmos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows(rows)
    return root


def make_pipal(root: Path, n_ref: int = 2, n_dist: int = 3, size: int = 48) -> Path:
    lines = []
    for r in range(1, n_ref + 1):
        ref = base_image(size, size, 60 + r)
        save(ref, root / "Train_Ref" / f"A{r:04d}.bmp")
        for k in range(n_dist):
            name = f"A{r:04d}_{k:02d}_00.bmp"
            save(distort(ref, 4.0 + 5 * k, r + k), root / f"Distortion_{1 + k % 2}" / name)
            lines.append(f"{name},{1600 - 50 * k:.4f}")
    (root / "Train_Label").mkdir(parents=True, exist_ok=True)
    (root / "Train_Label" / "A_labels.txt").write_text("\n".join(lines) + "\n")
    return root


def make_live(root: Path, size: int = 8) -> Path:
    """LIVE R2 with its fixed counts (982 entries); every 6th entry is a reference (orgs=1)."""
    from scipy.io import savemat

    from dps_fast.evaluate.readers import LIVE_FOLDERS

    refs = [f"ref{k}.bmp" for k in range(3)]
    for k, name in enumerate(refs):
        save(base_image(size, size, 90 + k), root / "refimgs" / name)
    dmos, orgs, names = [], [], []
    i = 0
    for folder, n in LIVE_FOLDERS:
        for k in range(1, n + 1):
            save(base_image(size, size, i), root / folder / f"img{k}.bmp")
            dmos.append(float(i % 50))
            orgs.append(1 if i % 6 == 0 else 0)
            names.append(refs[i % 3])
            i += 1
    savemat(root / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs])})
    cell = np.empty((1, len(names)), dtype=object)
    for j, n in enumerate(names):
        cell[0, j] = np.array([n])
    savemat(root / "refnames_all.mat", {"refnames_all": cell})
    return root


def make_manifest(
    root: Path, n_ref: int = 2, n_dist: int = 3, size: int = 48, std: bool = True
) -> Path:
    rows = []
    for r in range(n_ref):
        ref = base_image(size, size, 70 + r)
        save(ref, root / "ref" / f"r{r}.png")
        for k in range(n_dist):
            save(distort(ref, 4.0 + 6 * k, 3 * r + k), root / "dist" / f"r{r}_{k}.png")
            rows.append([f"ref/r{r}.png", f"dist/r{r}_{k}.png", 10.0 * k + r, 0.5])
    path = root / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ref", "dist", "score", *(["std"] if std else [])])
        w.writerows([row if std else row[:3] for row in rows])
    return path
