"""``dps-fast evaluate`` end to end on replicas through a real bundle (seeded random trunk).

The measures must equal those computed from ``Engine.score`` on the same pairs; a reference is
decoded and run through the trunk once; ``--from-scores`` reproduces the summary; an interrupted
run resumes with nothing lost or scored twice; the CLI's exit codes.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dps_fast import Engine
from dps_fast._install import install_command
from dps_fast.cli import app
from dps_fast.evaluate import EvalConfig, evaluate
from dps_fast.evaluate import measures as M
from dps_fast.evaluate.readers import read_dataset
from dps_fast.evaluate.scoring import read_scores, score_dataset
from dps_fast.evaluate.summary import Options
from dps_fast.io import decode_image
from tests.helpers import eval_replicas as rep

MODEL = "lpips-alex"
RUNNER = CliRunner()


def _summary(path: Path) -> dict[tuple[str, ...], dict[str, str]]:
    with open(path / "summary.csv", newline="") as f:
        return {(r["dataset"], r["subset"], r["measure"], r["taps"]): r for r in csv.DictReader(f)}


def _engine_scores(engine: Engine, ds: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for it in ds.items:
        for p in it.pairs:
            a, b = decode_image(p.a_path), decode_image(p.b_path)
            out.setdefault(it.id, {})[p.role] = float(engine.score(a, b)[0])
    return out


@pytest.fixture(scope="module")
def tid_run(tmp_path_factory: pytest.TempPathFactory, bundle: Callable[[str], Path]) -> Any:
    root = rep.make_tid2013(tmp_path_factory.mktemp("tid"))
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(
        [f"tid2013={root}"],
        [str(bundle(MODEL))],
        out,
        device="cpu",
        tap_subsets=["single"],
        options=Options(n_resamples=60),
    )
    return root, out, cfg, evaluate(cfg)


def test_tid_replica_matches_engine_score(tid_run: Any, engines: Callable[[str], Engine]) -> None:
    root, out, _, result = tid_run
    assert result.exit_code == 0 and result.scored == 12
    (ds,) = read_dataset("tid2013", root)
    ref = _engine_scores(engines(MODEL), ds)
    q = -np.array([ref[it.id]["d"] for it in ds.items])
    t = np.array([it.label for it in ds.items])
    std = np.array([it.label_std for it in ds.items])
    fit = M.fit_logistic(q, t, "logistic4")
    out_flags, _ = M.outliers(t, fit(q), std)
    expect = {
        "srocc": M.srocc(q, t),
        "krocc": M.krocc(q, t),
        "plcc": M.plcc(q, t),
        "plcc_fit": M.plcc(fit(q), t),
        "rmse_fit": M.rmse(t, fit(q)),
        "outlier_ratio": float(out_flags.mean()),
    }
    rows = _summary(out)
    for name, v in expect.items():
        row = rows[("tid2013", "all", name, "")]
        assert float(row["value"]) == pytest.approx(v, abs=2e-5), name
        assert row["n"] == "12" and row["failed"] == "0"
    srocc = rows[("tid2013", "all", "srocc", "")]
    assert float(srocc["ci_low"]) <= float(srocc["value"]) <= float(srocc["ci_high"])
    # the synthetic MOS falls with noise: a distance that sees noise ranks it the right way
    assert float(srocc["value"]) > 0.5
    assert ("tid2013", "type=01", "srocc", "") in rows
    taps = [k for k in rows if k[3]]
    assert len(taps) == 5  # one row per single tap
    table = read_scores(out / "scores" / MODEL / "tid2013.csv")
    got = {k: d for k, d in zip(table.items, table.dist["d"], strict=True)}
    for k, v in got.items():
        assert v == pytest.approx(ref[k]["d"], rel=1e-5, abs=1e-7)
    # per-tap columns recombine to the score
    np.testing.assert_allclose(table.with_taps(list(range(5)))["d"], table.dist["d"], rtol=1e-6)


def test_from_scores_reproduces_summary(tid_run: Any, tmp_path: Path) -> None:
    _, out, cfg, _ = tid_run
    cfg2 = EvalConfig(
        [], [], tmp_path / "again", from_scores=out, tap_subsets=["single"], options=cfg.options
    )
    res = evaluate(cfg2)
    assert res.scored == 0
    assert (tmp_path / "again" / "summary.csv").read_text() == (out / "summary.csv").read_text()


def test_reference_decoded_and_run_once(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    root = rep.make_tid2013(tmp_path / "tid", n_ref=3, n_types=2, n_levels=3)
    (ds,) = read_dataset("tid2013", root)
    engine = Engine(bundle(MODEL), device="cpu")
    seen: list[int] = []
    real = engine.features

    def counting(x: Any, **kw: Any) -> Any:
        seen.append(len(x))
        return real(x, **kw)

    engine.features = counting  # type: ignore[method-assign]
    run = score_dataset(engine, ds, tmp_path / "s.csv", resize="none")
    assert run.scored == 18
    assert sum(seen) == 3 + 18  # each reference once, not once per distorted image (18 + 18)
    assert max(run.decoded.values()) == 1 and len(run.decoded) == 21


def test_interrupted_run_resumes(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    root = rep.make_tid2013(tmp_path / "tid")
    model = str(bundle(MODEL))
    cfg = EvalConfig(
        [f"tid2013={root}"],
        [model],
        tmp_path / "full",
        device="cpu",
        options=Options(n_resamples=0),
    )
    full = evaluate(cfg)
    scores = tmp_path / "full" / "scores" / MODEL / "tid2013.csv"
    lines = scores.read_text().splitlines(keepends=True)
    part = tmp_path / "part" / "scores" / MODEL
    part.mkdir(parents=True)
    # 5 complete rows, then one cut in the middle (an interrupted write)
    (part / "tid2013.csv").write_text("".join(lines[:6]) + lines[6][:20])
    cfg2 = EvalConfig(
        [f"tid2013={root}"],
        [model],
        tmp_path / "part",
        device="cpu",
        resume=True,
        options=Options(n_resamples=0),
    )
    res = evaluate(cfg2)
    assert res.scored == 12 - 5
    with open(part / "tid2013.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = Counter((r["a"], r["b"], r["id"]) for r in rows)
    # one row per (a, b, id), in the dataset's order, each id the item's and the pair's role
    (ds,) = read_dataset("tid2013", root)
    want = [(p.a, p.b, f"{it.id}:{p.role}") for it in ds.items for p in it.pairs]
    assert [(r["a"], r["b"], r["id"]) for r in rows] == want
    assert len(keys) == 12 and set(keys.values()) == {1}
    assert (tmp_path / "part" / "summary.csv").read_text() == (
        tmp_path / "full" / "summary.csv"
    ).read_text()
    assert full.exit_code == res.exit_code == 0


def test_resume_keys_rows_by_pair_and_id(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    """Rows are matched to pairs by (a, b, id) and counted: a pair a manifest lists twice keeps
    two rows when the interrupted run wrote one (keyed by (a, b), the second was lost), and a
    row another dataset version left under another id is not taken for this pair's."""
    manifest = rep.make_manifest(tmp_path / "m", n_ref=1, n_dist=3)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines, lines[1]]) + "\n")  # the first pair again
    engine = Engine(bundle(MODEL), device="cpu")
    (ds,) = read_dataset("mos", manifest, higher_better=True)
    full = tmp_path / "full.csv"
    score_dataset(engine, ds, full, resize="none")
    text = full.read_text().splitlines(keepends=True)
    assert len(text) == 1 + 4
    part = tmp_path / "part.csv"
    stale = text[2].replace("dist/r0_1.png:d", "old-id:d")  # same a, b; an id not in the set
    part.write_text(text[0] + text[1] + stale)
    run = score_dataset(engine, ds, part, resize="none", resume=True)
    assert (run.skipped, run.scored) == (1, 3)
    with open(part, newline="") as f:
        got = [(r["a"], r["b"], r["id"]) for r in csv.DictReader(f)]
    with open(full, newline="") as f:
        want = [(r["a"], r["b"], r["id"]) for r in csv.DictReader(f)]
    assert got[:4] == want  # in the dataset's order, the repeated pair twice
    assert got[4:] == [("dist/r0_1.png", "ref/r0.png", "old-id:d")]  # kept, put last


