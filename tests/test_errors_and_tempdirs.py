"""Every error class of the library derives from DpsFastError; export temp folders do not
outlive their process (SIGTERM, SIGINT, or a stale folder of a killed one)."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dps_fast
from dps_fast import DpsFastError
from dps_fast._tempdirs import owned_tempdir, sweep_stale


def test_every_library_error_derives_from_dps_fast_error() -> None:
    found = []
    for info in pkgutil.walk_packages(dps_fast.__path__, "dps_fast."):
        mod = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("dps_fast"):
                found.append(cls)
                assert issubclass(cls, DpsFastError), f"{cls.__module__}.{cls.__name__}"
    names = {c.__name__ for c in found}
    assert {"ImageDecodeError", "PairingError", "BundleError", "WeightsError"} <= names


def test_error_names_stay_importable_where_they_were() -> None:
    from dps_fast.io.decode import ImageDecodeError
    from dps_fast.io.pairing import PairingError

    assert issubclass(ImageDecodeError, ValueError) and issubclass(PairingError, ValueError)
    assert issubclass(ImageDecodeError, DpsFastError) and issubclass(PairingError, DpsFastError)


def test_stale_folders_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"dps-fast-export-{int(dead.stdout)}-abc"
    (stale / "x").mkdir(parents=True)
    live = tmp_path / f"dps-fast-export-{os.getppid()}-abc"  # a running process's folder
    live.mkdir()
    other = tmp_path / "someone-else-123-abc"
    other.mkdir()
    with owned_tempdir("dps-fast-export-", tmp_path) as mine:
        assert mine.is_dir() and mine.name.startswith(f"dps-fast-export-{os.getpid()}-")
        assert not stale.exists() and live.exists() and other.exists()
        assert sweep_stale(tmp_path, "dps-fast-export-") == []  # its own folder stays
        assert mine.exists()
    assert not mine.exists()


# The child restores Python's SIGINT handler: a shell starts background jobs with SIGINT ignored,
# and a child of such a run would otherwise never see the signal this test sends.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from dps_fast._tempdirs import owned_tempdir
with owned_tempdir("dps-fast-export-", Path(sys.argv[1])) as d:
    (d / "graph.onnx").write_bytes(b"x" * 1000)
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_the_temp_folder(tmp_path: Path, sig: signal.Signals) -> None:
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.glob("dps-fast-export-*"))) == 1
    p.send_signal(sig)
    rc = p.wait(timeout=30)
    assert rc == -sig  # the process still dies of its signal
    deadline = time.monotonic() + 5
    while list(tmp_path.glob("dps-fast-export-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("dps-fast-export-*")) == []
