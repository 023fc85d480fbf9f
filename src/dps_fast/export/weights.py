"""Backbone and head weights: torchvision's official files or a user's state dict, hashed.

A weights file must match the trunk exactly: missing, unexpected or mis-shaped keys are named
in one error, never papered over with random weights (the trap of ``lpips.LPIPS``).
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import UnknownModelError, WeightsError
from ..hashing import sha256_file
from ..manifest import WeightsInfo
from ..registry import ModelSpec

# The torchvision weights a bundle without --weights is made from.
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"


def classification_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_backbone(arch: str) -> nn.Module:
    """torchvision's classification model ``arch`` with random weights (loaded later)."""
    import difflib

    import torchvision

    archs = classification_archs()
    if arch not in archs:
        close = difflib.get_close_matches(arch, archs, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown torchvision architecture {arch!r}.{hint} "
            f"Valid classification architectures: {', '.join(archs)}"
        )
    torch.manual_seed(0)
    return torchvision.models.get_model(arch, weights=None).eval()


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a torchvision-format state dict: ``.pth``/``.pt`` (weights_only) or ``.safetensors``."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p} (expected a .pth or .safetensors file)")
    expected = (
        "Expected a state dict saved with torch.save(model.state_dict(), PATH) "
        "or safetensors' save_file."
    )
    if p.stat().st_size == 0:
        raise WeightsError(f"weights file {p} is empty (0 bytes). {expected}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises weights_only=False, i.e. running the file's code: never.
        raise WeightsError(
            f"refused to load weights file {p}: it holds Python objects other than tensors "
            "(a pickle that could run code when loaded), so it is not read. Re-save the "
            "weights as a plain state dict of tensors, or as safetensors. " + expected
        ) from None
    except Exception as e:  # torch raises many types for bad files
        raise WeightsError(
            f"cannot read weights file {p}: {type(e).__name__}: {_first_sentence(e)}. {expected}"
        ) from None
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{p} is not a state dict (got {type(obj).__name__}); expected a mapping of "
            "parameter names to tensors, as torch.save(model.state_dict(), PATH) writes."
        )
    for wrapper in ("state_dict", "model", "net"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            raise WeightsError(
                f"{p} holds a checkpoint with a {wrapper!r} entry, not a bare state dict; "
                f"save checkpoint[{wrapper!r}] on its own and pass that file."
            )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise WeightsError(
            f"{p} is not a state dict: entries that are not tensors: {bad[:5]}"
            f"{' …' if len(bad) > 5 else ''}"
        )
    bad_values = [
        k for k, v in obj.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad_values:
        raise WeightsError(
            f"the weights contain NaN or infinite values ({p}: {len(bad_values)} tensor(s): "
            f"{', '.join(bad_values[:5])}{' …' if len(bad_values) > 5 else ''}); "
            "use a trained, finite state dict"
        )
    return {k: v for k, v in obj.items()}


def _first_sentence(e: BaseException) -> str:
    """The first line of an exception's text, cut at 200 characters (at a word)."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else "(no message)"
    if len(text) > 200:
        text = text[:200].rsplit(" ", 1)[0] + " …"
    return text


def trunk_keys(backbone: nn.Module, trunk: nn.Module) -> set[str]:
    """Names (in the backbone's state dict) of the tensors the trunk actually uses."""
    used = {id(t) for t in trunk.state_dict(keep_vars=True).values()}
    return {k for k, t in backbone.state_dict(keep_vars=True).items() if id(t) in used}


def load_into_backbone(
    backbone: nn.Module, state: Mapping[str, torch.Tensor], needed: set[str], origin: str
) -> None:
    """Copy ``state`` into ``backbone``; every key the trunk needs must be there with its shape."""
    own = backbone.state_dict()
    optional = {k for k in needed if k.endswith("num_batches_tracked")}
    missing = sorted(needed - optional - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
        for k in set(state) & set(own)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    if mis_shaped:
        problems.append(f"mis-shaped keys ({len(mis_shaped)}): {'; '.join(mis_shaped[:8])}")
    if problems:
        raise WeightsError(
            f"weights from {origin} do not fit this backbone — " + " | ".join(problems) + ". "
            "Expected a torchvision-format state dict of the same architecture "
            "(keys like 'features.0.weight')."
        )
    floats = {k: v.to(own[k].dtype) for k, v in state.items()}
    backbone.load_state_dict(floats, strict=False)


def torchvision_acc1(arch: str, weights: str = TORCHVISION_WEIGHTS) -> float | None:
    """ImageNet-1K top-1 accuracy (percent) torchvision states for its ``weights`` of ``arch``
    (``meta["_metrics"]["ImageNet-1K"]["acc@1"]``), None where it states none. Read from the
    weights enum: nothing is downloaded."""
    import torchvision

    try:
        meta = torchvision.models.get_model_weights(arch)[weights].meta
    except (KeyError, ValueError):
        return None
    acc = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return float(acc) if isinstance(acc, int | float) else None


def torchvision_weights_file(arch: str) -> Path:
    """Download (once, hash-prefix checked by torchvision) IMAGENET1K_V1 and return its path."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
        w = enum[TORCHVISION_WEIGHTS]
    except (KeyError, ValueError):
        raise WeightsError(
            f"torchvision has no IMAGENET1K_V1 weights for {arch!r}; pass --weights PATH"
        ) from None
    url = w.url
    fname = url.rsplit("/", 1)[-1]
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / fname
    if not ckpt.is_file():
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
        except Exception as e:
            raise WeightsError(
                f"could not download torchvision's {fname} ({type(e).__name__}: {e}). "
                "Offline? Copy the file to "
                f"{ckpt} or export with --weights PATH (a torchvision-format state dict)."
            ) from None
    return ckpt


def resolve_backbone_weights(
    spec: ModelSpec, weights: str | os.PathLike[str] | None
) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """The state dict to load and its provenance (file sha256 computed on every use)."""
    if weights is None:
        path = torchvision_weights_file(spec.arch)
        sha = sha256_file(path)
        prefix = path.stem.rsplit("-", 1)[-1]
        if not sha.startswith(prefix):
            raise WeightsError(
                f"cached torchvision weights {path} fail their hash (sha256 {sha[:16]}…, file "
                f"name says {prefix}…): delete the file and export again."
            )
        state = load_state_dict_file(path)
        acc = torchvision_acc1(spec.arch)
        return state, WeightsInfo("torchvision", path.name, sha, imagenet_acc1=acc)
    p = Path(weights).expanduser().resolve()
    state = load_state_dict_file(p)
    return state, WeightsInfo("file", p.name, sha256_file(p), path=str(p))


def _lpips_weights_dir() -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights"


def lpips_head_weights(spec: ModelSpec) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The LPIPS lin weights shipped in the ``lpips`` wheel, as lin0…linK-1 ([C] each)."""
    assert spec.lpips_net is not None and spec.lpips_version is not None
    path = _lpips_weights_dir() / f"v{spec.lpips_version}" / f"{spec.lpips_net}.pth"
    if not path.is_file():
        raise WeightsError(f"LPIPS lin weights not found at {path}: pip install lpips==0.1.4")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    out: dict[str, torch.Tensor] = {}
    for i, tap in enumerate(spec.taps):
        key = f"lin{i}.model.1.weight"
        if key not in raw:
            raise WeightsError(f"{path} lacks {key}; found {sorted(raw)[:8]}")
        w = raw[key].reshape(-1).to(torch.float32)
        if w.numel() != tap.channels:
            raise WeightsError(f"{path}: {key} has {w.numel()} channels, tap has {tap.channels}")
        out[f"lin{i}"] = w
    return out, {
        "source": f"lpips/weights/v{spec.lpips_version}/{path.name}",
        "sha256": sha256_file(path),
    }


def dists_head_weights() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """DISTS alpha/beta from the ``DISTS_pytorch`` wheel (its package folder, else sys.prefix)."""
    candidates = []
    try:
        import DISTS_pytorch

        candidates.append(Path(DISTS_pytorch.__file__).parent / "weights.pt")
    except ImportError:
        pass
    candidates.append(Path(sys.prefix) / "weights.pt")
    for path in candidates:
        if path.is_file():
            raw = torch.load(path, map_location="cpu", weights_only=True)
            alpha = raw["alpha"].reshape(-1).to(torch.float32)
            beta = raw["beta"].reshape(-1).to(torch.float32)
            if alpha.numel() != 1475 or beta.numel() != 1475:
                raise WeightsError(f"{path}: expected alpha/beta of 1475 values")
            return {"alpha": alpha, "beta": beta}, {
                "source": "DISTS_pytorch/weights.pt",
                "sha256": sha256_file(path),
            }
    raise WeightsError(
        "DISTS alpha/beta not found (looked in the DISTS_pytorch package and sys.prefix): "
        "pip install DISTS_pytorch==0.1"
    )