def test_bapps_replica_matches_engine_score(
    tmp_path: Path, bundle: Callable[[str], Path], engines: Callable[[str], Engine]
) -> None:
    root = rep.make_bapps(tmp_path / "bapps")
    out = tmp_path / "out"
    res = evaluate(
        EvalConfig(
            [f"bapps={root}"],
            [str(bundle(MODEL))],
            out,
            device="cpu",
            options=Options(n_resamples=40),
        )
    )
    assert res.exit_code == 0
    two, jnd = read_dataset("bapps", root)
    ref = _engine_scores(engines(MODEL), two)
    d0 = np.array([ref[i.id]["p0"] for i in two.items])
    d1 = np.array([ref[i.id]["p1"] for i in two.items])
    j = np.array([i.label for i in two.items])
    rows = _summary(out)
    assert float(rows[("bapps-2afc", "all", "2afc", "")]["value"]) == pytest.approx(
        M.two_afc(d0, d1, j)
    )
    assert float(rows[("bapps-2afc", "all", "2afc_ceiling", "")]["value"]) == pytest.approx(
        M.human_ceiling(j)
    )
    cnn = [k for k, i in enumerate(two.items) if i.subset == "cnn"]
    assert float(rows[("bapps-2afc", "cnn", "2afc", "")]["value"]) == pytest.approx(
        M.two_afc(d0[cnn], d1[cnn], j[cnn])
    )
    refj = _engine_scores(engines(MODEL), jnd)
    d = np.array([refj[i.id]["d"] for i in jnd.items])
    s = np.array([i.label for i in jnd.items])
    assert float(rows[("bapps-jnd", "all", "jnd_map", "")]["value"]) == pytest.approx(
        M.jnd_map(d, s)
    )


