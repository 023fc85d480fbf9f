"""Temporary folders that do not outlive their process: removed on exit, on SIGINT and SIGTERM,
and swept by the next run when a process was killed outright (SIGKILL, power loss).

An export writes tens of megabytes of graphs into a temporary folder before the bundle is
renamed into place. Each folder's name carries its process id (``PREFIX<pid>-XXXX``), so a
later run can tell a folder whose process is gone (stale: removed) from one in use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

_live: set[Path] = set()
_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``parent/PREFIX<pid>-*`` folders whose process no longer runs; return them."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(prefix) or not p.is_dir() or p.is_symlink():
            continue
        pid_text = p.name[len(prefix) :].partition("-")[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Remove the live folders, then die of SIGTERM as the process would have."""
    with _lock:
        for p in list(_live):
            shutil.rmtree(p, ignore_errors=True)
        _live.clear()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _sigterm_cleanup() -> Iterator[None]:
    """While inside, SIGTERM removes the live folders first (main thread, default handler only:
    a handler the application installed is left alone)."""
    installed = False
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
                installed = True
    try:
        yield
    finally:
        if installed and signal.getsignal(signal.SIGTERM) == _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def owned_tempdir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A fresh folder ``PREFIX<pid>-XXXX`` in ``parent`` (default: the system's temp folder),
    removed on leaving (exceptions and SIGINT included) and on SIGTERM; stale ones of the same
    prefix are swept first."""
    where = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep_stale(where, prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=where))
    with _lock:
        _live.add(path)
    try:
        with _sigterm_cleanup():
            yield path
    finally:
        with _lock:
            _live.discard(path)
        shutil.rmtree(path, ignore_errors=True)


def keep(path: Path) -> None:
    """Stop tracking ``path`` (it was renamed into place and is no longer temporary)."""
    with _lock:
        _live.discard(path)
