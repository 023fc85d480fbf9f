"""The vectorised bootstrap statistics equal scipy's per-resample computation (issue 16).

The batch forms (``rowstats``) must give the numbers ``measures.srocc/krocc/plcc`` give on
each resample, ties, repeated clusters and clusters of unequal size included, and the BCa
intervals built on them must be the per-resample intervals (same seed, same resamples).

BCa counts the resamples below the data's own value, so a resample holding every cluster once
(a permutation of the data: equal up to summation order) can land on either side of it by
rounding alone; the tables here have enough clusters (≥ 14) that no seeded resample is one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dps_fast.evaluate import measures as M
from dps_fast.evaluate import rowstats as R
from dps_fast.evaluate import summary as S
from dps_fast.evaluate.scoring import ScoreTable
from dps_fast.evaluate.stats import bootstrap_ci, clusters


def _tied_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Coarsely rounded quality and rating (many ties) in 14 clusters of 1 to 6 items."""
    rng = np.random.default_rng(seed)
    sizes = [3, 1, 6, 4, 2, 5, 4, 2, 3, 1, 5, 2, 4, 3]
    n = sum(sizes)
    t = np.round(rng.normal(0, 1, n), 0)
    q = np.round(t + rng.normal(0, 1, n), 0) / 2
    members, at = [], 0
    for s in sizes:
        members.append(np.arange(at, at + s))
        at += s
    return q, t, members


def _per_resample(
    q: np.ndarray, t: np.ndarray, members: list[np.ndarray], row: np.ndarray
) -> list[float]:
    i = np.concatenate([members[c] for c in row])
    return [M.srocc(q[i], t[i]), M.krocc(q[i], t[i]), M.plcc(q[i], t[i])]


def test_batch_correlations_equal_scipy_per_resample() -> None:
    q, t, members = _tied_data()
    rng = np.random.default_rng(7)
    rows = rng.integers(0, len(members), (300, len(members)))
    rows[0] = 1  # one single-item cluster repeated: every pair tied, all NaN
    rows[1] = np.arange(len(members))  # the data itself
    rows[2] = 2  # one cluster repeated: ties from the copies
    got = R.MosCorrelations(q, t, members)(rows)
    want = np.array([_per_resample(q, t, members, r) for r in rows])
    assert np.all(np.isnan(got[0])) and np.all(np.isnan(want[0]))
    assert np.isnan(got).tolist() == np.isnan(want).tolist()
    ok = ~np.isnan(want)
    assert np.abs(got[ok] - want[ok]).max() < 1e-12
    # the jackknife's rows (one cluster left out, so shorter than the data)
    jack = np.array([[c for c in range(len(members)) if c != j] for j in range(len(members))])
    got_j = R.MosCorrelations(q, t, members)(jack)
    want_j = np.array([_per_resample(q, t, members, r) for r in jack])
    assert np.abs(got_j - want_j).max() < 1e-12


def test_kendall_detects_a_wrong_pair_count() -> None:
    """The test above can fail: a flipped pair changes τ-b by more than its tolerance."""
    q, t, members = _tied_data()
    rows = np.arange(len(members))[None, :]
    good = R.MosCorrelations(q, t, members)(rows)[0, 1]
    t2 = t.copy()
    t2[[0, 5]] = t2[[5, 0]] + np.array([0.5, -0.5])
    bad = R.MosCorrelations(q, t2, members)(rows)[0, 1]
    assert good == pytest.approx(M.krocc(q, t), abs=1e-12)
    assert abs(bad - good) > 1e-3


def test_batch_bca_intervals_equal_per_resample_intervals() -> None:
    q, t, members = _tied_data(3)
    corr = R.MosCorrelations(q, t, members)

    def stat(i: np.ndarray) -> np.ndarray:
        return np.array([M.srocc(q[i], t[i]), M.krocc(q[i], t[i]), M.plcc(q[i], t[i])])

    lo, hi = bootstrap_ci(stat, members, n_resamples=400, seed=11)
    lo2, hi2 = bootstrap_ci(stat, members, n_resamples=400, seed=11, batch=corr)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    np.testing.assert_allclose(lo2, lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hi2, hi, rtol=0, atol=1e-12)
    lo3, _ = bootstrap_ci(stat, members, n_resamples=400, seed=12, batch=corr)
    assert not np.allclose(lo3, lo)  # another seed, other resamples: the comparison has teeth


