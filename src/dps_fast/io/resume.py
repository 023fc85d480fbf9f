"""One run's hold on a results file: the lock, the resume plan, the final order and the meta.

A results file and its ``FILE.meta.json`` describe one population of scores, whatever the
number of runs that wrote them:

- one run at a time: :class:`OutputLock` holds an exclusive lock for the whole run, so a second
  run on the same file is refused (:class:`OutputLockedError`) instead of interleaving rows;
- a resume must score with what wrote the file (model, bundle, weights, precision, resize:
  :data:`PROVENANCE_KEYS`), else it is refused (:class:`ResumeMismatchError`) and the file is
  left as it is;
- rows are matched to pairs by ``(a, b, id)``, counted: a manifest that lists one pair several
  times (under several ids, or none) keeps that many rows;
- after a resume the rows are put back in the pairing order, and the summary in the meta
  describes every row of the file, not only the last run's.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from ..errors import DpsFastError
from .results import (
    _ENCODING,
    _ERRORS,
    csv_line,
    csv_unescape,
    meta_path,
    results_format,
)
from .summary import score_stats

__all__ = [
    "PROVENANCE_KEYS",
    "OutputLock",
    "OutputLockedError",
    "ResultsFile",
    "ResumeError",
    "ResumeMismatchError",
    "ResumePlan",
    "pair_key",
    "plan_resume",
    "provenance_differences",
    "put_in_order",
    "read_meta",
    "summarize_file",
]

PROVENANCE_KEYS: tuple[str, ...] = (
    "model",
    "bundle_sha256",
    "weights",
    "precision",
    "options.resize",
)
"""Meta fields a resume must share with the file it appends to (dots reach into dicts)."""

Key = tuple[str, str, str]


class ResumeError(DpsFastError, ValueError):
    """A results file that cannot be resumed as asked; the message says why and what to do."""


class ResumeMismatchError(ResumeError):
    """``--resume`` with another model, bundle, weights, precision or resize than the file's."""


class OutputLockedError(DpsFastError, OSError):
    """Another run holds the lock of this results file."""


class _PairLike(Protocol):
    @property
    def a(self) -> str: ...
    @property
    def b(self) -> str: ...
    @property
    def id(self) -> str | None: ...


def pair_key(a: str, b: str, pid: str | None) -> Key:
    """The resume key of a pair or row: ``(a, b, id)``, a missing id as ""."""
    return (a, b, pid or "")


# ------------------------------------------------------------------------------- the lock


