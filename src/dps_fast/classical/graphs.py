"""Build the classical measures' ONNX graphs and bundles (needs the ``onnx`` package).

Only the maintainer's regeneration step and the tests import this module:
``python -m dps_fast.classical.graphs`` rewrites ``bundles/``, and a test checks that doing so
gives the shipped bytes. The engine reads the shipped files and never imports ``onnx``.

Every graph takes images in [0, 1] (float32 NCHW, or uint8 NHWC in the ``@uint8-nhwc``
variants, scaled by ``float32(1/255)`` as the engine does) and returns ``per_tap`` [N, 1].
"""

from __future__ import annotations

import argparse
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..bundle import HEAD_NPZ, MANIFEST
from ..hashing import sha256_file
from ..manifest import (
    ExportInfo,
    FileEntry,
    GraphEntry,
    InputInfo,
    graph_file,
    parse_role,
)
from ..manifest import Manifest as ManifestData
from ..manifest import TapInfo as ManifestTap
from .measures import (
    BUNDLES,
    DOWNSAMPLE_TO,
    K1,
    K2,
    MEASURES,
    MS_WEIGHTS,
    SIGMA,
    WINDOW,
    Y_OFFSET,
    Y_WEIGHTS,
    Measure,
)

OPSET = 17
IR_VERSION = 8
PRODUCER = ("dps-fast classical graphs", "1")


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian; its outer product is piq's 2-D window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


