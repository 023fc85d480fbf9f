"""Feedback while running: progress per scored batch with rate and ETA, and the command that
continues an interrupted run (printed on Ctrl-C)."""

from __future__ import annotations

import csv
import io
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dps_fast import Engine
from dps_fast.cli import _Progress, app
from dps_fast.io.pairing import pair_dirs
from dps_fast.pipeline import PairScorer
from tests.helpers import images as im

RUNNER = CliRunner()
N = 7


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fb")
    for i in range(N):
        im.save_array(im.textured(64, 64, i), root / "A" / f"{i}.png")
        im.save_array(im.textured(64, 64, i + 50), root / "B" / f"{i}.png")
    im.text_file(root / "A" / "9.png")
    im.save_array(im.textured(64, 64, 9), root / "B" / "9.png")
    return root / "A", root / "B"


def test_progress_is_reported_per_batch(bundle, folders) -> None:
    eng = Engine(bundle("lpips-alex"), device="cpu", batch_size=2)
    a, b = folders
    calls: list[tuple[int, int]] = []
    yielded = 0
    scorer = PairScorer(eng, on_progress=lambda n: calls.append((n, yielded)), workers=1)
    for _ in scorer.run(pair_dirs(a, b).pairs):
        yielded += 1
    assert sum(n for n, _ in calls) == N + 1  # every pair once, the bad one included
    assert sorted(n for n, _ in calls if n > 1) == [2, 2, 2]  # batches of 2 …
    # … and each batch's records go out as soon as it is scored (not at the end of a decode
    # window): when the last batch is reported, every pair before it has its record out
    assert calls[-1][1] == N - 1


def test_progress_bar_shows_rate_and_eta() -> None:
    out = io.StringIO()
    bar = _Progress(10, stream=out, on=True)
    bar.draw(force=True)
    assert "0/10 pairs" in out.getvalue() and "ETA --:--" in out.getvalue()
    bar.advance(4)
    bar.draw(force=True)
    line = out.getvalue().split("\r")[-1]
    assert "4/10 pairs" in line and "pairs/s" in line and "ETA 0:" in line
    bar.advance(6)
    bar.close()
    assert "10/10 pairs" in out.getvalue() and "in all" in out.getvalue()
    quiet = io.StringIO()
    _Progress(3, stream=quiet).advance(1)  # not a terminal: no bar
    assert quiet.getvalue() == ""


def test_interrupt_prints_the_resume_command(bundle, folders, tmp_path, monkeypatch) -> None:
    a, b = folders
    model = bundle("lpips-alex")
    out = tmp_path / "r.csv"
    run = PairScorer.run

    def interrupted(self: PairScorer, pairs: Any) -> Any:
        for k, rec in enumerate(run(self, pairs)):
            if k == 3:
                raise KeyboardInterrupt
            yield rec

    monkeypatch.setattr(PairScorer, "run", interrupted)
    args = ["score", str(a), str(b), "--model", str(model), "--out", str(out), "--per-layer",
            "--batch-size", "2"]  # fmt: skip
    res = RUNNER.invoke(app, args)
    assert res.exit_code == 130, (res.stdout, res.stderr)
    assert f"interrupted: 3 of {N + 1} pairs written" in res.stderr
    cmd = res.stderr.split("continue with:\n")[1].strip()
    argv = shlex.split(cmd)
    assert argv[:2] == ["dps-fast", "score"] and argv[-1] == "--resume"
    for opt in ("--model", "--out", "--batch-size"):
        assert argv[argv.index(opt) + 1] == args[args.index(opt) + 1], opt
    assert "--per-layer" in argv and "--device" not in argv  # defaults are left out
    monkeypatch.setattr(PairScorer, "run", run)
    res = RUNNER.invoke(app, argv[1:])
    assert res.exit_code == 1 and "skipped 3 (already in --out)" in res.stderr  # 9.png fails
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["a"] for r in rows) == sorted(f"{i}.png" for i in [*range(N), 9])