def test_two_models_paired_difference(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    path = rep.make_manifest(tmp_path / "m", n_ref=3, n_dist=4)
    out = tmp_path / "out"
    res = evaluate(
        EvalConfig(
            [f"mos={path}"],
            [str(bundle(MODEL)), str(bundle(MODEL))],
            out,
            device="cpu",
            higher_better=False,
            options=Options(n_resamples=30),
        )
    )
    # the same model twice: every difference is exactly 0
    assert {r["measure"] for r in res.diffs} == {"srocc", "krocc", "plcc"}
    assert all(r["diff"] == 0.0 for r in res.diffs)
    assert sorted(p.name for p in (out / "scores").iterdir()) == [MODEL, f"{MODEL}-2"]
    # the manifest's scores are DMOS-like (lower is better) and grow with the noise
    srocc = next(r for r in res.rows if r.measure == "srocc" and r.subset == "all")
    assert srocc.value > 0.5


def test_cli_evaluate(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    root = rep.make_kadid(tmp_path / "k")
    out = tmp_path / "out"
    r = RUNNER.invoke(
        app,
        [
            "evaluate",
            f"kadid10k={root}",
            "--model",
            str(bundle(MODEL)),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--bootstrap",
            "20",
            "--limit",
            "4",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert "srocc" in r.stderr and "summary.csv" in r.stderr
    with open(out / "summary.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:9] == [
        "model",
        "dataset",
        "subset",
        "measure",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "failed",
    ]
    assert (out / "summary.json").is_file() and (out / "meta.json").is_file()
    with open(out / "scores" / MODEL / "kadid10k.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tid2013={tmp}/nowhere"], ["TID2013", "reference_images", "not found"]),
        (["csiq={tmp}"], ["KIND one of"]),
        (["mos={tmp}/labels.csv"], ["--higher-better"]),
        ([], ["KIND=PATH"]),
        (["mos={tmp}/labels.csv", "--higher-better", "--lower-better"], ["not both"]),
        (["mos={tmp}/labels.csv", "--higher-better", "--fit", "cubic"], ["logistic4"]),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    rep.make_manifest(tmp_path)
    (tmp_path / "nowhere").mkdir()
    argv = ["evaluate", *(a.format(tmp=tmp_path) for a in args), "--out", str(tmp_path / "o")]
    r = RUNNER.invoke(app, argv)
    assert r.exit_code == 2, r.stderr
    for w in words:
        assert w in r.stderr


def test_cli_without_eval_extra_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_scipy(name: str, *a: Any) -> Any:
        if name.startswith("scipy"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    from dps_fast.evaluate import deps

    monkeypatch.setattr("dps_fast.evaluate.deps.importlib.import_module", no_scipy)
    deps.need.cache_clear()  # modules found earlier in the session are cached
    try:
        r = RUNNER.invoke(app, ["evaluate", f"tid2013={tmp_path}", "--out", str(tmp_path / "o")])
    finally:
        deps.need.cache_clear()
    assert r.exit_code == 2
    assert install_command("eval") in " ".join(r.stderr.split())


def test_outliers_hf_plots_aggregate_report(tid_run: Any, tmp_path: Path) -> None:
    _, out, _, _ = tid_run
    dest = tmp_path / "study"
    toml = tmp_path / "w.toml"
    toml.write_text("[weights]\nmos_srocc = 1\nconsistency = 1\n")
    res = evaluate(
        EvalConfig(
            [],
            [],
            dest,
            from_scores=out,
            options=Options(n_resamples=20),
            hf=True,
            plots=True,
            aggregate=toml,
            accuracy={MODEL: 56.5},
            top=3,
        )
    )
    with open(dest / "items" / MODEL / "tid2013.csv", newline="") as f:
        items = list(csv.DictReader(f))
    assert len(items) == 12 and {"fitted", "residual", "z", "outlier", "ref_hfer"} <= set(items[0])
    flags = [r["outlier"] == "True" for r in items]
    ratio = next(r.value for r in res.rows if r.measure == "outlier_ratio" and r.subset == "all")
    assert sum(flags) / 12 == pytest.approx(ratio)
    with open(dest / "hf.csv", newline="") as f:
        mw = list(csv.DictReader(f))
    assert {r["feature"] for r in mw} >= {"ref_hfer", "res_si", "delta_hfer"}
    with open(dest / "aggregate.csv", newline="") as f:
        agg = {r["factor"]: r for r in csv.DictReader(f)}
    d = (float(agg["mos_srocc"]["value"]) * float(agg["consistency"]["value"])) ** 0.5
    assert float(agg["D"]["value"]) == pytest.approx(d, rel=1e-5)
    report = (dest / "report.md").read_text()
    assert "comparable only between models of one run" in report
    links = [ln.split("](")[1].rstrip(")") for ln in report.splitlines() if "![" in ln]
    assert links and all((dest / link).is_file() for link in links)
    with open(dest / "sweep.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["acc1"]) == 56.5


class _MSE:
    """A stand-in engine: pixel MSE, so monotonicity under noise is known by construction."""

    lower_is_better = True

    class bundle:
        min_size = (8, 8)
        model = "mse"

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        diff = a.astype(np.float64) - b.astype(np.float64)
        return (diff**2).mean(axis=(1, 2, 3))


def test_monotonicity_and_shift_flips_with_pixel_mse(tmp_path: Path) -> None:
    from dps_fast.evaluate import robustness as R

    (ds,) = read_dataset("tid2013", rep.make_tid2013(tmp_path / "tid"))
    rows = {r.subset: r for r in R.monotonicity(_MSE(), ds, "none", "mse")}  # type: ignore[arg-type]
    assert rows["noise"].value == 1.0 and rows["noise"].n == 3
    assert 0.5 < rows["all"].value <= 1.0
    two, _ = read_dataset("bapps", rep.make_bapps(tmp_path / "b"))
    flips = R.shift_flips(_MSE(), two, "none", "mse")  # type: ignore[arg-type]
    by = {(r.subset, r.measure): r.value for r in flips}
    assert set(by) >= {("all", "rank_flip_1px"), ("cnn", "rank_flip_3px")}
    # by hand: the mean over subsets of each subset's rate
    assert by[("all", "rank_flip_2px")] == pytest.approx(
        (by[("cnn", "rank_flip_2px")] + by[("traditional", "rank_flip_2px")]) / 2
    )
    assert all(0.0 <= v <= 1.0 for v in by.values())


def test_robustness_in_the_run(tmp_path: Path, bundle: Callable[[str], Path]) -> None:
    root = rep.make_bapps(tmp_path / "bapps", twoafc={"cnn": 3}, jnd={})
    out = tmp_path / "out"
    res = evaluate(
        EvalConfig(
            [f"bapps={root}"],
            [str(bundle(MODEL))],
            out,
            device="cpu",
            robustness=True,
            options=Options(n_resamples=0),
        )
    )
    measures = {(r.subset, r.measure) for r in res.rows}
    assert ("all", "rank_flip_1px") in measures and ("all", "monotonicity") in measures
    factors = {a["factor"] for a in res.aggregate}
    assert {"shift_robust", "monotonicity", "D"} <= factors
    again = evaluate(
        EvalConfig([], [], tmp_path / "again", from_scores=out, options=Options(n_resamples=0))
    )
    assert (tmp_path / "again" / "summary.csv").read_text() == (out / "summary.csv").read_text()
    assert len(again.rows) == len(res.rows)
