"""The statistics step of ``dps-fast evaluate``: batch bootstrap statistics vs per resample.

    python benchmarks/evaluate_stats_check.py [--refs 25] [--types 24] [--levels 5]
        [--rounds 5] [--name NAME]

A TID2013-shaped score table (``--refs`` references × ``--types`` distortion types ×
``--levels`` levels; 3000 items by default, as TID2013) is summarised by ``table_rows`` with
the defaults (1000 BCa resamples, logistic4 refit on the whole-dataset row, per-type rows)
twice per round, alternating: with the batch forms of the MOS correlations (``rowstats``, as
``evaluate`` runs now) and with them disabled, which is the previous computation (scipy's
``rankdata``/``kendalltau`` per resample; the same code path as before the batch forms). Both
see the same seeded resamples; the largest difference of any value or CI bound between the
two is printed too. Scipy is imported before timing. The machine is shared: compare the
ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from dps_fast.evaluate import summary as S
from dps_fast.evaluate.deps import need
from dps_fast.evaluate.scoring import ScoreTable

HERE = Path(__file__).resolve().parent


def tid_table(refs: int, types: int, levels: int, seed: int = 0) -> ScoreTable:
    """Distances a noisy function of the level, MOS falling with it (5 decimals, as TID2013's
    file; the distances 6 significant digits, as a score file's), rating spreads per item."""
    rng = np.random.default_rng(seed)
    keys = [(r, t, lv) for r in range(refs) for t in range(types) for lv in range(levels)]
    n = len(keys)
    lv = np.array([k[2] for k in keys], np.float64)
    d = np.array([float(f"{v:.6g}") for v in 0.1 * lv + 0.01 + rng.gamma(2.0, 0.04, n)])
    mos = np.round(6.0 - 0.8 * lv + rng.normal(0, 0.6, n), 5)
    return ScoreTable(
        "lpips-alex", "tid2013", "mos", True, True, "sum", ["t0", "t1"],
        [f"i{r:02d}_{t:02d}_{v}" for r, t, v in keys], np.array(["all"] * n, dtype=object),
        mos, np.abs(rng.normal(0.8, 0.1, n)),
        np.array([f"I{r:02d}" for r, _, _ in keys], dtype=object),
        np.array([f"{t + 1:02d}" for _, t, _ in keys], dtype=object), ["d"], {"d": d},
        {"d": np.stack([0.4 * d, 0.6 * d], 1)}, {"d": [("a", "b")] * n}, 0, {},
    )  # fmt: skip


def timed(table: ScoreTable, batch: bool) -> tuple[float, list[S.Row]]:
    orig = S._batch
    if not batch:
        S._batch = lambda *a: None  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        rows = S.table_rows(table, S.Options())
        return time.perf_counter() - t0, rows
    finally:
        S._batch = orig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refs", type=int, default=25)
    ap.add_argument("--types", type=int, default=24)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    need("scipy.stats"), need("scipy.optimize")
    table = tid_table(args.refs, args.types, args.levels)
    times: dict[str, list[float]] = {"per-resample": [], "batch": []}
    loads, diff = [], 0.0
    for r in range(args.rounds):
        order = ["per-resample", "batch"] if r % 2 == 0 else ["batch", "per-resample"]
        out = {}
        for k in order:
            sec, out[k] = timed(table, k == "batch")
            times[k].append(sec)
            loads.append(os.getloadavg()[0])
        for a, b in zip(out["batch"], out["per-resample"], strict=True):
            for x, y in ((a.value, b.value), (a.ci_low, b.ci_low), (a.ci_high, b.ci_high)):
                if not (np.isnan(x) and np.isnan(y)):
                    diff = max(diff, abs(x - y))
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["per-resample"] / med["batch"]
    lines = [
        f"# evaluate's statistics step: batch vs per-resample, {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {os.cpu_count()} vCPUs; **shared with other jobs** (1-minute load average "
        f"after each run {min(loads):.1f}–{max(loads):.1f}): compare the ratio only.",
        f"Table: TID2013-shaped, {args.refs} references × {args.types} types × {args.levels} "
        f"levels = {table.n} items; `table_rows` with the defaults (1000 BCa resamples, "
        f"logistic4, per-type rows: {len(out['batch'])} rows); {args.rounds} interleaved "
        "rounds, medians.",
        "",
        "| statistics | seconds (each round) | median |",
        "|---|---|---|",
        *(f"| {k} | {', '.join(f'{t:.2f}' for t in v)} | {med[k]:.2f} |" for k, v in times.items()),
        "",
        f"per-resample / batch = **{speedup:.2f}×**; largest difference of any value or CI "
        f"bound between the two: {diff:.2g}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.name:
        (HERE / "results" / f"{args.name}.md").write_text(text)
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": {"cpus": os.cpu_count(), "shared": True, "load_after_each_run": loads},
            "table": {"refs": args.refs, "types": args.types, "levels": args.levels},
            "items": table.n,
            "rounds": args.rounds,
            "seconds": times,
            "median": med,
            "speedup": speedup,
            "max_abs_difference": diff,
        }
        (HERE / "results" / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
