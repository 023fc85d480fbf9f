"""The run functions: folders, manifests and all-pairs matrices scored through the scorer,
and the engine(s) of a run made from its options."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine
from ..io.pairing import pair_dirs, read_pairs_manifest
from .items import Record
from .scorer import PairScorer


def model_list(model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Model names of ``"lpips-alex,ssim,psnr"`` or a list of names (bundle folders too)."""
    if isinstance(model, str):
        names = [m.strip() for m in model.split(",")] if "," in model else [model]
    elif isinstance(model, os.PathLike):
        names = [os.fspath(model)]
    else:
        names = [os.fspath(m) for m in model]
    if not names or any(not m for m in names):
        raise ValueError(f"expected model names separated by commas, got {model!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"expected each model once, got {', '.join(names)}")
    return names


def one_engine(engine: Engine | None, options: dict[str, Any]) -> Engine:
    """The one engine of a run that takes a single model (matrix, score_iter); the engine
    options are taken out of ``options``."""
    eng = run_engines(engine, options)
    if isinstance(eng, list):
        raise ValueError(f"this takes one model, got {len(eng)}: run it once per model")
    return eng


def run_engines(
    engine: Engine | Sequence[Engine] | None, options: dict[str, Any]
) -> Engine | list[Engine]:
    """The engine(s) of a run: given, or made from the engine options, which are taken out of
    ``options`` (``model`` may name several models, comma-separated or as a list: one engine
    each, sharing the options)."""
    eng_keys = ("model", "device", "precision", "weights", "threads", "batch_size", "crop_border")
    eng_opts = {k: options.pop(k) for k in eng_keys if k in options}
    if engine is not None:
        if eng_opts:
            raise ValueError(f"pass either engine= or engine options {sorted(eng_opts)}, not both")
        return engine if isinstance(engine, Engine) else list(engine)
    names = model_list(eng_opts.pop("model", "lpips-alex"))
    if len(names) > 1 and eng_opts.get("weights") is not None:
        raise ValueError("weights= selects one model's bundle; with several models pass engines")
    engines = [Engine(m, **eng_opts) for m in names]
    return engines[0] if len(engines) == 1 else engines


def score_dirs(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    *,
    engine: Engine | Sequence[Engine] | None = None,
    match: str = "stem",
    skip: Iterable[tuple[str, str]] = (),
    **options: Any,
) -> Iterator[Record]:
    """Score the image pairs of two folders; yields records in the sorted pairing order.

    Options: ``model``, ``device``, ``precision``, ``weights``, ``threads``, ``batch_size``,
    ``crop_border`` (or an ``engine``, or a list of engines), ``resize``, ``per_layer``,
    ``spatial_dir``, ``workers``, ``decode``. ``model="lpips-alex,ssim,psnr"`` (or a list)
    scores several models, decoding each image once: records then have ``score_<model>``
    columns instead of ``score``.
    (``auto`` | ``cpu`` | ``gpu``: JPEGs decoded on the GPU for a cuda engine).
    """
    pairing = pair_dirs(Path(dir_a), Path(dir_b), match=match)
    eng = run_engines(engine, options)
    done = set(skip)
    yield from PairScorer(eng, **options).run(p for p in pairing.pairs if (p.a, p.b) not in done)


def score_pairs(
    manifest: str | os.PathLike[str] | Iterable[Any],
    *,
    engine: Engine | Sequence[Engine] | None = None,
    skip: Iterable[tuple[str, str]] = (),
    columns: str | tuple[str, str] = ("a", "b"),
    **options: Any,
) -> Iterator[Record]:
    """Score the pairs listed in a CSV manifest (columns a, b or ``columns``, optional id), in
    its order; or, given an iterable of pairs instead of a path, :func:`dps_fast.score_iter`
    (one model)."""
    if not isinstance(manifest, str | os.PathLike):
        from ..stream import score_iter

        if tuple(skip):
            raise ValueError("skip= goes with a manifest path; filter the iterable instead")
        if engine is not None and not isinstance(engine, Engine):
            raise ValueError("an iterable of pairs is scored by one engine; pass one")
        yield from score_iter(manifest, engine=engine, **options)
        return
    pairs = read_pairs_manifest(Path(manifest), columns)
    eng = run_engines(engine, options)
    done = set(skip)
    yield from PairScorer(eng, **options).run(p for p in pairs if (p.a, p.b) not in done)


def distance_matrix(
    folder: str | os.PathLike[str],
    *,
    engine: Engine | None = None,
    resize: str = "none",
    crop: str | None = None,
    workers: int | None = None,
    max_feature_bytes: int | None = None,
    **options: Any,
) -> tuple[np.ndarray, list[str]]:
    """All-pairs distances of a folder's images (features computed once per image while they
    fit ``max_feature_bytes``, default 1 GiB; else block by block).

    Returns a symmetric float32 [N, N] matrix with a zero diagonal, and the image labels. An
    unreadable image gets a NaN row and column (:func:`dps_fast.matrix.compute_matrix` also
    says why). All images must have one size after ``resize`` (``none``, ``short-side:N`` or
    ``WxH``, with ``crop="center"``): otherwise a ValueError lists the sizes.
    """
    from ..matrix import DEFAULT_FEATURE_BUDGET, compute_matrix

    eng = one_engine(engine, options)
    budget = DEFAULT_FEATURE_BUDGET if max_feature_bytes is None else max_feature_bytes
    res = compute_matrix(folder, engine=eng, resize=resize, crop=crop, workers=workers,
                         max_feature_bytes=budget)  # fmt: skip
    return res.matrix, res.labels