class _G:
    """A small graph builder: unique names, constants as initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op: str, inputs: list[str], hint: str | None = None, n_out: int = 1,
           **attrs: Any) -> Any:  # fmt: skip
        outs = [self.name(hint or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(f"n_{op}"), **attrs))
        return outs[0] if n_out == 1 else outs

    # -- pieces ----------------------------------------------------------------------------
    def to_float(self, x: str) -> str:
        """uint8 NHWC → float32 NCHW in [0, 1], exactly as ``inputs.nhwc_to_float``."""
        f = self.op("Cast", [x], to=TensorProto.FLOAT)
        t = self.op("Transpose", [f], perm=[0, 3, 1, 2])
        return self.op("Mul", [t, self.const(np.float32(1 / 255))])

    def luma(self, x: str) -> str:
        w = self.const(np.asarray(Y_WEIGHTS, np.float32).reshape(1, 3, 1, 1), hint="y_w")
        b = self.const(np.asarray([Y_OFFSET], np.float32), hint="y_b")
        return self.op("Conv", [x, w, b], hint="luma")

    def mean(self, x: str, axes: list[int], *, double: bool = False, inner: int = 1) -> str:
        """Mean over ``axes``: the last ``inner`` (a row: W, or W and C in NHWC) in float32,
        the rest in float64.

        One float32 pass over a whole image drifts by ~1e-5 relative at 1024×768; rows of a
        few thousand values do not, and the float64 remainder is small.
        """
        rows = self.op("ReduceMean", [x], axes=axes[-inner:], keepdims=0)
        d = self.op("Cast", [rows], to=TensorProto.DOUBLE)
        rest = axes[:-inner]
        m = self.op("ReduceMean", [d], axes=rest, keepdims=0) if rest else d
        return m if double else self.op("Cast", [m], to=TensorProto.FLOAT)

    def pixel_measure_u8(self, m: Measure, a: str, b: str) -> str:
        """MSE, MAE or PSNR (RGB or luma) of uint8 NHWC images, without a transpose: the
        difference of the 8-bit values in float32 (exact), scaled to [0, 1] units in float64
        (luma: the 1/255 is in the weights)."""
        d = self.op("Sub", [self.op("Cast", [a], to=TensorProto.FLOAT),
                            self.op("Cast", [b], to=TensorProto.FLOAT)])  # fmt: skip
        scale = 1 / 255
        if m.luma:
            w = np.asarray(Y_WEIGHTS, np.float32).reshape(3, 1) / np.float32(255)
            d, scale = self.op("MatMul", [d, self.const(w, hint="y_w")]), 1.0
        squared = m.kind != "mae"
        e = self.op("Mul", [d, d]) if squared else self.op("Abs", [d])
        mean = self.mean(e, [1, 2, 3], double=True, inner=2)
        v = self.op("Mul", [mean, self.const(scale**2 if squared else scale, np.float64)])
        if m.kind == "psnr":
            v = self.op("Mul", [self.op("Log", [v]), self.const(-10 / math.log(10), np.float64)])
        return self.op("Cast", [v], to=TensorProto.FLOAT)

    def mean_err(self, x: str, y: str, squared: bool, *, double: bool = False) -> str:
        d = self.op("Sub", [x, y])
        e = self.op("Mul", [d, d]) if squared else self.op("Abs", [d])
        return self.mean(e, [1, 2, 3], double=double)

    def scalar_dim(self, shape: str, axis: int) -> str:
        return self.op("Gather", [shape, self.const(axis, np.int64)], axis=0)

    def vec(self, *scalars: str) -> str:
        axes = self.const([0], np.int64)
        return self.op("Concat", [self.op("Unsqueeze", [s, axes]) for s in scalars], axis=0)

    def downsample(self, xs: list[str]) -> list[str]:
        """Average-pool by f = max(1, round(min(H, W) / 256)), as piq's ``ssim``."""
        shape = self.op("Shape", [xs[0]])
        n, c, h, w = (self.scalar_dim(shape, i) for i in range(4))
        m = self.op("Cast", [self.op("Min", [h, w])], to=TensorProto.FLOAT)
        r = self.op("Round", [self.op("Div", [m, self.const(np.float32(DOWNSAMPLE_TO))])])
        f = self.op("Cast", [self.op("Max", [r, self.const(np.float32(1))])], to=TensorProto.INT64)
        h2, w2 = self.op("Div", [h, f]), self.op("Div", [w, f])
        starts, axes = self.const([0, 0], np.int64), self.const([2, 3], np.int64)
        ends = self.vec(self.op("Mul", [h2, f]), self.op("Mul", [w2, f]))
        shape6 = self.vec(n, c, h2, f, w2, f)
        out = []
        for x in xs:
            xc = self.op("Slice", [x, starts, ends, axes])
            r6 = self.op("Reshape", [xc, shape6])
            out.append(self.op("ReduceMean", [r6], axes=[3, 5], keepdims=0))
        return out

    def downsample_u8(self, xs: list[str]) -> list[str]:
        """uint8 NHWC → float32 NCHW in [0, 1], average-pooled as :meth:`downsample`, pooling
        first: the f×f sums of 8-bit values are exact in float32, then one scale by
        1 / (255 f²) and a transpose of the pooled (f² times smaller) images: the same values as
        scaling, transposing and pooling at full size (to float rounding), with two full-size
        passes (cast, pool) instead of five."""
        shape = self.op("Shape", [xs[0]])
        n, h, w, c = (self.scalar_dim(shape, i) for i in range(4))
        m = self.op("Cast", [self.op("Min", [h, w])], to=TensorProto.FLOAT)
        r = self.op("Round", [self.op("Div", [m, self.const(np.float32(DOWNSAMPLE_TO))])])
        f = self.op("Cast", [self.op("Max", [r, self.const(np.float32(1))])], to=TensorProto.INT64)
        h2, w2 = self.op("Div", [h, f]), self.op("Div", [w, f])
        starts, axes = self.const([0, 0], np.int64), self.const([1, 2], np.int64)
        ends = self.vec(self.op("Mul", [h2, f]), self.op("Mul", [w2, f]))
        shape6 = self.vec(n, h2, f, w2, f, c)
        area = self.op("Cast", [self.op("Mul", [f, f])], to=TensorProto.FLOAT)
        scale = self.op("Div", [self.const(np.float32(1)),
                                self.op("Mul", [self.const(np.float32(255)), area])])  # fmt: skip
        pool_axes = self.const([2, 4], np.int64)
        out = []
        for x in xs:
            xc = self.op("Cast", [self.op("Slice", [x, starts, ends, axes])], to=TensorProto.FLOAT)
            s = self.op("ReduceSum", [self.op("Reshape", [xc, shape6]), pool_axes], keepdims=0)
            t = self.op("Transpose", [s], perm=[0, 3, 1, 2])
            out.append(self.op("Mul", [t, scale]))
        return out

    def half(self, xs: list[str]) -> list[str]:
        """MS-SSIM's step between scales: replicate-pad top/left by H%2 or W%2, 2×2 mean."""
        shape = self.op("Shape", [xs[0]])
        two = self.const(2, np.int64)
        h, w = self.scalar_dim(shape, 2), self.scalar_dim(shape, 3)
        p = self.op("Max", [self.op("Mod", [h, two]), self.op("Mod", [w, two])])
        zero = self.const(0, np.int64)
        pads = self.vec(zero, zero, p, p, zero, zero, zero, zero)
        return [
            self.op(
                "AveragePool",
                [self.op("Pad", [x, pads], mode="edge")],
                kernel_shape=[2, 2],
                strides=[2, 2],
            )
            for x in xs
        ]

    def ssim_cs(self, x: str, y: str, channels: int) -> tuple[str, str]:
        """Per-channel mean SSIM and contrast-structure [N, C] (valid window positions)."""
        s = self.op("Concat", [x, y, self.op("Mul", [x, x]), self.op("Mul", [y, y]),
                               self.op("Mul", [x, y])], axis=1)  # fmt: skip
        g = gaussian_window().astype(np.float32)
        k = 5 * channels
        kh = self.const(np.tile(g.reshape(1, 1, 1, WINDOW), (k, 1, 1, 1)), hint="win_w")
        kv = self.const(np.tile(g.reshape(1, 1, WINDOW, 1), (k, 1, 1, 1)), hint="win_h")
        f = self.op("Conv", [self.op("Conv", [s, kh], group=k), kv], group=k)
        split = self.const([channels] * 5, np.int64)
        mx, my, exx, eyy, exy = self.op("Split", [f, split], n_out=5, axis=1)
        mxx, myy, mxy = self.op("Mul", [mx, mx]), self.op("Mul", [my, my]), self.op("Mul", [mx, my])
        sxx, syy, sxy = (
            self.op("Sub", [exx, mxx]),
            self.op("Sub", [eyy, myy]),
            self.op("Sub", [exy, mxy]),
        )
        c1, c2, two = (
            self.const(np.float32(K1**2)),
            self.const(np.float32(K2**2)),
            self.const(np.float32(2)),
        )
        cs = self.op(
            "Div",
            [self.op("Add", [self.op("Mul", [two, sxy]), c2]),
             self.op("Add", [self.op("Add", [sxx, syy]), c2])],
        )  # fmt: skip
        lum = self.op(
            "Div",
            [self.op("Add", [self.op("Mul", [two, mxy]), c1]),
             self.op("Add", [self.op("Add", [mxx, myy]), c1])],
        )  # fmt: skip
        ss = self.op("Mul", [lum, cs])
        return self.mean(ss, [2, 3]), self.mean(cs, [2, 3])

    def measure(self, m: Measure, x: str, y: str) -> str:
        """Scores [N] of measure ``m`` on float NCHW images in [0, 1]."""
        channels = 3
        if m.luma:
            x, y, channels = self.luma(x), self.luma(y), 1
        if m.kind in ("mse", "mae"):
            return self.mean_err(x, y, squared=m.kind == "mse")
        if m.kind == "psnr":
            mse = self.mean_err(x, y, squared=True, double=True)  # log10 in float64
            db = self.op("Mul", [self.op("Log", [mse]), self.const(-10 / math.log(10), np.float64)])
            return self.op("Cast", [db], to=TensorProto.FLOAT)
        if m.kind == "ssim":
            if m.downsample:
                x, y = self.downsample([x, y])
            ssim, _ = self.ssim_cs(x, y, channels)
            return self.op("ReduceMean", [ssim], axes=[1], keepdims=0)
        # ms-ssim
        axes0 = self.const([0], np.int64)
        per_scale = []
        for level in range(len(MS_WEIGHTS)):
            if level:
                x, y = self.half([x, y])
            ssim, cs = self.ssim_cs(x, y, channels)
            last = level == len(MS_WEIGHTS) - 1
            per_scale.append(self.op("Unsqueeze", [ssim if last else cs, axes0]))
        stack = self.op("Relu", [self.op("Concat", per_scale, axis=0)])
        w = self.const(np.asarray(MS_WEIGHTS, np.float32).reshape(-1, 1, 1), hint="scale_w")
        prod = self.op("ReduceProd", [self.op("Pow", [stack, w])], axes=[0], keepdims=0)
        return self.op("ReduceMean", [prod], axes=[1], keepdims=0)


