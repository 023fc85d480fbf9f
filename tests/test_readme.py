"""The README's commands, run as written (the offline --weights form of the main job)."""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.weights import make_random_weights

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_lines() -> list[str]:
    lines, inside = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def test_readme_states_the_two_setup_commands() -> None:
    lines = _bash_lines()
    main = [ln for ln in lines if ln.startswith("pip install") and "dps-fast score" in ln]
    tests = [ln for ln in lines if ln.startswith("pip install") and ln.endswith("&& pytest")]
    assert len(main) == 1 and len(tests) == 1
    # .ci/run installs exactly what the README's test command installs.
    extras = tests[0].split("&&")[0].split()[-1].strip("\"'")
    assert f'-e "{extras}"' in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow  # a whole export of its own
def test_readme_offline_main_job_runs_as_written(tmp_path: Path) -> None:
    (offline,) = [
        ln for ln in _bash_lines() if ln.startswith("dps-fast score") and "--weights" in ln
    ]
    argv = shlex.split(offline)
    weights_name = argv[argv.index("--weights") + 1]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    make_random_weights("alexnet", tmp_path / weights_name)  # stands in for torchvision's file
    exe = Path(sys.executable).parent / "dps-fast"
    env = {**os.environ, "DPS_FAST_HOME": str(tmp_path / "home")}
    res = subprocess.run(
        [str(exe), *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    out = tmp_path / argv[argv.index("--out") + 1]
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(list((ROOT / "examples" / "reference").iterdir()))
    assert all(r["error"] == "" and float(r["score"]) >= 0 for r in rows)
    assert "summary: scored" in res.stderr
    assert (tmp_path / (out.name + ".meta.json")).is_file()
