"""Results files: CSV or JSONL rows, streamed and flushed, resumable; plus the meta sidecar.

Rows hold the columns ``a, b, score, error``, then ``tap_<name>`` per layer when asked, then
``id`` when the manifest has one. Floats are written with 9 significant digits (enough to
round-trip float32). Provenance goes to ``FILE.meta.json``, never into the rows file.

Text cells, written so that they are safe and read back exactly:

- CSV: a cell with a comma, a quote, a line feed or a carriage return is quoted. A text cell
  that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (after any
  apostrophes) gets one leading apostrophe, so a spreadsheet shows it as text instead of
  running it as a formula; :func:`csv_unescape` removes it (resume does).
- File names that are not valid UTF-8 hold lone surrogates (Python's ``surrogateescape``).
  JSONL writes them as ``\\udcXX`` escapes (the file stays valid UTF-8 and ``json.loads``
  gives back the same str); CSV writes the original bytes, as the file system has them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np

__all__ = [
    "BASE_COLUMNS",
    "ResultWriter",
    "csv_escape",
    "csv_line",
    "csv_unescape",
    "format_float",
    "meta_path",
    "result_columns",
    "results_format",
    "write_meta",
]

BASE_COLUMNS: tuple[str, ...] = ("a", "b", "score", "error")
"""Columns every results file starts with."""

_FORMATS = ("csv", "jsonl")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# surrogateescape: file names that are not valid UTF-8 are written back byte for byte and read
# back as the same str, so the resume key still matches.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def result_columns(
    taps: Sequence[str] = (), *, with_id: bool = False, models: Sequence[str] | None = None
) -> list[str]:
    """The column list for a run: base columns, ``tap_<name>`` per tap, then ``id``.

    With several ``models``: ``a, b, score_<model>…, error``, then taps and ``id``.
    """
    base = list(BASE_COLUMNS)
    if models is not None and len(models) > 1:
        base = ["a", "b", *(f"score_{m}" for m in models), "error"]
    return [*base, *(f"tap_{t}" for t in taps), *(["id"] if with_id else [])]


def format_float(x: float | np.floating[Any] | None) -> str:
    """A float with 9 significant digits; "" for None or NaN."""
    if x is None:
        return ""
    value = float(x)
    if math.isnan(value):
        return ""
    return f"{value:.9g}"


def results_format(path: Path, fmt: str | None = None) -> str:
    """The results format, "csv" or "jsonl": ``fmt`` when given, else from the file suffix."""
    if fmt is not None:
        if fmt not in _FORMATS:
            raise ValueError(f"results format: expected 'csv' or 'jsonl', got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        raise ValueError(
            f"{path}: results are written one JSON object per line; name the file .jsonl "
            "(or .ndjson), or use .csv"
        )
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"{path}: cannot tell the results format from the suffix {suffix or '(none)'!r}; "
            "use .csv, .jsonl or .ndjson"
        )
    return _SUFFIXES[suffix]


_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED_FORMULA = re.compile(r"'+[=+\-@\t\r]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NEEDS_QUOTES = re.compile('[",\r\n]')


def csv_escape(text: str) -> str:
    """A text cell made safe for spreadsheets: a leading apostrophe before ``= + - @``, tab or
    CR (after any apostrophes, so :func:`csv_unescape` is exact)."""
    return "'" + text if _FORMULA.match(text) else text


def csv_unescape(text: str) -> str:
    """Undo :func:`csv_escape`."""
    return text[1:] if _ESCAPED_FORMULA.match(text) else text


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line ("\\n"-terminated): cells with a comma, quote, LF or CR are quoted.

    Written by hand because the csv module leaves a lone CR unquoted when the line terminator
    is "\\n", and readers then split the row.
    """
    out = []
    for cell in cells:
        if _NEEDS_QUOTES.search(cell):
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return ",".join(out) + "\n"


def _json_line(obj: Mapping[str, Any]) -> str:
    """One JSONL line, valid UTF-8: lone surrogates become ``\\udcXX`` escapes."""
    line = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", line) + "\n"


def _plain(value: Any) -> Any:
    """NumPy scalars to Python scalars."""
    return value.item() if isinstance(value, np.generic) else value


