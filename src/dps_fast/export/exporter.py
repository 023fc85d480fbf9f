"""Export a registry model to a validated bundle: trunk, head, pair and pair_spatial graphs."""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._tempdirs import owned_tempdir
from .._version import __version__
from ..bundle import HEAD_NPZ, HEAD_NUMERICS, check_destination, read_bundle, write_bundle
from ..cache import bundle_dir, weights_key
from ..errors import OutputValidationError, UnknownModelError
from ..manifest import (
    ExportInfo,
    FileEntry,
    GraphEntry,
    HeadWeightsInfo,
    InputInfo,
    Manifest,
    TapInfo,
    WeightsInfo,
    graph_file,
    graph_role,
    parse_role,
)
from ..registry import ModelSpec, Tap, get_model
from ..samples import distortion_pairs, photo_features
from . import validate
from .modules import HalfTrunk, Head, PairGraph, Uint8Input, build_trunk
from .quantize import calibration_feeds, calibration_images, quantize_graph
from .weights import (
    build_backbone,
    dists_head_weights,
    load_into_backbone,
    lpips_head_weights,
    resolve_backbone_weights,
    trunk_keys,
)

log = logging.getLogger("dps_fast.export")
OPSET = 17
PROBE_SIZE = 224
EXPORT_TMP_PREFIX = "dps-fast-export-"


def _make_trunk(spec: ModelSpec, backbone: nn.Module) -> nn.Module:
    try:
        return build_trunk(spec, backbone)
    except (ValueError, KeyError, AttributeError, IndexError) as e:
        if spec.head != "dps":
            raise
        import difflib

        from torchvision.models.feature_extraction import get_graph_node_names

        _, nodes = get_graph_node_names(backbone)
        # A module's name is a valid tap too (its output): check both, suggest both.
        names = list(dict.fromkeys([*nodes, *(n for n, _ in backbone.named_modules() if n)]))
        bad = [t for t in spec.tap_names if t not in names]
        if not bad:
            raise
        hints = []
        for t in bad:
            close = difflib.get_close_matches(t, names, n=5, cutoff=0.4)
            hints.append(f"{t!r} (close: {', '.join(close) if close else 'none'})")
        raise UnknownModelError(
            f"{spec.arch} has no node named {'; '.join(hints)}. Tap names are torchvision "
            "node names, as torchvision.models.feature_extraction.get_graph_node_names lists "
            f"(e.g. {', '.join(nodes[1:6])} …)"
        ) from e


def _probe(trunk: nn.Module, h: int, w: int) -> list[torch.Tensor] | None:
    try:
        with torch.inference_mode():
            outs = trunk(torch.rand(1, 3, h, w))
    except RuntimeError:
        return None
    if any(o.shape[2] < 1 or o.shape[3] < 1 for o in outs):
        return None
    return list(outs)


