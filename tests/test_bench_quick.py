"""`dps-fast bench --quick` on a tiny setting: progress shown, where it writes said, its temp
files removed, and every ratio taken against the PyTorch path of the same run."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dps_fast.cli import app


@pytest.mark.slow  # a lean export and two timed cases (seeded random trunk, no download)
def test_bench_quick_shows_progress_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # the system temp folder, for this run
    res = CliRunner().invoke(app, ["bench", "--quick", "--models", "lpips-squeeze", "--json"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code == 0, res.stderr
    err = res.stderr
    where = re.search(r"bundles and weights go to (\S+) \(removed at the end", err)
    assert where is not None, err
    assert Path(where.group(1)).parent == tmp
    for step in ("measuring the fp32 matrix-multiply ceiling", "exporting lpips-squeeze",
                 "exported lpips-squeeze in", "[1/2] lpips-squeeze 64×64 ×32: round 3/3",
                 "[2/2] lpips-squeeze 256×256 ×8: round 3/3", "done in"):  # fmt: skip
        assert step in err, (step, err)
    # Bundles, weights and the export's work folder: gone. Torch itself leaves an empty
    # torchinductor_<user> folder in the temp folder; that one is not ours.
    left = [p for p in tmp.iterdir() if not (p.name.startswith("torchinductor_") and p.is_dir()
                                             and not any(p.iterdir()))]  # fmt: skip
    assert left == []
    rows = json.loads(res.stdout)
    assert {(r["h"], r["contender"]) for r in rows} == {
        (h, c) for h in (64, 256) for c in ("engine", "reference", "channels_last")
    }
    for h in (64, 256):
        case = {r["contender"]: r for r in rows if r["h"] == h}
        ref = case["reference"]["median_s"]
        for r in case.values():  # ratios from this run's own medians, 3 rounds each
            assert r["speedup_vs_reference"] == pytest.approx(ref / r["median_s"])
            assert r["rounds"] == 3 and len(r["rounds_s"]) == 3


def test_table_says_when_other_processes_were_busy() -> None:
    from dps_fast.bench import format_table

    row = {"model": "m", "h": 64, "w": 64, "batch": 2, "contender": "engine", "median_s": 0.01,
           "pairs_per_s": 200.0, "rounds": 3, "foreign_cores_round_max": 0.1}  # fmt: skip
    assert "note:" not in format_table([row])
    busy = format_table([row, {**row, "foreign_cores_round_max": 1.77}])
    assert busy.splitlines()[-1].startswith("note: other processes used up to 1.77 cores")
