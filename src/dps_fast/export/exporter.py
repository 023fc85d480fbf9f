"""Export a registry model to a validated bundle: trunk, head, pair and pair_spatial graphs."""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..bundle import HEAD_NUMERICS, SCHEMA_VERSION, check_destination, read_bundle, write_bundle
from ..cache import bundle_dir, weights_key
from ..errors import OutputValidationError, UnknownModelError
from ..registry import ModelSpec, Tap, get_model
from ..samples import distortion_pairs, photo_features
from . import validate
from .modules import HalfTrunk, Head, PairGraph, Uint8Input, build_trunk
from .quantize import calibration_feeds, calibration_images, int8_role, quantize_graph
from .weights import (
    WeightsSource,
    build_backbone,
    dists_head_weights,
    load_into_backbone,
    lpips_head_weights,
    resolve_backbone_weights,
    trunk_keys,
)

log = logging.getLogger("dps_fast.export")
OPSET = 17
U8 = "@uint8-nhwc"  # graph variant: uint8 NHWC input, 4× fewer bytes to move
PROBE_SIZE = 224


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


def _versions() -> dict[str, Any]:
    import onnx
    import torchvision

    return {
        "dps_fast": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "opset": OPSET,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export_model(
    model: str | ModelSpec,
    *,
    weights: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    fp16: bool = False,
    int8: bool = False,
) -> Path:
    """Export ``model`` to a bundle and return its folder.

    ``weights``: a torchvision-format state dict (``.pth``/``.safetensors``); None takes
    torchvision's IMAGENET1K_V1 through its own download and cache. ``out``: the bundle folder;
    None puts it in the cache under the weights key. ``fp16`` adds ``@fp16`` variants (trunk
    in float16, heads in float32) validated against the float32 PyTorch modules. ``int8``
    adds ``@int8`` variants (the trunk part statically quantized, QDQ; heads in float32) for the
    CPU, validated the same way with the int8 tolerances.
    Raises OutputValidationError listing every graph output that disagrees with PyTorch
    beyond tolerance.
    """
    spec = get_model(model) if isinstance(model, str) else model
    if out is not None:
        check_destination(Path(out), force=force)
    backbone = build_backbone(spec.arch)
    needed = trunk_keys(backbone, _make_trunk(spec, backbone))
    state, wsrc = resolve_backbone_weights(spec, weights)
    load_into_backbone(backbone, state, needed, wsrc.name)
    del state
    trunk = _make_trunk(spec, backbone)

    probe = _probe(trunk, PROBE_SIZE, PROBE_SIZE)
    if probe is None:
        raise UnknownModelError(f"{spec.arch} does not run on a {PROBE_SIZE}² input")
    taps_info: list[dict[str, Any]] = []
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
        taps_info.append({"name": tap.name, "channels": int(f.shape[1]), "stride": int(stride)})
    if spec.custom:
        spec = _with_channels(spec, [t["channels"] for t in taps_info])
    min_side = spec.min_size or _min_size(trunk)
    if _probe(trunk, min_side, min_side) is None:
        raise UnknownModelError(f"registry min_size {min_side} does not run for {spec.name}")

    if spec.head == "lpips":
        head_w, head_src = lpips_head_weights(spec)
    elif spec.head == "dists":
        head_w, head_src = dists_head_weights()
    else:
        head_w, head_src = {}, {"source": "none", "sha256": ""}
    channels: list[int] = [int(t["channels"]) for t in taps_info]
    head = Head(spec, channels, head_w).eval()
    pair = PairGraph(trunk, head).eval()
    pair_sp = (
        PairGraph(trunk, Head(spec, channels, head_w, spatial=True)).eval()
        if spec.spatial_supported
        else None
    )

    k = len(channels)
    tap_out = [f"tap{i}" for i in range(k)]
    nchw = {0: "N", 2: "H", 3: "W"}
    graphs: dict[str, dict[str, Any]] = {}
    validation: dict[str, Any] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dps-fast-export-") as td:
        tmp = Path(td)
        side = max(64, min_side)
        ex = torch.rand(2, 3, side, side)
        h_in = [f"a_tap{i}" for i in range(k)] + [f"b_tap{i}" for i in range(k)]
        with torch.inference_mode():
            feats = trunk(ex)
        ex_u8 = (ex * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        tap_dyn = {n: {0: "N", 2: f"h{i}", 3: f"w{i}"} for i, n in enumerate(tap_out)}
        nhwc = {0: "N", 1: "H", 2: "W"}
        # role → (module, example args, inputs, outputs, dynamic axes, is_score)
        specs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], list[str],
                          dict[str, dict[int, str]], bool]] = [
            ("trunk", trunk, (ex,), ["image"], tap_out, {"image": nchw, **tap_dyn}, False),
            ("head", head, tuple(feats) + tuple(torch.rand_like(f) for f in feats), h_in,
             ["per_tap"], {**{n: {0: "N", 2: f"h{i % k}", 3: f"w{i % k}"}
                              for i, n in enumerate(h_in)}, "per_tap": {0: "N"}}, True),
            ("pair", pair, (ex, torch.rand_like(ex)), ["a", "b"], ["per_tap"],
             {"a": nchw, "b": nchw, "per_tap": {0: "N"}}, True),
            (f"trunk{U8}", Uint8Input(trunk), (ex_u8,), ["image"], tap_out,
             {"image": nhwc, **tap_dyn}, False),
            (f"pair{U8}", Uint8Input(pair), (ex_u8, ex_u8), ["a", "b"], ["per_tap"],
             {"a": nhwc, "b": nhwc, "per_tap": {0: "N"}}, True),
        ]  # fmt: skip
        if pair_sp is not None:
            specs += [
                ("pair_spatial", pair_sp, (ex, torch.rand_like(ex)), ["a", "b"],
                 ["per_tap", "map"], {"a": nchw, "b": nchw, "per_tap": {0: "N"}, "map": nchw},
                 True),
                (f"pair_spatial{U8}", Uint8Input(pair_sp), (ex_u8, ex_u8), ["a", "b"],
                 ["per_tap", "map"], {"a": nhwc, "b": nhwc, "per_tap": {0: "N"}, "map": nchw},
                 True),
            ]  # fmt: skip

        # role → the float32 module its outputs are checked against (fp16 variants: relative 1e-2)
        reference = {r: m for r, m, *_ in specs}
        if fp16:
            half = HalfTrunk(trunk)
            pair16 = PairGraph(half, head).eval()
            f16: list[tuple[str, nn.Module, str]] = [
                ("trunk@fp16", half, "trunk"),
                ("pair@fp16", pair16, "pair"),
                (f"trunk@fp16{U8}", Uint8Input(half), f"trunk{U8}"),
                (f"pair@fp16{U8}", Uint8Input(pair16), f"pair{U8}"),
            ]
            if pair_sp is not None:
                sp16 = PairGraph(half, pair_sp.head).eval()
                f16 += [
                    ("pair_spatial@fp16", sp16, "pair_spatial"),
                    (f"pair_spatial@fp16{U8}", Uint8Input(sp16), f"pair_spatial{U8}"),
                ]
            by_role = {sp[0]: sp for sp in specs}
            for role, mod, base in f16:
                _, _, args, ins, outs, dyn, is_score = by_role[base]
                specs.append((role, mod, args, ins, outs, dyn, is_score))
                reference[role] = reference[base]

        # Validation inputs: two shapes, one odd and non-square; distances tiny to large.
        shapes = [(side, side), (max(97, min_side), max(131, min_side))]
        pair_feeds = []
        for j, (h, w) in enumerate(shapes):
            a, b = distortion_pairs(4, h, w, seed=100 + j)
            pair_feeds.append({"a": a, "b": b})
        u8_feeds = [
            {n: (v * 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
             for n, v in pf.items()}
            for pf in pair_feeds
        ]  # fmt: skip
        head_feeds = []
        for pf in pair_feeds:
            with torch.inference_mode():
                fa = trunk(torch.from_numpy(pf["a"]))
                fb = trunk(torch.from_numpy(pf["b"]))
            head_feeds.append(
                {n: t.numpy() for n, t in zip(h_in, list(fa) + list(fb), strict=True)}
            )
        feeds_by_role = {
            "trunk": [{"image": np.concatenate([pf["a"], pf["b"]])} for pf in pair_feeds],
            "head": head_feeds,
            "pair": pair_feeds,
            "pair_spatial": pair_feeds,
            f"trunk{U8}": [{"image": np.concatenate([uf["a"], uf["b"]])} for uf in u8_feeds],
            f"pair{U8}": u8_feeds,
            f"pair_spatial{U8}": u8_feeds,
        }
        for role, mod, args, ins, outs, dyn, is_score in specs:
            fname = role.replace("@", "_") + ".onnx"
            base_role = role.replace("@fp16", "")
            _export(mod, args, tmp / fname, ins, outs, dyn)
            graphs[role] = {"file": fname, "inputs": ins, "outputs": outs,
                            "input_dtype": str(args[0].dtype).replace("torch.", ""),
                            "input_layout": "NHWC" if role.endswith(U8) else "NCHW"}  # fmt: skip
            feeds = feeds_by_role[base_role]
            checks = validate.run_checks(
                role, tmp / fname, reference[role], feeds, outs, is_score=is_score,
                fp16="@fp16" in role,
            )  # fmt: skip
            validation[role] = {
                "shapes": [[list(v.shape) for v in f.values()] for f in feeds],
                "outputs": [c.to_dict() for c in checks],
            }
            failures += [c.describe() for c in checks if not c.ok]
        # The head graph once more at a photograph's size, against itself in float64: long
        # float32 reductions lose digits only there (issue 18). Tap-like features of a JPEG
        # pair stand in for the trunk's (no trunk run: VGG at this size costs seconds).
        head64 = copy.deepcopy(head).double()
        photo = photo_features(
            [(int(t["channels"]), int(t["stride"])) for t in taps_info], *validate.PHOTO_SIZE
        )
        photo_feed = dict(zip(h_in, photo[0] + photo[1], strict=True))
        checks = validate.run_checks(
            "head", tmp / graphs["head"]["file"], head64, [photo_feed], ["per_tap"],
            is_score=True, float64=True,
        )  # fmt: skip
        validation["head@float64"] = {
            "shapes": [[list(v.shape) for v in photo_feed.values()]],
            "outputs": [c.to_dict() for c in checks],
        }
        del photo, photo_feed
        failures += [c.describe() for c in checks if not c.ok]
        if int8:
            # Quantize the float32 graphs just made (trunk, pair, pair_spatial and their uint8
            # twins), calibrated on the same synthetic images for all of them.
            ca, cb = calibration_images(min_side)
            for role, _, _, ins, outs, _, is_score in list(specs):
                if "@fp16" in role or role == "head":
                    continue
                q_role = int8_role(role)
                fname = q_role.replace("@", "_") + ".onnx"
                feeds = calibration_feeds(ins, ca, cb, uint8_nhwc=role.endswith(U8))
                desc = quantize_graph(tmp / graphs[role]["file"], tmp / fname, feeds)
                graphs[q_role] = {**graphs[role], "file": fname, "quantization": desc}
                checks = validate.run_checks(
                    q_role, tmp / fname, reference[role], feeds_by_role[role], outs,
                    is_score=is_score, int8=True,
                )  # fmt: skip
                validation[q_role] = {
                    "shapes": [[list(v.shape) for v in f.values()] for f in feeds_by_role[role]],
                    "outputs": [c.to_dict() for c in checks],
                }
                failures += [c.describe() for c in checks if not c.ok]
        if failures:
            raise OutputValidationError(spec.name, failures)

        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": spec.name,
            "description": spec.description,
            "arch": spec.arch,
            "head": spec.head,
            "head_numerics": HEAD_NUMERICS,
            "reduce": spec.reduce,
            "lpips_version": spec.lpips_version,
            "taps": taps_info,
            "input": {
                "layout": "NCHW",
                "dtype": "float32",
                "range": [0, 1],
                "min_size": [min_side, min_side],
            },
            "preprocessing": spec.preprocessing.to_dict(),
            "weights": wsrc.to_dict(),
            "head_weights": head_src,
            "graphs": graphs,
            "export": _versions(),
            "validation": {
                "tolerance": {
                    "trunk_rel": validate.TRUNK_REL_TOL,
                    "score_abs": validate.SCORE_ABS_TOL,
                    "score_rel": validate.SCORE_REL_TOL,
                    "fp16_rel": validate.FP16_REL_TOL,
                    "int8_score_rel": validate.INT8_SCORE_REL_TOL,
                    "int8_trunk_rel": validate.INT8_TRUNK_REL_TOL,
                    "head_float64_rel": validate.HEAD_F64_REL_TOL,
                },
                "graphs": validation,
            },
        }
        dest = Path(out) if out is not None else bundle_dir(spec.name, _key(wsrc))
        files = {g["file"]: tmp / g["file"] for g in graphs.values()}
        write_bundle(dest, manifest, files, {n: w.numpy() for n, w in head_w.items()}, force=force)
    log.info("exported %s to %s", spec.name, dest)
    read_bundle(dest)  # read back with every check the engine applies
    return dest


def _key(wsrc: WeightsSource) -> str:
    return weights_key(None if wsrc.source == "torchvision" else wsrc.sha256)


def _with_channels(spec: ModelSpec, channels: list[int]) -> ModelSpec:
    from dataclasses import replace

    return replace(
        spec, taps=tuple(Tap(t.name, c) for t, c in zip(spec.taps, channels, strict=True))
    )
