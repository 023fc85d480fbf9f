"""engine.binding.run_bound, the one IO-binding sequence of the engine's CUDA paths, run on the
CPU execution provider (IO binding works there too) against ``session.run``.

The CUDA paths themselves (pointers into device memory, outputs left on the GPU) need a GPU
and are not run here; these tests pin the binding sequence they share: host inputs, inputs
bound by pointer at an offset into a larger buffer (the chunks of ``Engine._run_device`` and
``_head_rows_device``), outputs copied to the host, outputs left where they were bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dps_fast
from dps_fast.engine.binding import BoundTensor, run_bound
from dps_fast.engine.session import make_session

BUNDLES = Path(dps_fast.__file__).parent / "classical" / "bundles"


def _session(model: str, graph: str) -> Any:
    session, device = make_session(BUNDLES / model / graph, "cpu", 1)
    assert device == "cpu"
    return session


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


def test_host_inputs_match_session_run() -> None:
    sess = _session("ssim", "pair_uint8-nhwc.onnx")
    a, b = _images(3, 1), _images(3, 2)
    want = sess.run(None, {"a": a, "b": b})
    got = run_bound(sess, {"a": a, "b": b})
    assert len(got) == len(want) == 1 and isinstance(got[0], np.ndarray)
    np.testing.assert_array_equal(got[0], want[0])
    # a non-contiguous host view is bound as its contiguous copy
    flipped = a[:, ::-1]
    np.testing.assert_array_equal(
        run_bound(sess, {"a": flipped, "b": b})[0],
        sess.run(None, {"a": np.ascontiguousarray(flipped), "b": b})[0],
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_inputs_bound_by_pointer_at_an_offset(dtype: type) -> None:
    """A chunk of a larger buffer, bound in place (as the CUDA paths bind device arrays)."""
    graph = "pair_uint8-nhwc.onnx" if dtype == np.uint8 else "pair.onnx"
    sess = _session("ssim", graph)
    a, b = _images(5, 3), _images(5, 4)
    if dtype == np.float32:
        a = np.ascontiguousarray(a.transpose(0, 3, 1, 2), np.float32) / 255
        b = np.ascontiguousarray(b.transpose(0, 3, 1, 2), np.float32) / 255
    per_image = a.nbytes // a.shape[0]
    i, j = 1, 4

    def view(x: np.ndarray) -> BoundTensor:
        return BoundTensor(x.ctypes.data + i * per_image, (j - i, *x.shape[1:]), x.dtype, "cpu")

    got = run_bound(sess, {"a": view(a), "b": view(b)})
    want = sess.run(None, {"a": a[i:j], "b": b[i:j]})
    np.testing.assert_array_equal(got[0], want[0])
    # and against a different chunk: the offset is what selects the images
    other = sess.run(None, {"a": a[0:3], "b": b[0:3]})
    assert not np.array_equal(got[0], other[0])


def test_outputs_left_where_bound_stay_valid() -> None:
    """``to_host=False``: OrtValues on the output device, readable after the binding is gone
    and after further runs (the all-pairs matrix copies them out one batch at a time)."""
    sess = _session("ssim", "trunk_uint8-nhwc.onnx")
    x, y = _images(2, 5), _images(2, 6)
    first = run_bound(sess, {"image": x}, outputs_on="cpu", to_host=False)
    run_bound(sess, {"image": y}, outputs_on="cpu", to_host=False)
    assert len(first) == 1 and tuple(first[0].shape()) == (2, 3, 40, 48)
    assert first[0].data_ptr() != 0
    want = sess.run(None, {"image": x})[0]
    np.testing.assert_array_equal(first[0].numpy(), want)


def test_engine_host_path_is_unchanged() -> None:
    """The CPU engine still runs ``session.run``; its scores equal the bound run's."""
    eng = dps_fast.Engine("ssim", device="cpu")
    a, b = _images(2, 7), _images(2, 8)
    sess = _session("ssim", "pair_uint8-nhwc.onnx")
    bound = run_bound(sess, {"a": a, "b": b})[0]
    np.testing.assert_allclose(eng.score(a, b), eng.reduce(bound), rtol=0, atol=0)
