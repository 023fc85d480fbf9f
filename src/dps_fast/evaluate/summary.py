"""Summary rows: one per model × dataset × subset × measure, with a BCa CI, n and failures.

Measures per protocol: ``2afc`` and its ``2afc_ceiling`` (BAPPS 2AFC), ``jnd_map`` (BAPPS JND),
``srocc``, ``krocc``, ``plcc`` (raw), ``plcc_fit``, ``rmse_fit``, ``outlier_ratio`` (MOS sets).
Per distortion type (``subset`` = ``type=XX``) the rank and raw correlations, with the same
seeded BCa bootstrap as the whole dataset (the type's items resampled by reference image). With
tap subsets, the main measure again for distances recombined from those taps (``taps`` column).
The MOS correlations of the bootstrap resamples are computed in batches (``rowstats``; same
resamples, same values); only the logistic refit of the whole-dataset row runs per resample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import measures as M
from . import rowstats as R
from .scoring import ScoreTable
from .stats import BatchStatistic, bootstrap_ci, clusters

COLUMNS = (
    "model",
    "dataset",
    "subset",
    "measure",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "failed",
    "taps",
    "note",
    "params",
)
FIT_MEASURES = ("plcc_fit", "rmse_fit", "outlier_ratio")
MOS_MEASURES = ("srocc", "krocc", "plcc", "plcc_fit", "rmse_fit", "outlier_ratio")
FIT_CHOICES = M.FITS
MAIN = {"2afc": "2afc", "jnd": "jnd_map", "mos": "srocc"}


@dataclass
class Row:
    model: str
    dataset: str
    subset: str
    measure: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    failed: int
    taps: str = ""
    note: str = ""
    params: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Options:
    """How measures are computed (the CLI's --fit, --bootstrap, --ci, --seed, --outlier-k)."""

    fit: str = "logistic4"
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    outlier_k: float = 2.0


def mos_values(
    q: np.ndarray, t: np.ndarray, std: np.ndarray, opts: Options, start: M.Fit | None = None
) -> np.ndarray:
    """srocc, krocc, plcc, plcc_fit, rmse_fit, outlier_ratio of quality ``q`` vs rating ``t``.

    ``start``: a fit to start from (bootstrap resamples start from the full data's fit).
    """
    fitted = fit_values(q, t, std, opts, start)
    return np.array([M.srocc(q, t), M.krocc(q, t), M.plcc(q, t), *fitted])


def fit_values(
    q: np.ndarray, t: np.ndarray, std: np.ndarray, opts: Options, start: M.Fit | None = None
) -> list[float]:
    """plcc_fit, rmse_fit, outlier_ratio (NaN where the fit failed); ``start`` as above."""
    warm = start is not None and start.ok
    fit = M.refit(q, t, start) if start is not None and warm else M.fit_logistic(q, t, opts.fit)
    f = fit(q)
    if not (fit.ok or fit.kind == "none"):
        return [math.nan] * 3
    out, _ = M.outliers(t, f, std, opts.outlier_k)
    return [M.plcc(f, t), M.rmse(t, f), float(out.mean())]


Stat = Callable[[np.ndarray], np.ndarray]


def _stat(table: ScoreTable, dist: dict[str, np.ndarray], opts: Options, full: bool) -> Stat:
    """The statistic over item indices for this table's protocol (vector of values)."""
    if table.protocol == "2afc":
        d0, d1, j = dist["p0"], dist["p1"], table.label
        return lambda i: np.array([M.two_afc(d0[i], d1[i], j[i]), M.human_ceiling(j[i])])
    if table.protocol == "jnd":
        d, s = dist["d"], table.label
        return lambda i: np.array([M.jnd_map(d[i], s[i])])
    q, t, sd = -dist["d"], table.target(), table.label_std
    if full:
        start = M.fit_logistic(q, t, opts.fit)
        return lambda i: mos_values(q[i], t[i], sd[i], opts, start)
    return lambda i: np.array([M.srocc(q[i], t[i]), M.krocc(q[i], t[i]), M.plcc(q[i], t[i])])


def _batch(
    table: ScoreTable, dist: dict[str, np.ndarray], members: list[np.ndarray]
) -> R.MosCorrelations | None:
    """The MOS rank and raw correlations of ``_stat`` for many resamples at once; None where
    there is none (2AFC, JND) or NaN in the data (scipy's NaN handling, per resample)."""
    if table.protocol != "mos":
        return None
    q, t = -dist["d"], table.target()
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        return None
    return R.MosCorrelations(q, t, members)


def _names(protocol: str, full: bool) -> tuple[str, ...]:
    if protocol == "2afc":
        return ("2afc", "2afc_ceiling")
    if protocol == "jnd":
        return ("jnd_map",)
    return MOS_MEASURES if full else MOS_MEASURES[:3]


def _subsets(table: ScoreTable) -> list[tuple[str, np.ndarray, bool]]:
    """(name, mask, full measures?) for each reported subset; ``all`` first."""
    out = [("all", np.ones(table.n, bool), True)]
    if table.protocol in ("2afc", "jnd"):
        subs = sorted(set(table.subset.tolist()))
        if len(subs) > 1:
            out += [(s, table.subset == s, True) for s in subs]
    else:
        types = sorted(set(table.dtype.tolist()) - {""})
        if len(types) > 1:
            out += [(f"type={t}", table.dtype == t, False) for t in types]
    return out


def table_rows(
    table: ScoreTable, opts: Options, tap_subsets: list[list[int]] | None = None
) -> list[Row]:
    """Summary rows for one model on one dataset."""
    rows: list[Row] = []
    failed_by = table.meta.get("failed_by_subset", {})
    for sub, mask, full in _subsets(table):
        part = table.select(mask)
        failed = table.failed if sub == "all" else int(failed_by.get(sub, 0))
        if part.n == 0:
            continue
        members = clusters(part.group.tolist())
        stat = _stat(part, part.dist, opts, full)
        values = stat(np.arange(part.n))
        # Every subset (each distortion type too) gets its CI, clusters = its references.
        lo, hi = bootstrap_ci(
            stat, members, n_resamples=opts.n_resamples, confidence=opts.confidence,
            seed=opts.seed, batch=_table_batch(part, opts, full, members),
        )  # fmt: skip
        note = ""
        params = ""
        if part.protocol == "mos" and full:
            fit = M.fit_logistic(-part.dist["d"], part.target(), opts.fit)
            note = f"fit {fit.kind}: {fit.status}"
            params = json.dumps(fit.params)
            if fit.ok:
                _, how = M.outliers(
                    part.target(), fit(-part.dist["d"]), part.label_std, opts.outlier_k
                )
                note += f"; outliers vs {how}"
        if part.protocol == "2afc":
            note = "ceiling = mean(max(j, 1-j))"
        for name, v, a, b in zip(_names(part.protocol, full), values, lo, hi, strict=True):
            rows.append(
                Row(
                    table.model,
                    table.dataset,
                    sub,
                    name,
                    float(v),
                    float(a),
                    float(b),
                    part.n,
                    failed,
                    "",
                    note if name in FIT_MEASURES or part.protocol != "mos" or not full else "",
                    params if name in FIT_MEASURES else "",
                )
            )
        if sub == "all" and tap_subsets:
            main = MAIN[part.protocol]
            for idx in tap_subsets:
                dist = part.with_taps(idx)
                st = _stat(part, dist, opts, False)
                k = _names(part.protocol, False).index(main)
                v = float(st(np.arange(part.n))[k])

                def one(i: np.ndarray, st: Stat = st, k: int = k) -> np.ndarray:
                    return st(i)[k : k + 1]

                lo2, hi2 = bootstrap_ci(
                    one,
                    members,
                    n_resamples=opts.n_resamples,
                    confidence=opts.confidence,
                    seed=opts.seed,
                    batch=_main_batch(part, dist, members),
                )
                rows.append(
                    Row(
                        table.model,
                        table.dataset,
                        sub,
                        main,
                        v,
                        float(lo2[0]),
                        float(hi2[0]),
                        part.n,
                        failed,
                        "+".join(table.taps[i] for i in idx),
                    )
                )
    return rows


def _table_batch(
    table: ScoreTable, opts: Options, full: bool, members: list[np.ndarray]
) -> BatchStatistic | None:
    """``_stat``'s batch form: the correlations at once; with the full measures, the
    logistic refit (and what follows from it) still per resample, as ``mos_values``."""
    corr = _batch(table, table.dist, members)
    if corr is None or not full:
        return corr
    q, t, sd = -table.dist["d"], table.target(), table.label_std
    start = M.fit_logistic(q, t, opts.fit)
    cl = corr.cl

    def both(rows: np.ndarray) -> np.ndarray:
        idx, mask = cl.items(rows)
        fitted = [
            fit_values(q[i[m]], t[i[m]], sd[i[m]], opts, start)
            for i, m in zip(idx, mask, strict=True)
        ]
        return np.concatenate([corr(rows), np.array(fitted).reshape(len(rows), 3)], axis=1)

    return both


def _main_batch(
    table: ScoreTable, dist: dict[str, np.ndarray], members: list[np.ndarray]
) -> BatchStatistic | None:
    """The main measure's batch form (SROCC for MOS sets), or None."""
    corr = _batch(table, dist, members)
    if corr is None:
        return None
    q, t, cl = corr.q, corr.t, corr.cl
    return lambda rows: R.spearman(q, t, cl, rows)[:, None]


def paired_rows(a: ScoreTable, b: ScoreTable, opts: Options) -> list[dict[str, Any]]:
    """Differences a − b of the main measures on the items both scored, with a paired BCa CI."""
    common = sorted(set(a.items) & set(b.items))
    if not common:
        return []
    ia = {k: i for i, k in enumerate(a.items)}
    ib = {k: i for i, k in enumerate(b.items)}
    ta = a.take(np.array([ia[k] for k in common], np.intp))
    tb = b.take(np.array([ib[k] for k in common], np.intp))
    sa, sb = _stat(ta, ta.dist, opts, False), _stat(tb, tb.dist, opts, False)
    names = _names(ta.protocol, False)
    keep = [i for i, n in enumerate(names) if n != "2afc_ceiling"]

    def diff(i: np.ndarray) -> np.ndarray:
        return (sa(i) - sb(i))[keep]

    members = clusters(ta.group.tolist())
    ba, bb = _batch(ta, ta.dist, members), _batch(tb, tb.dist, members)
    both: BatchStatistic | None = None
    if ba is not None and bb is not None:
        fa, fb = ba, bb

        def both(rows: np.ndarray) -> np.ndarray:
            return (fa(rows) - fb(rows))[:, keep]

    value = diff(np.arange(ta.n))
    lo, hi = bootstrap_ci(
        diff,
        members,
        n_resamples=opts.n_resamples,
        confidence=opts.confidence,
        seed=opts.seed,
        batch=both,
    )
    return [
        {
            "dataset": ta.dataset,
            "subset": "all",
            "measure": names[k],
            "model_a": a.model,
            "model_b": b.model,
            "diff": float(v),
            "ci_low": float(x),
            "ci_high": float(y),
            "n": ta.n,
        }
        for k, v, x, y in zip(keep, value, lo, hi, strict=True)
    ]
