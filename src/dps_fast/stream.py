"""Score a stream of pairs — paths, arrays, PIL images, bytes, tensors — in bounded memory.

For pipelines: ``score_iter(pairs, engine=engine)`` takes any iterable (a generator too) of
``(a, b)`` or ``(a, b, id)`` tuples, or dicts with keys ``a``, ``b`` (and ``id``), and yields
one record per pair in order, as soon as its batch is scored. A pair that cannot be scored
(missing file, size mismatch, NaN, too small) yields a record with ``error`` set; the stream
goes on. At most ``max_bytes`` of decoded pixels (plus a few decodes ahead) are held at once,
however long the stream.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .engine.inputs import as_float, check_min_size, image_hw, to_batch
from .errors import DpsFastError

__all__ = ["DEFAULT_STREAM_BYTES", "score_iter"]

Record = dict[str, Any]
DEFAULT_STREAM_BYTES = 256 * 1024 * 1024  # decoded pixels held for one round of batches
_MAX_PAIRS = 256  # pairs per round, whatever their size


@dataclass
class _Row:
    index: int
    a_label: str | None
    b_label: str | None
    id: Any = None
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    error: str = ""
    per_tap: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.a, self.b) if x is not None)


def _label(x: Any) -> str | None:
    """A display name for a side of a pair: the path for paths, None for in-memory images."""
    return os.fspath(x) if isinstance(x, str | os.PathLike) else None


def _unpack(item: Any) -> tuple[Any, Any, Any]:
    if isinstance(item, dict):
        if "a" not in item or "b" not in item:
            raise ValueError(f"expected a pair dict with keys 'a' and 'b', got keys {list(item)}")
        return item["a"], item["b"], item.get("id")
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None
    raise ValueError(
        f"expected a pair (a, b), (a, b, id) or {{'a': …, 'b': …}}, got {type(item).__name__}"
    )


def _describe(e: BaseException) -> str:
    return " ".join((str(e).strip() or type(e).__name__).split())


def _prepare(engine: Engine, index: int, item: Any, value_range: tuple[float, float]) -> _Row:
    """Decode and check one pair (in a worker thread); problems become the row's error."""
    try:
        a, b, pid = _unpack(item)
    except ValueError as e:
        return _Row(index, None, None, error=_describe(e))
    row = _Row(index, _label(a), _label(b), pid)
    try:
        sides = []
        for side, x in (("a", a), ("b", b)):
            try:
                arr = to_batch(x, value_range, keep_uint8=engine.accepts_uint8)
            except (ValueError, TypeError, OSError) as e:
                raise ValueError(f"{side}: {_describe(e)}") from None
            if arr.shape[0] != 1:
                raise ValueError(
                    f"{side}: expected one image per side of a pair, got a batch of "
                    f"{arr.shape[0]}; yield one pair per image"
                )
            sides.append(arr)
        xa, xb = sides
        if xa.dtype != xb.dtype:
            xa, xb = as_float(xa), as_float(xb)
        (ha, wa), (hb, wb) = image_hw(xa), image_hw(xb)
        if (ha, wa) != (hb, wb):
            raise ValueError(
                f"size mismatch: a is {ha}×{wa}, b is {hb}×{wb} (H×W); resize one of them"
            )
        check_min_size((ha, wa), engine.bundle.min_size)
        row.a, row.b = xa[0], xb[0]
    except (ValueError, OSError, DpsFastError) as e:
        row.error = _describe(e)
    return row


def _score_round(engine: Engine, rows: list[_Row]) -> None:
    """Score the good rows of a round in batches of one size and dtype; fills ``per_tap``."""
    groups: dict[tuple[Any, ...], list[_Row]] = {}
    for r in rows:
        if not r.error and r.a is not None:
            groups.setdefault((r.a.shape, r.a.dtype.str), []).append(r)
    for group in groups.values():
        step = engine.batch_len(*image_hw(group[0].a[None]))  # type: ignore[index]
        for s in range(0, len(group), step):
            chunk = group[s : s + step]
            try:
                a = np.stack([r.a for r in chunk])  # type: ignore[misc]
                b = np.stack([r.b for r in chunk])  # type: ignore[misc]
                per_tap = engine.score(a, b, per_layer=True)
            except (ValueError, OSError, RuntimeError, DpsFastError) as e:
                for r in chunk:
                    r.error = f"scoring failed: {_describe(e)}"
                continue
            for r, p in zip(chunk, per_tap, strict=True):
                r.per_tap = p


def _record(engine: Engine, r: _Row, per_layer: bool, taps: tuple[str, ...]) -> Record:
    rec: Record = {"index": r.index, "a": r.a_label, "b": r.b_label, "score": None,
                   "error": r.error}  # fmt: skip
    ok = not r.error and r.per_tap is not None
    if ok:
        rec["score"] = float(engine.reduce(np.asarray(r.per_tap, np.float32)[None])[0])
    elif not r.error:
        rec["error"] = "not scored"
    if per_layer:
        for k, name in enumerate(taps):
            rec[f"tap_{name}"] = float(r.per_tap[k]) if ok else None  # type: ignore[index]
    if r.id is not None:
        rec["id"] = r.id
    return rec


def score_iter(
    pairs: Iterable[Any],
    *,
    engine: Engine | None = None,
    per_layer: bool = False,
    value_range: tuple[float, float] = (0.0, 1.0),
    max_bytes: int = DEFAULT_STREAM_BYTES,
    workers: int | None = None,
    **engine_options: Any,
) -> Iterator[Record]:
    """Yield one record per pair of ``pairs``, in order: ``index`` (0-based position),
    ``a``/``b`` (the paths as given, None for in-memory images), ``score`` (None on error),
    ``error`` ("" when fine), ``tap_<name>`` with ``per_layer``, and ``id`` when given.

    Pairs are read lazily: at most ``max_bytes`` of decoded pixels (or 256 pairs) are held per
    round, plus ``2 × workers`` decodes ahead. Files decode in ``workers`` threads (default:
    cores, ≤ 8). Without ``engine``, one is made from ``engine_options`` (``model``,
    ``device``, ``precision``, ``weights``, ``threads``, ``batch_size``).
    """
    from .pipeline import default_workers, one_engine

    if isinstance(pairs, str | os.PathLike | Path):
        raise TypeError(
            f"expected an iterable of pairs, got a path ({pairs}); for a CSV manifest use "
            "dps_fast.score_pairs(manifest)"
        )
    if max_bytes < 1:
        raise ValueError(f"expected max_bytes ≥ 1, got {max_bytes}")
    eng = one_engine(engine, dict(engine_options))
    taps = eng.taps
    n_workers = workers or default_workers()
    source = iter(pairs)
    with ThreadPoolExecutor(n_workers, thread_name_prefix="dps-fast-stream") as pool:
        ahead: deque[Future[_Row]] = deque()
        index = 0
        done = False

        def fill() -> None:
            nonlocal index, done
            while not done and len(ahead) < 2 * n_workers:
                try:
                    item = next(source)
                except StopIteration:
                    done = True
                    return
                ahead.append(pool.submit(_prepare, eng, index, item, value_range))
                index += 1

        fill()
        while ahead:
            rows: list[_Row] = []
            held = 0
            while ahead and held < max_bytes and len(rows) < _MAX_PAIRS:
                row = ahead.popleft().result()
                rows.append(row)
                held += row.nbytes
                fill()
            _score_round(eng, rows)
            for r in rows:
                rec = _record(eng, r, per_layer, taps)
                r.a = r.b = None
                yield rec