def _image_input(name: str, u8: bool) -> onnx.ValueInfoProto:
    if u8:
        return helper.make_tensor_value_info(name, TensorProto.UINT8, ["N", "H", "W", 3])
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, "H", "W"])


def _model(g: _G, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           name: str) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_operatorsetid("", OPSET)],
        producer_name=PRODUCER[0],
        producer_version=PRODUCER[1],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def pair_graph(m: Measure, *, u8: bool = False) -> onnx.ModelProto:
    """Scores of pairs: inputs ``a``, ``b``; output ``per_tap`` [N, 1]."""
    g = _G()
    if u8 and m.kind in ("mse", "mae", "psnr"):
        score = g.pixel_measure_u8(m, "a", "b")
    elif u8 and m.kind == "ssim" and m.downsample and not m.luma:
        a, b = g.downsample_u8(["a", "b"])
        ssim, _ = g.ssim_cs(a, b, 3)
        score = g.op("ReduceMean", [ssim], axes=[1], keepdims=0)
    else:
        a, b = ("a", "b") if not u8 else (g.to_float("a"), g.to_float("b"))
        score = g.measure(m, a, b)
    out = g.op("Unsqueeze", [score, g.const([1], np.int64)])
    g.nodes.append(helper.make_node("Identity", [out], ["per_tap"], name="out"))
    per_tap = helper.make_tensor_value_info("per_tap", TensorProto.FLOAT, ["N", 1])
    return _model(g, [_image_input("a", u8), _image_input("b", u8)], [per_tap], f"{m.name}_pair")


