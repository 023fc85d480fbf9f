"""GPU decoding without a GPU: the batch-decode flow of the folder pipeline, choices, errors.

The flow (read bytes in threads, batch-decode what the decoder accepts, pack by size, CPU
fallback for the rest, one row per pair in order) is exercised with a host test double that has
the GPU decoder's interface. The nvImageCodec and CUDA calls themselves run in
``benchmarks/gpu_check.py`` on a GPU machine.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dps_fast.cli import app
from dps_fast.cuda import cuda_array_view
from dps_fast.errors import InputTypeError, ProviderError
from dps_fast.io import decode_image
from dps_fast.io.gpu_decode import BatchDecoder, import_nvimgcodec, is_plain_jpeg
from dps_fast.io.pairing import pair_dirs
from dps_fast.pipeline import PairScorer
from tests.helpers import images as im

H, W = 64, 80


class HostBatchDecoder:
    """The GPU decoder's interface on the host (Pillow), counting what it is given.

    Nothing to reuse on the host: ``recycle`` and ``release`` only count their calls.
    """

    def __init__(self, fail_stack: bool = False) -> None:
        self.decoded = 0
        self.stacked: list[int] = []
        self.stack_calls = 0
        self.fail_stack = fail_stack
        self.recycled = 0
        self.released: list[int] = []

    def accepts(self, data: bytes) -> bool:
        return is_plain_jpeg(data)

    def decode(self, datas: list[bytes]) -> list[Any | None]:
        out: list[Any | None] = []
        for d in datas:
            try:
                out.append(decode_image(d))
            except ValueError:
                out.append(None)
        self.decoded += len(datas)
        return out

    def stack(self, images: list[Any]) -> Any:
        self.stack_calls += 1
        if self.fail_stack:
            raise RuntimeError("simulated device failure")
        self.stacked.append(len(images))
        return np.stack(images)

    def recycle(self, images: list[Any]) -> None:
        self.recycled += len(images)

    def release(self, batch: Any) -> None:
        self.released.append(len(batch))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """JPEG pairs, a PNG pair, a size mismatch, a broken JPEG, an ICC JPEG, a grey JPEG."""
    da, db = tmp_path / "A", tmp_path / "B"
    da.mkdir()
    db.mkdir()
    for i in range(5):
        im.save_array(im.textured(H, W, i), da / f"j{i}.jpg", quality=90)
        im.save_array(im.textured(H, W, 10 + i), db / f"j{i}.jpg", quality=90)
    im.save_array(im.textured(H, W, 20), da / "p.png")
    im.save_array(im.textured(H, W, 21), db / "p.png")
    im.save_array(im.textured(H, W, 22), da / "mismatch.jpg", quality=90)
    im.save_array(im.textured(48, 48, 23), db / "mismatch.jpg", quality=90)
    good = im.encoded(im.textured(H, W, 24), "JPEG", quality=90)
    (da / "broken.jpg").write_bytes(good[: len(good) // 3])
    im.save_array(im.textured(H, W, 25), db / "broken.jpg", quality=90)
    rgb = im.textured(H, W, 26)
    Image.fromarray(rgb).save(da / "icc.jpg", quality=90, icc_profile=im.SWAPPED_RG_PROFILE)
    im.save_array(rgb, db / "icc.jpg", quality=90)
    Image.fromarray(im.textured(H, W, 27)[..., 0]).save(da / "grey.jpg", quality=90)
    im.save_array(im.textured(H, W, 28), db / "grey.jpg", quality=90)
    return da, db


def _run(engine: Any, da: Path, db: Path, **kw: Any) -> list[dict[str, Any]]:
    pairs = pair_dirs(da, db).pairs
    return list(PairScorer(engine, workers=2, **kw).run(pairs))


def test_batch_decode_flow_matches_cpu_path(engines, folders) -> None:
    eng = engines("lpips-alex")
    da, db = folders
    dec = HostBatchDecoder()
    got = _run(eng, da, db, decoder=dec, per_layer=True, window=4)
    want = _run(eng, da, db, decode="cpu", per_layer=True)
    assert [(r["a"], r["b"]) for r in got] == [(r["a"], r["b"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["error"] == w["error"]
        assert (g["score"] is None) == (w["score"] is None)
        if w["score"] is not None:
            assert g["score"] == pytest.approx(w["score"], abs=1e-6)
            taps = [k for k in w if k.startswith("tap_")]
            np.testing.assert_allclose([g[k] for k in taps], [w[k] for k in taps], atol=1e-6)
    errors = {r["a"]: r["error"] for r in got if r["error"]}
    assert set(errors) == {"broken.jpg", "mismatch.jpg"}
    assert "size mismatch" in errors["mismatch.jpg"] and "64×80" in errors["mismatch.jpg"]
    assert "broken.jpg" in errors["broken.jpg"]
    # the decoder saw the plain JPEGs only: not the PNG, not the ICC-tagged JPEG
    assert dec.decoded == 10 + 2 + 2 + 1 + 2  # j*, mismatch, broken, icc (b side only), grey
    assert sum(dec.stacked) == 2 * 6  # j0..j4 and grey, both sides, packed in batches
    # every packed batch went back to the decoder once scored, every decoded image once packed
    assert sorted(dec.released) == sorted(dec.stacked)
    assert dec.recycled == dec.decoded - 1  # every image it decoded: all but the broken one


def test_decoder_protocol_is_complete() -> None:
    """The pipeline calls every method of the protocol; a decoder lacking one is refused at
    the start with the missing names, not with an AttributeError part-way through a run."""
    assert isinstance(HostBatchDecoder(), BatchDecoder)

    class NoRelease:
        def accepts(self, data: bytes) -> bool:
            return True

        def decode(self, datas: list[bytes]) -> list[Any | None]:
            return []

        def stack(self, images: list[Any]) -> Any:
            return None

        def recycle(self, images: list[Any]) -> None:
            pass

    assert not isinstance(NoRelease(), BatchDecoder)


def test_incomplete_decoder_is_refused(engines) -> None:
    class Partial:
        def accepts(self, data: bytes) -> bool:
            return True

    with pytest.raises(InputTypeError, match=r"lacks decode, stack, recycle, release"):
        PairScorer(engines("lpips-alex"), decoder=Partial())  # type: ignore[arg-type]


def test_batch_decode_device_failure_falls_back_to_cpu(engines, folders, caplog) -> None:
    """Packing a batch on the device fails: its pairs are decoded on the CPU and scored."""
    eng = engines("lpips-alex")
    da, db = folders
    dec = HostBatchDecoder(fail_stack=True)
    with caplog.at_level(logging.WARNING, logger="dps_fast"):
        got = _run(eng, da, db, decoder=dec)
    want = _run(eng, da, db, decode="cpu")
    # The device path was taken and failed: images were decoded, every stack attempt raised.
    assert dec.decoded > 0 and dec.stack_calls > 0 and dec.stacked == []
    assert any("GPU batch failed" in r.getMessage() for r in caplog.records)
    # ... and the pairs it held were scored on the CPU instead, like the CPU path scores them.
    jpeg = [r for r in got if r["a"].startswith("j")]
    assert len(jpeg) == 5 and all(r["error"] == "" and r["score"] is not None for r in jpeg)
    assert [r["error"] for r in got] == [r["error"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-6)


def test_decode_choice_on_cpu(engines) -> None:
    eng = engines("lpips-alex")
    auto = PairScorer(eng)
    assert auto.decoder is None and auto.decode_mode == "cpu"
    assert "device='cuda'" in auto.decode_reason
    with pytest.raises(ValueError, match=r"decode='gpu' is not possible.*device='cuda'"):
        PairScorer(eng, decode="gpu")
    with pytest.raises(ValueError, match=r"expected decode one of auto, cpu, gpu"):
        PairScorer(eng, decode="nvjpeg")


def test_missing_nvimgcodec_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    with pytest.raises(ProviderError, match=r"\[gpu\]'? .*--decode cpu"):
        import_nvimgcodec()


def test_is_plain_jpeg() -> None:
    rgb = im.textured(H, W, 1)
    assert is_plain_jpeg(im.encoded(rgb, "JPEG"))
    assert not is_plain_jpeg(im.encoded(rgb, "PNG"))
    assert not is_plain_jpeg(im.encoded(rgb, "JPEG", icc_profile=im.SWAPPED_RG_PROFILE))


def test_cli_decode_gpu_on_cpu_fails_clearly(bundle, tmp_path) -> None:
    da, db = tmp_path / "A", tmp_path / "B"
    da.mkdir()
    db.mkdir()
    im.save_array(im.textured(H, W, 1), da / "x.jpg")
    im.save_array(im.textured(H, W, 2), db / "x.jpg")
    args = ["score", str(da), str(db), "-m", str(bundle("lpips-alex")), "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--decode", "gpu"])
    assert res.exit_code == 2
    assert "device='cuda'" in res.stderr and "decode='cpu'" in res.stderr
    ok = CliRunner().invoke(app, [*args, "--decode", "cpu", "-o", str(tmp_path / "r.csv")])
    assert ok.exit_code == 0, ok.stderr
    assert "decode cpu" in ok.stderr


# ---------------------------------------------------------------------------- CUDA arrays


class FakeCudaArray:
    """An object with ``__cuda_array_interface__`` (no memory behind it: never dereferenced)."""

    def __init__(self, shape: tuple[int, ...], typestr: str = "|u1", strides: Any = None):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0x1000, False),
            "strides": strides,
            "version": 3,
        }


def test_cuda_arrays_need_a_cuda_engine(engines) -> None:
    eng = engines("lpips-alex")
    x = FakeCudaArray((2, H, W, 3))
    with pytest.raises(ValueError, match=r"need an engine on device='cuda'.*runs on cpu"):
        eng.score(x, x)
    with pytest.raises(ValueError, match=r"device='cuda'"):
        eng.features(x)


@pytest.mark.parametrize(
    ("a", "b", "kw", "err", "match"),
    [
        ((2, H, W, 4), (2, H, W, 4), {}, ValueError, r"uint8 \(N, H, W, 3\) or float32"),
        ((2, H, W, 3), (3, H, W, 3), {}, ValueError, r"one dtype and shape"),
        ((2, 8, 8, 3), (2, 8, 8, 3), {}, ValueError, r"at least 31×31"),
        ((2, H, W, 3), None, {}, TypeError, r"both sides on the device"),
        ((2, H, W, 3), (2, H, W, 3), {"value_range": (-1, 1)}, ValueError, r"value_range"),
    ],
)
def test_cuda_array_checks(engines, monkeypatch, a, b, kw, err, match) -> None:
    eng = engines("lpips-alex")
    monkeypatch.setattr(eng, "device", "cuda")  # checks run before anything touches a GPU
    xb = np.zeros((2, H, W, 3), np.uint8) if b is None else FakeCudaArray(b)
    with pytest.raises(err, match=match):
        eng.score(FakeCudaArray(a), xb, **kw)


def test_cuda_array_view_refuses_strided() -> None:
    x = FakeCudaArray((2, 4, 4, 3), strides=(96, 24, 3, 1))  # rows padded: not contiguous
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_array_view(x, "a")
    v = cuda_array_view(FakeCudaArray((2, 4, 4, 3), strides=(48, 12, 3, 1)), "a")
    assert v.ptr == 0x1000 and v.shape == (2, 4, 4, 3) and v.nbytes == 96


def test_cuda_provider_options(monkeypatch) -> None:
    from dps_fast.engine.session import _cuda_options

    monkeypatch.delenv("DPS_FAST_CUDA_PREFER_NHWC", raising=False)
    assert "prefer_nhwc" not in _cuda_options()
    assert _cuda_options(prefer_nhwc=True)["prefer_nhwc"] == "1"
    monkeypatch.setenv("DPS_FAST_CUDA_PREFER_NHWC", "0")
    assert "prefer_nhwc" not in _cuda_options(prefer_nhwc=True)
    monkeypatch.setenv("DPS_FAST_CUDA_PREFER_NHWC", "yes")
    with pytest.raises(ValueError, match="DPS_FAST_CUDA_PREFER_NHWC 0 or 1"):
        _cuda_options()
