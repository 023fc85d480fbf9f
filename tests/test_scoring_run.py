"""What ``score``/``score-pairs``/``matrix`` do after parsing, called from the library
(``dps_fast.scoring_run``, ``dps_fast.matrix_file``), and the one option set both scoring
commands share."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import typer

from dps_fast import Engine
from dps_fast.cli import _SCORE_OPTIONS, ScoreOptions, app
from dps_fast.io import decode_image
from dps_fast.io.pairing import pair_dirs
from dps_fast.io.results import meta_path
from dps_fast.io.resume import OutputLock, OutputLockedError
from dps_fast.matrix import parse_matrix_resize
from dps_fast.matrix_file import write_matrix_file
from dps_fast.pipeline import PairScorer
from dps_fast.scoring_run import ScoringRun, provenance
from tests.test_cli import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _pairs() -> list:
    return pair_dirs(EXAMPLES / "restored", EXAMPLES / "reference").pairs


def _run(engines: list[Engine], out: Path | None, *, resume: bool = False, **kw) -> tuple:
    scorer = PairScorer(engines)
    prov = provenance(engines, {"resize": "none"})
    with ScoringRun(scorer, _pairs(), provenance=prov, out=out, resume=resume, **kw) as run:
        todo = list(run.todo)
        run.write_rows()
        return run.finish(), todo


def test_a_run_into_a_file_matches_the_cli_and_resumes(tmp_path: Path) -> None:
    eng = Engine("psnr", device="cpu")
    out = tmp_path / "lib.csv"
    outcome, todo = _run([eng], out)
    assert len(todo) == 4 and not outcome.failed
    assert outcome.run["scored"] == 4 and outcome.run["pairs_per_s"] > 0
    assert outcome.whole is not None and outcome.whole["rows"] == 4
    by_cli = tmp_path / "cli.csv"
    cli("score", EXAMPLES / "restored", EXAMPLES / "reference", "--model", "psnr",
        "--device", "cpu", "--out", by_cli)  # fmt: skip
    assert out.read_text() == by_cli.read_text()
    meta = json.loads(meta_path(out).read_text())
    assert meta["model"] == "psnr" and meta["complete"] and meta["decode"] == "cpu"
    assert meta["summary"]["mean"] == pytest.approx(outcome.run["mean"], rel=1e-6)
    # cut to two rows: a resume scores the other two, the file ends whole and in order
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))
    again, todo = _run([eng], out, resume=True)
    assert [p.a for p in todo] == ["img03.png", "img04.png"]
    assert again.run["skipped (resume)"] == 2 and again.whole["rows"] == 4
    assert out.read_text() == by_cli.read_text()


def test_a_run_to_a_stream_and_several_models() -> None:
    engines = [Engine("psnr", device="cpu"), Engine("ms-ssim", device="cpu")]
    buf = io.StringIO()
    outcome, _ = _run(engines, None, stream=buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(rows) == 4 and all("161×161" in r["error"] for r in rows)
    assert outcome.failed and outcome.whole is None
    assert outcome.run["models"]["psnr"]["scored"] == 4
    assert outcome.provenance["model"] == ["psnr", "ms-ssim"]
    assert [m["model"] for m in outcome.provenance["models"]] == ["psnr", "ms-ssim"]


def test_library_errors_are_raised_not_printed(tmp_path: Path) -> None:
    eng = Engine("psnr", device="cpu")
    with pytest.raises(ValueError, match="resume"):
        _run([eng], None, resume=True)
    with pytest.raises(ValueError, match=r"\.jsonl"):
        _run([eng], tmp_path / "r.json")
    out = tmp_path / "held.csv"
    with OutputLock(out), pytest.raises(OutputLockedError):
        _run([eng], out)


def test_matrix_file_npy_csv_and_meta(tmp_path: Path) -> None:
    eng = Engine("psnr", device="cpu")
    rs = parse_matrix_resize("none")
    folder = EXAMPLES / "reference"
    got = write_matrix_file(folder, tmp_path / "m.npy", engine=eng, resize=rs,
                            max_feature_bytes=1 << 30, options={"dir": str(folder)})  # fmt: skip
    m = np.load(tmp_path / "m.npy")
    assert got.labels == ["img01.png", "img02.png", "img03.png", "img04.png"]
    assert (tmp_path / "m.labels.txt").read_text().split() == got.labels
    want = eng.pairwise(np.stack([decode_image(folder / n) for n in got.labels]))
    off = ~np.eye(4, dtype=bool)  # the diagonal is compute_matrix's business (0 here)
    np.testing.assert_allclose(m[off], want[off], rtol=1e-6)
    meta = json.loads(meta_path(tmp_path / "m.npy").read_text())
    assert meta["images"] == 4 and meta["options"] == {"dir": str(folder)}
    write_matrix_file(folder, tmp_path / "m.csv", engine=eng, resize=rs, max_feature_bytes=1 << 30)
    rows = list(csv.reader((tmp_path / "m.csv").open()))
    assert rows[0] == ["", *got.labels] and float(rows[1][2]) == pytest.approx(m[0, 1], rel=1e-6)
    with pytest.raises(ValueError, match=r"\.npy or \.csv"):
        write_matrix_file(folder, tmp_path / "m.txt", engine=eng, resize=rs, max_feature_bytes=1)
    assert not list(tmp_path.glob(".*.tmp.npy"))  # no temporary matrix left behind


def test_score_and_score_pairs_share_one_option_set() -> None:
    """One declaration: the same options (names, defaults, help) on both commands."""
    assert [f.name for f in dataclasses.fields(ScoreOptions)] == list(_SCORE_OPTIONS)
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    commands = {name: group.get_command(ctx, name) for name in ("score", "score-pairs")}  # type: ignore[attr-defined]

    def shared(name: str) -> list[tuple]:
        return [(p.name, tuple(p.opts), p.default, getattr(p, "help", None))
                for p in commands[name].params if p.name in _SCORE_OPTIONS]  # fmt: skip

    assert len(shared("score")) == len(_SCORE_OPTIONS) and shared("score") == shared("score-pairs")
    own = {name: [p.name for p in c.params if p.name not in _SCORE_OPTIONS]
           for name, c in commands.items()}  # fmt: skip
    assert own == {"score": ["dir_a", "dir_b", "match"], "score-pairs": ["pairs_csv", "columns"]}