def _min_size(trunk: nn.Module) -> int:
    """Smallest square side that runs: ONNX Runtime may crash the process below it."""
    for s in range(1, 1025):
        if _probe(trunk, s, s) is not None:
            return s
    raise UnknownModelError("the trunk does not run on any input up to 1024×1024")


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dyn: dict[str, dict[int, str]],
) -> None:
    if module.training:
        raise RuntimeError("internal: graphs must be exported in eval mode (BatchNorm, dropout)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dyn,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _versions() -> ExportInfo:
    import onnx
    import torchvision

    return ExportInfo(
        dps_fast=__version__,
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        onnx=onnx.__version__,
        opset=OPSET,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


@dataclass(frozen=True)
class GraphSpec:
    """One graph to export and validate: what runs, on what, and what it is checked against.

    ``reference`` is the float32 module its outputs must match (an fp16 variant is checked
    against the float32 module); ``feeds`` names the validation inputs it takes.
    """

    role: str
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    is_score: bool
    reference: nn.Module
    feeds: str

    @property
    def precision(self) -> str:
        return parse_role(self.role)[1]

    @property
    def uint8(self) -> bool:
        return parse_role(self.role)[2]


@dataclass(frozen=True)
class _Trunk:
    """The probed trunk: its spec (custom taps' channels filled in), taps and smallest input."""

    spec: ModelSpec
    module: nn.Module
    taps: tuple[TapInfo, ...]
    min_side: int
    weights: WeightsInfo


@dataclass
class _Exported:
    """Graphs written so far, their validation records and every failing output."""

    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, role: str, feeds: list[dict[str, np.ndarray]], checks: list[Any]) -> None:
        self.validation[role] = {
            "shapes": [[list(v.shape) for v in f.values()] for f in feeds],
            "outputs": [c.to_dict() for c in checks],
        }
        self.failures += [c.describe() for c in checks if not c.ok]


Feeds = dict[str, list[dict[str, np.ndarray]]]
# The graphs a lean export makes (float input only): what every bundle must have.
LEAN_BASES = ("trunk", "head", "pair")


def export_model(
    model: str | ModelSpec,
    *,
    weights: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    fp16: bool = False,
    int8: bool = False,
    lean: bool = False,
) -> Path:
    """Export ``model`` to a bundle and return its folder.

    ``weights``: a torchvision-format state dict (``.pth``/``.safetensors``); None takes
    torchvision's IMAGENET1K_V1 through its own download and cache. ``out``: the bundle folder;
    None puts it in the cache under the weights key. ``fp16`` adds ``@fp16`` variants (trunk
    in float16, heads in float32) validated against the float32 PyTorch modules. ``int8``
    adds ``@int8`` variants (the trunk part statically quantized, QDQ; heads in float32) for the
    CPU, validated the same way with the int8 tolerances. ``lean``: only the float-input
    ``trunk``, ``head`` and ``pair`` graphs (no uint8 or spatial ones), about half the export's
    time; what the benchmark's quick mode times, and enough for float arrays.
    Raises OutputValidationError listing every graph output that disagrees with PyTorch
    beyond tolerance.

    The steps: build and probe the trunk, declare the graphs (:class:`GraphSpec`), export and
    validate each, add the int8 variants, write the manifest and the bundle, read it back.
    """
    spec = get_model(model) if isinstance(model, str) else model
    if out is not None:
        check_destination(Path(out), force=force)
    trunk = _build_trunk(spec, weights)
    spec = trunk.spec
    head_w, head_src = _head_weights(spec)
    specs = _graph_specs(trunk, head_w, fp16=fp16)
    if lean:
        specs = [s for s in specs if parse_role(s.role)[0] in LEAN_BASES and not s.uint8]
    with owned_tempdir(EXPORT_TMP_PREFIX) as tmp:
        feeds = _validation_feeds(trunk)
        done = _export_and_validate(specs, feeds, tmp)
        _validate_head_float64(specs, trunk, tmp, done)
        if int8:
            _add_int8(specs, feeds, trunk.min_side, tmp, done)
        if done.failures:
            raise OutputValidationError(spec.name, done.failures)
        manifest = _manifest(trunk, head_src, done)
        dest = Path(out) if out is not None else bundle_dir(spec.name, _key(trunk.weights))
        files = {g.file: tmp / g.file for g in done.graphs.values()}
        write_bundle(dest, manifest, files, {n: w.numpy() for n, w in head_w.items()}, force=force)
    log.info("exported %s to %s", spec.name, dest)
    read_bundle(dest)  # read back with every check the engine applies
    return dest


def _build_trunk(spec: ModelSpec, weights: str | os.PathLike[str] | None) -> _Trunk:
    """Backbone with its weights, cut to the tapped trunk; taps probed (channels, stride) and
    the smallest input that runs found."""
    backbone = build_backbone(spec.arch)
    needed = trunk_keys(backbone, _make_trunk(spec, backbone))
    state, wsrc = resolve_backbone_weights(spec, weights)
    load_into_backbone(backbone, state, needed, wsrc.path or wsrc.name)
    del state
    trunk = _make_trunk(spec, backbone)

    probe = _probe(trunk, PROBE_SIZE, PROBE_SIZE)
    if probe is None:
        raise UnknownModelError(f"{spec.arch} does not run on a {PROBE_SIZE}² input")
    taps: list[TapInfo] = []
    for tap, f in zip(spec.taps, probe, strict=True):
        if f.dim() != 4:
            raise UnknownModelError(
                f"tap {tap.name!r} of {spec.arch} gives a {f.dim()}-D tensor; taps must be "
                "convolutional feature maps [N, C, H, W] (choose a node before pooling/flatten)"
            )
        if tap.channels and f.shape[1] != tap.channels:
            raise UnknownModelError(
                f"registry says tap {tap.name} of {spec.arch} has {tap.channels} channels, "
                f"the model gives {f.shape[1]}"
            )
        stride = 2 ** max(0, round(math.log2(PROBE_SIZE / f.shape[2])))
        taps.append(TapInfo(tap.name, int(f.shape[1]), int(stride)))
    if spec.custom:
        spec = _with_channels(spec, [t.channels for t in taps])
    min_side = spec.min_size or _min_size(trunk)
    if _probe(trunk, min_side, min_side) is None:
        raise UnknownModelError(f"registry min_size {min_side} does not run for {spec.name}")
    return _Trunk(spec, trunk, tuple(taps), min_side, wsrc)


def _head_weights(spec: ModelSpec) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The head's weights (LPIPS lin, DISTS alpha/beta; none for DPS) and their source."""
    if spec.head == "lpips":
        return lpips_head_weights(spec)
    if spec.head == "dists":
        return dists_head_weights()
    return {}, {"source": "none", "sha256": ""}


def _graph_specs(trunk: _Trunk, head_w: dict[str, torch.Tensor], *, fp16: bool) -> list[GraphSpec]:
    """Every graph of the bundle: trunk, head, pair, pair_spatial (LPIPS family), each also
    with uint8 NHWC input, and with ``fp16`` their float16-trunk variants."""
    spec, k = trunk.spec, len(trunk.taps)
    channels = [t.channels for t in trunk.taps]
    head = Head(spec, channels, head_w).eval()
    pair = PairGraph(trunk.module, head).eval()
    pair_sp = (
        PairGraph(trunk.module, Head(spec, channels, head_w, spatial=True)).eval()
        if spec.spatial_supported
        else None
    )
    side = max(64, trunk.min_side)
    ex = torch.rand(2, 3, side, side)
    with torch.inference_mode():
        feats = trunk.module(ex)
    ex_u8 = (ex * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    tap_out = [f"tap{i}" for i in range(k)]
    h_in = [f"a_tap{i}" for i in range(k)] + [f"b_tap{i}" for i in range(k)]
    nchw = {0: "N", 2: "H", 3: "W"}
    nhwc = {0: "N", 1: "H", 2: "W"}
    tap_dyn = {n: {0: "N", 2: f"h{i}", 3: f"w{i}"} for i, n in enumerate(tap_out)}
    head_dyn = {n: {0: "N", 2: f"h{i % k}", 3: f"w{i % k}"} for i, n in enumerate(h_in)}
    per_tap = {"per_tap": {0: "N"}}

    def g(role: str, mod: nn.Module, args: tuple[torch.Tensor, ...], ins: list[str],
          outs: list[str], dyn: dict[str, dict[int, str]], is_score: bool,
          ref: nn.Module | None = None) -> GraphSpec:  # fmt: skip
        base = parse_role(role)[0]
        feeds = graph_role(base, uint8=parse_role(role)[2])
        return GraphSpec(role, mod, args, ins, outs, dyn, is_score, ref or mod, feeds)

    specs = [
        g("trunk", trunk.module, (ex,), ["image"], tap_out, {"image": nchw, **tap_dyn}, False),
        g("head", head, (*feats, *(torch.rand_like(f) for f in feats)), h_in, ["per_tap"],
          {**head_dyn, **per_tap}, True),
        g("pair", pair, (ex, torch.rand_like(ex)), ["a", "b"], ["per_tap"],
          {"a": nchw, "b": nchw, **per_tap}, True),
        g(graph_role("trunk", uint8=True), Uint8Input(trunk.module), (ex_u8,), ["image"], tap_out,
          {"image": nhwc, **tap_dyn}, False),
        g(graph_role("pair", uint8=True), Uint8Input(pair), (ex_u8, ex_u8), ["a", "b"], ["per_tap"],
          {"a": nhwc, "b": nhwc, **per_tap}, True),
    ]  # fmt: skip
    if pair_sp is not None:
        sp_out = ["per_tap", "map"]
        specs += [
            g("pair_spatial", pair_sp, (ex, torch.rand_like(ex)), ["a", "b"], sp_out,
              {"a": nchw, "b": nchw, **per_tap, "map": nchw}, True),
            g(graph_role("pair_spatial", uint8=True), Uint8Input(pair_sp), (ex_u8, ex_u8),
              ["a", "b"], sp_out, {"a": nhwc, "b": nhwc, **per_tap, "map": nchw}, True),
        ]  # fmt: skip
    if fp16:
        # Float16 trunk, float32 heads; checked against the float32 modules (relative 1e-2).
        half = HalfTrunk(trunk.module)
        pair16 = PairGraph(half, head).eval()
        variants: dict[str, nn.Module] = {"trunk": half, "pair": pair16}
        if pair_sp is not None:
            variants["pair_spatial"] = PairGraph(half, pair_sp.head).eval()
        by_role = {s.role: s for s in specs}
        for base, mod in variants.items():
            for uint8 in (False, True):
                src = by_role[graph_role(base, uint8=uint8)]
                specs.append(
                    g(graph_role(base, "fp16", uint8=uint8), Uint8Input(mod) if uint8 else mod,
                      src.args, src.inputs, src.outputs, src.dynamic_axes, src.is_score,
                      src.reference)
                )  # fmt: skip
    return specs


def _validation_feeds(trunk: _Trunk) -> Feeds:
    """Validation inputs per graph kind: two shapes (one odd and non-square), distances from
    tiny to large, as float NCHW and uint8 NHWC; head inputs are the trunk's features."""
    side = max(64, trunk.min_side)
    shapes = [(side, side), (max(97, trunk.min_side), max(131, trunk.min_side))]
    pair_feeds = []
    for j, (h, w) in enumerate(shapes):
        a, b = distortion_pairs(4, h, w, seed=100 + j)
        pair_feeds.append({"a": a, "b": b})
    u8_feeds = [
        {n: (v * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
         for n, v in pf.items()}
        for pf in pair_feeds
    ]  # fmt: skip
    k = len(trunk.taps)
    h_in = [f"a_tap{i}" for i in range(k)] + [f"b_tap{i}" for i in range(k)]
    head_feeds = []
    for pf in pair_feeds:
        with torch.inference_mode():
            fa = trunk.module(torch.from_numpy(pf["a"]))
            fb = trunk.module(torch.from_numpy(pf["b"]))
        head_feeds.append({n: t.numpy() for n, t in zip(h_in, list(fa) + list(fb), strict=True)})
    u8 = graph_role("trunk", uint8=True), graph_role("pair", uint8=True)
    return {
        "trunk": [{"image": np.concatenate([pf["a"], pf["b"]])} for pf in pair_feeds],
        "head": head_feeds,
        "pair": pair_feeds,
        "pair_spatial": pair_feeds,
        u8[0]: [{"image": np.concatenate([uf["a"], uf["b"]])} for uf in u8_feeds],
        u8[1]: u8_feeds,
        graph_role("pair_spatial", uint8=True): u8_feeds,
    }


def _export_and_validate(specs: list[GraphSpec], feeds: Feeds, tmp: Path) -> _Exported:
    """Export each graph to ``tmp`` and check it in ONNX Runtime against PyTorch."""
    done = _Exported()
    for s in specs:
        fname = graph_file(s.role)
        _export(s.module, s.args, tmp / fname, s.inputs, s.outputs, s.dynamic_axes)
        done.graphs[s.role] = GraphEntry(
            file=fname,
            sha256="",  # filled in by write_bundle
            inputs=tuple(s.inputs),
            outputs=tuple(s.outputs),
            input_dtype=str(s.args[0].dtype).replace("torch.", ""),
            input_layout="NHWC" if s.uint8 else "NCHW",
        )
        checks = validate.run_checks(
            s.role, tmp / fname, s.reference, feeds[s.feeds], s.outputs, is_score=s.is_score,
            fp16=s.precision == "fp16",
        )  # fmt: skip
        done.record(s.role, feeds[s.feeds], checks)
    return done


def _validate_head_float64(
    specs: list[GraphSpec], trunk: _Trunk, tmp: Path, done: _Exported
) -> None:
    """The head graph once more at a photograph's size, against itself in float64: long float32
    reductions lose digits only there (issue 18). Tap-like features of a JPEG pair stand in for
    the trunk's (no trunk run: VGG at this size costs seconds)."""
    head = next(s for s in specs if s.role == "head")
    head64 = copy.deepcopy(head.module).double()
    photo = photo_features([(t.channels, t.stride) for t in trunk.taps], *validate.PHOTO_SIZE)
    feed = dict(zip(head.inputs, photo[0] + photo[1], strict=True))
    checks = validate.run_checks(
        "head", tmp / done.graphs["head"].file, head64, [feed], ["per_tap"], is_score=True,
        float64=True,
    )  # fmt: skip
    done.record("head@float64", [feed], checks)


def _add_int8(
    specs: list[GraphSpec], feeds: Feeds, min_side: int, tmp: Path, done: _Exported
) -> None:
    """Quantize the float32 trunk, pair and pair_spatial graphs (and their uint8 twins) just
    made, calibrated on the same synthetic images for all of them, and validate them."""
    ca, cb = calibration_images(min_side)
    for s in specs:
        if s.precision != "fp32" or s.role == "head":
            continue
        base, _, uint8 = parse_role(s.role)
        q_role = graph_role(base, "int8", uint8=uint8)
        fname = graph_file(q_role)
        calib = calibration_feeds(s.inputs, ca, cb, uint8_nhwc=uint8)
        desc = quantize_graph(tmp / done.graphs[s.role].file, tmp / fname, calib)
        done.graphs[q_role] = replace(done.graphs[s.role], file=fname, quantization=desc)
        checks = validate.run_checks(
            q_role, tmp / fname, s.reference, feeds[s.feeds], s.outputs, is_score=s.is_score,
            int8=True,
        )  # fmt: skip
        done.record(q_role, feeds[s.feeds], checks)


def _manifest(trunk: _Trunk, head_src: dict[str, str], done: _Exported) -> Manifest:
    """The bundle's manifest (hashes are filled in when the files are written)."""
    spec = trunk.spec
    return Manifest(
        model=spec.name,
        description=spec.description,
        arch=spec.arch,
        head=spec.head,
        reduce=spec.reduce,
        head_numerics=HEAD_NUMERICS,
        lpips_version=spec.lpips_version,
        lower_is_better=getattr(spec, "lower_is_better", True),
        taps=trunk.taps,
        input=InputInfo(min_size=(trunk.min_side, trunk.min_side)),
        preprocessing=spec.preprocessing.to_dict(),
        weights=trunk.weights,
        head_weights=HeadWeightsInfo(head_src["source"], head_src.get("sha256", "")),
        graphs=done.graphs,
        head_file=FileEntry(HEAD_NPZ, ""),
        export=_versions(),
        validation={
            "tolerance": {
                "trunk_rel": validate.TRUNK_REL_TOL,
                "score_abs": validate.SCORE_ABS_TOL,
                "score_rel": validate.SCORE_REL_TOL,
                "fp16_rel": validate.FP16_REL_TOL,
                "int8_score_rel": validate.INT8_SCORE_REL_TOL,
                "int8_trunk_rel": validate.INT8_TRUNK_REL_TOL,
                "head_float64_rel": validate.HEAD_F64_REL_TOL,
            },
            "graphs": done.validation,
        },
    )


def _key(wsrc: WeightsInfo) -> str:
    return weights_key(None if wsrc.source == "torchvision" else wsrc.sha256)


def _with_channels(spec: ModelSpec, channels: list[int]) -> ModelSpec:
    return replace(
        spec, taps=tuple(Tap(t.name, c) for t, c in zip(spec.taps, channels, strict=True))
    )
