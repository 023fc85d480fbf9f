"""The Ray backend on a real local Ray: parity with in-process scoring, and the faults.

One cluster for the module (4 logical CPUs, small object store, no dashboard), shut down at the
end with a check that no Ray process is left. Drivers run in this process (the Python API) or
as ``dps-fast`` subprocesses connected to the same cluster (exit codes, SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import ray  # the dev extra has it: a missing Ray fails here, it is not skipped

import dps_fast
from dps_fast.distributed import RayOptions, read_results
from dps_fast.distributed.output import META, SUCCESS
from tests.helpers.images import save_array, textured

pytestmark = pytest.mark.slow  # starts Ray clusters

CLUSTER_CPUS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray for this module; its address for subprocess drivers."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    ctx = ray.init(
        num_cpus=CLUSTER_CPUS,
        object_store_memory=256 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30
        left: list[Any] = []
        while time.monotonic() < deadline:
            left = [p for p in me.children(recursive=True) if p.pid not in before]
            left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            if not left:
                break
            time.sleep(0.5)
        assert not left, f"Ray processes left behind: {[p.name() for p in left]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 pairs on 3 shared references, plus failing pairs that form a unit of their own."""
    root = tmp_path_factory.mktemp("raydata")
    for r in range(3):
        save_array(textured(64, 64, r), root / f"ref{r}.png")
    for i in range(40):
        save_array(textured(64, 64, 100 + i), root / f"d{i}.png")
    (root / "broken.png").write_bytes(b"not an image")
    save_array(textured(48, 64, 7), root / "small.png")
    rows = ["a,b,id"] + [f"d{i}.png,ref{i % 3}.png,p{i:02d}" for i in range(40)]
    # Four failing pairs on one (missing) reference: grouped, they fill a unit of 4 alone.
    rows += [f"d{i}.png,gone.png,g{i}" for i in range(4)]
    rows += ["broken.png,ref0.png,x1", "small.png,ref0.png,x2", "d0.png,,x3"]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


@pytest.fixture(scope="module")
def alex(bundle: Callable[[str], Path]) -> Path:
    return bundle("lpips-alex")


@pytest.fixture(scope="module")
def reference(data: Path, engines: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """In-process score_pairs rows by id (per layer)."""
    eng = engines("lpips-alex")
    return {r["id"]: r for r in dps_fast.score_pairs(data, engine=eng, per_layer=True)}


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    table = read_results(out)
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)), "a pair has more than one row"
    return {r["id"]: r for r in table.to_pylist()}