def _table(n_ref: int = 16, seed: int = 2) -> Any:
    """A MOS table with ties, three types, references with unequal item counts."""
    rng = np.random.default_rng(seed)
    rows = [
        (r, ty, lv)
        for r in range(n_ref)
        for ty in ("01", "02", "03")
        for lv in range(2 + (r + len(ty) + int(ty)) % 3)
    ]
    n = len(rows)
    mos = np.round(np.array([6.0 - lv + rng.normal(0, 0.8) for _, _, lv in rows]), 1)
    d = np.round(-mos + rng.normal(0, 1.0, n), 0)
    taps = np.stack([d * 0.25 + rng.normal(0, 0.1, n), d * 0.75], 1)
    return ScoreTable(
        "m", "tid", "mos", True, True, "sum", ["t0", "t1"],
        [f"i{r}_{t}_{lv}" for r, t, lv in rows], np.array(["all"] * n, dtype=object), mos,
        np.abs(rng.normal(0.7, 0.1, n)), np.array([f"I{r:02d}" for r, _, _ in rows], dtype=object),
        np.array([t for _, t, _ in rows], dtype=object), ["d"], {"d": d}, {"d": taps},
        {"d": [("a", "b")] * n}, 0, {},
    )  # fmt: skip


def test_summary_rows_equal_the_per_resample_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-dataset rows (with the logistic refit), per-type rows and tap-subset rows, and
    the paired differences: the same values and intervals with and without the batch forms."""
    table = _table()
    other = _table(seed=4)
    other.model = "m2"
    opts = S.Options(n_resamples=300, seed=5)
    fast = S.table_rows(table, opts, [[0], [1]])
    fast_pair = S.paired_rows(table, other, opts)
    monkeypatch.setattr(S, "_batch", lambda *a: None)
    slow = S.table_rows(table, opts, [[0], [1]])
    slow_pair = S.paired_rows(table, other, opts)
    assert len(fast) == len(slow) == 6 + 2 + 3 * 3  # all, two tap subsets, three types
    assert {r.subset for r in fast} == {"all", "type=01", "type=02", "type=03"}
    finite = 0
    for a, b in zip(fast, slow, strict=True):
        assert (a.subset, a.measure, a.taps, a.n) == (b.subset, b.measure, b.taps, b.n)
        for x, y in ((a.value, b.value), (a.ci_low, b.ci_low), (a.ci_high, b.ci_high)):
            assert math.isnan(x) == math.isnan(y), (a, b)
            if not math.isnan(y):
                finite += 1
                assert x == pytest.approx(y, rel=0, abs=1e-12), (a, b)
    assert finite > 40
    assert len(fast_pair) == len(slow_pair) == 3
    for a, b in zip(fast_pair, slow_pair, strict=True):
        for k in ("diff", "ci_low", "ci_high"):
            assert a[k] == pytest.approx(b[k], rel=0, abs=1e-12), (a, b)


def test_clusters_of_unequal_size_gather_in_order() -> None:
    members = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])]
    cl = R.Clusters(members, 6)
    idx, mask = cl.items(np.array([[2, 1, 1], [0, 0, 2]]))
    assert idx[0][mask[0]].tolist() == [3, 4, 5, 2, 2]
    assert idx[1][mask[1]].tolist() == [0, 1, 0, 1, 3, 4, 5]
    assert cl.counts(np.array([[2, 1, 1], [0, 0, 2]])).tolist() == [[0, 2, 1], [2, 0, 1]]
    assert clusters(["a", "b", "a"])[0].tolist() == [0, 2]
