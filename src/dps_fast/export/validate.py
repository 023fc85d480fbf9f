"""Run exported graphs in ONNX Runtime against PyTorch and report max |Δ| per output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TRUNK_REL_TOL = 1e-5
SCORE_ABS_TOL = 1e-5
SCORE_REL_TOL = 1e-4
FP16_REL_TOL = 1e-2  # float16 graphs vs the float32 PyTorch reference (docs/numerics.md)
# int8 (QDQ) graphs vs the float32 PyTorch reference. Scores: the measured error on random
# and ImageNet-like trunks is ~1e-3–3e-2 relative; taps: one tensor's max |Δ| over its max, a
# few quantization steps of the largest activations (the head averages these out).
INT8_SCORE_REL_TOL = 5e-2
INT8_TRUNK_REL_TOL = 0.25
# The head graph on features of a photograph-sized pair vs the same head in float64: the
# features are identical, so only the head's float32 arithmetic differs (measured ≤ 2e-7 after
# the fix of issue 18; 1e-2 to 0.5 before it, from long float32 reductions).
HEAD_F64_REL_TOL = 1e-5
PHOTO_SIZE = (384, 512)  # a 512×384 photograph (KADID-10k's size): the old DISTS graph 7e-3 off


@dataclass(frozen=True)
class OutputCheck:
    graph: str
    output: str
    shape: tuple[int, ...]
    max_abs: float
    rel: float
    ok: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "output": self.output,
            "shape": list(self.shape),
            "max_abs_diff": self.max_abs,
            "rel_diff": self.rel,
            "ok": self.ok,
        }

    def describe(self) -> str:
        return (
            f"{self.graph}:{self.output} shape {list(self.shape)}: max |Δ| {self.max_abs:.3g}, "
            f"relative {self.rel:.3g}"
        )


def compare(
    graph: str,
    name: str,
    got: np.ndarray,
    ref: np.ndarray,
    *,
    is_score: bool,
    fp16: bool = False,
    int8: bool = False,
    float64: bool = False,
) -> OutputCheck:
    """Max |Δ| and max |Δ| / max |ref|, and whether they meet docs/numerics.md's tolerance.

    ``float64``: ``ref`` is the float64 head on the same features (``HEAD_F64_REL_TOL``).
    """
    if got.shape != ref.shape:
        return OutputCheck(graph, name, tuple(ref.shape), float("inf"), float("inf"), False)
    d = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
    finite = bool(np.all(np.isfinite(got)))
    if float64:
        ok = finite and rel <= HEAD_F64_REL_TOL
    elif int8:
        ok = finite and rel <= (INT8_SCORE_REL_TOL if is_score else INT8_TRUNK_REL_TOL)
    elif fp16:
        ok = finite and rel <= FP16_REL_TOL
    elif is_score:
        ok = finite and (d <= SCORE_ABS_TOL or rel <= SCORE_REL_TOL)
    else:
        ok = finite and rel <= TRUNK_REL_TOL
    return OutputCheck(graph, name, tuple(ref.shape), d, rel, ok)


def run_checks(
    graph: str,
    onnx_path: Path,
    torch_fn: Callable[..., Sequence[torch.Tensor]],
    inputs: list[dict[str, np.ndarray]],
    output_names: list[str],
    *,
    is_score: bool,
    fp16: bool = False,
    int8: bool = False,
    float64: bool = False,
) -> list[OutputCheck]:
    """Run ``onnx_path`` and ``torch_fn`` on each input set; one check per output and input.

    ``float64``: ``torch_fn`` is a float64 module; the inputs are cast for it.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    checks = []
    for feed in inputs:
        got = sess.run(output_names, feed)
        with torch.inference_mode():
            args = [torch.from_numpy(v) for v in feed.values()]
            ref = torch_fn(*[a.double() for a in args] if float64 else args)
        if isinstance(ref, torch.Tensor):
            ref = (ref,)
        for name, g, r in zip(output_names, got, ref, strict=True):
            checks.append(
                compare(
                    graph,
                    name,
                    np.asarray(g),
                    r.numpy(),
                    is_score=is_score,
                    fp16=fp16,
                    int8=int8,
                    float64=float64,
                )
            )
    return checks
