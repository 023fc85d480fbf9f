"""int8 graph variants: ONNX Runtime static quantization (QDQ) of the trunk part of a graph.

Convolutions get int8 weights (symmetric, per output channel) and uint8 activations (per
tensor, ranges from MinMax calibration on synthetic images); their ReLUs and max-pools run on
the quantized tensors too. Every other operator — preprocessing, the distance heads (LPIPS'
normalisation and lin weights, DISTS' statistics), the uint8-input conversion — stays float32:
they have no Conv, Relu or MaxPool, so the quantizer leaves them alone. On CPUs with int8 dot
products (AVX-512 VNNI, AMX) ONNX Runtime runs the quantized convolutions 2–3× faster.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..samples import distortion_pairs

log = logging.getLogger("dps_fast.export")

# Operators the quantizer may touch: only the trunk has them (heads and input wrappers do not).
QUANTIZED_OPS = ("Conv", "Relu", "MaxPool")
CALIBRATION_PAIRS = 8
CALIBRATION_SIZE = 224
CALIBRATION_SEED = 2026
CALIBRATION_BATCH = 2  # pairs per calibration run


def calibration_images(min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 NCHW pairs on the 1/255 grid, so float and uint8 inputs calibrate alike."""
    side = max(CALIBRATION_SIZE, min_side)
    a, b = distortion_pairs(CALIBRATION_PAIRS, side, side, seed=CALIBRATION_SEED)
    return np.round(a * 255) / 255, np.round(b * 255) / 255


def calibration_feeds(
    inputs: list[str], a: np.ndarray, b: np.ndarray, *, uint8_nhwc: bool
) -> list[dict[str, np.ndarray]]:
    """Feeds for a trunk (input ``image``) or pair graph (inputs ``a``, ``b``).

    A pair graph gets every pair both ways round (a, b) and (b, a): each branch then sees the
    same images as the trunk graph does, so MinMax gives both graphs the same ranges and the
    trunk + head path scores like the pair graph.
    """

    def conv(x: np.ndarray) -> np.ndarray:
        if not uint8_nhwc:
            return x.astype(np.float32)
        return np.round(x * 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()

    feeds = []
    for i in range(0, a.shape[0], CALIBRATION_BATCH):
        xa, xb = conv(a[i : i + CALIBRATION_BATCH]), conv(b[i : i + CALIBRATION_BATCH])
        if inputs == ["image"]:
            feeds.append({"image": np.concatenate([xa, xb])})
        elif inputs == ["a", "b"]:
            feeds += [{"a": xa, "b": xb}, {"a": xb, "b": xa}]
        else:
            raise ValueError(f"expected graph inputs ['image'] or ['a', 'b'], got {inputs}")
    return feeds


def _grouped_convs(path: Path) -> list[str]:
    """Grouped (depthwise) convolutions: DISTS' L2 pooling of squared activations, whose range
    is too wide for 8 bits (measured: DISTS scores off by 10 %). They cost little in float."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i != 1 for a in n.attribute)
    ]


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Write the int8 (QDQ) variant of ``src`` to ``dst``; returns its manifest description."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    # Beside dst: inside the export's own temporary folder, cleaned up with it.
    with tempfile.TemporaryDirectory(prefix="dps-fast-quant-", dir=dst.parent) as td:
        pre = Path(td) / "pre.onnx"
        # Shapes and constant folding first (what the quantizer's docs ask for); no symbolic
        # shape inference: the graphs have dynamic batch and size.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        skip = _grouped_convs(pre)
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=skip,
        )
    n = sum(next(iter(f.values())).shape[0] for f in feeds)
    return {
        "format": "QDQ",
        "ops": list(QUANTIZED_OPS),
        "weights": "int8, symmetric, per channel",
        "activations": "uint8, per tensor",
        "calibration": f"MinMax over {n} synthetic images (dps_fast.samples), "
        f"seed {CALIBRATION_SEED}",
    }
