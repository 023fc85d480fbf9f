"""Scoring one unit of work into an Arrow table of fixed schema (no Ray here).

``score_unit`` is what a Ray actor runs on each unit, and it is tested without a cluster. It
never raises: a pair that cannot be scored is a row with its error, and if the pipeline itself
fails part-way the pairs left are scored one by one so that only the pair at fault fails.
Within a unit every distinct image file is decoded once, however many pairs use it.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.results import BASE_COLUMNS
from .plan import Planned

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from ..engine import Engine

__all__ = ["UnitStats", "result_columns", "result_schema", "score_unit"]

# Decoded images kept for the other pairs of a unit that use them, at most this many bytes.
SHARED_DECODE_BYTES = 512 * 1024 * 1024


def result_columns(taps: Sequence[str] = ()) -> list[str]:
    """``a, b, score, error``, ``tap_<name>`` per tap, then ``id`` (the results' order)."""
    return [*BASE_COLUMNS, *(f"tap_{t}" for t in taps), "id"]


def result_schema(taps: Sequence[str] = ()) -> pa.Schema:
    """The explicit schema of every shard: never a ``null``-typed column, whatever fails.

    Scores are float64 (the engine's value exactly), null on error; ``error`` is "" when the
    pair scored.
    """
    import pyarrow as pa

    fields = [
        pa.field("a", pa.string()),
        pa.field("b", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("error", pa.string()),
    ]
    fields += [pa.field(f"tap_{t}", pa.float64()) for t in taps]
    fields.append(pa.field("id", pa.string()))
    return pa.schema(fields)


@dataclass
class UnitStats:
    """What scoring a unit did: decodes per file (a test checks one per distinct image)."""

    decodes: Counter[str] = field(default_factory=Counter)
    fallback: bool = False


class _Once:
    """One decode shared by the pairs of a unit that use the same file."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None


class _UnitLoader:
    """Wraps the pipeline's loader: shared files decoded once per unit, every decode counted.

    Decoded images of files that several pairs use are kept for the rest of the unit (least
    recently used dropped beyond SHARED_DECODE_BYTES; units group pairs by shared image, so the
    images in use are few at any time).
    """

    def __init__(self, inner: Any, uses: Counter[Path | None], stats: UnitStats) -> None:
        self._inner = inner
        self._uses = uses
        self._stats = stats
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, _Once] = OrderedDict()
        self._bytes = 0

    def __getattr__(self, name: str) -> Any:  # pair_arrays, check_sizes, resize …
        return getattr(self._inner, name)

    def _decode(self, path: Path | None) -> np.ndarray:
        with self._lock:
            self._stats.decodes[str(path)] += 1
        img: np.ndarray = self._inner.decode(path)
        return img

    def decode(self, path: Path | None) -> np.ndarray:
        if path is None or self._uses[path] <= 1:
            return self._decode(path)
        with self._lock:
            once = self._cache.get(path)
            owner = once is None
            if once is None:
                once = self._cache[path] = _Once()
            self._cache.move_to_end(path)
        if owner:
            try:
                once.value = self._decode(path)
            except BaseException as e:
                once.error = e
            finally:
                once.done.set()
            if once.value is not None:
                with self._lock:
                    self._bytes += once.value.nbytes
                    while self._bytes > SHARED_DECODE_BYTES and len(self._cache) > 1:
                        _, old = self._cache.popitem(last=False)
                        if old.value is not None:
                            self._bytes -= old.value.nbytes
        else:
            once.done.wait()
        if once.error is not None:
            raise once.error
        assert once.value is not None
        return once.value


def _describe(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _run(
    engine: Engine,
    items: Sequence[Planned],
    options: dict[str, Any],
    stats: UnitStats,
    on_record: Callable[[Planned], None] | None,
    out: list[dict[str, Any]],
) -> None:
    """Append records for ``items`` to ``out`` through one PairScorer (may raise part-way)."""
    from ..pipeline import PairScorer

    scorer = PairScorer(engine, **options)
    pairs = [it.pair for it in items]
    scorer.loader = _UnitLoader(scorer.loader, Counter(_paths(pairs)), stats)  # type: ignore[assignment]
    for it, rec in zip(items, scorer.run(pairs), strict=True):
        rec["id"] = it.id
        if on_record is not None:  # before the append: a raise here redoes the pair
            on_record(it)
        out.append(rec)


def _paths(pairs: Sequence[Any]) -> list[Path | None]:
    return [p for pr in pairs if not pr.error for p in (pr.a_path, pr.b_path)]


def score_unit(
    engine: Engine,
    items: Sequence[Planned],
    *,
    per_layer: bool = False,
    resize: str = "none",
    workers: int | None = None,
    decode: str = "auto",
    stats: UnitStats | None = None,
    on_record: Callable[[Planned], None] | None = None,
) -> pa.Table:
    """Score a unit's pairs into a table of :func:`result_schema`, one row per pair.

    Never raises. If the pipeline raises part-way (a bug, an engine failure that is not a
    pair's fault), the pairs not yet done are scored one at a time, and a pair that still fails
    is a row with ``error`` "scoring failed: …". ``on_record`` is called after each pair (the
    Ray actor uses it for its crash breadcrumbs).
    """
    import pyarrow as pa

    stats = stats if stats is not None else UnitStats()
    taps = list(engine.tap_names) if per_layer else []
    options = {"per_layer": per_layer, "resize": resize, "workers": workers, "decode": decode}
    records: list[dict[str, Any]] = []
    try:
        _run(engine, items, options, stats, on_record, records)
    except Exception:
        stats.fallback = True
        done = {r["id"] for r in records}
        for it in items:
            if it.id in done:
                continue
            try:
                _run(engine, [it], options, stats, on_record, records)
            except Exception as e:
                rec: dict[str, Any] = {
                    "a": it.pair.a,
                    "b": it.pair.b,
                    "score": None,
                    "error": f"scoring failed: {_describe(e)}",
                    "id": it.id,
                }
                records.append(rec)
    schema = result_schema(taps)
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for rec in records:
        for name in schema.names:
            value = rec.get(name)
            if name == "error":
                value = "" if value is None else " ".join(str(value).splitlines())
            elif name in ("a", "b", "id"):
                value = _text(value)
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=schema)


def _text(value: Any) -> str:
    """A str Arrow can hold: file names that are not valid UTF-8 get escapes."""
    s = str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return s
