"""The distributed backend's plain parts, without a cluster: planning, unit scoring, output
folder, and that nothing but ``--backend ray`` imports Ray."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dps_fast
from dps_fast.distributed import assign_ids, plan_units, result_schema, score_unit
from dps_fast.distributed.output import prepare_out, write_shard
from dps_fast.errors import DistributedError
from dps_fast.io.pairing import Pair, PairingError, read_pairs_manifest
from tests.helpers.images import save_array, textured


def _pairs(n: int, refs: int) -> list[Pair]:
    return [
        Pair(f"d{i}.png", f"r{i % refs}.png", Path(f"d{i}.png"), Path(f"r{i % refs}.png"))
        for i in range(n)
    ]


def test_ids_are_row_numbers_or_the_manifests_unique_ids() -> None:
    got = assign_ids(_pairs(3, 1))
    assert [p.id for p in got] == ["1", "2", "3"]
    with_ids = [Pair("x", "y", None, None, id=f"k{i}") for i in range(3)]
    assert [p.id for p in assign_ids(with_ids)] == ["k0", "k1", "k2"]
    dup = [Pair("x", "y", None, None, id="k"), Pair("x", "z", None, None, id="k")]
    with pytest.raises(PairingError, match=r"id 'k' is on rows 1 and 2"):
        assign_ids(dup)
    empty = [Pair("x", "y", None, None, id="k"), Pair("x", "z", None, None, id="")]
    with pytest.raises(PairingError, match="row 2 has an empty id"):
        assign_ids(empty)


def test_units_keep_shared_images_together_and_are_bounded() -> None:
    planned = assign_ids(_pairs(50, 4))  # b side repeats: 4 references, ~12 pairs each
    units = plan_units(planned, 13)
    assert sorted(p.id for u in units for p in u) == sorted(p.id for p in planned)
    assert all(1 <= len(u) <= 13 for u in units)
    for ref in {p.pair.b for p in planned}:
        holding = [i for i, u in enumerate(units) if any(p.pair.b == ref for p in u)]
        assert len(holding) == 1, ref  # each reference's pairs in one unit
    big = plan_units(assign_ids(_pairs(30, 1)), 8)  # one group larger than a unit: chunks
    assert [len(u) for u in big] == [8, 8, 8, 6]
    with pytest.raises(ValueError, match="unit_size"):
        plan_units(planned, 0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 pairs on one 64² reference, 2 on another, a missing file, a broken file."""
    root = tmp_path_factory.mktemp("units")
    save_array(textured(64, 64, 0), root / "ref.png")
    save_array(textured(64, 64, 1), root / "ref2.png")
    for i in range(150):
        save_array(textured(64, 64, 10 + i), root / f"d{i}.png")
    (root / "broken.png").write_bytes(b"not an image")
    rows = ["a,b,id"] + [f"d{i}.png,ref.png,p{i}" for i in range(150)]
    rows += [
        "d0.png,ref2.png,q0",
        "d1.png,ref2.png,q1",
        "missing.png,ref.png,m",
        "broken.png,ref.png,x",
    ]
    path = root / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_score_unit_matches_score_pairs_and_decodes_each_image_once(manifest, engines) -> None:
    eng = engines("lpips-alex")
    items = assign_ids(read_pairs_manifest(manifest))
    from dps_fast.distributed.units import UnitStats

    stats = UnitStats()
    table = score_unit(eng, items, per_layer=True, workers=2, stats=stats)
    assert table.schema == result_schema(eng.tap_names)
    rows = {r["id"]: r for r in table.to_pylist()}
    want = {r["id"]: r for r in dps_fast.score_pairs(manifest, engine=eng, per_layer=True)}
    assert rows.keys() == want.keys()
    for k, w in want.items():
        assert (rows[k]["a"], rows[k]["b"], rows[k]["error"]) == (w["a"], w["b"], w["error"])
        if w["score"] is None:
            assert rows[k]["score"] is None
        else:
            assert abs(rows[k]["score"] - w["score"]) <= 1e-6
    assert rows["m"]["error"] and rows["x"]["error"]
    # The pipeline alone decodes ref.png once per window (several windows here); a unit once.
    assert stats.decodes[str(manifest.parent / "ref.png")] == 1
    assert max(stats.decodes.values()) == 1
    assert len(stats.decodes) == 150 + 2 + 1 + 1  # every file that exists or not, once


class _Exploding:
    """An engine whose inference raises something the pipeline does not catch."""

    def __init__(self, inner: Any, bad_after: int) -> None:
        self._inner = inner
        self.calls = 0
        self.bad_after = bad_after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _maybe(self) -> None:
        self.calls += 1
        if self.calls > self.bad_after:
            raise KeyError("session lost")  # not ValueError/OSError/RuntimeError

    def score(self, *a: Any, **k: Any) -> Any:
        self._maybe()
        return self._inner.score(*a, **k)

    def features(self, *a: Any, **k: Any) -> Any:
        self._maybe()
        return self._inner.features(*a, **k)


