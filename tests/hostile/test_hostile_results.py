"""Hostile results files (issue 12): resume, locking, order, safe cells, write failures.

Items: 3 (repeated pairs under several ids), 4 (resume with other settings), 5 (write
failures), 8 (CR in a name), 9 (formula cells), 10 (non-UTF-8 names), 12 (one writer at a
time), 17 (--out is the manifest), 23 (order after a resume).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dps_fast.io import results as results_mod
from dps_fast.io.results import csv_escape, csv_unescape, meta_path
from dps_fast.io.resume import OutputLock, lock_path, provenance_differences
from tests.hostile.hostile_util import (
    DPS_FAST,
    by_name,
    cli,
    image,
    pair_folders,
    read_csv,
    read_csv_file,
    read_jsonl_file,
)


@pytest.fixture(scope="module")
def alex(bundle: Callable[[str], Path]) -> Path:
    return bundle("lpips-alex")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return pair_folders(tmp_path_factory.mktemp("f"), [f"p{i}.png" for i in range(5)])


def _manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["a", "b", "id"])
        w.writerows(rows)
    return path


def test_resume_keeps_a_pair_repeated_under_other_ids(tmp_path, alex) -> None:
    """Item 3: a finished file of one pair repeated under 40 ids was cut to 1 row."""
    image(tmp_path / "x.png", 1)
    image(tmp_path / "y.png", 2)
    man = _manifest(tmp_path / "m.csv", [("x.png", "y.png", f"id{i}") for i in range(40)])
    out = tmp_path / "r.csv"
    cli("score-pairs", man, "--model", alex, "--out", out)
    before = out.read_bytes()
    res = cli("score-pairs", man, "--model", alex, "--out", out, "--resume")
    assert "skipped 40" in res.stderr
    assert out.read_bytes() == before
    # without ids, a pair listed three times keeps three rows; a fourth (extra) row goes
    man2 = tmp_path / "m2.csv"
    man2.write_text("a,b\nx.png,y.png\nx.png,y.png\nx.png,y.png\n", encoding="utf-8")
    out2 = tmp_path / "r2.jsonl"
    cli("score-pairs", man2, "--model", alex, "--out", out2)
    rows = out2.read_text(encoding="utf-8").splitlines()
    out2.write_text("\n".join([*rows, rows[0]]) + "\n", encoding="utf-8")
    res = cli("score-pairs", man2, "--model", alex, "--out", out2, "--resume")
    assert "skipped 3" in res.stderr
    assert len(read_jsonl_file(out2)) == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (["--resize", "short-side:40"], "resize"),
        ("precision", "precision"),
        ("bundle", "bundle_sha256"),
        ("model", "model"),
        ("weights", "weights"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, folders, alex, change, field) -> None:
    """Item 4: a resume with another model, bundle, weights, precision or resize mixed two
    populations of scores in one file."""
    a, b = folders
    out = tmp_path / "r.csv"
    cli("score", a, b, "--model", alex, "--out", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")  # an interrupted run
    extra: list[str] = []
    if isinstance(change, list):
        extra = change
    else:  # the file was written by something else: say so in its meta
        meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
        if change == "bundle":
            meta["bundle_sha256"] = "0" * 64
        elif change == "model":
            meta["model"] = "lpips-vgg"
        elif change == "precision":
            meta["precision"] = "int8"
        else:
            meta["weights"] = {**meta["weights"], "sha256": "f" * 64}
        meta_path(out).write_text(json.dumps(meta), encoding="utf-8")
    rows_before = out.read_bytes()
    meta_before = meta_path(out).read_bytes()
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume", *extra, code=2)
    assert "cannot resume" in res.stderr and field in res.stderr, res.stderr
    assert out.read_bytes() == rows_before and meta_path(out).read_bytes() == meta_before
    assert not lock_path(out).exists()


def test_provenance_differences_names_each_field() -> None:
    old = {"model": "m", "bundle_sha256": "a", "weights": {"sha256": "1"}, "precision": "fp32",
           "options": {"resize": "none"}}  # fmt: skip
    assert provenance_differences(old, old) == []
    new = {**old, "precision": "int8", "options": {"resize": "to-a"}}
    diff = provenance_differences(old, new)
    assert len(diff) == 2 and "precision" in diff[0] and "resize" in diff[1]


def test_provenance_differences_compare_each_model_of_a_several_model_meta() -> None:
    """A several-model file keeps each model's bundle under ``models``: the same model names
    with another bundle behind one of them must be refused, naming that model."""
    m = {"bundle_sha256": "a", "weights": {"sha256": "1"}, "precision": "fp32"}
    old = {"model": ["x", "y"], "models": [{"model": "x", **m}, {"model": "y", **m}],
           "precision": "fp32", "options": {"resize": "none"}}  # fmt: skip
    assert provenance_differences(old, old) == []
    new = {**old, "models": [{"model": "x", **m}, {"model": "y", **m, "bundle_sha256": "b"}]}
    diff = provenance_differences(old, new)
    assert len(diff) == 1 and diff[0].startswith("y: bundle_sha256"), diff
    new = {**old, "models": [{"model": "x", **m, "weights": {"sha256": "2"}}, old["models"][1]]}
    assert [d.split(":")[:2] for d in provenance_differences(old, new)] == [["x", " weights"]]


def test_resume_restores_order_and_meta_covers_the_whole_file(tmp_path, alex) -> None:
    """Items 23 and 4: retried rows were appended at the end; the meta described one run."""
    a, b = pair_folders(tmp_path, [f"p{i}.png" for i in range(5)])
    (a / "p2.png").rename(a / "p2.keep")  # p2 is missing on side A for the first run
    image(a / "p2.png", 50, 20, 20)  # too small: fails its row
    out = tmp_path / "r.csv"
    cli("score", a, b, "--model", alex, "--out", out, code=1)
    assert json.loads(meta_path(out).read_text())["summary"]["failed"] == 1
    (a / "p2.keep").replace(a / "p2.png")
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert "skipped 4" in res.stderr and "5 rows, 5 scored, 0 failed" in res.stderr
    rows = read_csv_file(out)
    assert [r["a"] for r in rows] == [f"p{i}.png" for i in range(5)]
    meta = json.loads(meta_path(out).read_text())
    assert meta["summary"]["rows"] == 5 and meta["summary"]["scored"] == 5
    assert meta["last_run"]["scored"] == 1 and meta["complete"] is True
    mean = sum(float(r["score"]) for r in rows) / 5
    assert meta["summary"]["mean"] == pytest.approx(mean, rel=1e-6)


def test_a_second_writer_is_refused(tmp_path, folders, alex) -> None:
    """Item 12: two runs on one --out interleaved rows; the second now exits 2."""
    a, b = folders
    out = tmp_path / "r.csv"
    with OutputLock(out):
        res = cli("score", a, b, "--model", alex, "--out", out, code=2)
        assert "being written by another dps-fast run" in res.stderr
        assert f"pid {os.getpid()}" in res.stderr
        assert not out.exists()
        cli("score", a, b, "--model", alex, "--out", out, "--resume", code=2)
    cli("score", a, b, "--model", alex, "--out", out)  # free again
    assert not lock_path(out).exists()
    # a lock file left by a killed run (no process holds it) does not block
    lock_path(out).write_text("999999\n")
    cli("score", a, b, "--model", alex, "--out", out)


def test_cr_in_a_name_is_quoted(tmp_path, alex) -> None:
    """Item 8: a CR in a file name was written unquoted; readers split the row."""
    a, b = pair_folders(tmp_path, ["cr\rname.png", "ok.png"])
    out = tmp_path / "r.csv"
    cli("score", a, b, "--model", alex, "--out", out)
    rows = read_csv_file(out)
    assert [r["a"] for r in rows] == ["cr\rname.png", "ok.png"]
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert "skipped 2" in res.stderr


FORMULAS = ["=1+1.png", "+x.png", "-y.png", "@z.png", "'=q.png"]


def test_formula_cells_are_neutralised_in_csv_only(tmp_path, alex) -> None:
    """Item 9: names starting with = + - @ were written as they are (spreadsheets run them)."""
    a, b = pair_folders(tmp_path, [*FORMULAS, "plain.png"])
    out = tmp_path / "r.csv"
    cli("score", a, b, "--model", alex, "--out", out)
    rows = read_csv_file(out)
    cells = {r["a"] for r in rows} | {r["b"] for r in rows}
    assert cells == {"'" + n for n in FORMULAS} | {"plain.png"}
    assert {csv_unescape(r["a"]) for r in rows} == {*FORMULAS, "plain.png"}
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert f"skipped {len(FORMULAS) + 1}" in res.stderr
    jl = tmp_path / "r.jsonl"
    cli("score", a, b, "--model", alex, "--out", jl)
    assert {r["a"] for r in read_jsonl_file(jl)} == {*FORMULAS, "plain.png"}
    for text in ["=a", "''+b", "'x", "x=y", "-", "\tq", ""]:
        assert csv_unescape(csv_escape(text)) == text


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 file names (Linux)")
def test_non_utf8_names_are_written_losslessly(tmp_path, alex) -> None:
    """Item 10: a non-UTF-8 name crashed stdout output; JSONL was not valid UTF-8."""
    name = os.fsdecode(b"x\xff.png")
    a, b = pair_folders(tmp_path, [name, "ok.png"])
    proc = subprocess.run(
        [str(DPS_FAST), "score", str(a), str(b), "--model", str(alex)],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert b"x\xff.png" in proc.stdout  # the file system's bytes, as they are
    jl = tmp_path / "r.jsonl"
    cli("score", a, b, "--model", alex, "--out", jl)
    got = read_jsonl_file(jl)  # strict UTF-8
    assert {r["a"] for r in got} == {name, "ok.png"}
    assert "\\udcff" in jl.read_text(encoding="utf-8")
    res = cli("score", a, b, "--model", alex, "--out", jl, "--resume")
    assert "skipped 2" in res.stderr


def test_out_equal_to_the_manifest_is_refused(tmp_path, alex) -> None:
    """Item 17: score-pairs X.csv --out X.csv overwrote the manifest."""
    image(tmp_path / "x.png", 1)
    image(tmp_path / "y.png", 2)
    man = _manifest(tmp_path / "m.csv", [("x.png", "y.png", "1")])
    before = man.read_bytes()
    res = cli("score-pairs", man, "--model", alex, "--out", man, code=2)
    assert "manifest" in res.stderr
    res = cli("score-pairs", man, "--model", alex, "--out", tmp_path / "." / "m.csv", code=2)
    assert man.read_bytes() == before


def test_full_disk_during_the_run_exits_2(tmp_path, folders, alex, monkeypatch) -> None:
    """Item 5: ENOSPC while writing rows was a chain of tracebacks with exit 1."""
    a, b = folders
    out = tmp_path / "r.csv"
    real = results_mod.ResultWriter._put
    calls = {"n": 0}

    def put(self, text):  # the disk fills up after the header and two rows
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, text)

    monkeypatch.setattr(results_mod.ResultWriter, "_put", put)
    res = cli("score", a, b, "--model", alex, "--out", out, code=2)
    assert "No space left on device" in res.stderr and "--resume" in res.stderr
    assert len(read_csv_file(out)) == 2
    assert not lock_path(out).exists()
    monkeypatch.undo()
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert "skipped 2" in res.stderr and len(read_csv_file(out)) == 5


def test_meta_that_does_not_fit_exits_2(tmp_path, folders, alex, monkeypatch) -> None:
    a, b = folders
    out = tmp_path / "r.csv"
    real = results_mod.write_meta

    def write_meta(path, meta):
        if meta.get("complete"):
            raise OSError(f"cannot write {meta_path(path)}: No space left on device")
        return real(path, meta)

    monkeypatch.setattr(results_mod, "write_meta", write_meta)
    res = cli("score", a, b, "--model", alex, "--out", out, code=2)
    assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
    assert len(read_csv_file(out)) == 5


def test_full_device_exits_2(tmp_path, folders, alex) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    a, b = folders
    res = cli("score", a, b, "--model", alex, "--out", "/dev/full", code=2)
    assert "error:" in res.stderr


def test_closed_pipe_exits_2_without_a_traceback(folders, alex) -> None:
    """Item 5: `dps-fast score … | head -1` ended in a BrokenPipeError traceback."""
    a, b = folders
    proc = subprocess.Popen(
        [str(DPS_FAST), "score", str(a), str(b), "--model", str(alex)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first row
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "pipe was closed" in err


def test_stdout_rows_are_plain_csv(folders, alex) -> None:
    a, b = folders
    rows = by_name(read_csv(cli("score", a, b, "--model", alex).stdout))
    assert set(rows) == {f"p{i}.png" for i in range(5)}
