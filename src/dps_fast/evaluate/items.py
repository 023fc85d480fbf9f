"""What a dataset reader produces: judged items, each with the image pairs to score.

One item is one human judgment: a 2AFC triplet (two pairs: p0–ref, p1–ref), a JND pair (one
pair: p0–p1) or a rated distorted image (one pair: distorted–reference). Pairs carry names
relative to the dataset root (the resume key of the score files) and the files to decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DpsFastError

PROTOCOLS = ("2afc", "jnd", "mos")


class LayoutError(DpsFastError, ValueError):
    """A dataset folder does not have the expected layout (names the exact gap)."""


@dataclass(frozen=True)
class ItemPair:
    """One pair of an item: ``role`` (``p0``, ``p1``, ``d``), names and files (a, b)."""

    role: str
    a: str
    b: str
    a_path: Path
    b_path: Path


@dataclass(frozen=True)
class Item:
    """One judgment: ``label`` is the fraction preferring p1 (2AFC), the fraction saying
    "same" (JND) or the rating (MOS, in the dataset's own direction); ``label_std`` the
    rating's spread (NaN when the dataset has none); ``group`` the reference (clusters)."""

    id: str
    subset: str
    label: float
    pairs: tuple[ItemPair, ...]
    group: str = ""
    dtype: str = ""
    label_std: float = math.nan


@dataclass
class Dataset:
    """A validated dataset: items in a fixed order, how to read the labels."""

    name: str
    kind: str
    protocol: str
    root: Path
    items: list[Item]
    higher_better: bool = True  # MOS direction of ``label``
    resize: str = "none"  # the protocol's resize (BAPPS: short-side:64)
    notes: list[str] = field(default_factory=list)

    @property
    def subsets(self) -> list[str]:
        return sorted({it.subset for it in self.items})

    def limit(self, n: int | None) -> Dataset:
        """A deterministic subset: every k-th item so that about ``n`` remain."""
        if n is None or n >= len(self.items):
            return self
        step = len(self.items) / n
        keep = [self.items[int(i * step)] for i in range(n)]
        return Dataset(
            self.name,
            self.kind,
            self.protocol,
            self.root,
            keep,
            self.higher_better,
            self.resize,
            [*self.notes, f"--limit {n}: {n} of {len(self.items)} items"],
        )
