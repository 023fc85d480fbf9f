"""Engine.plan: the one place where score() chooses how to run host pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dps_fast.samples import distortion_pairs


def test_plan_names_the_strategy(engines: Any) -> None:
    squeeze, alex = engines("lpips-squeeze"), engines("lpips-alex")
    assert squeeze.plan(1, 4, 64, 64) == squeeze.plan(4, 1, 64, 64) == "one-vs-many"
    assert squeeze.plan(1, 1, 64, 64) == "pair"  # one pair: nothing to reuse
    # head-heavy squeeze splits from 128² on; alex (10.5 floats per pixel) only from 768²
    assert squeeze.plan(4, 4, 160, 200) == "split" and alex.plan(4, 4, 160, 200) == "pair"
    assert alex.plan(4, 4, 768, 1024) == "split"
    # maps come from the pair_spatial graph whatever the shapes
    assert squeeze.plan(4, 4, 160, 200, spatial=True) == "pair"
    assert squeeze.plan(1, 4, 64, 64, spatial=True) == "pair"


@pytest.mark.parametrize(
    ("na", "nb", "size", "want"),
    [(1, 3, 64, "one-vs-many"), (3, 3, 160, "split"), (3, 3, 64, "pair")],
)
def test_score_runs_the_plan(
    engines: Any, monkeypatch: pytest.MonkeyPatch, na: int, nb: int, size: int, want: str
) -> None:
    eng = engines("lpips-squeeze")
    a, b = distortion_pairs(3, size, size, seed=2)
    ran: list[str] = []
    methods = {"one-vs-many": "_score_one_vs_many", "split": "_score_split",
               "pair": "_score_pair_graph"}  # fmt: skip
    for name, method in methods.items():
        real = getattr(eng, method)
        monkeypatch.setattr(
            eng, method, lambda *args, _r=real, _n=name: ran.append(_n) or _r(*args)
        )
    got = eng.score(a[:na], b[:nb])
    assert ran == [want] and got.shape == (3,) and np.all(np.isfinite(got))
