"""Images in, results out: decoding, pairing folders or manifests, results files, heatmaps."""

from __future__ import annotations

from .decode import (
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
from .heatmap import COLORMAP, heatmap_name, save_heatmap
from .pairing import (
    MATCH_MODES,
    Pair,
    Pairing,
    PairingError,
    list_images,
    pair_dirs,
    read_pairs_manifest,
)
from .results import (
    BASE_COLUMNS,
    ResultWriter,
    format_float,
    meta_path,
    result_columns,
    results_format,
    write_meta,
)

__all__ = [
    "BASE_COLUMNS",
    "COLORMAP",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MATCH_MODES",
    "ImageDecodeError",
    "Pair",
    "Pairing",
    "PairingError",
    "ResizeSpec",
    "ResultWriter",
    "apply_resize",
    "decode_image",
    "format_float",
    "heatmap_name",
    "list_images",
    "meta_path",
    "pair_dirs",
    "parse_resize",
    "read_pairs_manifest",
    "resize_image",
    "result_columns",
    "results_format",
    "save_heatmap",
    "short_side_size",
    "write_meta",
]
