"""Image decoding into uint8 RGB arrays, resizing helpers and the resize option.

Every image, whatever its file format or colour mode, becomes a C-contiguous ``uint8`` array
of shape (H, W, 3) in sRGB, so that the models always see the same kind of input. Errors are
raised as :class:`ImageDecodeError` with a message that names the file and says what to do,
so that a folder run can report the bad file on its own row and go on.
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import IO, Any, Literal

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from ..errors import ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "ResizeSpec",
    "apply_resize",
    "check_pixels",
    "decode_image",
    "max_pixels_limit",
    "parse_resize",
    "read_size",
    "resize_image",
    "short_side_size",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
)
"""File extensions (lower case, with the dot) that folder listing treats as images."""

DEFAULT_MAX_PIXELS = 178_956_970
"""Largest width*height decoded by default (Pillow's own default limit)."""

MAX_PIXELS_ENV = "DPS_FAST_MAX_PIXELS"

_EXIF_ORIENTATION = 0x0112
_GREY_MODES = frozenset({"L", "LA", "La", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Image.open is serialised so that the temporary warning filter (and, when the caller raised
# the pixel limit above Pillow's, the temporary Pillow limit) cannot race between threads.
# Opening only reads the header, so the lock costs little; the decode itself runs unlocked.
_OPEN_LOCK = threading.Lock()

Source = str | os.PathLike[str] | bytes | Image.Image


# --------------------------------------------------------------------------------------------
# decoding


def max_pixels_limit(max_pixels: int | None) -> int:
    """Effective pixel limit: the argument, else $DPS_FAST_MAX_PIXELS, else the default."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels: expected a positive integer, got {max_pixels!r}")
        return max_pixels
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}: expected a positive integer, got {raw!r}")
    return value


def _check_reduce_to(reduce_to: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate the ``reduce_to`` hint: None or two positive ints (h, w)."""
    if reduce_to is None:
        return None
    try:
        h, w = reduce_to
    except (TypeError, ValueError):
        raise ValueError(f"reduce_to: expected (height, width), got {reduce_to!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(
                f"reduce_to: expected two positive integers (height, width), got {reduce_to!r}"
            )
    return (h, w)


def _open_path(path: str) -> IO[bytes]:
    """Open a file for reading after checking, without blocking, that it is a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            raise ImageDecodeError(
                f"{path}: broken symbolic link (points to {target}, which does not exist) "
                "— fix or remove the link"
            ) from None
        raise ImageDecodeError(f"{path}: file not found — check the path") from None
    except NotADirectoryError:
        raise ImageDecodeError(
            f"{path}: file not found (a parent in the path is not a folder) — check the path"
        ) from None
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageDecodeError(f"{path} is a directory, not an image file — pass an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError(
            f"{path} is not a regular file ({_file_kind(st.st_mode)}) — pass an image file"
        )
    if st.st_size == 0:
        raise ImageDecodeError(f"{path} is empty (0 bytes) — re-create or remove the file")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, opening must not block.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise ImageDecodeError(
            f"{path}: permission denied — make the file readable for this user"
        ) from None
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot open file ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageDecodeError(f"{path} is not a regular file — pass an image file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    """Human name of a non-regular file type."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def _bomb_message(name: str, pixels_text: str, limit: int) -> str:
    """Message for an image over the pixel limit."""
    return (
        f"{name}: image is {pixels_text}, over the limit of {limit:,} pixels "
        f"(a guard against decompression bombs) — set {MAX_PIXELS_ENV} to raise it"
    )


def _pillow_bomb_error(name: str, err: Exception, limit: int) -> ImageDecodeError:
    """Turn Pillow's DecompressionBombError into our error, keeping the size when known."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)):,} pixels" if found else "too large"
    return ImageDecodeError(_bomb_message(name, size, limit))


def _open_image(fp: IO[bytes], name: str, limit: int) -> Image.Image:
    """Open lazily (header only) with Pillow's bomb warnings silenced; our own check rules."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        raised = saved is not None and limit > saved
        if raised:
            Image.MAX_IMAGE_PIXELS = limit
        try:
            return Image.open(fp)
        except Image.DecompressionBombError as e:
            raise _pillow_bomb_error(name, e, limit) from None
        except UnidentifiedImageError:
            raise ImageDecodeError(
                f"{name} is not an image in a format this tool reads "
                "(PNG, JPEG, BMP, TIFF, WebP, PPM/PGM, GIF, …) — convert it or remove it"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageDecodeError(
                f"{name}: cannot read the image header ({e}) — the file is corrupt or not an "
                "image; re-create or remove it"
            ) from None
        finally:
            if raised:
                Image.MAX_IMAGE_PIXELS = saved


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1..8), 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        # unreadable EXIF means no rotation, not a failed image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft_jpeg(im: Image.Image, reduce_to: tuple[int, int], orientation: int) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that still covers ``reduce_to``."""
    if im.format != "JPEG":
        return
    h, w = reduce_to
    if orientation in _TRANSPOSED_ORIENTATIONS:  # stored frame is rotated by 90 degrees
        h, w = w, h
    full_w, full_h = im.size
    if full_w // w < 2 or full_h // h < 2:
        return
    im.draft("RGB", (w, h))  # Pillow picks the largest scale keeping both sides >= (w, h)
    if im.size[0] < w or im.size[1] < h:  # defensive: never decode below the target
        raise ImageDecodeError(f"internal error: JPEG draft went below {reduce_to}")


def _load(im: Image.Image, name: str, limit: int) -> None:
    """Force the full decode so that truncated or corrupt data fails here, not later."""
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise _pillow_bomb_error(name, e, limit) from None
    except MemoryError:
        raise
    except Exception as e:
        # any decoder failure means the file is corrupt
        raise ImageDecodeError(
            f"{name} is truncated or corrupt ({e}) — re-create or remove the file"
        ) from None


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    """The sRGB output profile (built once)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _icc_transform(icc: bytes, in_mode: str) -> ImageCms.ImageCmsTransform | None:
    """Transform from an embedded profile to sRGB, or None when it is sRGB, broken or unsuitable.

    Cached by profile bytes (building a transform costs far more than applying it). NOCACHE
    makes the LittleCMS transform safe to share between threads.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip().upper()
        wanted = {"RGB": "RGB", "CMYK": "CMYK", "L": "GRAY"}[in_mode]
        if space != wanted:
            return None
        description = (profile.profile.profile_description or "").lower()
        if space == "RGB" and "srgb" in description:
            return None  # already sRGB: converting would only add rounding noise and time
        return ImageCms.buildTransform(
            profile,
            _srgb_profile(),
            in_mode,
            "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            flags=ImageCms.Flags.NOCACHE,
        )
    except Exception:
        # a broken profile is ignored, never fatal
        return None


def _apply_icc(im: Image.Image, icc: bytes | None) -> Image.Image | None:
    """Convert ``im`` (RGB, CMYK or L) to sRGB RGB through ``icc``; None when not applicable."""
    if not icc or im.mode not in ("RGB", "CMYK", "L"):
        return None
    transform = _icc_transform(bytes(icc), im.mode)
    if transform is None:
        return None
    try:
        return transform.apply(im)
    except Exception:
        # fall back to the unmanaged conversion
        return None


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int) grey to 8-bit grey by round(v / 257), clipped to [0, 65535]."""
    arr = np.asarray(im)
    wide = np.clip(arr.astype(np.int64, copy=False), 0, 65535)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")


def _float_to_8bit(im: Image.Image) -> Image.Image:
    """Float grey (mode F) to 8-bit: values on Pillow's 0..255 scale, rounded and clipped."""
    arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _to_rgb(im: Image.Image, icc: bytes | None, name: str) -> Image.Image:
    """Any Pillow mode to an sRGB 'RGB' image (alpha dropped, grey replicated)."""
    mode = im.mode
    if mode in ("P", "PA"):
        # Through RGBA so palette transparency is handled by Pillow; the alpha is then dropped.
        rgb = im.convert("RGBA").convert("RGB")
        managed = _apply_icc(rgb, icc)
        return managed if managed is not None else rgb
    if mode in _GREY_MODES:
        if mode in _WIDE_MODES:
            grey = _wide_to_8bit(im)
        elif mode == "F":
            grey = _float_to_8bit(im)
        elif mode == "L":
            grey = im
        else:  # "1", "LA", "La": Pillow's conversion (alpha discarded, 1-bit to 0/255)
            grey = im.convert("L")
        managed = _apply_icc(grey, icc)
        return managed if managed is not None else grey.convert("RGB")
    if mode == "LAB":
        try:
            lab = ImageCms.createProfile("LAB")
            converted = ImageCms.profileToProfile(im, lab, _srgb_profile(), outputMode="RGB")
        except Exception as e:
            # Pillow or LittleCMS could not convert this LAB image
            converted, reason = None, str(e)
        else:
            reason = "no result"
        if converted is None:
            raise ImageDecodeError(
                f"{name}: cannot convert its LAB colours to RGB ({reason}) — convert it to RGB "
                "first"
            )
        return converted
    if mode == "CMYK":
        managed = _apply_icc(im, icc)
        return managed if managed is not None else im.convert("RGB")
    if mode == "RGB":
        rgb = im
    else:
        try:
            rgb = im.convert("RGB")  # RGBA, RGBa, RGBX (alpha discarded), YCbCr, HSV
        except ValueError as e:
            raise ImageDecodeError(
                f"{name}: unsupported colour mode {mode!r} ({e}) — convert it to RGB first"
            ) from None
    managed = _apply_icc(rgb, icc)
    return managed if managed is not None else rgb


def _as_array(im: Image.Image) -> np.ndarray:
    """A writable C-contiguous uint8 (H, W, 3) copy of an RGB image.

    bytearray(tobytes()) is faster than np.asarray (which goes through the same bytes) plus
    the copy that asarray's read-only result would need.
    """
    w, h = im.size
    return np.frombuffer(bytearray(im.tobytes()), dtype=np.uint8).reshape(h, w, 3)


def decode_image(
    src: Source,
    *,
    max_pixels: int | None = None,
    reduce_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode an image into a C-contiguous uint8 (H, W, 3) sRGB array.

    ``src`` is a path, the encoded file's bytes, or a PIL image. What happens to it:

    - the EXIF orientation is applied (the array is upright as a viewer shows it);
    - an embedded ICC profile is converted to sRGB (perceptual intent); a profile that is
      broken, of the wrong colour space, or already sRGB is ignored;
    - grey images are replicated into three channels; 16-bit grey (I;16*, I) becomes 8-bit by
      round(v / 257) after clipping to [0, 65535]; float grey (F) is read on Pillow's 0..255
      scale; 48-bit RGB PNGs are reduced to 8 bits by Pillow itself while decoding (it keeps
      the high byte, within one level of round(v / 257));
    - alpha is discarded, not composited (LA, RGBA, PA): scores compare the colour channels;
    - palette images go through RGBA; CMYK goes through its ICC profile when it has one, else
      Pillow's conversion; 1-bit images become 0/255;
    - animated or multi-page files give their first frame.

    The pixel limit (``max_pixels``, else ``$DPS_FAST_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`) is checked on the header size before anything is decoded.

    ``reduce_to=(h, w)`` says the caller will shrink the image to at least that size anyway;
    JPEGs may then be decoded at 1/2, 1/4 or 1/8 scale (much faster), never below (h, w), so
    the result is then smaller than the file's full size. Other formats ignore the hint.

    Raises ImageDecodeError (a ValueError) naming the file and what to do.
    """
    limit = max_pixels_limit(max_pixels)
    target = _check_reduce_to(reduce_to)
    fp: IO[bytes] | None = None
    if isinstance(src, Image.Image):
        name = "<PIL image>"
        im = src
    elif isinstance(src, (bytes, bytearray, memoryview)):
        name = "<image bytes>"
        if len(src) == 0:
            raise ImageDecodeError(f"{name} is empty (0 bytes) — pass the encoded image bytes")
        fp = io.BytesIO(src if isinstance(src, bytes) else bytes(src))
        im = _open_image(fp, name, limit)
    elif isinstance(src, (str, os.PathLike)):
        name = os.fspath(src)
        if not isinstance(name, str):
            raise TypeError(f"decode_image: expected a str path, got bytes path {name!r}")
        fp = _open_path(name)
        try:
            im = _open_image(fp, name, limit)
        except BaseException:
            fp.close()
            raise
    else:
        raise TypeError(
            f"decode_image: expected a path, bytes or a PIL image, got {type(src).__name__}"
        )
    try:
        # A caller's PIL image is not drafted: that would change the object it still holds.
        return _decode_opened(im, name, limit, None if fp is None else target, fp)
    finally:
        if fp is not None:
            if im is not src:
                im.close()
            fp.close()


def check_pixels(h: int, w: int, what: str, max_pixels: int | None = None) -> None:
    """Raise ImageDecodeError when an h×w image is over the pixel limit (bomb guard).

    Used for sizes that do not come from a file header, e.g. the size ``--resize`` asks for,
    so that a resize cannot allocate what decoding would have refused.
    """
    limit = max_pixels_limit(max_pixels)
    if h * w > limit:
        raise ImageDecodeError(_bomb_message(what, f"{h}×{w} = {h * w:,} pixels (H×W)", limit))


def read_size(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[int, int]:
    """(H, W) of an image file from its header, with the checks :func:`decode_image` applies.

    Non-regular files (FIFOs, devices, folders) and headers over the pixel limit raise
    ImageDecodeError without reading pixel data or blocking. The EXIF orientation is not
    applied (callers use it as a size estimate).
    """
    limit = max_pixels_limit(max_pixels)
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"read_size: expected a str path, got bytes path {name!r}")
    with _open_path(name) as fp, _open_image(fp, name, limit) as im:
        w, h = im.size
    if w * h > limit:
        raise ImageDecodeError(_bomb_message(name, f"{w}×{h} = {w * h:,} pixels", limit))
    return h, w


def _decode_opened(
    im: Image.Image,
    name: str,
    limit: int,
    target: tuple[int, int] | None,
    fp: IO[bytes] | None = None,
) -> np.ndarray:
    """Size check, decode and colour normalisation of an opened (lazy) image."""
    w, h = im.size
    if w * h > limit:
        raise ImageDecodeError(_bomb_message(name, f"{w}×{h} = {w * h:,} pixels", limit))
    if w < 1 or h < 1:
        raise ImageDecodeError(f"{name} has no pixels ({w}×{h}) — re-create or remove it")
    # Before _orientation: reading a PNG's EXIF decodes it.
    png = fp is not None and im.format == "PNG"
    marker = _mark_unwritten(im) if png and not im.info.get("interlace") else None
    orientation = _orientation(im)
    if target is not None:
        _draft_jpeg(im, target, orientation)
    _load(im, name, limit)
    if png and fp is not None and (marker is None or _last_pixel(im) == marker):
        _check_png_data(fp, name)
    icc = im.info.get("icc_profile")
    icc_bytes = icc if isinstance(icc, bytes) else None
    rgb = _to_rgb(im, icc_bytes, name)
    if orientation != 1:
        rgb = _transpose(rgb, orientation)
    return _as_array(rgb)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)  # fmt: skip  (x0, y0, dx, dy) of the 7 interlace passes


def _png_expected_bytes(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered scanlines a PNG's pixel data must inflate to."""
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        cols, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if cols > 0 and rows > 0:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


_MARK = (165, 23, 201, 77)  # an unlikely colour for pixels the decoder never writes


def _mark_unwritten(im: Image.Image) -> Any:
    """Give a lazy PNG its pixel memory with a marker colour in the last pixel before it
    decodes, and return the marker as a pixel value (None when that is not possible).

    Pillow decodes into existing memory and leaves the rows of a short pixel stream as they
    were; if the last pixel still holds the marker afterwards, :func:`_check_png_data` decides
    (exactly, at the cost of inflating the data again). Complete images skip that cost.
    """
    if not getattr(im, "tile", None):
        return None  # already decoded
    try:
        # Only the last pixel is marked: filling the whole image would touch memory a fake
        # (bomb) header never gets to, and Pillow allocates the rest as it always does.
        bands = len(im.getbands())
        core = Image.core.new(im.mode, im.size)
        last = (im.size[0] - 1, im.size[1] - 1)
        core.putpixel(last, _MARK[:bands] if bands > 1 else _MARK[0])
        im.im = core
        return core.getpixel(last)
    except Exception:
        # a mode Image.new cannot fill: the exact check runs instead
        return None


def _last_pixel(im: Image.Image) -> Any:
    """The bottom-right pixel, the last one a non-interlaced decode writes."""
    try:
        return im.getpixel((im.size[0] - 1, im.size[1] - 1))
    except Exception:
        # unreadable here: force the exact check
        return None


def _check_png_data(fp: IO[bytes], name: str) -> None:
    """Raise ImageDecodeError when a PNG's pixel data (IDAT) holds fewer rows than its header
    says: Pillow fills the missing rows with black and reports nothing.

    Reads the chunks again and inflates the IDAT stream only to count its length (in 1 MiB
    pieces, so memory stays small).
    """
    import struct
    import zlib

    try:
        fp.seek(8)
        length, kind = struct.unpack(">I4s", fp.read(8))
        if kind != b"IHDR":
            return
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
        fp.seek(4, os.SEEK_CUR)  # CRC
        expected = _png_expected_bytes(width, height, depth, colour, interlace)
        inflater = zlib.decompressobj()
        got = 0
        seen_idat = False
        while got < expected:
            head = fp.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind != b"IDAT":
                if seen_idat:
                    break  # the pixel data is one run of IDAT chunks
                fp.seek(length + 4, os.SEEK_CUR)
                continue
            seen_idat = True
            data = fp.read(length)
            fp.seek(4, os.SEEK_CUR)
            while data and got < expected:
                got += len(inflater.decompress(data, 1 << 20))
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except (OSError, struct.error, zlib.error):
        return  # Pillow read it; a file we cannot parse here is left to Pillow's verdict
    if got < expected:
        raise ImageDecodeError(
            f"{name} is truncated: its pixel data stops early ({got:,} of {expected:,} bytes; "
            "the missing rows would be black) — re-create or remove the file"
        )


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (2..8) the way ImageOps.exif_transpose does.

    Done on the final 8-bit RGB image with the same table as exif_transpose, which would also
    rewrite the EXIF and XMP blocks we are about to throw away.
    """
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


# --------------------------------------------------------------------------------------------
# resizing


def _check_hwc(img: np.ndarray, what: str) -> None:
    """Validate a uint8 (H, W, 3) array."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{what}: expected a uint8 (H, W, 3) array, got {got}")
    if img.shape[2] != 3:
        raise ValueError(f"{what}: expected 3 channels (H, W, 3), got shape {img.shape}")


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, 3) array to ``size=(h, w)``.

    Pillow's bicubic filter with its support widened by the shrink factor (antialiased, so
    downscaling does not alias) and no ``reducing_gap`` shortcut, so the result does not depend
    on the scale factor's divisibility. Returns ``img`` itself when it already has that size.
    """
    _check_hwc(img, "resize_image")
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"resize_image: expected size=(h, w), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"resize_image: expected a positive size (h, w), got {size!r}")
    if img.shape[:2] == (h, w):
        return img
    src = Image.fromarray(np.ascontiguousarray(img), "RGB")
    out = src.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    return _as_array(out)


def short_side_size(h: int, w: int, n: int) -> tuple[int, int]:
    """(h, w) scaled so that the short side is ``n``; the other side rounds half up, min 1."""
    for label, v in (("h", h), ("w", w), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"short_side_size: expected a positive integer {label}, got {v!r}")
    h, w, n = int(h), int(w), int(n)
    if h <= w:
        return n, max(1, (2 * w * n + h) // (2 * h))
    return max(1, (2 * h * n + w) // (2 * w)), n


@dataclass(frozen=True)
class ResizeSpec:
    """How pairs are resized before scoring: ``none``, ``to-a`` or ``short-side`` with ``n``."""

    mode: Literal["none", "to-a", "short-side"]
    n: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("none", "to-a", "short-side"):
            raise ValueError(
                f"ResizeSpec: expected mode 'none', 'to-a' or 'short-side', got {self.mode!r}"
            )
        if self.mode == "short-side":
            if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
                raise ValueError(f"ResizeSpec: short-side needs a positive n, got {self.n!r}")
        elif self.n is not None:
            raise ValueError(f"ResizeSpec: mode {self.mode!r} takes no n, got {self.n!r}")

    def __str__(self) -> str:
        return f"short-side:{self.n}" if self.mode == "short-side" else self.mode


_RESIZE_FORMS = "'none', 'to-a' or 'short-side:N' (N a positive integer, e.g. short-side:256)"


def parse_resize(spec: str) -> ResizeSpec:
    """Parse the ``--resize`` option: "none", "to-a" or "short-side:N"."""
    if not isinstance(spec, str):
        raise ValueError(f"resize: expected {_RESIZE_FORMS}, got {spec!r}")
    text = spec.strip()
    if text in ("none", "to-a"):
        return ResizeSpec(text)  # type: ignore[arg-type]
    found = re.fullmatch(r"short-side:(\d+)", text)
    if found and int(found.group(1)) > 0:
        return ResizeSpec("short-side", int(found.group(1)))
    raise ValueError(f"resize: expected {_RESIZE_FORMS}, got {spec!r}")


def apply_resize(a: np.ndarray, b: np.ndarray, spec: ResizeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Resize a pair: none leaves both, to-a brings b to a's size, short-side resizes both."""
    if spec.mode == "none":
        return a, b
    if spec.mode == "to-a":
        _check_hwc(a, "apply_resize (a)")
        return a, resize_image(b, (a.shape[0], a.shape[1]))
    if spec.n is None:  # ResizeSpec.__post_init__ rules this out; keeps type checkers happy
        raise ValueError("apply_resize: short-side needs n")
    _check_hwc(a, "apply_resize (a)")
    _check_hwc(b, "apply_resize (b)")
    size_a = short_side_size(a.shape[0], a.shape[1], spec.n)
    size_b = short_side_size(b.shape[0], b.shape[1], spec.n)
    return resize_image(a, size_a), resize_image(b, size_b)
