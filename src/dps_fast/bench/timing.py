"""Timing primitives: the fp32 ceiling, foreign-load measurement, interleaved rounds.

The protocol is docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger("dps_fast.bench")

MATMUL = "matmul-4096"  # the ceiling's matrix product, in the rounds: a local ceiling per case
ROUND = "(round)"  # key of whole-round foreign loads in interleaved(foreign=…)
QUICK_ROUNDS = 3  # rounds of a quick run, and the fewest a long case is cut down to


def measure_ceiling(
    n: int = 4096, repeats: int = 4, *, quiet: float | None = None, max_wait_s: float = 30.0
) -> float:
    """Best GFLOP/s of ``repeats`` float32 ``n × n`` NumPy matrix products (2 FLOPs per MAC).

    With ``quiet`` (cores), each product waits (up to ``max_wait_s``) until other processes use
    less.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"expected n ≥ 1 and repeats ≥ 1, got n={n}, repeats={repeats}")
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best = float("inf")
    for _ in range(repeats):
        if quiet is not None:
            wait_quiet(quiet, max_wait_s)
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


class _ForeignLoad:
    """CPU cores used by other processes (and stolen by the hypervisor) over an interval.

    From /proc/stat (all CPUs' busy time, steal included) minus this process's CPU time; None
    where /proc/stat is missing. Resolution is the kernel tick (10 ms), so short intervals read
    coarsely. With ``children``, the CPU time of this process's waited-for child processes
    counts as its own (contenders that run a subprocess).
    """

    def __init__(self, children: bool = False) -> None:
        self._hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._t0 = self._busy0 = self._own0 = 0.0
        self._children = children

    def _own(self) -> float:
        if not self._children:
            return time.process_time()
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                parts = f.readline().split()
        except OSError:
            return None
        v = [float(x) for x in parts[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice; guest ⊂ user.
        busy = sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0.0)
        return busy / self._hz

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = self._busy() or 0.0
        self._own0 = self._own()

    def stop(self) -> float | None:
        busy = self._busy()
        wall = time.perf_counter() - self._t0
        if busy is None or wall <= 0:
            return None
        own = self._own() - self._own0
        return max(0.0, (busy - self._busy0 - own) / wall)


def wait_quiet(quiet: float, max_wait_s: float, step: float = 0.2) -> float | None:
    """Sleep in ``step`` slices until other processes use under ``quiet`` cores (or time's up)."""
    probe = _ForeignLoad()
    waited = 0.0
    while True:
        probe.start()
        time.sleep(step)
        waited += step
        load = probe.stop()
        if load is None or load <= quiet or waited >= max_wait_s:
            return load


def interleaved(
    contenders: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    pause: float = 0.2,
    *,
    budget_s: float | None = None,
    min_rounds: int = QUICK_ROUNDS,
    foreign: dict[str, list[float | None]] | None = None,
    quiet: float | None = None,
    max_wait_s: float = 30.0,
    retries: int = 0,
    children: bool = False,
    on_round: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Time contenders in turn: warm-up each, then rounds A B C A B C …; seconds per round.

    A pause of ``pause`` seconds precedes every call so that the previous contender's worker
    threads stop spinning. With ``budget_s``, when the first timed round shows that ``rounds``
    rounds would take longer than that, only ``min_rounds`` rounds are run (the lists are then
    shorter: their length says how many rounds ran).

    On a shared machine: ``foreign`` (a dict to fill) receives, per kept call, the CPU cores
    other processes used during it (coarse: kernel ticks are 10 ms), and under the key
    ``"(round)"`` the same for each kept round as a whole. With ``quiet`` (cores), each pause is
    stretched (up to ``max_wait_s``) until other processes use less than that, and a round in
    which they used more is run again, at most ``retries`` times in all. With ``children``,
    contenders that run subprocesses are not counted as foreign load (their CPU time, once
    waited for, is this process's). ``on_round(done, planned)`` is called after each kept round.
    """
    if not contenders:
        raise ValueError("expected at least one contender, got none")
    if rounds < 1 or warmup < 0 or pause < 0:
        raise ValueError(
            f"expected rounds ≥ 1, warmup ≥ 0, pause ≥ 0; got {rounds}, {warmup}, {pause}"
        )
    probe = _ForeignLoad(children)

    def settle() -> None:
        if quiet is None or pause <= 0:
            time.sleep(pause)
        else:
            wait_quiet(quiet, max_wait_s, step=pause)

    for _ in range(warmup):
        for fn in contenders.values():
            settle()
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    loads: dict[str, list[float | None]] = {name: [] for name in contenders}
    loads[ROUND] = []
    round_probe = _ForeignLoad(children)
    planned = rounds
    retries_left = retries
    first = next(iter(contenders))
    while len(times[first]) < planned:
        this_t: dict[str, float] = {}
        this_l: dict[str, float | None] = {}
        round_probe.start()
        for name, fn in contenders.items():
            settle()
            probe.start()
            t0 = time.perf_counter()
            fn()
            this_t[name] = time.perf_counter() - t0
            this_l[name] = probe.stop()
        # Judged over the whole round: one call can be shorter than a few kernel ticks.
        round_load = round_probe.stop()
        noisy = quiet is not None and round_load is not None and round_load > quiet
        if noisy and retries_left > 0:
            retries_left -= 1
            log.info("round discarded: other processes used %.2f cores during it", round_load)
            continue
        for name in contenders:
            times[name].append(this_t[name])
            loads[name].append(this_l[name])
        loads[ROUND].append(round_load)
        if on_round is not None:
            on_round(len(times[first]), planned)
        if len(times[first]) == 1 and budget_s is not None and planned > min_rounds:
            per_round = sum(this_t.values()) + pause * len(contenders)
            if per_round * planned > budget_s:
                planned = max(1, min_rounds)
                log.info(
                    "a round takes %.1f s: %d rounds would exceed %.0f s, running %d",
                    per_round,
                    rounds,
                    budget_s,
                    planned,
                )
    if foreign is not None:
        foreign.update(loads)
    return times


def matmul_4096() -> Callable[[], object]:
    rng = np.random.default_rng(0)
    x = rng.random((4096, 4096), dtype=np.float32)
    y = rng.random((4096, 4096), dtype=np.float32)
    out = np.empty_like(x)
    return lambda: np.matmul(x, y, out=out)
