"""Scoring a dataset's pairs through the engine's pipeline into a resumable score file.

One file per model and dataset, ``scores/<model>/<dataset>.csv``: the results columns of
``dps-fast score`` (``a, b, score, error, tap_<name>…, id``, per-tap values always kept so layer
subsets are recombined later) plus the item's labels, so every statistic can be recomputed
from the file alone (``--from-scores``). A reference shared by many distorted images is decoded
once and run through the trunk once (the pipeline keeps shared images and their features for
the run).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.pairing import Pair
from ..io.results import ResultWriter, meta_path
from ..io.resume import ResultsFile
from ..pipeline import PairScorer
from .items import Dataset, LayoutError

if TYPE_CHECKING:
    from ..engine import Engine

LABEL_COLUMNS = ("item", "role", "subset", "label", "label_std", "group", "dtype")
Progress = Callable[[int, int], None]


def lower_is_better(engine: Engine) -> bool:
    """Whether the model's score is a distance (bundles without the key are distances)."""
    return engine.lower_is_better


def safe_name(name: str) -> str:
    """A model or dataset name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "model"


def score_columns(taps: Iterable[str]) -> list[str]:
    return ["a", "b", "score", "error", *(f"tap_{t}" for t in taps), "id", *LABEL_COLUMNS]


def _fmt(v: float) -> str | float:
    return "" if math.isnan(v) else v


@dataclass
class ScoreRun:
    """What scoring one dataset with one model did."""

    path: Path
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    decoded: Counter[Path] = field(default_factory=Counter)


def score_dataset(
    engine: Engine,
    ds: Dataset,
    path: Path,
    *,
    resize: str,
    workers: int | None = None,
    resume: bool = False,
    decode: str = "auto",
    progress: Progress | None = None,
) -> ScoreRun:
    """Score ``ds`` with ``engine`` into ``path``; writes ``path``'s meta sidecar.

    ``resume``: rows already in ``path`` are kept and matched to pairs by ``(a, b, id)``,
    counted (as ``dps-fast score --resume`` does, :class:`~dps_fast.io.resume.ResultsFile`),
    so a pair listed twice keeps two rows; a file written with another model, bundle, weights,
    precision or resize is refused (:class:`~dps_fast.io.resume.ResumeMismatchError`).
    """
    import time

    taps = engine.tap_names
    cols = score_columns(taps)
    pairs: list[Pair] = []
    labels: dict[str, dict[str, Any]] = {}  # by pair id
    for it in ds.items:
        for p in it.pairs:
            pid = f"{it.id}:{p.role}"
            pairs.append(Pair(p.a, p.b, p.a_path, p.b_path, id=pid))
            labels[pid] = {
                "item": it.id,
                "role": p.role,
                "subset": it.subset,
                "label": it.label,
                "label_std": _fmt(it.label_std),
                "group": it.group,
                "dtype": it.dtype,
            }
    meta = {
        "model": engine.bundle.model,
        "bundle_sha256": engine.bundle.sha256,
        "weights": engine.info["weights"],
        "precision": engine.precision,
        "options": {"resize": resize},
        "lower_is_better": lower_is_better(engine),
        "reduce": engine.bundle.reduce,
        "taps": taps,
        "dataset": ds.name,
        "kind": ds.kind,
        "protocol": ds.protocol,
        "higher_better": ds.higher_better,
        "root": str(ds.root),
        "resize": resize,
        "items": len(ds.items),
        "weights_meta": engine.info["weights"],
        "notes": ds.notes,
    }
    scorer = PairScorer(engine, resize=resize, per_layer=True, workers=workers, decode=decode)
    with ResultsFile(path, cols, pairs, meta, resume=resume) as rf:
        todo = rf.plan.todo
        run = ScoreRun(path, skipped=rf.plan.skipped, decoded=scorer.decodes)
        t0 = time.perf_counter()
        with ResultWriter(path, cols, resume=resume) as w:
            for i, rec in enumerate(scorer.run(todo), 1):
                rec.update(labels[rec["id"]])
                w.write(rec)
                if rec["error"]:
                    run.failed += 1
                else:
                    run.scored += 1
                if progress is not None:
                    progress(i, len(todo))
        run.seconds = time.perf_counter() - t0
        rf.finish({"scored": run.scored, "failed": run.failed, "skipped": run.skipped,
                   "seconds": run.seconds})  # fmt: skip
    return run


@dataclass
class ScoreTable:
    """A score file read back: per item, the distance per role and per tap, and its labels.

    ``dist`` holds distances oriented so that lower means more similar (similarities are
    negated), so every measure reads one convention; quality is ``-dist``.
    """

    model: str
    dataset: str
    protocol: str
    higher_better: bool
    lower_is_better: bool
    reduce: str
    taps: list[str]
    items: list[str]
    subset: np.ndarray
    label: np.ndarray
    label_std: np.ndarray
    group: np.ndarray
    dtype: np.ndarray
    roles: list[str]
    dist: dict[str, np.ndarray]  # role → (n,)
    tap_dist: dict[str, np.ndarray]  # role → (n, taps)
    paths: dict[str, list[tuple[str, str]]]  # role → (a, b) names
    failed: int
    meta: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.items)

    def with_taps(self, idx: list[int]) -> dict[str, np.ndarray]:
        """Distances recombined from a subset of taps (sum or mean, as the model reduces)."""
        out = {}
        for role, m in self.tap_dist.items():
            v = m[:, idx].sum(1) if self.reduce == "sum" else m[:, idx].mean(1)
            out[role] = v if self.lower_is_better else -v
        return out

    def target(self) -> np.ndarray:
        """Ratings oriented so that higher is better (MOS, or −DMOS)."""
        return self.label if self.higher_better else -self.label

    def select(self, mask: np.ndarray) -> ScoreTable:
        """The items where ``mask`` is true."""
        return self.take(np.flatnonzero(mask))

    def take(self, idx: np.ndarray) -> ScoreTable:
        """The items at ``idx``, in that order."""
        return ScoreTable(
            self.model,
            self.dataset,
            self.protocol,
            self.higher_better,
            self.lower_is_better,
            self.reduce,
            self.taps,
            [self.items[i] for i in idx],
            self.subset[idx],
            self.label[idx],
            self.label_std[idx],
            self.group[idx],
            self.dtype[idx],
            self.roles,
            {r: v[idx] for r, v in self.dist.items()},
            {r: v[idx] for r, v in self.tap_dist.items()},
            {r: [v[i] for i in idx] for r, v in self.paths.items()},
            0,
            self.meta,
        )


def _num(s: str) -> float:
    return float(s) if s not in ("", None) else math.nan


def read_scores(path: Path) -> ScoreTable:
    """Read a score file (and its meta sidecar); items with a failed pair are counted, left out."""
    mp = meta_path(path)
    if not mp.is_file():
        raise LayoutError(f"{path}: its provenance file {mp.name} is missing; score again")
    meta = json.loads(mp.read_text(encoding="utf-8"))
    taps = list(meta["taps"])
    by_item: dict[str, dict[str, dict[str, str]]] = {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        need = set(score_columns(taps))
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise LayoutError(f"{path}: not an evaluate score file (columns {reader.fieldnames})")
        for row in reader:
            if row.get("item") is None or row.get("role") is None:
                continue  # a cut-off last line
            by_item.setdefault(row["item"], {})[row["role"]] = row
    roles = {"2afc": ["p0", "p1"], "jnd": ["d"], "mos": ["d"]}[meta["protocol"]]
    ok_items, failed = [], 0
    failed_by: Counter[str] = Counter()
    for key, rows in by_item.items():
        if all(r in rows and rows[r]["score"] and not rows[r]["error"] for r in roles):
            ok_items.append((key, rows))
        else:
            failed += 1
            failed_by[next(iter(rows.values()))["subset"]] += 1
    meta["failed_by_subset"] = dict(failed_by)
    sign = 1.0 if meta["lower_is_better"] else -1.0
    first = [rows[roles[0]] for _, rows in ok_items]
    return ScoreTable(
        model=meta["model"],
        dataset=meta["dataset"],
        protocol=meta["protocol"],
        higher_better=bool(meta["higher_better"]),
        lower_is_better=bool(meta["lower_is_better"]),
        reduce=meta["reduce"],
        taps=taps,
        items=[k for k, _ in ok_items],
        subset=np.array([r["subset"] for r in first], dtype=object),
        label=np.array([_num(r["label"]) for r in first], np.float64),
        label_std=np.array([_num(r["label_std"]) for r in first], np.float64),
        group=np.array([r["group"] for r in first], dtype=object),
        dtype=np.array([r["dtype"] for r in first], dtype=object),
        roles=roles,
        dist={
            ro: sign * np.array([float(rows[ro]["score"]) for _, rows in ok_items], np.float64)
            for ro in roles
        },
        tap_dist={
            ro: np.array(
                [[float(rows[ro][f"tap_{t}"]) for t in taps] for _, rows in ok_items], np.float64
            ).reshape(-1, len(taps))
            for ro in roles
        },
        paths={ro: [(rows[ro]["a"], rows[ro]["b"]) for _, rows in ok_items] for ro in roles},
        failed=failed,
        meta=meta,
    )