def lock_path(path: Path) -> Path:
    """The lock file of a results file: ``dir/.NAME.lock``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """An exclusive, non-blocking lock on a results file for the length of a run.

    The lock is ``flock`` on ``.NAME.lock`` next to the file (the results file itself is
    replaced when a resume rewrites it, so it cannot carry the lock); the lock file is removed
    on release. A run killed with SIGKILL leaves the file behind, unlocked: the next run takes
    it. Where ``fcntl`` is missing (Windows) there is no lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = lock_path(self.path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; OutputLockedError when another run holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        while True:
            try:
                self.lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OSError(f"cannot write results to {self.path}: {e.strerror or e}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.path} is being written by another dps-fast run{holder}; wait for it "
                    "to finish, or write to another --out file"
                ) from None
            # The holder before us may have removed the file between our open and our lock.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (removal first, so no one locks a ghost)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.lock.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """The " (pid N)" part of a message, from a lock file; "" when unknown."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


# ------------------------------------------------------------------------------- reading rows


@dataclass
class _Row:
    """One complete row of a results file: its key, whether it is done, and its raw form."""

    key: Key
    done: bool
    scores: dict[str, float | None]  # each score column's value (None: empty or not a number)
    raw: str  # the line(s) as written, newline included


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline (a cut-off last line is left out)."""
    raw = path.read_bytes()
    return raw[: raw.rfind(b"\n") + 1].decode(_ENCODING, _ERRORS)


def _is_score_column(name: Any) -> bool:
    """``score``, or ``score_<model>`` of a run of several models."""
    return isinstance(name, str) and (name == "score" or name.startswith("score_"))


def _row_scores(cells: dict[str, Any]) -> dict[str, float | None]:
    """The row's value in each score column ("inf" is a number: PSNR of identical images)."""
    return {name: _to_float(v) for name, v in cells.items() if _is_score_column(name)}


def _is_done(error: Any, scores: dict[str, float | None]) -> bool:
    """A row is done when it has no error and a number in every score column."""
    return not error and bool(scores) and all(v is not None for v in scores.values())


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, float | int):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_rows(path: Path, fmt: str) -> tuple[list[str] | None, list[_Row]]:
    """The header (CSV; None for JSONL) and the complete rows of a results file."""
    text = _complete_text(path)
    if fmt == "csv":
        # The reader and the raw rows split lines alike (LF, CR, CRLF; quoted ones joined).
        lines = list(_io.StringIO(text, newline=""))
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            return None, []
        if "a" not in header or "b" not in header:
            raise ResumeError(
                f"cannot resume from {path}: it has no 'a' and 'b' columns (columns found: "
                f"{', '.join(header)}); use a new output file or run without --resume"
            )
        col = {name: i for i, name in reversed(list(enumerate(header)))}
        rows: list[_Row] = []
        start = reader.line_num
        for cells in reader:
            end = reader.line_num
            raw = "".join(lines[start:end])
            start = end
            if not any(cells):
                continue

            def cell(name: str, cells: list[str] = cells) -> str:
                i = col.get(name)
                return cells[i] if i is not None and i < len(cells) else ""

            scores = _row_scores({n: cell(n) for n in header})
            key = pair_key(
                csv_unescape(cell("a")), csv_unescape(cell("b")), csv_unescape(cell("id"))
            )
            rows.append(_Row(key, _is_done(cell("error"), scores), scores, raw))
        return header, rows
    rows = []
    for number, line in enumerate((x + "\n" for x in text.split("\n")[:-1]), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise ResumeError(
                f"cannot resume from {path}: line {number} is not valid JSON; fix or remove "
                "the line, or start a new output file"
            ) from None
        if not isinstance(obj, dict) or "a" not in obj or "b" not in obj:
            raise ResumeError(f"cannot resume from {path}: line {number} has no 'a' and 'b'")
        scores = _row_scores(obj)
        pid = obj.get("id")
        key = pair_key(str(obj["a"]), str(obj["b"]), None if pid is None else str(pid))
        rows.append(_Row(key, _is_done(obj.get("error"), scores), scores, line))
    return None, rows


def _rewrite(path: Path, text: str) -> None:
    """Replace the file's contents atomically (temp file in the same folder + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.rewrite.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode(_ENCODING, _ERRORS))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _header_text(header: list[str] | None) -> str:
    return "" if header is None else csv_line(header)


# ------------------------------------------------------------------------------- provenance


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta of a results file, None when there is none or it is unreadable."""
    try:
        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _lookup(meta: dict[str, Any], dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _show(value: Any) -> str:
    if isinstance(value, dict):
        named = value.get("name") or value.get("source")
        sha = value.get("sha256")
        if named or sha:
            return f"{named or '?'} (sha256 {str(sha)[:12]}…)" if sha else str(named)
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"
    return json.dumps(value, default=str)


def provenance_differences(
    old: dict[str, Any], new: dict[str, Any], keys: Sequence[str] = PROVENANCE_KEYS
) -> list[str]:
    """What differs between two metas on ``keys``, as "key: file has X, this run Y" lines.

    A several-model meta holds each model's bundle, weights and precision under ``models``;
    those are compared model by model (named ``<model>: key``), so a changed bundle behind an
    unchanged model name is found too.
    """
    out = _differences(old, new, keys, "")
    old_models, new_models = old.get("models"), new.get("models")
    if (isinstance(old_models, list) or isinstance(new_models, list)) and not out:
        olds = old_models if isinstance(old_models, list) else [old]
        news = new_models if isinstance(new_models, list) else [new]
        per_model = [k for k in keys if k != "model" and not k.startswith("options.")]
        for o, n in zip(olds, news, strict=False):
            if isinstance(o, dict) and isinstance(n, dict):
                out += _differences(o, n, per_model, f"{n.get('model', '?')}: ")
    return out


def _differences(
    old: dict[str, Any], new: dict[str, Any], keys: Sequence[str], prefix: str
) -> list[str]:
    out = []
    for key in keys:
        a = json.loads(json.dumps(_lookup(old, key), default=str))
        b = json.loads(json.dumps(_lookup(new, key), default=str))
        if a != b:
            out.append(
                f"{prefix}{key.split('.')[-1]}: the file has {_show(a)}, this run {_show(b)}"
            )
    return out


# ------------------------------------------------------------------------------- the plan


@dataclass
class ResumePlan:
    """What a run on a results file does: the pairs to score and what was found."""

    todo: list[Any]
    skipped: int = 0
    dropped: int = 0
    notes: list[str] = field(default_factory=list)


def plan_resume(
    path: Path,
    columns: list[str],
    pairs: Sequence[_PairLike],
    provenance: dict[str, Any] | None = None,
    *,
    fmt: str | None = None,
) -> ResumePlan:
    """Check that ``path`` can be resumed by this run and trim it to the rows it keeps.

    Refuses (ResumeMismatchError, file untouched) when the file's meta differs from
    ``provenance`` on :data:`PROVENANCE_KEYS`, and (ResumeError) when its columns are not
    ``columns``. Then rows with an error, and rows beyond the number of times the pairs list
    their key, are removed (atomic rewrite), and the pairs that still need a row are returned
    in order. Call it under the :class:`OutputLock`.
    """
    path = Path(path)
    kind = results_format(path, fmt)
    if not path.is_file() or path.stat().st_size == 0:
        return ResumePlan(list(pairs))
    notes = []
    old = read_meta(path)
    if provenance is not None:
        if old is None:
            notes.append(
                f"note: {meta_path(path).name} is missing, so it cannot be checked that the "
                f"rows already in {path} come from this model, bundle, weights and precision"
            )
        else:
            diff = provenance_differences(old, provenance)
            if diff:
                raise ResumeMismatchError(
                    f"cannot resume {path}: it was written with other settings ({'; '.join(diff)})"
                    "; resume with the same settings, or write to a new --out file"
                )
    header, rows = _read_rows(path, kind)
    if kind == "csv" and header is not None and header != columns:
        raise ResumeError(
            f"cannot resume {path}: its columns ({', '.join(header)}) differ from this run's "
            f"({', '.join(columns)}); use a new output file or run without resume"
        )
    need = Counter(pair_key(p.a, p.b, p.id) for p in pairs)
    kept: Counter[Key] = Counter()
    keep: list[_Row] = []
    for row in rows:
        if row.done and kept[row.key] < max(need[row.key], 1):
            kept[row.key] += 1
            keep.append(row)
    dropped = len(rows) - len(keep)
    if dropped:
        _rewrite(path, _header_text(header) + "".join(r.raw for r in keep))
    todo = []
    left = Counter(kept)
    for p in pairs:
        k = pair_key(p.a, p.b, p.id)
        if left[k] > 0:
            left[k] -= 1
        else:
            todo.append(p)
    return ResumePlan(todo, len(pairs) - len(todo), dropped, notes)


def put_in_order(path: Path, pairs: Sequence[_PairLike], *, fmt: str | None = None) -> bool:
    """Rewrite the rows of ``path`` in the order of ``pairs`` (rows of other pairs last, as
    they were); True when it had to. Used after a resume, whose new rows were appended."""
    path = Path(path)
    kind = results_format(path, fmt)
    header, rows = _read_rows(path, kind)
    slots: dict[Key, list[int]] = {}
    for i, p in enumerate(pairs):
        slots.setdefault(pair_key(p.a, p.b, p.id), []).append(i)
    placed: list[tuple[int, int]] = []  # (position, row index)
    rest = []
    taken: Counter[Key] = Counter()
    for j, row in enumerate(rows):
        where = slots.get(row.key, [])
        if taken[row.key] < len(where):
            placed.append((where[taken[row.key]], j))
            taken[row.key] += 1
        else:
            rest.append(j)
    order = [j for _, j in sorted(placed)] + rest
    if order == list(range(len(rows))):
        return False
    _rewrite(path, _header_text(header) + "".join(rows[j].raw for j in order))
    return True


def summarize_file(path: Path, *, fmt: str | None = None) -> dict[str, Any]:
    """Counts and score statistics over every complete row of a results file.

    ``scored`` counts the rows with no error and every score; with one ``score`` column the
    statistics (:func:`~dps_fast.io.summary.score_stats`) are over those rows. With
    ``score_<model>`` columns (several models in one run), ``models`` holds each model's
    ``scored`` (rows with a number in its column), ``failed`` and statistics.
    """
    _, rows = _read_rows(Path(path), results_format(Path(path), fmt))
    done = [r for r in rows if r.done]
    out: dict[str, Any] = {"rows": len(rows), "scored": len(done), "failed": len(rows) - len(done)}
    columns: dict[str, None] = {}  # every score column, in the order the rows have them
    for r in rows:
        columns.update(dict.fromkeys(r.scores))
    if list(columns) == ["score"]:
        out.update(score_stats(v for r in done if (v := r.scores["score"]) is not None))
    elif columns:
        models = {}
        for col in columns:
            values = [v for r in rows if (v := r.scores.get(col)) is not None]
            name = col.removeprefix("score_")
            models[name] = {"scored": len(values), "failed": len(rows) - len(values),
                            **score_stats(values)}  # fmt: skip
        out["models"] = models
    return out


# ------------------------------------------------------------------------------- the run


class ResultsFile:
    """A run's results file: locked, checked and trimmed for a resume, put in order at the end.

    ``with ResultsFile(path, columns, pairs, provenance, resume=...) as rf:`` takes the lock,
    plans the resume (``rf.plan.todo`` are the pairs to score) and writes the meta with the
    provenance (so an interrupted run can be checked by the next resume). After the rows are
    written, :meth:`finish` restores the pairing order and writes the meta with the summary of
    the whole file. The lock is held until the block ends.
    """

    def __init__(
        self,
        path: Path,
        columns: list[str],
        pairs: Iterable[_PairLike],
        provenance: dict[str, Any],
        *,
        resume: bool,
        fmt: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.pairs = list(pairs)
        self.provenance = dict(provenance)
        self.resume = resume
        self.fmt = results_format(self.path, fmt)
        self.lock = OutputLock(self.path)
        self.plan = ResumePlan(self.pairs)

    def __enter__(self) -> ResultsFile:
        self.lock.acquire()
        try:
            if self.resume:
                self.plan = plan_resume(
                    self.path, self.columns, self.pairs, self.provenance, fmt=self.fmt
                )
            self._write_meta({**self.provenance, "complete": False})
        except BaseException:
            self.lock.release()
            raise
        return self

    def _write_meta(self, meta: dict[str, Any]) -> None:
        from .results import write_meta

        write_meta(self.path, meta)

    def finish(self, last_run: dict[str, Any]) -> dict[str, Any]:
        """Put the rows in pairing order (after a resume), write the final meta, return it."""
        if self.resume:
            put_in_order(self.path, self.pairs, fmt=self.fmt)
        meta = {
            **self.provenance,
            "complete": True,
            "summary": summarize_file(self.path, fmt=self.fmt),
            "last_run": last_run,
        }
        self._write_meta(meta)
        return meta

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.lock.release()
