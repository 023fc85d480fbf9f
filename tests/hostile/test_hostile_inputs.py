"""Hostile input files (issue 12): each bad file fails its own row, wherever it is in the list.

Items: 1 (FIFO among the first pairs), 2 (bomb header among the first pairs), 11 (resize pixel
cap), 16 (non-finite score), 21 (short PNG pixel data), 15 (spatial dir checked first, heatmap
names unique).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dps_fast import Engine
from dps_fast.io import decode_image
from dps_fast.io.decode import ImageDecodeError, read_size
from dps_fast.io.pairing import Pair
from dps_fast.pipeline import PairScorer
from dps_fast.pipeline.items import PairItem
from tests.helpers import images as im
from tests.helpers.fifo import fifo_watchdog
from tests.hostile.hostile_util import (
    SIZE,
    by_name,
    cli,
    image,
    pair_folders,
    png_claiming,
    read_csv,
    short_idat_png,
)


@pytest.fixture(scope="module")
def alex(bundle: Callable[[str], Path]) -> Path:
    return bundle("lpips-alex")


@pytest.fixture(scope="module")
def engine(alex: Path) -> Engine:
    return Engine(str(alex), device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_among_the_first_pairs_fails_its_row(tmp_path, alex) -> None:
    """Item 1: the size probe used to open a FIFO first in the list and hang for ever."""
    a, b = pair_folders(tmp_path, ["b.png", "c.png"])
    im.fifo(a / "a.png")
    image(b / "a.png", 9)
    with fifo_watchdog(a / "a.png", seconds=20):
        res = cli("score", a, b, "--model", alex, code=1)
    rows = by_name(read_csv(res.stdout))
    assert "not a regular file" in rows["a.png"]["error"]
    assert rows["b.png"]["error"] == "" and rows["c.png"]["error"] == ""
    assert "summary: scored 2, failed 1" in res.stderr


@pytest.mark.parametrize("limit", [None, "1000000000"])
def test_bomb_header_among_the_first_pairs_fails_its_row(tmp_path, alex, limit) -> None:
    """Item 2: a bomb header first in the list used to end the run with a traceback, even with
    the pixel limit raised (the probe used Pillow's own limit). 20000×20000 is over twice
    Pillow's default, where Pillow raises; with the limit raised, the (fake) data fails."""
    a, b = pair_folders(tmp_path, ["b.png"])
    (a / "a.png").write_bytes(png_claiming(20000, 20000))
    image(b / "a.png", 9)
    env = None if limit is None else {"DPS_FAST_MAX_PIXELS": limit}
    res = cli("score", a, b, "--model", alex, code=1, env=env)
    rows = by_name(read_csv(res.stdout))
    assert rows["b.png"]["error"] == ""
    err = rows["a.png"]["error"]
    assert rows["a.png"]["score"] == "" and "a.png" in err
    if limit is None:
        assert "over the limit" in err and "DPS_FAST_MAX_PIXELS" in err
    else:  # allowed by the limit: the (fake) pixel data then fails to decode
        assert "truncated or corrupt" in err or "cannot" in err


def test_read_size_applies_the_decode_checks(tmp_path) -> None:
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(60000, 60000))
    with pytest.raises(ImageDecodeError, match="over the limit"):
        read_size(p)
    assert read_size(image(tmp_path / "ok.png", 1, 40, 50)) == (40, 50)
    if hasattr(os, "mkfifo"):
        with pytest.raises(ImageDecodeError, match="not a regular file"):
            read_size(im.fifo(tmp_path / "f.png"))


def test_resize_has_the_pixel_cap(tmp_path, alex) -> None:
    """Item 11: --resize short-side:N could allocate what decoding would refuse."""
    a, b = pair_folders(tmp_path, ["p.png"])
    res = cli("score", a, b, "--model", alex, "--resize", "short-side:30000", code=2)
    assert "over the limit" in res.stderr and "smaller N" in res.stderr
    # a wide image whose resized size alone is over the limit fails its own row
    image(a / "wide.png", 3, 32, 640)
    image(b / "wide.png", 4, 32, 640)
    res = cli(
        "score", a, b, "--model", alex, "--resize", "short-side:64", code=1,
        env={"DPS_FAST_MAX_PIXELS": "40000"},
    )  # fmt: skip
    rows = by_name(read_csv(res.stdout))
    assert rows["p.png"]["error"] == ""
    assert "resized to short-side:64" in rows["wide.png"]["error"]
    assert "over the limit of 40,000" in rows["wide.png"]["error"]


def test_non_finite_score_is_an_error_row(engine) -> None:
    """Item 16: a NaN score was written as an empty score with an empty error, exit 0."""
    scorer = PairScorer(engine, per_layer=True)
    n = len(engine.tap_names)
    for bad in (np.nan, np.inf):
        it = PairItem(Pair("x.png", "y.png", None, None))
        pt = np.full(n, 0.1, np.float32)
        pt[0] = bad
        it.per_tap = {0: pt}  # by engine index (one engine here)
        rec = scorer.records(it)
        assert rec["score"] is None and "non-finite" in rec["error"], rec
        assert all(rec[f"tap_{t}"] is None for t in engine.tap_names)
    assert scorer.stats.failed == 2 and scorer.stats.scored == 0


def test_short_png_pixel_data_fails_its_row(tmp_path) -> None:
    """Item 21: a PNG whose pixel stream stops early decoded with black rows, no error."""
    arr = im.noise(64, 64, 5)
    p = tmp_path / "short.png"
    p.write_bytes(short_idat_png(arr, 4))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(p)
    whole = tmp_path / "whole.png"
    whole.write_bytes(short_idat_png(arr, 64))
    np.testing.assert_array_equal(decode_image(whole), arr)
    assert decode_image(image(tmp_path / "i.png", 2)).shape == (SIZE, SIZE, 3)


def test_unwritable_spatial_dir_stops_before_scoring(tmp_path, alex) -> None:
    """Item 15: every pair used to fail ("scoring failed"), exit 1 instead of 2."""
    a, b = pair_folders(tmp_path, ["p.png"])
    (tmp_path / "plain").write_text("a file\n")
    res = cli("score", a, b, "--model", alex, "--spatial-dir", tmp_path / "plain" / "h", code=2)
    assert "cannot write heatmaps" in res.stderr and res.stdout == ""


def test_heatmap_names_do_not_collide(tmp_path, alex) -> None:
    """Item 15: a:b, a?b and a_b (and sub/x, sub__x) were written to one file each."""
    names = ["a:b.png", "a?b.png", "a_b.png", "sub/x.png", "sub__x.png"]
    a, b = pair_folders(tmp_path, names)
    heat = tmp_path / "heat"
    cli("score", a, b, "--model", alex, "--spatial-dir", heat, "--match", "relpath")
    assert len(list(heat.glob("*.png"))) == len(names)
    assert (heat / "a_b.png").is_file() and (heat / "sub__x.png").is_file()
