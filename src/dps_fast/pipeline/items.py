"""A pair's state on its way through the pipeline: its decoded images, per-model results, error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.pairing import Pair

Record = dict[str, Any]
"""One result row: the README's result columns (``a``, ``b``, ``score``, ``error`` …)."""


@dataclass
class PairItem:
    """One pair being scored: decoded images (host path), and what each engine made of it."""

    pair: Pair
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    error: str = ""  # the pair failed for every model (unreadable file, size mismatch …)
    per_tap: dict[int, np.ndarray] = field(default_factory=dict)  # by engine index
    model_errors: dict[int, str] = field(default_factory=dict)  # one model failed the pair


def item_paths(items: Iterable[PairItem]) -> Iterator[Path | None]:
    """The a and b files of the pairs still to score, once per use."""
    return (p for it in items if not it.error for p in (it.pair.a_path, it.pair.b_path))


def describe(e: BaseException) -> str:
    """An exception as one line for a row's ``error`` column."""
    msg = str(e).strip() or type(e).__name__
    return " ".join(msg.split())
