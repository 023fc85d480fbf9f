"""``dps-fast evaluate``: read datasets, score them with each model, compute and write the study.

The library never prints: progress goes to a callback, and :func:`evaluate` returns what the
CLI reports. Outputs under ``out``: ``scores/<model>/<dataset>.csv`` (resumable),
``summary.csv`` / ``summary.json`` (one row per model × dataset × subset × measure),
``diffs.csv`` (paired differences between models), ``aggregate.csv``, ``items/`` (per item:
fit, residual, outlier flag, HF features with ``hf``), ``hf.csv`` (outliers vs inliers),
``sweep.csv`` / ``sweep_corr.csv`` (accuracy vs agreement), ``plots/``, ``report.md`` and
``meta.json``.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from . import deps
from . import outliers as O
from . import sweep as S
from .aggregate import COLUMNS as AGG_COLUMNS
from .aggregate import NOTE as AGG_NOTE
from .aggregate import aggregate_rows, read_weights
from .items import Dataset, LayoutError
from .readers import parse_dataset_arg, read_dataset
from .report import write_report
from .scoring import ScoreTable, read_scores, safe_name, score_dataset
from .summary import COLUMNS, Options, Row, paired_rows, table_rows

# (stage, done, total): "score <model> <dataset>" while scoring, "measures" after.
ProgressFn = Callable[[str, int, int], None]
DIFF_COLUMNS = (
    "dataset",
    "subset",
    "measure",
    "model_a",
    "model_b",
    "diff",
    "ci_low",
    "ci_high",
    "n",
)


@dataclass
class EvalConfig:
    """Everything one evaluation run needs (the CLI's options)."""

    datasets: list[str]
    models: list[str]
    out: Path
    weights: Path | None = None
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int | None = None
    workers: int | None = None
    resize: str | None = None  # None: each dataset's protocol (BAPPS short-side:64)
    subsets: list[str] | None = None
    jnd: bool = True
    higher_better: bool | None = None
    limit: int | None = None
    resume: bool = False
    from_scores: Path | None = None
    tap_subsets: list[str] = field(default_factory=list)  # "single", "prefix"
    decode: str = "auto"
    options: Options = field(default_factory=Options)
    hf: bool = False  # high-frequency features of every item (decodes the images again)
    hf_cutoff: float = 0.25
    plots: bool = False
    aggregate: Path | None = None  # weights TOML
    accuracy: dict[str, float] = field(default_factory=dict)
    top: int = 10
    robustness: bool = False  # shift rank flips (BAPPS 2AFC), monotonicity ladders (references)


@dataclass
class EvalResult:
    rows: list[Row]
    diffs: list[dict[str, Any]]
    tables: list[ScoreTable]
    scored: int = 0
    failed_pairs: int = 0
    failed_items: int = 0
    seconds_scoring: float = 0.0
    notes: list[str] = field(default_factory=list)
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    speeds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if (self.failed_pairs or self.failed_items) else 0


def load_datasets(cfg: EvalConfig) -> list[Dataset]:
    """Read and validate every ``KIND=PATH`` before anything is scored."""
    out: list[Dataset] = []
    for arg in cfg.datasets:
        kind, path = parse_dataset_arg(arg)
        for ds in read_dataset(
            kind, path, subsets=cfg.subsets, jnd=cfg.jnd, higher_better=cfg.higher_better
        ):
            out.append(ds.limit(cfg.limit))
    names = [d.name for d in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LayoutError(f"two datasets are named {dup[0]!r}; give each manifest its own name")
    return out


def _tap_sets(spec: list[str], n: int) -> list[list[int]]:
    sets: list[list[int]] = []
    for s in spec:
        if s == "single":
            sets += [[i] for i in range(n)]
        elif s == "prefix":
            sets += [list(range(k)) for k in range(1, n + 1)]
        else:
            raise ValueError(f"--tap-subsets: expected single and/or prefix, got {s!r}")
    unique: list[list[int]] = []
    for t in sets:
        if t not in unique:
            unique.append(t)
    return unique


def score_all(
    cfg: EvalConfig, datasets: list[Dataset], result: EvalResult, progress: ProgressFn | None
) -> list[Path]:
    """Score every dataset with every model; returns the score files."""
    from ..engine import Engine

    files: list[Path] = []
    used: set[str] = set()
    for model in cfg.models:
        engine = Engine(
            model,
            device=cfg.device,
            precision=cfg.precision,
            weights=cfg.weights,
            batch_size=cfg.batch_size,
        )
        label = safe_name(engine.bundle.model)
        base, k = label, 2
        while label in used:
            label, k = f"{base}-{k}", k + 1
        used.add(label)
        for ds in datasets:
            path = cfg.out / "scores" / label / f"{safe_name(ds.name)}.csv"
            stage = f"score {label} {ds.name}"
            cb = None if progress is None else (lambda d, t, s=stage: progress(s, d, t))
            run = score_dataset(
                engine,
                ds,
                path,
                resize=cfg.resize or ds.resize,
                workers=cfg.workers,
                resume=cfg.resume,
                decode=cfg.decode,
                progress=cb,
            )
            result.scored += run.scored
            result.failed_pairs += run.failed
            result.seconds_scoring += run.seconds
            if run.seconds > 0 and run.scored:
                result.speeds[engine.bundle.model] = run.scored / run.seconds
            files.append(path)
            if cfg.robustness and ds.protocol in ("2afc", "mos"):
                from . import robustness as R

                rres = cfg.resize or ds.resize
                rob = (
                    R.shift_flips(engine, ds, rres, engine.bundle.model)
                    if (ds.protocol == "2afc")
                    else []
                )
                rob += R.monotonicity(engine, ds, rres, engine.bundle.model)
                _write_csv(
                    path.with_name(f"robustness-{path.name}"), COLUMNS, [r.as_dict() for r in rob]
                )
    return files


def score_files(root: Path) -> list[Path]:
    """The score files of an earlier run's ``--out`` folder."""
    files = sorted(
        p for p in (root / "scores").glob("*/*.csv") if not p.name.startswith("robustness-")
    )
    if not files:
        raise LayoutError(f"--from-scores {root}: no scores/<model>/<dataset>.csv files found")
    return files


def evaluate(cfg: EvalConfig, progress: ProgressFn | None = None) -> EvalResult:
    """Run the study: score (or read saved scores), compute every measure, write the outputs."""
    deps.check()
    if cfg.plots:
        deps.need("matplotlib")
    weights = read_weights(cfg.aggregate)
    t0 = time.perf_counter()
    result = EvalResult([], [], [])
    if cfg.from_scores is not None:
        files = score_files(cfg.from_scores)
    else:
        if not cfg.models:
            raise ValueError("give at least one --model")
        datasets = load_datasets(cfg)
        files = score_all(cfg, datasets, result, progress)
    tables = [read_scores(f) for f in files]
    result.tables = tables
    for f in files:
        result.rows += _read_rows(f.with_name(f"robustness-{f.name}"))
    for i, t in enumerate(tables):
        if progress is not None:
            progress("measures", i, len(tables))
        taps = _tap_sets(cfg.tap_subsets, len(t.taps)) if cfg.tap_subsets else None
        result.rows += table_rows(t, cfg.options, taps)
        result.failed_items += t.failed
    by_ds: dict[str, list[ScoreTable]] = {}
    for t in tables:
        by_ds.setdefault(t.dataset, []).append(t)
    for group in by_ds.values():
        for a, b in itertools.combinations(group, 2):
            result.diffs += paired_rows(a, b, cfg.options)
    result.aggregate = aggregate_rows(result.rows, weights, result.speeds)
    meta = write_outputs(cfg, result, files, time.perf_counter() - t0)
    analyse(cfg, result, meta, progress)
    return result


def analyse(
    cfg: EvalConfig, result: EvalResult, meta: dict[str, Any], progress: ProgressFn | None
) -> None:
    """Items tables, HF comparison, sweep, plots and report.md."""
    out = cfg.out
    mw: list[dict[str, Any]] = []
    top: dict[str, list[dict[str, Any]]] = {}
    plot_files: list[Path] = []
    for i, t in enumerate(result.tables):
        if progress is not None:
            progress("items", i, len(result.tables))
        rows = O.item_table(t, cfg.options)
        if not rows:
            continue
        if cfg.hf:
            O.add_hf(t, rows, cfg.hf_cutoff)
            mw += O.mann_whitney(t.model, t.dataset, rows)
        cols = tuple(dict.fromkeys(k for r in rows for k in r))
        _write_csv(out / "items" / safe_name(t.model) / f"{safe_name(t.dataset)}.csv", cols, rows)
        key = f"{t.model} on {t.dataset}"
        top[key] = [dict(r) for r in O.top_outliers(t, rows, cfg.top)]
        if cfg.plots:
            from . import plots as P

            base = out / "plots" / safe_name(t.model)
            if t.protocol == "mos":
                plot_files.append(
                    P.mos_scatter(t, cfg.options, base / f"{safe_name(t.dataset)}.png")
                )
            if cfg.hf:
                plot_files.append(
                    P.hf_boxes(rows, O.HF_COLUMNS, key, base / f"{safe_name(t.dataset)}-hf.png")
                )
            _thumbnails(t, top[key], base / "outliers" / safe_name(t.dataset), out)
    if mw:
        _write_csv(out / "hf.csv", O.MW_COLUMNS, mw)
    points, corr = S.sweep(result.tables, result.rows, cfg.accuracy)
    if points:
        _write_csv(out / "sweep.csv", S.COLUMNS, points)
        _write_csv(out / "sweep_corr.csv", S.CORR_COLUMNS, corr)
    if cfg.plots:
        from . import plots as P

        for ds in dict.fromkeys(r.dataset for r in result.rows):
            if any(r.dataset == ds and r.measure == "2afc" for r in result.rows):
                plot_files.append(
                    P.bapps_bars(result.rows, ds, out / "plots" / f"{safe_name(ds)}-2afc.png")
                )
            tb = P.tap_bars(result.rows, ds, out / "plots" / f"{safe_name(ds)}-taps.png")
            if tb is not None:
                plot_files.append(tb)
            if len({p["model"] for p in points if p["dataset"] == ds}) >= 2:
                plot_files.append(
                    P.sweep_scatter(points, ds, out / "plots" / f"{safe_name(ds)}-sweep.png")
                )
    result.report = write_report(
        out,
        rows=result.rows,
        diffs=result.diffs,
        aggregate=result.aggregate,
        sweep_corr=corr,
        mw=mw,
        top=top,
        plots=plot_files,
        meta=meta,
    )


def _thumbnails(t: ScoreTable, items: list[dict[str, Any]], folder: Path, out: Path) -> None:
    """Reference | distorted thumbnails of the top outliers (path relative to ``out``)."""
    from ..io.decode import decode_image
    from . import plots as P

    idx = {k: i for i, k in enumerate(t.items)}
    root = Path(t.meta["root"])
    for k, it in enumerate(items):
        i = idx[it["item"]]
        role = "d" if t.protocol != "2afc" else ("p0" if it["d0"] > it["d1"] else "p1")
        a, b = t.paths[role][i]
        try:
            path = P.thumbnail(
                decode_image(root / b), decode_image(root / a), folder / f"{k:02d}.png"
            )
        except (OSError, ValueError):
            continue
        it["thumbnail"] = path.relative_to(out).as_posix()


def _read_rows(path: Path) -> list[Row]:
    """Summary rows saved next to the score files (robustness), if there are any."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [
            Row(
                r["model"],
                r["dataset"],
                r["subset"],
                r["measure"],
                float(r["value"] or "nan"),
                float(r["ci_low"] or "nan"),
                float(r["ci_high"] or "nan"),
                int(r["n"]),
                int(r["failed"]),
                r["taps"],
                r["note"],
                r["params"],
            )
            for r in csv.DictReader(f)
        ]


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])


def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_outputs(
    cfg: EvalConfig, result: EvalResult, files: list[Path], seconds: float
) -> dict[str, Any]:
    """summary.csv / summary.json, diffs.csv, aggregate.csv, meta.json under ``cfg.out``."""
    out = cfg.out
    rows = [r.as_dict() for r in result.rows]
    _write_csv(out / "summary.csv", COLUMNS, rows)
    (out / "summary.json").write_text(
        json.dumps([{k: _json_safe(v) for k, v in r.items()} for r in rows], indent=1) + "\n",
        encoding="utf-8",
    )
    _write_csv(out / "diffs.csv", DIFF_COLUMNS, result.diffs)
    _write_csv(out / "aggregate.csv", AGG_COLUMNS, result.aggregate)
    o = cfg.options
    meta = {
        "dps_fast": __version__,
        "command": "evaluate",
        "datasets": cfg.datasets,
        "models": cfg.models,
        "from_scores": None if cfg.from_scores is None else str(cfg.from_scores),
        "score_files": [str(f) for f in files],
        "lower_is_better": {t.model: t.lower_is_better for t in result.tables},
        "options": {
            "fit": o.fit,
            "bootstrap": o.n_resamples,
            "ci": o.confidence,
            "seed": o.seed,
            "outlier_k": o.outlier_k,
            "limit": cfg.limit,
            "resize": cfg.resize,
            "subsets": cfg.subsets,
            "jnd": cfg.jnd,
            "tap_subsets": cfg.tap_subsets,
            "device": cfg.device,
            "precision": cfg.precision,
        },
        "sign_convention": "quality = -distance; correlations are signed (never abs)",
        "seconds": seconds,
        "seconds_scoring": result.seconds_scoring,
        "aggregate": {"weights": read_weights(cfg.aggregate), "note": AGG_NOTE},
        "pairs_per_s": result.speeds,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
