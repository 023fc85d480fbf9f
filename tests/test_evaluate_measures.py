"""Each measure against values computed by hand on tiny inputs; CIs and recombined taps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dps_fast.evaluate import measures as M
from dps_fast.evaluate.stats import bootstrap_ci, clusters
from dps_fast.evaluate.summary import Options, mos_values


def test_two_afc_with_tie_and_ceiling() -> None:
    d0, d1 = np.array([0.1, 0.5, 0.3, 0.2]), np.array([0.2, 0.4, 0.3, 0.1])
    j = np.array([0.0, 0.2, 0.6, 1.0])
    # credits: d0<d1 → 1-0 = 1; d1<d0 → .2; tie → .5; d1<d0 → 1  → mean 2.7/4
    assert M.two_afc_per_item(d0, d1, j).tolist() == [1.0, 0.2, 0.5, 1.0]
    assert M.two_afc(d0, d1, j) == pytest.approx(0.675)
    assert M.human_ceiling(j) == pytest.approx(0.85)


def test_jnd_map_by_hand() -> None:
    d = np.array([0.1, 0.2, 0.3, 0.4])
    assert M.jnd_map(d, np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert M.jnd_map(d, np.array([1, 1, 0, 0])) == pytest.approx(1.0)
    assert M.jnd_map(d, np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    # a stable sort: with tied distances the first listed item comes first
    assert M.jnd_map(np.zeros(2), np.array([1, 0])) == pytest.approx(1.0)
    assert M.jnd_map(np.zeros(2), np.array([0, 1])) == pytest.approx(0.5)


def test_correlations_of_a_known_permutation() -> None:
    q, t = np.arange(1.0, 6.0), np.array([2.0, 1, 4, 3, 5])
    assert M.srocc(q, t) == pytest.approx(0.8)
    assert M.krocc(q, t) == pytest.approx(0.6)
    assert M.plcc(q, t) == pytest.approx(0.8)


def test_backwards_measure_is_negative_not_hidden() -> None:
    q, t = np.arange(10.0), np.arange(10.0) ** 2
    assert M.srocc(-q, t) == pytest.approx(-1.0)
    assert M.krocc(-q, t) == pytest.approx(-1.0)
    assert M.plcc(-q, t) < 0


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
def test_logistic_fit_of_logistic_data(kind: str) -> None:
    q = np.linspace(-3, 3, 40)
    t = (
        M.logistic4(q, 9.0, 1.0, 0.3, 0.8)
        if kind == "logistic4"
        else M.logistic5(q, 6.0, 1.5, 0.2, 0.1, 4.0)
    )
    fit = M.fit_logistic(q, t, kind)
    assert fit.ok, fit.status
    assert M.plcc(fit(q), t) == pytest.approx(1.0, abs=1e-9)
    assert M.rmse(t, fit(q)) < 1e-6
    assert M.plcc(q, t) < 0.999  # the raw PLCC is not 1: the fit is what makes it so


def test_failed_fit_is_reported() -> None:
    q = np.zeros(6)
    fit = M.fit_logistic(q, np.arange(6.0), "logistic4")
    assert not fit.ok and fit.status.startswith("failed")
    vals = mos_values(q, np.arange(6.0), np.full(6, np.nan), Options())
    assert np.isnan(vals[3:]).all()


def test_outlier_ratio_by_hand() -> None:
    t = np.array([1.0, 2.0, 3.0, 4.0])
    f = np.array([1.0, 2.5, 3.0, 2.0])
    out, how = M.outliers(t, f, np.array([0.1, 0.2, 0.1, 1.5]), k=2.0)
    assert out.tolist() == [False, True, False, False] and how == "item rating spread"
    res = t - f  # 0, -.5, 0, 2: mean .375, std √(3.6875/4) = .96014; 2σ = 1.92: the last
    out2, how2 = M.outliers(t, f, None, k=2.0)
    assert out2.tolist() == [False, False, False, True] and "residual" in how2
    assert np.std(res) == pytest.approx(0.96014, abs=1e-5)


def test_bootstrap_ci_is_seeded_and_clustered() -> None:
    x = np.random.default_rng(1).normal(size=60)
    groups = [i // 3 for i in range(60)]  # 20 clusters of 3
    members = clusters(groups)
    assert len(members) == 20 and members[1].tolist() == [3, 4, 5]

    def mean(i: np.ndarray) -> np.ndarray:
        return np.array([x[i].mean()])

    lo, hi = bootstrap_ci(mean, members, n_resamples=200, seed=3)
    lo2, hi2 = bootstrap_ci(mean, members, n_resamples=200, seed=3)
    assert (lo, hi) == (lo2, hi2) and lo[0] < x.mean() < hi[0]
    lo3, _ = bootstrap_ci(mean, members, n_resamples=0)
    assert math.isnan(lo3[0])


def test_tap_sum_vs_mean_give_identical_ranks() -> None:
    taps = np.random.default_rng(0).uniform(size=(30, 5))
    t = np.random.default_rng(1).uniform(size=30)
    assert M.srocc(-taps.sum(1), t) == pytest.approx(M.srocc(-taps.mean(1), t))
    d0, d1, j = taps[:15], taps[15:], t[:15]
    assert M.two_afc(d0.sum(1), d1.sum(1), j) == M.two_afc(d0.mean(1), d1.mean(1), j)


def test_fast_correlations_equal_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(4)
    q = rng.normal(size=200)
    t = np.round(q + rng.normal(size=200), 1)  # ties in t
    assert M.srocc(q, t) == pytest.approx(stats.spearmanr(q, t).statistic, abs=1e-12)
    assert M.plcc(q, t) == pytest.approx(stats.pearsonr(q, t).statistic, abs=1e-12)
    assert math.isnan(M.plcc(np.ones(5), np.arange(5.0)))


def test_hf_features_checkerboard_vs_sinusoid() -> None:
    from dps_fast.evaluate import hf

    y, x = np.mgrid[0:64, 0:64]
    checker = ((x + y) % 2).astype(np.float64)
    sinus = np.sin(2 * np.pi * x / 32)
    assert hf.hfer(checker, window=False) == pytest.approx(1.0)
    assert hf.hfer(sinus, window=False) == pytest.approx(0.0, abs=1e-12)
    assert hf.hfer(np.full((16, 16), 7.0)) == 0.0
    assert hf.hfer(checker) > 0.99 and hf.hfer(sinus) < 0.01  # the window changes little
    assert hf.laplacian_variance(checker) == pytest.approx(16.0)
    step = np.zeros((8, 8))
    step[:, 4:] = 255
    assert hf.spatial_information(step) == pytest.approx(480.83, abs=0.01)
    rgb = np.stack([checker * 255] * 3, -1)
    assert hf.luma(rgb) == pytest.approx(checker * 255)


def test_aggregate_of_known_factors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dps_fast.evaluate import aggregate as A
    from dps_fast.evaluate.items import LayoutError

    f = {"mos_srocc": 0.64, "twoafc": 0.81}
    assert A.combine(f, {"mos_srocc": 1, "twoafc": 1}) == pytest.approx(0.72)
    assert A.combine(f, {"mos_srocc": 2, "twoafc": 1}) == pytest.approx(0.6923, abs=1e-4)
    assert A.combine({**f, "jnd_map": math.nan}, {"mos_srocc": 1, "twoafc": 1, "jnd_map": 5}) == (
        pytest.approx(0.72)
    )  # a missing factor is dropped, the others renormalised
    assert A.combine({"twoafc": 0.0, "mos_srocc": 0.9}, A.DEFAULT_WEIGHTS) == 0.0
    toml = tmp_path / "w.toml"
    toml.write_text("[weights]\nmos_srocc = 1\ntwoafc = 3\n")
    assert A.read_weights(toml)["twoafc"] == 3.0 and A.read_weights(toml)["jnd_map"] == 1.0
    toml.write_text("[weights]\nbogus = 1\n")
    with pytest.raises(LayoutError, match="unknown factor 'bogus'"):
        A.read_weights(toml)


def test_refit_on_too_few_items_fails_cleanly() -> None:
    q = np.linspace(0, 1, 8)
    start = M.fit_logistic(q, M.logistic4(q, 5, 1, 0.5, 0.1))
    assert start.ok
    assert not M.refit(q[:2], q[:2], start).ok  # fewer items than parameters
    assert not M.refit(np.ones(6), q[:6], start).ok  # constant scores
    assert M.refit(q, M.logistic4(q, 5, 1, 0.5, 0.1), start).ok


def _mos_table(n_ref: int = 8, types: tuple[str, ...] = ("01", "02"), levels: int = 4) -> Any:
    """A MOS score table: every reference distorted ``levels`` times per type, distances a noisy
    function of the rating (so correlations are high but not 1)."""
    from dps_fast.evaluate.scoring import ScoreTable

    rng = np.random.default_rng(5)
    rows = [(r, t, lv) for r in range(n_ref) for t in types for lv in range(levels)]
    n = len(rows)
    mos = np.array([9.0 - 2 * lv + rng.normal(0, 0.7) for _, _, lv in rows])
    d = -mos + rng.normal(0, 1.0, n)
    return ScoreTable(
        "m", "tid", "mos", True, True, "sum", ["t0"],
        [f"i{r}_{t}_{lv}" for r, t, lv in rows], np.array(["all"] * n), mos, np.full(n, np.nan),
        np.array([f"I{r:02d}" for r, _, _ in rows]), np.array([t for _, t, _ in rows]), ["d"],
        {"d": d}, {"d": d[:, None]}, {"d": [("a", "b")] * n}, 0, {},
    )  # fmt: skip


def test_per_distortion_rows_have_clustered_bca_intervals() -> None:
    """Each type=XX row gets the whole dataset's seeded BCa CI, resampling that type's items by
    reference image (issue 16: they were left empty)."""
    from dps_fast.evaluate.summary import table_rows

    table = _mos_table()
    opts = Options(n_resamples=300, seed=3)
    rows = table_rows(table, opts)
    per_type = [r for r in rows if r.subset.startswith("type=")]
    assert {r.subset for r in per_type} == {"type=01", "type=02"}
    assert {r.measure for r in per_type} == {"srocc", "krocc", "plcc"}
    for r in per_type:
        assert math.isfinite(r.ci_low) and math.isfinite(r.ci_high), r
        assert r.ci_low <= r.value <= r.ci_high and r.ci_high - r.ci_low > 0, r
        assert r.n == 32 and "no CI" not in r.note
        # The same interval computed directly: that type's items, clusters = references.
        part = table.select(table.dtype == r.subset[5:])
        members = clusters(part.group.tolist())
        assert len(members) == 8

        def stat(i: np.ndarray, part: Any = part, k: str = r.measure) -> np.ndarray:
            q, t = -part.dist["d"][i], part.target()[i]
            return np.array([{"srocc": M.srocc, "krocc": M.krocc, "plcc": M.plcc}[k](q, t)])

        lo, hi = bootstrap_ci(stat, members, n_resamples=300, seed=3)
        assert (r.ci_low, r.ci_high) == pytest.approx((lo[0], hi[0]), rel=1e-12)
    again = table_rows(table, opts)  # seeded: the same intervals on a second run
    assert [(r.ci_low, r.ci_high) for r in again] == [(r.ci_low, r.ci_high) for r in rows]
