"""Helpers of the hostile catalogue: tiny images, CLI calls bounded in time, file readers."""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from dps_fast.cli import app
from tests.helpers import images as im

SIZE = 48  # small images keep the catalogue fast; lpips-alex needs 31×31
DPS_FAST = Path(sys.executable).parent / "dps-fast"
RUNNER = CliRunner()


def cli(*args: Any, code: int | None = 0, env: dict[str, str] | None = None) -> Any:
    """Run the Typer app in-process; check the exit code; re-raise unexpected exceptions."""
    result = RUNNER.invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def image(path: Path, seed: int, h: int = SIZE, w: int = SIZE) -> Path:
    """A small textured PNG (any suffix Pillow knows)."""
    return im.save_array(im.textured(h, w, seed), path)


def pair_folders(root: Path, names: list[str], seed: int = 0) -> tuple[Path, Path]:
    """Folders A and B with one distinct image per name on each side."""
    a, b = root / "A", root / "B"
    for i, name in enumerate(names):
        image(a / name, seed + 2 * i)
        image(b / name, seed + 2 * i + 1)
    return a, b


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def short_idat_png(arr: np.ndarray, rows: int) -> bytes:
    """A well-formed PNG (valid chunks, CRCs, zlib stream) whose pixel data stops after
    ``rows`` rows: Pillow decodes it with black rows and no error."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[i].tobytes() for i in range(rows))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_csv_file(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8")  # strict: the file must be valid UTF-8
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["a"]: r for r in rows}
