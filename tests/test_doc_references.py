"""Every file the code points to for a reason or a figure (``docs/…``, ``benchmarks/results/…``)
exists in the repository: measurements live there, and the code keeps one line saying where."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"\b((?:docs|benchmarks/results)/[\w.{},-]+\.(?:md|json|log|png))")


def _referenced() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        for m in REFERENCE.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(m.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def test_code_points_only_to_files_that_exist() -> None:
    found = _referenced()
    assert "benchmarks/results/engine-defaults.md" in found and "docs/numerics.md" in found
    missing = {ref: where for ref, where in found.items() if not (ROOT / ref).is_file()}
    assert not missing, f"referenced but not in the repository: {missing}"