def test_score_unit_never_raises_and_every_pair_has_a_row(manifest, engines) -> None:
    items = assign_ids(read_pairs_manifest(manifest))[:20]
    bad = _Exploding(engines("lpips-alex"), bad_after=0)
    table = score_unit(bad, items, workers=1)  # type: ignore[arg-type]
    assert table.num_rows == 20
    assert table.schema == result_schema()
    assert all(e.startswith("scoring failed: KeyError") for e in table["error"].to_pylist())
    assert table["score"].null_count == 20
    # A unit whose pairs all fail still has the float score column: the folder reads as one.
    out = manifest.parent / "allfail"
    out.mkdir()
    good = score_unit(engines("lpips-alex"), items, workers=1)
    write_shard(out, "good", good)
    write_shard(out, "bad", table)
    assert pq.read_schema(out / "part-bad.parquet").field("score").type == pa.float64()
    assert dps_fast.distributed.read_results(out).num_rows == 40


def test_score_unit_falls_back_to_one_pair_at_a_time(manifest, engines) -> None:
    items = assign_ids(read_pairs_manifest(manifest))[:6]
    flaky = _Exploding(engines("lpips-alex"), bad_after=10**9)
    hits: list[str] = []

    def on_record(it: Any) -> None:
        hits.append(it.id)
        if it.id == "p3":
            raise RuntimeError("boom")

    table = score_unit(flaky, items, workers=1, on_record=on_record)  # type: ignore[arg-type]
    rows = {r["id"]: r for r in table.to_pylist()}
    assert len(rows) == 6
    assert rows["p3"]["error"] == "scoring failed: RuntimeError: boom"
    assert all(rows[k]["score"] is not None for k in rows if k != "p3")


def _shard(out: Path, name: str, rows: list[tuple[str, float | None, str]]) -> None:
    table = pa.Table.from_pylist(
        [{"a": f"a{i}", "b": f"b{i}", "score": s, "error": e, "id": i} for i, s, e in rows],
        schema=result_schema(),
    )
    write_shard(out, name, table)


