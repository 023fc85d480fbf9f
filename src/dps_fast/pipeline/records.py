"""Result rows and run counters: one record per pair, one model's columns or several models'.

A model's score must be a finite number; NaN or ±inf from a model (NaN in its weights, an
overflow) makes that model's result an error, never a score. The one exception is a classical
measure's +inf (PSNR of identical images), which is the measure's own value and written as
``inf``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import Engine
from ..io.summary import score_stats
from .items import PairItem, Record


@dataclass
class RunStats:
    """Counters a run fills in as it goes (the CLI prints them as its summary)."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    scores: list[float] = field(default_factory=list)
    # Several models in one run: each model's scores and failures (rows count as failed when
    # any model failed them; ``scores`` stays empty).
    model_scores: dict[str, list[float]] = field(default_factory=dict)
    model_failed: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scored": self.scored, "failed": self.failed}
        if self.skipped:
            out["skipped (resume)"] = self.skipped
        out.update(score_stats(self.scores))
        if self.model_scores:
            out["models"] = {
                m: {"scored": len(s), "failed": self.model_failed[m], **score_stats(s)}
                for m, s in self.model_scores.items()
            }
        return out


def checked_score(engine: Engine, per_tap: np.ndarray) -> tuple[float | None, str]:
    """``engine``'s score from its per-tap values, or None and the error when it is not a
    number the model may give (see the module docstring)."""
    score = float(engine.reduce(per_tap[None])[0])
    # PSNR of identical images is +inf by definition (classical measures only).
    inf_ok = engine.bundle.head == "classical" and not np.isnan(per_tap).any()
    if not inf_ok and not (np.isfinite(score) and np.isfinite(per_tap).all()):
        return None, f"the model gave a non-finite score ({score}): {non_finite_fix(engine)}"
    return score, ""


def non_finite_fix(engine: Engine) -> str:
    """What to do about a NaN or ±inf score. Not a re-export: the engine checked the bundle's
    files against their hashes before running them, so the same weights would give the same
    graphs and the same score. Reduced precision can overflow; at fp32 the weights are at fault
    (or, for a classical measure, which has none, dps-fast itself)."""
    if engine.precision != "fp32":
        return (
            f"{engine.precision} ran out of range on this pair; score it in float32 "
            "(--precision fp32, or precision='fp32')"
        )
    w = engine.bundle.manifest.weights
    if w is None:
        return (
            "the bundle's files are as shipped (hashes checked) and a classical measure has no "
            "weights: this is a dps-fast bug, please report it with this pair"
        )
    return (
        "the bundle's files are as exported (hashes checked), so re-exporting it from the same "
        f"weights would give the same score: check the weights it was made from ({w.name}, "
        f"sha256 {w.sha256[:16]}…) for NaN or inf values, and export from a sound file"
    )


class RecordMaker:
    """Builds the record of a scored (or failed) pair and counts it in ``stats``."""

    def __init__(
        self, engines: Sequence[Engine], names: list[str], per_layer: bool, stats: RunStats
    ) -> None:
        self.engines = list(engines)
        self.names = names
        self.per_layer = per_layer
        self.stats = stats

    def __call__(self, it: PairItem) -> Record:
        if len(self.engines) > 1:
            return self._multi(it)
        return self._single(it)

    def _single(self, it: PairItem) -> Record:
        engine = self.engines[0]
        taps = engine.tap_names
        if not it.error and 0 in it.model_errors:
            it.error = it.model_errors[0]
        rec: Record = {"a": it.pair.a, "b": it.pair.b, "score": None, "error": it.error}
        score = None
        if not it.error and 0 in it.per_tap:
            pt = np.asarray(it.per_tap[0], np.float32)
            score, it.error = checked_score(engine, pt)
            rec["error"] = it.error
        if score is not None:
            rec["score"] = score
            self.stats.scored += 1
            self.stats.scores.append(score)
            if self.per_layer:
                for name, v in zip(taps, pt, strict=True):
                    rec[f"tap_{name}"] = float(v)
        else:
            if not rec["error"]:
                rec["error"] = "not scored"
            self.stats.failed += 1
            if self.per_layer:
                for name in taps:
                    rec[f"tap_{name}"] = None
        if it.pair.id is not None:
            rec["id"] = it.pair.id
        return rec

    def _multi(self, it: PairItem) -> Record:
        """One row for several models: ``score_<model>`` each, one ``error`` naming the
        models that failed the pair (the others' scores stay)."""
        rec: Record = {"a": it.pair.a, "b": it.pair.b}
        errors = []
        for k, (name, eng) in enumerate(zip(self.names, self.engines, strict=True)):
            err = it.error or it.model_errors.get(k) or ("" if k in it.per_tap else "not scored")
            pt = None if err else np.asarray(it.per_tap[k], np.float32)
            score = None
            if pt is not None:
                score, err = checked_score(eng, pt)
            if score is None:
                rec[f"score_{name}"] = None
                self.stats.model_failed[name] += 1
                if not it.error:
                    errors.append(f"{name}: {err}")
            else:
                rec[f"score_{name}"] = score
                self.stats.model_scores.setdefault(name, []).append(score)
            if self.per_layer:
                values = pt if score is not None else [None] * len(eng.tap_names)
                for tap, v in zip(eng.tap_names, values, strict=False):  # type: ignore[arg-type]
                    rec[f"tap_{name}_{tap}"] = None if v is None else float(v)
        rec["error"] = it.error or "; ".join(errors)
        if rec["error"]:
            self.stats.failed += 1
        else:
            self.stats.scored += 1
        if it.pair.id is not None:
            rec["id"] = it.pair.id
        return rec
