"""Scoring pairs on a cluster (Ray Data): ``score_pairs_ray`` and ``build_dataset``.

Importing this package does not import Ray; the two entry points (in :mod:`.ray_backend`)
do, on first use. Planning (:mod:`.plan`), unit scoring (:mod:`.units`) and the output folder
(:mod:`.output`) are plain Python, tested without a cluster.
"""

from __future__ import annotations

from typing import Any

from .options import RayOptions, parse_actors
from .output import read_results
from .plan import DEFAULT_UNIT_SIZE, assign_ids, plan_units
from .units import result_schema, score_unit

__all__ = [
    "DEFAULT_UNIT_SIZE",
    "RayOptions",
    "assign_ids",
    "build_dataset",
    "parse_actors",
    "plan_units",
    "read_results",
    "result_schema",
    "score_pairs_ray",
    "score_unit",
]


def __getattr__(name: str) -> Any:
    """``score_pairs_ray`` and ``build_dataset`` import Ray when first asked for."""
    if name in ("score_pairs_ray", "build_dataset", "RayRun"):
        from . import ray_backend

        return getattr(ray_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