def test_resume_discards_truncated_shards_and_redoes_errors(tmp_path) -> None:
    out = tmp_path / "out"
    meta = {"pairs_sha256": "x", "columns": ["a"]}
    prepare_out(out, meta, resume=False)
    from dps_fast.distributed.output import META, SUCCESS, write_json

    write_json(out / META, meta)
    _shard(out, "1", [("1", 0.5, ""), ("2", None, "bad file")])
    _shard(out, "2", [("3", 0.25, ""), ("4", 0.75, "")])
    _shard(out, "3", [("5", 0.1, "")])
    raw = (out / "part-2.parquet").read_bytes()
    (out / "part-2.parquet").write_bytes(raw[: len(raw) // 2])  # truncated by hand
    (out / ".part-4.parquet.tmp").write_bytes(b"partial")
    (out / SUCCESS).write_text("{}")
    with pytest.raises(DistributedError, match="already holds results"):
        prepare_out(out, meta, resume=False)
    with pytest.raises(DistributedError, match=r"differs .* in pairs_sha256"):
        prepare_out(out, {**meta, "pairs_sha256": "y"}, resume=True)
    state = prepare_out(out, meta, resume=True)
    assert state.done == {"1", "5"}
    assert state.truncated == ["part-2.parquet"]
    assert state.redo == 1
    assert sorted(p.name for p in out.iterdir()) == [META, "part-1.parquet", "part-3.parquet"]
    assert pq.read_table(out / "part-1.parquet")["id"].to_pylist() == ["1"]


def _modules_after(code: str) -> str:
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('RAY' if 'ray' in sys.modules else 'NORAY'))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe + code], capture_output=True, text=True, timeout=120
    )
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.slow  # five interpreters, one of them importing Ray
def test_nothing_but_backend_ray_imports_ray(
    manifest, bundle: Callable[[str], Path], tmp_path
) -> None:
    assert _modules_after("import dps_fast, dps_fast.distributed, dps_fast.cli") == "NORAY"
    run_cli = (
        "from dps_fast.cli import main\nsys.argv = ['dps-fast', *{}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    assert _modules_after(run_cli.format(["--help"])) == "NORAY"
    assert _modules_after(run_cli.format(["score-pairs", "--help"])) == "NORAY"
    args = ["score-pairs", str(manifest), "--model", str(bundle("lpips-alex")), "--device", "cpu",
            "--out", str(tmp_path / "s.csv")]  # fmt: skip
    assert _modules_after(run_cli.format(args)) == "NORAY"
    # Option errors of --backend ray are found before Ray is imported.
    assert _modules_after(run_cli.format([*args[:-1], str(tmp_path / "o"), "--backend", "ray",
                                          "--actors", "3-2"])) == "NORAY"  # fmt: skip
    # … and the backend really imports it (the probe can tell).
    assert _modules_after("import dps_fast.distributed.ray_backend") == "RAY"


def test_backend_ray_option_errors(manifest, tmp_path) -> None:
    from typer.testing import CliRunner

    from dps_fast.cli import app

    def run(*extra: str) -> Any:
        return CliRunner().invoke(app, ["score-pairs", str(manifest), *extra])

    r = run("--backend", "ray")
    assert r.exit_code == 2 and "--backend ray needs --out DIR" in r.output
    r = run("--backend", "spark", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "--backend must be one of local, ray" in r.output
    r = run("--backend", "ray", "--out", str(tmp_path / "o"), "--actors", "two")
    assert r.exit_code == 2 and "--actors: expected N or MIN-MAX" in r.output
    r = run("--backend", "ray", "--out", str(tmp_path / "o"), "--spatial-dir", str(tmp_path))
    assert r.exit_code == 2 and "--spatial-dir is not available" in r.output
    r = run("--backend", "ray", "--out", str(tmp_path / "o"), "--device", "cuda")
    assert r.exit_code == 2 and "--device cuda needs GPUs for the actors" in r.output
    assert not (tmp_path / "o").exists()


def test_actors_use_the_cpus_ray_gives_them(manifest, engines) -> None:
    from dps_fast.distributed.ray_backend import _make_plan

    common: dict[str, Any] = dict(model="unused", weights=None, device="auto", precision="fp32",
                                  batch_size=None, resize="none", per_layer=False, workers=None,
                                  decode="auto", engine=engines("lpips-alex"))  # fmt: skip
    cpu = _make_plan(manifest, gpus=0, cpus=3, **common)
    assert cpu.engine_options["threads"] == 3 and cpu.score_options["workers"] == 3
    gpu = _make_plan(manifest, gpus=1, cpus=4, **common)
    assert gpu.engine_options["threads"] is None and gpu.score_options["workers"] == 4
    assert len(cpu.planned) == 154 and cpu.bundle_sha256


def test_crop_border_reaches_the_actors_engine_and_the_resume_check(
    manifest, engines, tmp_path
) -> None:
    """--crop-border on the Ray backend: the plan hands it to each actor's engine, an actor
    (run here without Ray) scores the cropped images as the local pipeline does, the meta
    records it and a resume with another value is refused."""
    from dps_fast.distributed.plan import unit_row
    from dps_fast.distributed.ray_backend import (
        _UNIT_SCHEMA,
        _engine_provenance,
        _make_plan,
        _UnitActor,
    )

    eng = engines("lpips-alex")
    common: dict[str, Any] = dict(model="unused", weights=None, device="cpu", precision="fp32",
                                  batch_size=None, resize="none", per_layer=False, workers=1,
                                  decode="cpu", engine=eng)  # fmt: skip
    plan = _make_plan(manifest, crop_border=5, **common)
    assert plan.engine_options["crop_border"] == 5
    assert _engine_provenance(plan)["crop_border"] == 5
    assert _make_plan(manifest, **common).engine_options["crop_border"] == 0
    with pytest.raises(ValueError, match="crop_border a non-negative int"):
        _make_plan(manifest, crop_border=-1, **common)

    items = plan.planned[:6] + plan.planned[-2:]  # four pairs on ref.png, a missing, a broken
    actor = _UnitActor(
        bundle_path=str(plan.bundle_path),
        bundle_sha256=plan.bundle_sha256,
        bundle_blob=None,
        engine_options=plan.engine_options,
        score_options=plan.score_options,
        run_id=f"t{id(plan)}",
        fault="",
    )
    assert actor.engine.crop_border == 5
    table = pa.Table.from_pylist([unit_row("u1", items)], schema=_UNIT_SCHEMA)
    got = {r["id"]: r for r in actor(table).to_pylist()}
    rows = dps_fast.score_pairs(manifest, model=str(eng.bundle.path), device="cpu", crop_border=5)
    cropped = {p["id"]: p for p in rows if p["id"] in got}
    plain = {p["id"]: p for p in dps_fast.score_pairs(manifest, engine=eng) if p["id"] in got}
    assert got.keys() == cropped.keys() == {it.id for it in items} and len(items) == 8
    for k, w in cropped.items():
        assert bool(got[k]["error"]) == bool(w["error"]), k
        if w["score"] is not None:
            assert abs(got[k]["score"] - w["score"]) <= 1e-6, k
            assert abs(got[k]["score"] - plain[k]["score"]) > 1e-6, k  # the crop mattered

    out = tmp_path / "out"
    meta = {"pairs_sha256": "x", "columns": ["a"], "crop_border": 0}
    prepare_out(out, meta, resume=False)
    from dps_fast.distributed.output import META, write_json

    old = {"pairs_sha256": "x", "columns": ["a"]}  # written before crop_border was recorded
    write_json(out / META, old)
    prepare_out(out, meta, resume=True)  # the same run: no crop then, none now
    with pytest.raises(DistributedError, match=r"differs .* in crop_border"):
        prepare_out(out, {**meta, "crop_border": 4}, resume=True)
