"""Decoding: colour modes, orientation, ICC, bit depth, the pixel limit and broken files."""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms

from dps_fast.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    ResizeSpec,
    apply_resize,
    decode_image,
    parse_resize,
    resize_image,
    short_side_size,
)
from tests.helpers.images import (
    SRGB_BLUE,
    SRGB_GREEN,
    SRGB_RED,
    icc_rgb_profile,
    png_chunk,
    png_rgb48,
)

RNG = np.random.default_rng(1234)


def gradient(h: int, w: int) -> np.ndarray:
    """A smooth uint8 (h, w, 3) image that survives JPEG well and has no symmetry."""
    y, x = np.mgrid[0:h, 0:w]
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)


def noise(h: int, w: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)


def save(im: Image.Image, path: Path, **kwargs: Any) -> Path:
    im.save(path, **kwargs)
    return path


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims (w, h) but holds no pixel data: decoding it must never start."""
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 178_956_970
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------- formats


def check_array(x: np.ndarray, shape: tuple[int, int]) -> None:
    assert x.dtype == np.uint8
    assert x.shape == (*shape, 3)
    assert x.flags.c_contiguous
    assert x.flags.writeable


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".ppm", ".webp"])
def test_lossless_formats_round_trip(tmp_path: Path, ext: str) -> None:
    a = noise(17, 23)
    kwargs = {"lossless": True} if ext == ".webp" else {}
    path = save(Image.fromarray(a), tmp_path / f"x{ext}", **kwargs)
    x = decode_image(path)
    check_array(x, (17, 23))
    np.testing.assert_array_equal(x, a)


def test_jpeg_gradient(tmp_path: Path) -> None:
    a = gradient(48, 64)
    path = save(Image.fromarray(a), tmp_path / "g.jpg", quality=95)
    x = decode_image(str(path))
    check_array(x, (48, 64))
    assert np.abs(x.astype(int) - a).mean() < 3


def test_bytes_and_pil_inputs(tmp_path: Path) -> None:
    a = noise(8, 9)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), a)
    np.testing.assert_array_equal(decode_image(Image.fromarray(a)), a)
    with pytest.raises(TypeError, match="expected a path, bytes or a PIL image"):
        decode_image(12345)  # type: ignore[arg-type]


def test_pgm_and_gif(tmp_path: Path) -> None:
    grey = noise(10, 12, 1)[..., 0]
    path = save(Image.fromarray(grey), tmp_path / "g.pgm")
    np.testing.assert_array_equal(decode_image(path), np.repeat(grey[..., None], 3, axis=2))
    rgb = gradient(10, 12)
    pal = Image.fromarray(rgb).quantize(8)
    path = save(pal, tmp_path / "p.gif")
    np.testing.assert_array_equal(decode_image(path), np.asarray(pal.convert("RGB")))


def test_grey_replicated(tmp_path: Path) -> None:
    grey = noise(11, 13, 1)[..., 0]
    x = decode_image(save(Image.fromarray(grey, "L"), tmp_path / "l.png"))
    check_array(x, (11, 13))
    for c in range(3):
        np.testing.assert_array_equal(x[..., c], grey)


def test_one_bit(tmp_path: Path) -> None:
    bits = noise(9, 10, 1)[..., 0] > 127
    im = Image.fromarray(bits.astype(np.uint8) * 255, "L").convert("1")
    x = decode_image(save(im, tmp_path / "b.png"))
    np.testing.assert_array_equal(x[..., 0], np.where(bits, 255, 0))
    assert set(np.unique(x)) <= {0, 255}


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = noise(12, 14, 4)
    x = decode_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(x, rgba[..., :3])
    la = noise(12, 14, 2)
    x = decode_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    np.testing.assert_array_equal(x, np.repeat(la[..., :1], 3, axis=2))


def test_palette_png(tmp_path: Path) -> None:
    pal = Image.fromarray(gradient(20, 30)).quantize(16)
    x = decode_image(save(pal, tmp_path / "p.png"))
    np.testing.assert_array_equal(x, np.asarray(pal.convert("RGB")))
    # Palette with a transparent index: through RGBA, alpha dropped, no Pillow warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = decode_image(save(pal, tmp_path / "pt.png", transparency=0))
    np.testing.assert_array_equal(x, np.asarray(pal.convert("RGBA"))[..., :3])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    a = gradient(32, 40)
    cmyk = Image.fromarray(a).convert("CMYK")
    x = decode_image(save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    check_array(x, (32, 40))
    expected = np.asarray(cmyk.convert("RGB")).astype(int)
    assert np.abs(x.astype(int) - expected).mean() < 4


def test_16bit_grey_png_scaled_with_rounding(tmp_path: Path) -> None:
    values = np.array(
        [[0, 1, 128, 129], [257 * 100 + 128, 257 * 100 + 129, 65534, 65535]], dtype=np.uint16
    )
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    x = decode_image(save(im, tmp_path / "g16.png"))
    expected = np.array([[0, 0, 0, 1], [100, 101, 255, 255]], dtype=np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(x[..., c], expected)
    big = RNG.integers(0, 65536, (30, 40), dtype=np.uint16)
    x = decode_image(save(Image.fromarray(big), tmp_path / "n16.png"))
    np.testing.assert_array_equal(x[..., 1], np.round(big / 257).astype(np.uint8))


def test_16bit_big_endian_and_int_modes() -> None:
    big = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
    im = Image.frombytes("I;16B", (6, 5), big.astype(">u2").tobytes())
    assert im.mode == "I;16B"
    np.testing.assert_array_equal(decode_image(im)[..., 0], np.round(big / 257))
    ints = np.array([[-5, 0, 65535, 100_000]], dtype=np.int32)
    x = decode_image(Image.fromarray(ints, "I"))
    np.testing.assert_array_equal(x[..., 2], [[0, 0, 255, 255]])
    floats = np.array([[-1.0, 0.4, 127.6, 300.0]], dtype=np.float32)
    x = decode_image(Image.fromarray(floats, "F"))
    np.testing.assert_array_equal(x[..., 0], [[0, 0, 128, 255]])


def test_48bit_rgb_png(tmp_path: Path) -> None:
    arr = RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    path = tmp_path / "rgb48.png"
    path.write_bytes(png_rgb48(arr))
    x = decode_image(path)
    check_array(x, (6, 7))
    # Pillow reduces 48-bit RGB to 8 bits itself (high byte): within one level of v / 257.
    np.testing.assert_array_equal(x, (arr >> 8).astype(np.uint8))
    assert np.abs(x.astype(float) - np.round(arr / 257)).max() <= 1


# ---------------------------------------------------------------------------- orientation


def test_exif_orientation_6_jpeg(tmp_path: Path) -> None:
    a = gradient(24, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = save(Image.fromarray(a), tmp_path / "r.jpg", quality=95, exif=exif)
    plain = save(Image.fromarray(a), tmp_path / "p.jpg", quality=95)
    x = decode_image(rotated)
    check_array(x, (40, 24))
    # Same JPEG data with and without the tag: the tagged one is the plain one turned 90° cw.
    np.testing.assert_array_equal(x, np.rot90(decode_image(plain), k=-1))
    assert np.abs(x.astype(int) - np.rot90(a, k=-1)).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_png(tmp_path: Path, orientation: int) -> None:
    a = noise(5, 8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    x = decode_image(save(Image.fromarray(a), tmp_path / "o.png", exif=exif))
    expected = {
        1: a,
        2: a[:, ::-1],
        3: a[::-1, ::-1],
        4: a[::-1],
        5: np.transpose(a, (1, 0, 2)),
        6: np.rot90(a, k=-1),
        7: np.rot90(a, k=-1)[::-1],
        8: np.rot90(a, k=1),
    }[orientation]
    np.testing.assert_array_equal(x, expected)


# ---------------------------------------------------------------------------- ICC profiles


def test_embedded_srgb_profile_round_trips(tmp_path: Path) -> None:
    a = noise(10, 12)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    x = decode_image(save(Image.fromarray(a), tmp_path / "s.png", icc_profile=icc))
    np.testing.assert_array_equal(x, a)


def test_broken_profile_is_ignored(tmp_path: Path) -> None:
    a = noise(10, 12)
    x = decode_image(save(Image.fromarray(a), tmp_path / "junk.png", icc_profile=b"junk"))
    np.testing.assert_array_equal(x, a)


def test_non_srgb_profile_is_converted(tmp_path: Path) -> None:
    # A profile whose red and green primaries are sRGB's green and red: pure red in the file
    # is sRGB green on screen, and decoding must say so.
    icc = icc_rgb_profile(SRGB_GREEN, SRGB_RED, SRGB_BLUE, "swapped primaries")
    a = np.zeros((32, 16, 3), dtype=np.uint8)
    a[:16, :, 0] = 255  # red top half
    a[16:, :, 1] = 255  # green bottom half
    for ext in (".png", ".jpg"):
        path = save(
            Image.fromarray(a), tmp_path / f"swap{ext}", icc_profile=icc, quality=100, subsampling=0
        )
        x = decode_image(path).astype(int)
        assert np.abs(x[4, 8] - [0, 255, 0]).max() <= 12, (ext, x[4, 8])
        assert np.abs(x[28, 8] - [255, 0, 0]).max() <= 12, (ext, x[28, 8])


# ---------------------------------------------------------------------------- pixel limit


def test_pixel_limit_argument(tmp_path: Path) -> None:
    path = save(Image.fromarray(noise(100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, max_pixels=5000)
    message = str(info.value)
    assert str(path) in message
    assert "100×100" in message and "5,000" in message
    assert "set DPS_FAST_MAX_PIXELS to raise it" in message
    assert decode_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_pixel_limit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(Image.fromarray(noise(50, 50)), tmp_path / "e.png")
    monkeypatch.setenv("DPS_FAST_MAX_PIXELS", "2000")
    with pytest.raises(ImageDecodeError, match="DPS_FAST_MAX_PIXELS"):
        decode_image(path)
    monkeypatch.setenv("DPS_FAST_MAX_PIXELS", "2500")
    assert decode_image(path).shape == (50, 50, 3)
    monkeypatch.setenv("DPS_FAST_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="DPS_FAST_MAX_PIXELS"):
        decode_image(path)


@pytest.mark.parametrize("side", [15_000, 20_000])
def test_pillow_bomb_guard_does_not_leak(tmp_path: Path, side: int) -> None:
    # 225 Mpx makes Pillow warn, 400 Mpx makes it raise; neither may escape, and the check
    # happens on the header before any pixel memory is allocated.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError, match="set DPS_FAST_MAX_PIXELS to raise it"):
            decode_image(path)


def test_limit_above_pillows_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(Image.fromarray(noise(50, 50)), tmp_path / "p.png")  # 2500 > 2 * 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(path, max_pixels=10_000).shape == (50, 50, 3)
        with pytest.raises(ImageDecodeError, match="over the limit of 2,000"):
            decode_image(path, max_pixels=2000)
    assert Image.MAX_IMAGE_PIXELS == 1000


# ---------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode_image(tmp_path / "nope.png")


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageDecodeError, match="broken symbolic link"):
        decode_image(link)


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "x.png").mkdir()
    with pytest.raises(ImageDecodeError, match="is a directory, not an image file"):
        decode_image(tmp_path / "x.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_fails_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "y.png"
    os.mkfifo(fifo)
    caught: list[BaseException] = []

    def run() -> None:
        try:
            decode_image(fifo)
        except BaseException as e:
            caught.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():  # unblock the reader so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("decode_image blocked on a FIFO")
    assert len(caught) == 1 and isinstance(caught[0], ImageDecodeError)
    assert "is not a regular file" in str(caught[0])


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"is empty \(0 bytes\)"):
        decode_image(path)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    path.write_text("hello, I am not an image\n")
    with pytest.raises(ImageDecodeError, match="not an image") as info:
        decode_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt") as info:
        decode_image(path)
    assert str(path) in str(info.value)


def test_non_ascii_name(tmp_path: Path) -> None:
    a = noise(6, 7)
    path = save(Image.fromarray(a), tmp_path / "ü-图.png")
    np.testing.assert_array_equal(decode_image(path), a)
    np.testing.assert_array_equal(decode_image(str(path)), a)


def test_error_is_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


# ---------------------------------------------------------------------------- reduce_to


def test_reduce_to_uses_jpeg_draft(tmp_path: Path) -> None:
    path = save(Image.fromarray(gradient(300, 400)), tmp_path / "big.jpg", quality=90)
    full = decode_image(path)
    assert full.shape == (300, 400, 3)
    x = decode_image(path, reduce_to=(100, 100))
    assert x.shape == (150, 200, 3)  # 1/2 scale: 1/4 would go below 100 rows
    small = decode_image(path, reduce_to=(30, 40))
    assert small.shape == (38, 50, 3)  # 1/8 scale, both sides still >= target
    assert decode_image(path, reduce_to=(200, 300)).shape == (300, 400, 3)
    # Other formats ignore the hint.
    png = save(Image.fromarray(gradient(300, 400)), tmp_path / "big.png")
    assert decode_image(png, reduce_to=(30, 40)).shape == (300, 400, 3)
    with pytest.raises(ValueError, match="reduce_to"):
        decode_image(path, reduce_to=(0, 10))


def test_reduce_to_respects_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(Image.fromarray(gradient(200, 400)), tmp_path / "r.jpg", exif=exif)
    # Upright the image is 400 rows × 200 columns; the target is in that frame.
    x = decode_image(path, reduce_to=(100, 50))
    assert x.shape[0] >= 100 and x.shape[1] >= 50
    assert x.shape == (100, 50, 3)
    x = decode_image(path, reduce_to=(100, 100))
    assert x.shape == (200, 100, 3)


# ---------------------------------------------------------------------------- resizing


def test_resize_image() -> None:
    a = noise(40, 60)
    assert resize_image(a, (40, 60)) is a
    out = resize_image(a, (20, 30))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    flat = np.full((64, 64, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(resize_image(flat, (13, 9)), 77)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(a.astype(np.float32), (10, 10))
    with pytest.raises(ValueError, match="positive"):
        resize_image(a, (0, 10))


def test_resize_is_antialiased() -> None:
    # A one-pixel checkerboard shrunk 4× must average to grey, not alias to black or white.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = resize_image(np.repeat(board[..., None], 3, axis=2), (16, 16))
    assert np.abs(out.astype(int) - 128).max() <= 3


@pytest.mark.parametrize(
    ("h", "w", "n", "expected"),
    [
        (100, 200, 50, (50, 100)),
        (200, 100, 50, (100, 50)),
        (64, 64, 32, (32, 32)),
        (3, 5, 2, (2, 3)),
        (2, 5, 1, (1, 3)),  # 2.5 rounds half up
        (480, 640, 256, (256, 341)),
        (1000, 3, 1, (333, 1)),
    ],
)
def test_short_side_size(h: int, w: int, n: int, expected: tuple[int, int]) -> None:
    assert short_side_size(h, w, n) == expected


def test_short_side_size_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        short_side_size(0, 10, 5)
    with pytest.raises(ValueError):
        short_side_size(10, 10, 0)


def test_parse_resize() -> None:
    assert parse_resize("none") == ResizeSpec("none")
    assert parse_resize("to-a") == ResizeSpec("to-a")
    assert parse_resize("short-side:256") == ResizeSpec("short-side", 256)
    assert str(parse_resize("short-side:64")) == "short-side:64"
    for bad in ["", "short-side", "short-side:0", "short-side:-3", "short-side:x", "to_a", "1"]:
        with pytest.raises(ValueError, match="'none', 'to-a' or 'short-side:N'"):
            parse_resize(bad)
    with pytest.raises(ValueError):
        ResizeSpec("short-side")


def test_apply_resize() -> None:
    a, b = noise(40, 60), noise(30, 50)
    assert apply_resize(a, b, parse_resize("none")) == (a, b)
    ra, rb = apply_resize(a, b, parse_resize("to-a"))
    assert ra is a and rb.shape == a.shape
    ra, rb = apply_resize(a, b, parse_resize("short-side:20"))
    assert ra.shape == (20, 30, 3) and rb.shape == (20, 33, 3)


def test_other_modes_become_rgb() -> None:
    colour = (10, 200, 30)
    for mode in ("YCbCr", "HSV", "RGBX"):
        x = decode_image(Image.new("RGB", (3, 2), colour).convert(mode))
        assert x.shape == (2, 3, 3)
        assert np.abs(x[0, 0].astype(int) - colour).max() <= 3, mode
    grey_lab = decode_image(Image.new("LAB", (2, 2), (128, 128, 128)))
    assert grey_lab.shape == (2, 2, 3)
    assert np.ptp(grey_lab[0, 0].astype(int)) <= 2 and 100 < grey_lab[0, 0, 0] < 140
