"""FLOPs of a trunk graph (2 per multiply-add of Conv/Gemm/MatMul, from ONNX shape inference)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("dps_fast.bench")


def _trunk_graph(bundle_or_spec: Any) -> Path:
    from ..bundle import Bundle, read_bundle

    if isinstance(bundle_or_spec, Bundle):
        return bundle_or_spec.graph_path("trunk")
    if isinstance(bundle_or_spec, str | os.PathLike):
        p = Path(bundle_or_spec)
        if p.suffix == ".onnx" and p.is_file():
            return p
        if p.is_dir():
            return read_bundle(p).graph_path("trunk")
    name = getattr(bundle_or_spec, "name", bundle_or_spec)
    if not isinstance(name, str):
        raise TypeError(
            "expected a Bundle, a bundle folder, an .onnx file, a model name or a ModelSpec, "
            f"got {type(bundle_or_spec).__name__}"
        )
    from ..hub import resolve_bundle

    return read_bundle(resolve_bundle(name)).graph_path("trunk")


def _dims(vi: Any) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return out


def graph_gflops(path: str | os.PathLike[str], shape: Sequence[int]) -> float | None:
    """GFLOPs (2 per multiply-add) of Conv, Gemm and MatMul in an ONNX graph for one input shape.

    Shapes come from ONNX shape inference with every graph input fixed to ``shape``. Returns
    None when ``onnx`` is not installed. Element-wise ops, pooling and reductions are not
    counted: they are a small share of these trunks and not matrix work.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    model = onnx.load(str(path))
    init_names = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(
                f"expected a {len(dims)}-D input shape for {inp.name!r}, got {tuple(shape)}"
            )
        for d, v in zip(dims, shape, strict=True):
            d.Clear()
            d.dim_value = int(v)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        s = _dims(vi)
        if s is not None:
            shapes[vi.name] = s
    for init in g.initializer:
        shapes[init.name] = [int(d) for d in init.dims]

    macs = 0
    for node in g.node:
        if node.op_type == "Conv":
            w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w is None or y is None:
                raise ValueError(f"shape inference left Conv {node.name!r} without shapes")
            # y: [N, Cout, *spatial]; w: [Cout, Cin/group, *kernel]
            macs += int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        elif node.op_type in ("Gemm", "MatMul"):
            a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a is None or y is None:
                raise ValueError(f"shape inference left {node.op_type} {node.name!r} unshaped")
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
            macs += int(np.prod(y, dtype=np.int64)) * int(k)
    return 2.0 * macs / 1e9


def trunk_gflops(bundle_or_spec: Any, h: int, w: int) -> float | None:
    """GFLOPs of the bundle's trunk for one image of ``h × w`` (2 per MAC; Conv, Gemm, MatMul).

    ``bundle_or_spec``: a :class:`~dps_fast.bundle.Bundle`, a bundle folder, a trunk ``.onnx``
    file, a model name or a ModelSpec (looked up in the cache). None when onnx is not installed.
    """
    return graph_gflops(_trunk_graph(bundle_or_spec), (1, 3, int(h), int(w)))


# -- environment ---------------------------------------------------------------------------
