"""The CLI's ``--backend ray``: options checked, Ray imported only here, a summary returned.

Returns (exit code, lines for stderr) instead of printing: library code never prints. Exit 0
every pair scored, 1 some pairs failed (their rows say why), 2 the run could not start or
finish (the first line says why and what to do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._install import install_command
from ..errors import DpsFastError
from .options import RayOptions, parse_actors

BACKENDS = ("local", "ray")


def run_ray_cli(
    pairs: list[Any],
    out: Path,
    *,
    backend: str,
    address: str | None,
    actors: str,
    cpus_per_actor: float,
    gpus_per_actor: float,
    unit_size: int,
    no_progress_timeout: float,
    **score_options: Any,
) -> tuple[int, list[str]]:
    """Run :func:`~dps_fast.distributed.ray_backend.score_pairs_ray` for the CLI."""
    if backend not in BACKENDS:
        return 2, [f"error: --backend must be one of {', '.join(BACKENDS)}, got {backend!r}"]
    try:
        options = RayOptions(
            address=address, actors=parse_actors(actors), cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor, unit_size=unit_size,
            no_progress_timeout=no_progress_timeout,
        )  # fmt: skip
        options.check()
    except ValueError as e:
        return 2, [f"error: {e}"]
    try:
        from .ray_backend import score_pairs_ray
    except ImportError as e:
        return 2, [
            f"error: --backend ray needs Ray: {install_command('ray')} ({e})",
        ]
    try:
        run = score_pairs_ray(pairs, out, options=options, **score_options)
    except (DpsFastError, ValueError, FileNotFoundError) as e:
        return 2, ["error: " + " ".join(str(e).split())]
    lines = []
    if run.truncated:
        lines.append(
            f"note: {len(run.truncated)} unreadable shard(s) deleted and their pairs redone: "
            + ", ".join(run.truncated[:5])
        )
    skipped = f", skipped {run.skipped} (already in --out)" if run.skipped else ""
    lines.append(f"summary: scored {run.scored}, failed {run.failed}{skipped}")
    rate = (run.total - run.skipped) / run.seconds if run.seconds > 0 else 0.0
    lines.append(
        f"  backend ray, {run.units} unit(s), {run.seconds:.1f} s, {rate:.1f} pairs/s → {out}"
    )
    if run.crashed:
        shown = "; ".join(f"id {c['id']} ({c['a']}, {c['b']})" for c in run.crashed[:5])
        lines.insert(
            0,
            f"error: {len(run.crashed)} pair(s) crashed their worker, again when retried alone: "
            f"{shown}. They have error rows; remove or fix them, then rerun with --resume",
        )
        return 2, lines
    return (1 if run.failed else 0), lines
