"""Options of a distributed run (no Ray here: the CLI checks them before importing Ray)."""

from __future__ import annotations

from dataclasses import dataclass

from .plan import DEFAULT_UNIT_SIZE

__all__ = ["DEFAULT_MAX_RESTARTS", "DEFAULT_NO_PROGRESS_TIMEOUT", "RayOptions", "parse_actors"]

DEFAULT_NO_PROGRESS_TIMEOUT = 600.0
"""Seconds without any unit finishing before a run is stopped (Ray's own default is 30 min)."""
DEFAULT_MAX_RESTARTS = 3
"""Restarts of a dead actor, and retries of its unit (Ray's default is forever)."""


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray: where, how many actors, what each gets, unit size, time limits."""

    address: str | None = None
    actors: tuple[int, int] = (1, 1)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    unit_size: int = DEFAULT_UNIT_SIZE
    no_progress_timeout: float = DEFAULT_NO_PROGRESS_TIMEOUT
    max_restarts: int = DEFAULT_MAX_RESTARTS

    def check(self) -> None:
        """ValueError naming the option and the valid range."""
        lo, hi = self.actors
        if lo < 1 or hi < lo:
            raise ValueError(
                f"--actors: expected N ≥ 1 or MIN-MAX with 1 ≤ MIN ≤ MAX, got {lo}-{hi}"
            )
        if self.cpus_per_actor <= 0:
            raise ValueError(f"--cpus-per-actor: expected > 0, got {self.cpus_per_actor}")
        if self.gpus_per_actor < 0:
            raise ValueError(f"--gpus-per-actor: expected ≥ 0, got {self.gpus_per_actor}")
        if self.unit_size < 1:
            raise ValueError(f"--unit-size: expected ≥ 1, got {self.unit_size}")
        if self.no_progress_timeout <= 0:
            raise ValueError(
                f"--no-progress-timeout: expected seconds > 0, got {self.no_progress_timeout}"
            )
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts: expected ≥ 0, got {self.max_restarts}")


def parse_actors(text: str) -> tuple[int, int]:
    """``"4"`` → (4, 4); ``"2-8"`` → (2, 8) (an autoscaling pool)."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
        else:
            lo = hi = int(text)
    except ValueError:
        raise ValueError(f"--actors: expected N or MIN-MAX (e.g. 4 or 2-8), got {text!r}") from None
    if lo < 1 or hi < lo:
        raise ValueError(f"--actors: expected N ≥ 1 or MIN-MAX with 1 ≤ MIN ≤ MAX, got {text!r}")
    return lo, hi
