"""An all-pairs matrix written to a file: ``M.npy`` (+ ``M.labels.txt``) or ``M.csv``, and
``M.<suffix>.meta.json``, what ``dps-fast matrix`` writes, as library code.

The matrix is filled in a memory-mapped temporary file next to ``out`` (so it need not fit in
RAM) and renamed into place only when complete; a failed run leaves no partial matrix.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .io.pairing import list_images
from .io.results import format_float, write_meta
from .matrix import MatrixPlan, MatrixResize, compute_matrix
from .scoring_run import provenance

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["MATRIX_SUFFIXES", "MatrixFile", "write_matrix_file"]

MATRIX_SUFFIXES = (".npy", ".csv")


@dataclass
class MatrixFile:
    """What :func:`write_matrix_file` wrote: the image names (labels), the unreadable ones
    with why (NaN rows and columns), the time it took and the meta."""

    out: Path
    labels: list[str]
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def write_matrix_file(
    folder: Path,
    out: Path,
    *,
    engine: Engine,
    resize: MatrixResize,
    max_feature_bytes: int,
    workers: int | None = None,
    on_plan: Callable[[MatrixPlan], None] | None = None,
    options: dict[str, Any] | None = None,
) -> MatrixFile:
    """Compute the all-pairs matrix of the images under ``folder`` and write it to ``out``.

    ``options`` go into the meta as they are (the command line's). Raises ValueError for an
    unknown suffix, an empty folder or images too small for the model, OSError ("cannot write
    …") when a file cannot be written.
    """
    out = Path(out)
    if out.suffix not in MATRIX_SUFFIXES:
        raise ValueError(f"--out must end in .npy or .csv, got {out.name!r}")
    names = list_images(folder)
    if not names:
        raise ValueError(f"no images found in {folder}")
    n = len(names)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npy")
    t0 = time.perf_counter()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        m = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, n))
    except OSError as e:
        raise OSError(f"cannot write {out}: {e.strerror or e}") from e
    try:
        res = compute_matrix(folder, engine=engine, resize=resize,
                             max_feature_bytes=max_feature_bytes, workers=workers, out=m,
                             on_plan=on_plan)  # fmt: skip
        m.flush()
        if out.suffix == ".npy":
            del m
            os.replace(tmp, out)
            out.with_suffix(".labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        else:
            _write_csv(out, names, m)
    except OSError as e:
        raise OSError(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    meta = provenance(engine, dict(options or {}))
    meta.update(images=n, labels=names, errors=res.errors, seconds=seconds,
                plan=None if res.plan is None else res.plan.as_dict())  # fmt: skip
    write_meta(out, meta)
    return MatrixFile(out, names, res.errors, seconds, meta)


def _write_csv(out: Path, names: list[str], m: np.ndarray) -> None:
    """The matrix as CSV: a header of labels, then one labelled row per image."""
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["", *names])
        for lab, row in zip(names, m, strict=True):
            w.writerow([lab, *(format_float(v) for v in row)])
