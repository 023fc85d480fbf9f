"""A guard for tests that hand a FIFO to the code under test: fail instead of hanging."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def fifo_watchdog(path: Path, seconds: float = 60) -> Iterator[None]:
    """Fail (instead of hanging for ever) if something blocks reading the FIFO at ``path``."""
    stop = threading.Event()
    fired: list[bool] = []

    def watch() -> None:
        if stop.wait(seconds):
            return
        fired.append(True)
        while not stop.is_set():  # a blocked reader is released by a writer that opens and closes
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
    assert not fired, f"the run blocked on the FIFO {path}"
