"""The Python API for pipelines: a stream of pairs in, rows out; a callable metric; the
direction and tap names; one error hierarchy; a reference's features kept for many candidates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dps_fast
from tests.helpers import images as im

H, W = 64, 80
TOL = 1e-6


@pytest.fixture(scope="module")
def alex(engines: Any) -> dps_fast.Engine:
    return engines("lpips-alex")


def _pairs(tmp_path: Path) -> list[Any]:
    """Paths, arrays (uint8 and float), bytes, an id, and every kind of bad pair."""
    a0 = im.save_array(im.textured(H, W, 1), tmp_path / "a0.png")
    b0 = im.save_array(im.textured(H, W, 2), tmp_path / "b0.png")
    other = im.textured(48, 48, 3)
    nan = np.full((3, H, W), 0.5, np.float32)
    nan[0, 0, 0] = np.nan
    return [
        (a0, b0),  # paths
        (im.textured(H, W, 4), im.textured(H, W, 5), "arrays"),  # uint8 HWC, with an id
        {"a": str(a0), "b": im.textured(H, W, 6).transpose(2, 0, 1) / 255.0},  # str + float
        (tmp_path / "missing.png", b0),  # bad: missing file
        (im.textured(H, W, 7), other),  # bad: size mismatch
        (nan, nan),  # bad: NaN
        (im.textured(20, 20, 8), im.textured(20, 20, 9)),  # bad: too small
        (im.encoded(im.textured(48, 48, 10), "PNG"), other),  # bytes, another size
        "not a pair",  # bad: not a pair
    ]


def test_score_iter_rows_in_order_with_per_row_errors(alex, tmp_path) -> None:
    pairs = _pairs(tmp_path)
    rows = list(dps_fast.score_iter((p for p in pairs), engine=alex, per_layer=True))
    assert [r["index"] for r in rows] == list(range(len(pairs)))
    good = [0, 1, 2, 7]
    for i, r in enumerate(rows):
        if i in good:
            p = pairs[i]
            a, b = (p["a"], p["b"]) if isinstance(p, dict) else (p[0], p[1])
            ref = float(alex.score(a, b)[0])
            assert r["error"] == "" and abs(r["score"] - ref) <= TOL, (i, r)
            taps = [r[f"tap_{t}"] for t in alex.taps]
            assert abs(sum(taps) - r["score"]) <= 1e-5
        else:
            assert r["score"] is None and r["error"], (i, r)
            assert all(r[f"tap_{t}"] is None for t in alex.taps)
    assert rows[0]["a"].endswith("a0.png") and rows[1]["a"] is None and rows[1]["id"] == "arrays"
    assert "missing.png" in rows[3]["error"] and "not found" in rows[3]["error"]
    assert "size mismatch" in rows[4]["error"]
    assert "NaN" in rows[5]["error"]
    assert "at least" in rows[6]["error"]
    assert "expected a pair" in rows[8]["error"]
    # score_pairs takes an iterable of pairs too (not only a CSV path)
    again = list(dps_fast.score_pairs(iter(pairs[:3]), engine=alex))
    assert [r["score"] for r in again] == [r["score"] for r in rows[:3]]


def test_score_iter_reads_the_stream_lazily(alex) -> None:
    pulled = 0

    def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal pulled
        for k in range(40):
            pulled += 1
            yield im.textured(H, W, k), im.textured(H, W, k + 100)

    it = dps_fast.score_iter(stream(), engine=alex, max_bytes=1, workers=1)
    first = next(it)
    # one pair per round (max_bytes=1) and two decodes ahead: the stream is not read ahead
    assert first["index"] == 0 and pulled <= 4, pulled
    rest = list(it)
    assert pulled == 40 and [r["index"] for r in rest] == list(range(1, 40))
    whole = list(dps_fast.score_iter(stream(), engine=alex))  # default budget: one round
    np.testing.assert_allclose(
        [r["score"] for r in [first, *rest]], [r["score"] for r in whole], rtol=0, atol=TOL
    )
    with pytest.raises(TypeError, match="score_pairs"):
        next(dps_fast.score_iter("pairs.csv", engine=alex))


def test_callable_direction_and_taps(alex) -> None:
    a, b = im.textured(H, W, 1), im.textured(H, W, 2)
    np.testing.assert_array_equal(alex(a, b), alex.score(a, b))
    np.testing.assert_array_equal(alex(a, b, per_layer=True), alex.score(a, b, per_layer=True))
    assert alex.lower_is_better is True and alex.info["lower_is_better"] is True
    assert isinstance(alex.taps, tuple) and alex.taps == tuple(alex.tap_names)
    assert len(alex.taps) == alex.score(a, b, per_layer=True).shape[1] == 5


def test_torch_tensors_that_require_grad(alex) -> None:
    torch = pytest.importorskip("torch")
    x = torch.rand(2, 3, H, W, requires_grad=True)
    y = torch.rand(2, 3, H, W)
    got = alex.score(x, y)  # detached and read; torch's own "requires grad" error no more
    np.testing.assert_array_equal(got, alex.score(x.detach().numpy(), y.numpy()))
    f = alex.features(x)
    assert f[0].shape[0] == 2
    assert alex.pairwise(x).shape == (2, 2)
    assert alex.reference(x[:1]).score(y).shape == (2,)
    assert x.requires_grad and x.grad is None  # the caller's tensor is left as it was


def test_one_error_hierarchy(alex, tmp_path) -> None:
    names = ["BundleError", "BundleNotFoundError", "DistributedError", "ImageDecodeError",
             "InputError", "InputTypeError", "PairingError", "ProviderError", "UnknownModelError",
             "WeightsError", "OutputValidationError"]  # fmt: skip
    for name in names:
        cls = getattr(dps_fast, name)
        assert issubclass(cls, dps_fast.DpsFastError), name
    x = im.textured(H, W, 1)
    with pytest.raises(dps_fast.ImageDecodeError, match="not found") as e:
        alex.score(tmp_path / "missing.png", x)
    assert isinstance(e.value, dps_fast.DpsFastError) and isinstance(e.value, ValueError)
    with pytest.raises(dps_fast.InputError, match="same size"):
        alex.score(x, im.textured(48, 48, 2))
    with pytest.raises(dps_fast.InputTypeError, match="score_iter"):
        alex.score((i for i in [x]), x)
    with pytest.raises(dps_fast.InputTypeError, match="uint8"):
        alex.score(x.astype(np.uint16), x)
    with pytest.raises(dps_fast.PairingError):
        list(dps_fast.score_pairs(tmp_path / "none.csv", engine=alex))


def test_reference_keeps_features_for_many_candidates(alex) -> None:
    ref_img = im.textured(H, W, 1)
    cands = np.stack([im.textured(H, W, k) for k in range(2, 9)])
    ref = alex.reference(ref_img)
    assert ref.nbytes == sum(f.nbytes for f in alex.features(ref_img)) > 0
    np.testing.assert_allclose(ref.score(cands), alex.score(ref_img, cands), rtol=0, atol=TOL)
    np.testing.assert_allclose(
        ref(cands[:2], per_layer=True), alex.score(ref_img, cands[:2], per_layer=True), atol=TOL
    )
    with pytest.raises(ValueError, match="reference's size"):
        ref.score(im.textured(48, 48, 3))
    with pytest.raises(ValueError, match="one reference image"):
        alex.reference(cands)
    assert "MB" in repr(ref)
