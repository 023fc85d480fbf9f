"""Result tables: a terminal table and markdown."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("dps_fast.bench")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


_COLUMNS = (
    "model",
    "case",
    "contender",
    "median ms",
    "pairs/s",
    "GFLOP/s",
    "%ceil",
    "%local",
    "×ref",
    "×cl",
    "rounds",
    "fgn",
)


def _cells(r: dict[str, Any]) -> list[str]:
    frac = None if r.get("ceiling_frac") is None else 100 * r["ceiling_frac"]
    local = None if r.get("local_ceiling_frac") is None else 100 * r["local_ceiling_frac"]
    return [
        str(r["model"]),
        f"{r['h']}×{r['w']}×{r['batch']}",
        str(r["contender"]),
        f"{1e3 * r['median_s']:.2f}",
        f"{r['pairs_per_s']:.2f}",
        _fmt(r.get("trunk_gflops"), ".1f"),
        _fmt(frac, ".1f"),
        _fmt(local, ".1f"),
        _fmt(r.get("speedup_vs_reference"), ".2f"),
        _fmt(r.get("speedup_vs_channels_last"), ".2f"),
        f"{r['rounds']}{'*' if r.get('rounds_reduced') else ''}",
        _fmt(r.get("foreign_cores_round_max"), ".2f"),
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`run_engine_suite` rows.

    ×ref, ×cl: speed-up over the reference package and over channels_last PyTorch (median
    times); %ceil: trunk GFLOP/s over the run's matmul ceiling; %local: over the best matmul
    within the case's own rounds; rounds with * were cut to save time;
    fgn: most CPU cores other processes used during one kept round of the case.
    """
    body = [_cells(r) for r in rows]
    widths = [max([len(c), *(len(b[i]) for b in body)]) for i, c in enumerate(_COLUMNS)]
    left = {0, 1, 2}

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            c.ljust(wd) if i in left else c.rjust(wd)
            for i, (c, wd) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(_COLUMNS), "-" * (sum(widths) + len(widths) - 1)]
    out += [line(b) for b in body]
    note = load_note(rows)
    return "\n".join(out + ([note] if note else []))


# Other processes using more cores than this during a round make its ratios noisy.
NOISY_CORES = 0.3


def load_note(rows: Sequence[dict[str, Any]]) -> str:
    """A line under the table when other processes were busy during the rounds (``fgn``)."""
    seen = [r["foreign_cores_round_max"] for r in rows
            if r.get("foreign_cores_round_max") is not None]  # fmt: skip
    if not seen or max(seen) <= NOISY_CORES:
        return ""
    return (
        f"note: other processes used up to {max(seen):.2f} cores during these rounds (fgn): "
        "the times and ratios are noisy; for figures to quote, run without --quick on a quiet "
        "machine"
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`format_table` as a GitHub markdown table."""
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * (len(_COLUMNS) - 3)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(out)