def _same(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        assert (g["a"], g["b"], g["error"]) == (w["a"], w["b"], w["error"]), k
        if w["score"] is None:
            assert g["score"] is None, k
        else:
            assert abs(g["score"] - w["score"]) <= 1e-6, k
        for col in (c for c in w if c.startswith("tap_")):
            if w[col] is not None:
                assert abs(g[col] - w[col]) <= 1e-6, (k, col)


def _score(data: Path, alex: Path, out: Path, **kw: Any) -> Any:
    from dps_fast.distributed import score_pairs_ray

    opts = RayOptions(unit_size=kw.pop("unit_size", 4), actors=kw.pop("actors", (1, 1)),
                      no_progress_timeout=60)  # fmt: skip
    return score_pairs_ray(data, out, model=alex, device="cpu", options=opts, **kw)


def test_same_rows_as_in_process(cluster, data, alex, reference, tmp_path) -> None:
    out = tmp_path / "out"
    run = _score(data, alex, out, per_layer=True, actors=(1, 2))
    _same(_rows(out), reference)
    assert run.total == 47 and run.failed == 7 and run.scored == 40 and not run.crashed
    # One shard per unit; the unit whose pairs all fail keeps a float64 score column.
    shards = sorted(out.glob("part-*.parquet"))
    assert len(shards) == run.units > 1
    all_failed = [
        s for s in shards if pq.read_table(s)["score"].null_count == pq.read_metadata(s).num_rows
    ]
    assert all_failed, "expected a unit where every pair fails"
    assert all(str(pq.read_schema(s).field("score").type) == "double" for s in shards)
    done = json.loads((out / SUCCESS).read_text())
    assert done["pairs"] == 47 and done["failed"] == 7
    meta = json.loads((out / META).read_text())
    assert meta["backend"] == "ray" and meta["bundle_sha256"] and meta["columns"][-1] == "id"


def test_actor_crashing_once_mid_unit(
    cluster, data, alex, reference, tmp_path, monkeypatch
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setenv("DPS_FAST_RAY_FAULT", f"crash-once:p07:{flags}")
    out = tmp_path / "out"
    # The bundle goes through the object store here (as to a node without the driver's files).
    run = _score(data, alex, out, per_layer=True, unit_size=8, ship_bundle="object-store")
    from dps_fast.cache import cache_root

    sha = json.loads((out / META).read_text())["bundle_sha256"]
    assert (cache_root() / "ray-bundles" / sha / "manifest.json").is_file()
    assert (flags / "crashed").exists()
    assert len(list(flags.glob("init-*"))) == 2  # the actor was restarted once
    _same(_rows(out), reference)
    assert not run.crashed and (out / SUCCESS).exists()


def test_engine_raising_inside_a_unit(
    cluster, data, alex, reference, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("DPS_FAST_RAY_FAULT", "raise:p05")
    out = tmp_path / "out"
    run = _score(data, alex, out, per_layer=True, unit_size=8)
    rows = _rows(out)
    assert rows["p05"]["error"] == "scoring failed: RuntimeError: injected fault on pair p05"
    assert rows["p05"]["score"] is None
    del rows["p05"]
    _same(rows, {k: v for k, v in reference.items() if k != "p05"})
    assert run.failed == 8


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dps_fast.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _invoke(*args: str) -> Any:
    """The CLI in this process (Ray already initialised here: the run uses it)."""
    from typer.testing import CliRunner

    from dps_fast.cli import app

    return CliRunner().invoke(app, list(args))


def test_pair_always_crashing_its_worker_exits_2(
    cluster, data, alex, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("DPS_FAST_RAY_FAULT", "crash-always:p04")
    t0 = time.monotonic()
    r = _invoke("score-pairs", str(data), "--model", str(alex), "--device", "cpu",
                "--backend", "ray", "--out", str(out), "--unit-size", "8",
                "--no-progress-timeout", "60")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert time.monotonic() - t0 < 100
    assert "crashed their worker, again when retried alone: id p04 (d4.png, ref1.png)" in r.output
    rows = _rows(out)
    assert len(rows) == 47 and rows["p04"]["error"].startswith("worker crashed")
    assert not (out / SUCCESS).exists()


def test_more_actor_cpus_than_the_cluster_exits_2(cluster, data, alex, tmp_path) -> None:
    t0 = time.monotonic()
    r = _invoke("score-pairs", str(data), "--model", str(alex), "--device", "cpu",
                "--backend", "ray", "--out", str(tmp_path / "o"), "--actors", "2",
                "--cpus-per-actor", "3")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "cannot place 2 actor(s) × 3 CPU: it has 4 CPU" in r.output
    assert time.monotonic() - t0 < 60
    assert not list((tmp_path / "o").glob("part-*")) and not (tmp_path / "o" / SUCCESS).exists()


def test_driver_killed_then_resume(cluster, data, alex, reference, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["score-pairs", str(data), "--model", str(alex), "--device", "cpu", "--backend", "ray",
            "--ray-address", cluster, "--out", str(out), "--unit-size", "4",
            "--per-layer"]  # fmt: skip
    env = {**os.environ, "DPS_FAST_RAY_FAULT": "slow:0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "dps_fast.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while len(list(out.glob("part-*.parquet"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shards within 90 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert (
        not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    )
    shards = sorted(out.glob("part-*.parquet"))
    assert 3 <= len(shards) < 12 and not (out / SUCCESS).exists()
    raw = shards[0].read_bytes()
    shards[0].write_bytes(raw[: len(raw) // 2])
    r = _cli(*args, "--resume")
    assert r.returncode == 1, r.stderr  # the failing pairs
    assert "1 unreadable shard(s) deleted" in r.stderr
    _same(_rows(out), reference)
    assert (out / SUCCESS).exists()


def test_score_folders_with_backend_ray(cluster, alex, engines, tmp_path) -> None:
    from typer.testing import CliRunner

    from dps_fast.cli import app

    for i in range(5):
        save_array(textured(64, 64, i), tmp_path / "A" / f"{i}.png")
        save_array(textured(64, 64, 50 + i), tmp_path / "B" / f"{i}.jpg")
    out = tmp_path / "out"
    args = ["score", str(tmp_path / "A"), str(tmp_path / "B"), "--model", str(alex),
            "--device", "cpu", "--backend", "ray", "--out", str(out),
            "--unit-size", "2"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "summary: scored 5, failed 0" in r.output
    got = {(x["a"], x["b"]): x for x in _rows(out).values()}
    want = list(dps_fast.score_dirs(tmp_path / "A", tmp_path / "B", engine=engines("lpips-alex")))
    assert len(got) == len(want) == 5
    for w in want:
        assert abs(got[(w["a"], w["b"])]["score"] - w["score"]) <= 1e-6
    assert sorted(x["id"] for x in got.values()) == ["1", "2", "3", "4", "5"]
    # A second run into the same folder without --resume is refused; with it, nothing to do.
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "already holds results; pass --resume" in r.output
    r = CliRunner().invoke(app, [*args, "--resume"])
    assert r.exit_code == 0 and "skipped 5 (already in --out)" in r.output
    # --crop-border reaches the actors: the local run's cropped scores; resume must keep it.
    out2 = tmp_path / "out-crop"
    crop = [*args[:-3], str(out2), "--unit-size", "2", "--crop-border", "5"]
    r = CliRunner().invoke(app, crop)
    assert r.exit_code == 0, r.output
    got = {(x["a"], x["b"]): x for x in _rows(out2).values()}
    want = list(dps_fast.score_dirs(tmp_path / "A", tmp_path / "B", model=str(alex),
                                    device="cpu", crop_border=5))  # fmt: skip
    for w in want:
        assert abs(got[(w["a"], w["b"])]["score"] - w["score"]) <= 1e-6
    assert json.loads((out2 / META).read_text())["crop_border"] == 5
    r = CliRunner().invoke(app, [*crop[:-1], "3", "--resume"])
    assert r.exit_code == 2 and "differs from the one that wrote it in crop_border" in r.output


def test_build_dataset_returns_the_result_rows(cluster, data, alex, reference) -> None:
    from dps_fast.distributed import build_dataset, result_schema

    ds = build_dataset(data, model=alex, device="cpu", options=RayOptions(unit_size=16))
    assert isinstance(ds, ray.data.Dataset)
    table = ds.to_arrow_refs()
    rows = [r for ref in table for r in ray.get(ref).to_pylist()]
    assert len(rows) == 47
    assert ray.get(table[0]).schema == result_schema()
    plain = {
        k: {c: x for c, x in v.items() if not c.startswith("tap_")} for k, v in reference.items()
    }
    _same({r["id"]: r for r in rows}, plain)
