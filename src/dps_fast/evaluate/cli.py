"""The ``dps-fast evaluate`` command's body: options in, progress and summary on stderr, exit code.

``dps_fast.cli`` declares the options and calls :func:`main`; this is the CLI layer (it prints).
Exit codes as for ``score``: 0 everything scored, 1 some items failed (excluded and counted),
2 a usage or layout error naming the exact gap (or the ``[eval]`` extra missing).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import DpsFastError
from .summary import FIT_CHOICES, Options


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


class _Bar:
    """One progress line per stage on stderr, only on a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.last = 0.0
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.on:
            return
        now = time.perf_counter()
        if stage == self.stage and now - self.last < 0.2 and done < total:
            return
        if stage != self.stage and self.stage:
            sys.stderr.write("\n")
        self.stage, self.last = stage, now
        sys.stderr.write(f"\r{stage}: {done}/{total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.on and self.stage:
            sys.stderr.write("\n")


def main(
    datasets: list[str],
    *,
    models: list[str],
    out: Path,
    weights: Path | None,
    device: str,
    precision: str,
    batch_size: int | None,
    workers: int | None,
    resize: str | None,
    subsets: str | None,
    jnd: bool,
    higher_better: bool,
    lower_better: bool,
    limit: int | None,
    resume: bool,
    from_scores: Path | None,
    fit: str,
    bootstrap: int,
    ci: float,
    seed: int,
    outlier_k: float,
    tap_subsets: str | None,
    decode: str,
    hf: bool = False,
    hf_cutoff: float = 0.25,
    plots: bool = False,
    aggregate: Path | None = None,
    accuracy: list[str] | None = None,
    robustness: bool = False,
) -> int:
    """Run ``dps-fast evaluate``; returns the exit code."""
    from .deps import MissingExtraError, check
    from .run import EvalConfig, evaluate

    try:
        check()
    except MissingExtraError as e:
        _err(f"error: {e}")
        return 2
    if higher_better and lower_better:
        _err("error: give --higher-better or --lower-better, not both")
        return 2
    if fit not in FIT_CHOICES:
        _err(f"error: --fit must be one of {', '.join(FIT_CHOICES)}, got {fit!r}")
        return 2
    if not 0 < ci < 1:
        _err(f"error: --ci must be in (0, 1), got {ci}")
        return 2
    if from_scores is None and not datasets:
        _err("error: give at least one KIND=PATH (or --from-scores DIR)")
        return 2
    if from_scores is None and not models:
        models = ["lpips-alex"]
    from .sweep import parse_accuracy

    try:
        acc = parse_accuracy(accuracy or [])
    except DpsFastError as e:
        _err(f"error: {e}")
        return 2
    cfg = EvalConfig(
        datasets=list(datasets),
        models=list(models),
        out=out,
        weights=weights,
        device=device,
        precision=precision,
        batch_size=batch_size,
        workers=workers,
        resize=resize,
        subsets=[s.strip() for s in subsets.split(",") if s.strip()] if subsets else None,
        jnd=jnd,
        higher_better=True if higher_better else (False if lower_better else None),
        limit=limit,
        resume=resume,
        from_scores=from_scores,
        tap_subsets=[s.strip() for s in tap_subsets.split(",") if s.strip()] if tap_subsets else [],
        decode=decode,
        hf=hf,
        hf_cutoff=hf_cutoff,
        plots=plots,
        aggregate=aggregate,
        accuracy=acc,
        robustness=robustness,
        options=Options(
            fit=fit, n_resamples=bootstrap, confidence=ci, seed=seed, outlier_k=outlier_k
        ),
    )
    bar = _Bar()
    try:
        result = evaluate(cfg, progress=bar)
    except (DpsFastError, ValueError, FileNotFoundError, OSError) as e:
        bar.close()
        _err("error: " + " ".join(str(e).split()))
        return 2
    bar.close()
    _print_summary(result, out)
    return result.exit_code


def _print_summary(result: object, out: Path) -> None:
    from .run import EvalResult

    assert isinstance(result, EvalResult)
    _err(
        f"evaluate: scored {result.scored} pairs, {result.failed_pairs} failed; "
        f"{result.failed_items} items excluded"
    )
    main_rows = [
        r
        for r in result.rows
        if r.subset == "all"
        and not r.taps
        and r.measure in ("2afc", "jnd_map", "srocc", "plcc_fit")
    ]
    for r in main_rows:
        ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:.4f}, {r.ci_high:.4f}]"
        _err(f"  {r.model:<24} {r.dataset:<14} {r.measure:<9} {r.value:.4f}{ci}  n={r.n}")
    for a in result.aggregate:
        if a["factor"] == "D":
            _err(f"  aggregate D {a['model']}: {a['value']:.4f} (comparable only within this run)")
    _err(f"  → {out / 'summary.csv'}, {out / 'report.md'}")
