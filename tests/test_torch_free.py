"""The engine runs where torch cannot be imported, and never imports torch or the exporter.

A child interpreter blocks ``torch``/``torchvision`` with a meta-path finder (as if they were
not installed), then scores with a bundle made in this process.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dps_fast
from dps_fast import Engine
from dps_fast.samples import distortion_pairs

SRC = Path(dps_fast.__file__).resolve().parent

# Runs first in the child: `import torch` / `import torchvision` raise ImportError.
BLOCK_TORCH = """
import importlib.abc
import sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoTorch())


def torch_modules():
    return sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision"))
"""

SCORE_CHILD = """
import json
import numpy as np

try:
    import torch  # noqa: F401
    torch_blocked = False
except ImportError:
    torch_blocked = True

import dps_fast
from dps_fast import Engine

bundle, data = sys.argv[1], sys.argv[2]
with np.load(data) as z:
    a, b = z["a"], z["b"]
eng = Engine(bundle, device="cpu")
score = eng.score(a, b)
feats = eng.distance(eng.features(a), eng.features(b))
print(json.dumps({
    "torch_blocked": torch_blocked,
    "score": score.tolist(),
    "dtype": str(score.dtype),
    "distance": feats.tolist(),
    "device": eng.info["device"],
    "torch_in_modules": torch_modules(),
    "export_in_modules": sorted(m for m in sys.modules if m.startswith("dps_fast.export")),
}))
"""

MISSING_CHILD = """
import json
import dps_fast

try:
    dps_fast.Engine("lpips-squeeze", device="cpu")
except Exception as e:
    err = {"type": type(e).__name__, "message": str(e),
           "is_bundle_not_found": isinstance(e, dps_fast.BundleNotFoundError)}
else:
    err = None
print(json.dumps({
    "error": err,
    "torch_in_modules": torch_modules(),
}))
"""


def run_child(code: str, *args: str, env: dict[str, str] | None = None, cwd: Path) -> dict:
    full_env = dict(os.environ)
    full_env.pop("PYTHONSTARTUP", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_engine_scores_without_torch(bundle, tmp_path) -> None:
    path = bundle("lpips-squeeze")
    a, b = distortion_pairs(4, 48, 64, seed=17)
    data = tmp_path / "pairs.npz"
    np.savez(data, a=a, b=b)
    eng = Engine(path, device="cpu")
    here = eng.score(a, b)
    assert here.max() > 0.05

    out = run_child(
        SCORE_CHILD,
        str(path),
        str(data),
        env={"DPS_FAST_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert out["torch_blocked"], "the child could still import torch"
    assert out["torch_in_modules"] == []
    assert out["export_in_modules"] == []
    assert out["device"] == "cpu"
    assert out["dtype"] == "float32"
    child = np.asarray(out["score"], np.float64)
    assert child.shape == here.shape
    assert np.abs(child - here).max() / np.abs(here).max() <= 1e-6
    dist = np.asarray(out["distance"], np.float64)
    assert np.abs(dist - here).max() / np.abs(here).max() <= 1e-6


def test_missing_bundle_without_torch_names_the_command(tmp_path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    out = run_child(MISSING_CHILD, env={"DPS_FAST_HOME": str(home)}, cwd=tmp_path)
    err = out["error"]
    assert err is not None, "expected BundleNotFoundError, got an engine"
    assert err["is_bundle_not_found"], err
    assert "dps-fast export lpips-squeeze" in err["message"]
    assert "[export]'" in err["message"] and "pip install " in err["message"]
    assert out["torch_in_modules"] == []
    assert not any(home.iterdir())  # nothing written


# --------------------------------------------------------------------------------------------
# static check


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    parts = package.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _forbidden(name: str) -> bool:
    top = name.partition(".")[0]
    return (
        top in ("torch", "torchvision")
        or name == "dps_fast.export"
        or (name.startswith("dps_fast.export."))
    )


@pytest.mark.parametrize("sub", ["engine", "io"])
def test_engine_and_io_never_import_torch_or_export(sub) -> None:
    folder = SRC / sub
    files = sorted(folder.rglob("*.py"))
    assert files, f"no modules under {folder}"
    bad = []
    for f in files:
        rel = f.relative_to(SRC.parent).with_suffix("")
        package = ".".join(rel.parts[:-1])  # for __init__.py too: the package itself
        for line, mod in _imported_modules(f, package):
            if _forbidden(mod):
                bad.append(f"{f.relative_to(SRC.parent)}:{line} imports {mod}")
    assert not bad, "torch-free modules import torch or the exporter:\n" + "\n".join(bad)


def test_static_check_catches_forbidden_imports(tmp_path) -> None:
    """The checker itself: relative and absolute forms are all caught."""
    f = tmp_path / "m.py"
    f.write_text(
        "import torch.nn\nfrom ..export import exporter\nfrom .. import export\n"
        "import importlib\nimportlib.import_module('torchvision')\nimport numpy\n"
    )
    mods = [m for _, m in _imported_modules(f, "dps_fast.engine")]
    assert {m for m in mods if _forbidden(m)} == {
        "torch.nn",
        "dps_fast.export",
        "dps_fast.export.exporter",
        "torchvision",
    }
    assert "numpy" in mods and not _forbidden("numpy") and not _forbidden("dps_fast.exporting")