def _csv_cell(column: str, value: Any) -> str:
    """One CSV cell: floats with 9 significant digits, None as "", errors on one line."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return format_float(value)
    text = str(value)
    if column == "error":
        # One line per row keeps the partial-last-line repair of resume simple and safe.
        text = " ".join(text.splitlines())
    return csv_escape(text)


def _json_value(column: str, value: Any) -> Any:
    """One JSONL value: floats rounded to 9 significant digits; NaN as null and ±infinity
    (PSNR of identical images) as the strings "inf" / "-inf", as in the CSV (JSON has no
    infinity, and null would read as a failed pair); ``error`` is null when there is none."""
    value = _plain(value)
    if column == "error":
        return None if value is None or value == "" else str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.9g}") if math.isfinite(value) else None
    return value


def _drop_partial_last_line(path: Path) -> None:
    """Truncate a file that does not end with a newline back to its last complete line."""
    block = 65536
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            found = chunk.rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
            pos = start
        f.truncate(keep)


def _first_csv_row(path: Path) -> list[str] | None:
    """The header row of a CSV file, None when it is empty."""
    with open(path, encoding=_ENCODING, errors=_ERRORS, newline="") as f:
        return next(csv.reader(f), None)


class ResultWriter:
    """Writes result records as CSV or JSONL, one flushed row per :meth:`write`.

    ``path=None`` writes CSV (or ``fmt``) to ``stream`` (default: sys.stdout). The format comes
    from ``fmt`` or the suffix (.csv, .jsonl, .ndjson). With ``resume=True`` and an existing
    file, rows are appended (no second header) after cutting a partial last line left by an
    interrupted run; the caller plans what to skip (:class:`dps_fast.io.resume.ResultsFile`).
    Thread-safe.
    """

    def __init__(
        self,
        path: Path | None,
        columns: list[str],
        *,
        fmt: str | None = None,
        resume: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        columns = list(columns)
        if "a" not in columns or "b" not in columns or len(set(columns)) != len(columns):
            raise ValueError(f"columns: expected unique names including 'a' and 'b', got {columns}")
        self.columns = columns
        self.path = None if path is None else Path(path)
        if self.path is None:
            self.format = "csv" if fmt is None else results_format(Path("<stream>"), fmt)
        else:
            self.format = results_format(self.path, fmt)
        self._lock = threading.Lock()
        self._owned = self.path is not None
        if self.path is None:
            self._file: TextIO = stream if stream is not None else sys.stdout
            write_header = True
        else:
            self._file, write_header = self._open_file(self.path, resume)
        self.closed = False
        if self.format == "csv" and write_header:
            self._guard(lambda: self._put(csv_line(self.columns)))
            self._guard(self._file.flush)

    def _open_file(self, path: Path, resume: bool) -> tuple[TextIO, bool]:
        """Open for append (resume of a non-empty file) or truncate; returns (file, header?)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            appending = resume and path.is_file() and path.stat().st_size > 0
            if appending:
                _drop_partial_last_line(path)
                appending = path.stat().st_size > 0
            if appending and self.format == "csv":
                found = _first_csv_row(path)
                if found != self.columns:
                    raise ValueError(
                        f"cannot resume {path}: its columns ({', '.join(found or [])}) differ "
                        f"from this run's ({', '.join(self.columns)}); use a new output file "
                        "or run without resume"
                    )
            f = open(  # noqa: SIM115 — closed by close()
                path,
                "a" if appending else "w",
                encoding=_ENCODING,
                errors=_ERRORS,
                newline="",
            )
        except OSError as e:
            raise OSError(f"cannot write results to {path}: {e.strerror or e}") from e
        return f, not appending

    def _guard(self, action: Any) -> None:
        """Run a write, turning OSError into 'cannot write results to X'."""
        try:
            action()
        except OSError as e:
            where = self.path if self.path is not None else "the output stream"
            raise OSError(f"cannot write results to {where}: {e.strerror or e}") from e

    def write(self, record: Mapping[str, Any]) -> None:
        """Write one record (missing columns empty) and flush it."""
        unknown = [k for k in record if k not in self.columns]
        if unknown:
            raise ValueError(
                f"record has keys that are not columns: {unknown} (columns: {self.columns})"
            )
        with self._lock:
            if self.closed:
                raise ValueError("ResultWriter: write after close")
            if self.format == "csv":
                line = csv_line([_csv_cell(c, record.get(c)) for c in self.columns])
            else:
                line = _json_line({c: _json_value(c, record.get(c)) for c in self.columns})
            self._guard(lambda: self._put(line))
            self._guard(self._file.flush)

    def _put(self, text: str) -> None:
        """Write text; on a stream that cannot encode a file name's raw bytes (a strict UTF-8
        stdout), write those bytes as they are through its binary buffer."""
        try:
            self._file.write(text)
        except UnicodeEncodeError:
            buffer = getattr(self._file, "buffer", None)
            if buffer is None:
                raise
            encoding = getattr(self._file, "encoding", None) or _ENCODING
            self._file.flush()
            buffer.write(text.encode(encoding, _ERRORS))

    def close(self) -> None:
        """Flush, and close the file if this writer opened it (a given stream stays open)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._owned:
                self._guard(self._file.close)
            else:
                self._guard(self._file.flush)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    """JSON for the types meta dicts tend to hold: paths, NumPy values, sets."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"meta: cannot write a {type(value).__name__} as JSON")


def meta_path(results_path: Path) -> Path:
    """The sidecar path for a results file: out.csv -> out.csv.meta.json."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.name + ".meta.json")


def write_meta(results_path: Path, meta: dict[str, Any]) -> Path:
    """Write ``<results_path>.meta.json`` atomically (temp file + rename); return its path."""
    target = meta_path(results_path)
    text = json.dumps(meta, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(f"cannot write {target}: {e.strerror or e}") from e
    return target
