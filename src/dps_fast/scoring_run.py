"""A scoring run into a results file: provenance, lock and resume, rows, meta and summary.

What ``dps-fast score`` and ``score-pairs`` do after parsing their options, as library code
an embedder can call::

    scorer = PairScorer(engines, resize="none")
    with ScoringRun(scorer, pairs, out=Path("scores.csv"), resume=True,
                    provenance=provenance(engines, {"resize": "none"})) as run:
        run.open_writer()
        run.write_rows()
        outcome = run.finish()

``ScoringRun`` takes the results file's lock, checks and trims it for a resume (``run.todo``
are the pairs still to score), writes the meta at the start (so an interrupted run can be
checked by the next resume) and at the end (rows back in pairing order, the whole file's
summary). Nothing here prints or exits: errors are raised (``DpsFastError`` for a refused
resume or a locked file, ``OSError`` for a failed write), and ``run.written`` says how many
rows went out when a run is interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from ._version import __version__
from .io.results import ResultWriter, results_format
from .io.resume import ResultsFile

if TYPE_CHECKING:
    from .engine import Engine
    from .pipeline import PairScorer

__all__ = ["RunOutcome", "ScoringRun", "model_provenance", "provenance"]

_MODEL_KEYS = ("model", "bundle", "bundle_sha256", "weights", "device", "providers",
               "precision", "lower_is_better", "crop_border")  # fmt: skip


def model_provenance(engine: Engine) -> dict[str, Any]:
    """What identifies one model's scores: bundle, its hash, weights, device, direction."""
    info = engine.info
    return {k: info[k] for k in _MODEL_KEYS}


def provenance(engines: Engine | Sequence[Engine], options: dict[str, Any]) -> dict[str, Any]:
    """The meta of a results file: the model(s) that scored it, versions and the run's options.

    One model: its fields at the top level. Several: ``model`` is the list of names,
    ``models`` one entry per model, ``device`` and ``precision`` the first model's.
    """
    from .cuda import import_ort

    versions = {"dps_fast": __version__, "onnxruntime": import_ort().__version__}
    engines = [engines] if not isinstance(engines, Sequence) else list(engines)
    if len(engines) > 1:
        models = [model_provenance(e) for e in engines]
        return {
            "model": [m["model"] for m in models],
            "models": models,
            "device": models[0]["device"],
            "precision": models[0]["precision"],
            **versions,
            "options": options,
        }
    return {**model_provenance(engines[0]), **versions, "options": options}


@dataclass
class RunOutcome:
    """How a run went: this run's summary (``run``: counts, statistics, ``pairs_per_s``,
    ``seconds``), the whole results file's (``whole``, None without a file), the provenance
    written to its meta, and whether some pair failed."""

    run: dict[str, Any]
    whole: dict[str, Any] | None
    provenance: dict[str, Any]
    failed: bool


class ScoringRun:
    """Score ``pairs`` with a :class:`~dps_fast.pipeline.PairScorer` into ``out`` (CSV or
    JSONL by suffix; None: CSV to ``stream``, default stdout).

    Use it as a context manager: entering takes the lock and plans the resume; then
    :meth:`open_writer`, :meth:`write_rows` and :meth:`finish`, each of which may raise; leaving
    releases the lock.
    """

    def __init__(
        self,
        scorer: PairScorer,
        pairs: Sequence[Any],
        *,
        provenance: dict[str, Any],
        out: Path | None = None,
        resume: bool = False,
        notes: Sequence[str] = (),
        stream: TextIO | None = None,
    ) -> None:
        if resume and out is None:
            raise ValueError("resume=True needs out, the results file to resume")
        if out is not None:
            results_format(out)  # a clear error for an unknown suffix, before anything runs
        self.scorer = scorer
        self.pairs = list(pairs)
        self.out = out
        self.resume = resume
        self.stream = stream
        self.columns = scorer.columns(with_id=any(p.id is not None for p in self.pairs))
        self.provenance = {**provenance, "decode": scorer.decode_mode,
                           "decode_reason": scorer.decode_reason}  # fmt: skip
        self.todo: list[Any] = self.pairs
        self.notes: list[str] = list(notes)
        self.written = 0
        self._file: ResultsFile | None = None
        self._writer: ResultWriter | None = None
        self._seconds = 0.0

    def __enter__(self) -> ScoringRun:
        """Lock ``out``, plan the resume (``todo``, ``notes``) and write the starting meta."""
        if self.out is not None:
            rf = ResultsFile(self.out, self.columns, self.pairs, self.provenance,
                             resume=self.resume)  # fmt: skip
            rf.__enter__()
            self._file = rf
            self.todo = rf.plan.todo
            self.notes = [*rf.plan.notes, *self.notes]
            self.scorer.stats.skipped = rf.plan.skipped
        return self

    def open_writer(self) -> ResultWriter:
        """Open the rows file (appending after a resume) or the stream; writes the header."""
        self._writer = ResultWriter(self.out, self.columns, resume=self.resume, stream=self.stream)
        return self._writer

    def write_rows(self) -> int:
        """Score ``todo`` and write each row as it comes; returns the rows written.

        Scoring stops (its decoding threads too) when this returns or raises, a
        ``KeyboardInterrupt`` included; ``written`` then says how far it got.
        """
        if self._writer is None:
            self.open_writer()
        assert self._writer is not None
        t0 = time.perf_counter()
        rows = self.scorer.run(self.todo)
        try:
            with self._writer:
                for rec in rows:
                    self._writer.write(rec)
                    self.written += 1
        finally:
            close = getattr(rows, "close", None)  # a generator: stops its decoding threads
            if close is not None:
                close()
            self._seconds = time.perf_counter() - t0
        return self.written

    def finish(self) -> RunOutcome:
        """This run's summary; with ``out``, the rows put in pairing order and the final meta
        (``summary`` of the whole file, ``last_run`` this run) written."""
        stats = self.scorer.stats
        run = stats.summary()
        elapsed = self._seconds
        processed = stats.scored + stats.failed  # failed pairs were processed too
        run["pairs_per_s"] = processed / elapsed if elapsed > 0 else 0.0
        run["seconds"] = elapsed
        hm = self.scorer.heatmaps
        if hm is not None:
            self.provenance["heatmaps"] = {
                "dir": str(hm.folder), "vmax": hm.vmax, "auto": hm.auto, "style": hm.style,
                "npy": hm.npy,
            }  # fmt: skip
        whole = None
        if self._file is not None:
            self._file.provenance.update(self.provenance)
            whole = self._file.finish(run)["summary"]
        return RunOutcome(run, whole, self.provenance, bool(stats.failed))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.__exit__(exc_type, exc, tb)
