"""Planning a distributed run on the driver: pair ids, then units of work (no Ray here).

Every pair gets an ``id``: the manifest's ``id`` column when it has one (then every id must be
present and unique), else its 1-based row number. Units group the pairs that share an image
(the side that repeats more), so that a reference used by many pairs is decoded and run once
per unit, and pack whole groups into units of at most ``unit_size`` pairs (a group larger than
that is cut into chunks).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.pairing import Pair, PairingError

__all__ = [
    "DEFAULT_UNIT_SIZE",
    "Planned",
    "assign_ids",
    "pairs_digest",
    "plan_units",
    "unit_from_row",
    "unit_row",
]

DEFAULT_UNIT_SIZE = 1024
"""Pairs per unit. A unit should be seconds of work: each one costs a Ray task (~60 ms
measured) and is the granularity of retries and of --resume, and one unit must finish well
within the no-progress timeout. 1024 pairs of 1024×768 are ~1 s on one H200 with GPU
decoding and ~3 minutes on a 2-core CPU actor: set --unit-size for the hardware."""


@dataclass(frozen=True)
class Planned:
    """A pair with the id the run knows it by (the resume key)."""

    id: str
    pair: Pair


def assign_ids(pairs: Sequence[Pair]) -> list[Planned]:
    """Ids for every pair: the manifest's (unique, non-empty) or the 1-based row number."""
    if not any(p.id is not None for p in pairs):
        return [Planned(str(i), p) for i, p in enumerate(pairs, 1)]
    seen: dict[str, int] = {}
    bad: list[str] = []
    for row, p in enumerate(pairs, 1):
        pid = p.id or ""
        if not pid:
            bad.append(f"row {row} has an empty id")
        elif pid in seen:
            bad.append(f"id {pid!r} is on rows {seen[pid]} and {row}")
        else:
            seen[pid] = row
    if bad:
        shown = "; ".join(bad[:5]) + (f"; … ({len(bad)} in all)" if len(bad) > 5 else "")
        raise PairingError(
            f"the distributed backend keys results by the manifest's id column, so every id "
            f"must be present and unique: {shown}. Fix the ids, or drop the id column (rows are "
            "then numbered)"
        )
    return [Planned(str(p.id), p) for p in pairs]


def pairs_digest(planned: Iterable[Planned]) -> str:
    """sha256 over (id, a, b) of every pair: a resume checks it is resuming the same work."""
    h = hashlib.sha256()
    for it in planned:
        for s in (it.id, it.pair.a, it.pair.b):
            h.update(s.encode("utf-8", "surrogateescape"))
            h.update(b"\0")
        h.update(b"\n")
    return h.hexdigest()


def _key(path: Path | None) -> str:
    return "" if path is None else str(path)


def plan_units(
    planned: Sequence[Planned], unit_size: int = DEFAULT_UNIT_SIZE
) -> list[list[Planned]]:
    """Units of at most ``unit_size`` pairs, pairs that share an image kept together.

    Pairs are grouped by the side whose files repeat more (a stable sort, so the input order
    holds within a group); whole groups are packed first-fit in order; a group larger than
    ``unit_size`` is cut into chunks of ``unit_size``.
    """
    if unit_size < 1:
        raise ValueError(f"expected unit_size ≥ 1, got {unit_size}")
    if not planned:
        return []
    distinct_a = len({_key(it.pair.a_path) for it in planned})
    distinct_b = len({_key(it.pair.b_path) for it in planned})
    side = "a" if distinct_a <= distinct_b else "b"

    def key(it: Planned) -> str:
        return _key(it.pair.a_path if side == "a" else it.pair.b_path)

    sizes = Counter(key(it) for it in planned)
    groups: dict[str, list[Planned]] = {}
    for it in planned:
        groups.setdefault(key(it), []).append(it)
    # Big groups first keeps big shared images whole; ties keep the manifest order.
    order = sorted(groups, key=lambda k: -sizes[k])
    units: list[list[Planned]] = []
    current: list[Planned] = []
    for k in order:
        group = groups[k]
        for s in range(0, len(group), unit_size):
            chunk = group[s : s + unit_size]
            if len(current) + len(chunk) > unit_size:
                units.append(current)
                current = []
            current.extend(chunk)
    if current:
        units.append(current)
    return units


def _path_cell(path: Path | None) -> str | None:
    return None if path is None else str(path)


def unit_row(unit_id: str, unit: Sequence[Planned]) -> dict[str, Any]:
    """One unit as one row (list columns): a Ray block holds one unit, a batch of 1 is a unit."""
    return {
        "unit": unit_id,
        "id": [it.id for it in unit],
        "a": [it.pair.a for it in unit],
        "b": [it.pair.b for it in unit],
        "a_path": [_path_cell(it.pair.a_path) for it in unit],
        "b_path": [_path_cell(it.pair.b_path) for it in unit],
        "error": [it.pair.error for it in unit],
    }


def unit_from_row(row: dict[str, Any]) -> tuple[str, list[Planned]]:
    """The inverse of :func:`unit_row`."""
    out = []
    cols = zip(
        row["id"], row["a"], row["b"], row["a_path"], row["b_path"], row["error"], strict=True
    )
    for pid, a, b, ap, bp, err in cols:
        pair = Pair(
            str(a),
            str(b),
            None if ap is None else Path(ap),
            None if bp is None else Path(bp),
            error=str(err or ""),
            id=str(pid),
        )
        out.append(Planned(str(pid), pair))
    return str(row["unit"]), out