def head_graph(m: Measure) -> onnx.ModelProto:
    """The same measure on "features", which for a classical measure are the images."""
    g = _G()
    score = g.measure(m, "a_tap0", "b_tap0")
    out = g.op("Unsqueeze", [score, g.const([1], np.int64)])
    g.nodes.append(helper.make_node("Identity", [out], ["per_tap"], name="out"))
    per_tap = helper.make_tensor_value_info("per_tap", TensorProto.FLOAT, ["N", 1])
    ins = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, "H", "W"])
        for n in ("a_tap0", "b_tap0")
    ]
    return _model(g, ins, [per_tap], f"{m.name}_head")


def trunk_graph(*, u8: bool = False) -> onnx.ModelProto:
    """Features of a classical measure: the image itself, float32 NCHW in [0, 1]."""
    g = _G()
    x = g.to_float("image") if u8 else g.op("Identity", ["image"])
    g.nodes.append(helper.make_node("Identity", [x], ["tap0"], name="out"))
    tap = helper.make_tensor_value_info("tap0", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _model(g, [_image_input("image", u8)], [tap], "image_trunk")


def _write_empty_npz(path: Path) -> None:
    """An empty ``.npz`` (no head weights), byte-identical on every run (no timestamps)."""
    with zipfile.ZipFile(path, "w"):
        pass


def write_measure_bundle(m: Measure, dest: Path) -> Path:
    """Write measure ``m``'s bundle folder (graphs, empty head weights, manifest)."""
    dest.mkdir(parents=True, exist_ok=True)
    models = {
        "trunk": trunk_graph(),
        "trunk@uint8-nhwc": trunk_graph(u8=True),
        "pair": pair_graph(m),
        "pair@uint8-nhwc": pair_graph(m, u8=True),
        "head": head_graph(m),
    }
    graphs: dict[str, GraphEntry] = {}
    for role, model in models.items():
        fname = graph_file(role)
        (dest / fname).write_bytes(model.SerializeToString(deterministic=True))
        _, _, u8 = parse_role(role)
        graphs[role] = GraphEntry(
            file=fname,
            sha256=sha256_file(dest / fname),
            inputs=tuple(i.name for i in model.graph.input),
            outputs=tuple(o.name for o in model.graph.output),
            input_dtype="uint8" if u8 else "float32",
            input_layout="NHWC" if u8 else "NCHW",
        )
    _write_empty_npz(dest / HEAD_NPZ)
    manifest = ManifestData(
        model=m.name,
        description=m.description,
        arch="",
        head="classical",
        reduce="sum",
        lpips_version=None,
        taps=(ManifestTap(m.name, 3, 1),),
        input=InputInfo(min_size=(m.min_size, m.min_size)),
        preprocessing={},
        weights=None,  # no network: nothing learned
        head_weights=None,
        graphs=graphs,
        head_file=FileEntry(HEAD_NPZ, sha256_file(dest / HEAD_NPZ)),
        # No date or versions: the bytes must not depend on when or where they are made.
        export=ExportInfo(opset=OPSET, other={"generator": "python -m dps_fast.classical.graphs"}),
        lower_is_better=m.lower_is_better,
        extra={"conventions": m.conventions()},
    )
    manifest.check()
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    (dest / MANIFEST).write_text(text, encoding="utf-8")
    return dest


def write_all(root: Path = BUNDLES) -> list[Path]:
    """Regenerate every classical bundle under ``root``."""
    return [write_measure_bundle(m, root / name) for name, m in MEASURES.items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Regenerate the classical measures' bundles.")
    ap.add_argument("--out", type=Path, default=BUNDLES, help="folder of bundles")
    args = ap.parse_args(argv)
    write_all(args.out)


if __name__ == "__main__":
    main()
