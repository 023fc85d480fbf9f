"""What is timed: bundles on seeded random weights, the reference models, the contenders."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("dps_fast.bench")

# Contender names, in the order they run inside a round.
ENGINE = "engine"
REFERENCE = "reference"
CHANNELS_LAST = "channels_last"
ENGINE_TRUNK = "engine-trunk"  # diagnostic: the engine's trunk graph alone on a and b
_LPIPS_NET = {"alexnet": "alex", "vgg16": "vgg", "squeezenet1_1": "squeeze"}
# Random trunk weights keep every key torchvision saves, except the classifiers of the big
# nets, which no trunk uses (the export loader needs only the trunk's keys).
_FULL_STATE_ARCHS = frozenset({"squeezenet1_1"})


def make_random_weights(arch: str, path: Path, seed: int = 0, *, full: bool | None = None) -> Path:
    """A seeded random torchvision ``arch`` state dict, saved in torchvision's key format.

    ``full=False`` leaves out the classifier (no trunk uses it); None keeps it only for small
    nets.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None)
    sd = model.state_dict()
    if not (arch in _FULL_STATE_ARCHS if full is None else full):
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier", "fc."))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    return path


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "dps-fast-bench"


def prepare_bundle(
    model: str, cache_dir: Path, seed: int = 0, *, int8: bool = False, lean: bool = False
) -> tuple[Path, Path]:
    """(bundle folder, weights file) for ``model`` on seeded random trunk weights; made once.

    ``int8`` adds the quantized ``@int8`` graph variants (``dps-fast export --int8``); ``lean``
    makes only the float-input trunk, head and pair graphs (what the suite times; about half
    the export time).
    """
    from ..bundle import MANIFEST, read_bundle
    from ..registry import get_model

    spec = get_model(model)
    weights = cache_dir / "weights" / f"{spec.arch}-seed{seed}.pth"
    if not weights.is_file():
        make_random_weights(spec.arch, weights, seed)
    tag = ("-int8" if int8 else "") + ("-lean" if lean else "")
    out = cache_dir / "bundles" / f"{model}-seed{seed}{tag}"
    ready = (out / MANIFEST).is_file() and (not int8 or read_bundle(out).has_graph("pair@int8"))
    if not ready:
        from ..export import export_model

        log.info("exporting %s (random trunk, seed %d) to %s", model, seed, out)
        export_model(spec, weights=weights, out=out, force=True, int8=int8, lean=lean)
    return out, weights


@contextlib.contextmanager
def _offline_vgg16(state: dict[str, Any]) -> Iterator[None]:
    """DISTS_pytorch asks torchvision for a pretrained VGG16: give it ours, without a download."""
    from DISTS_pytorch import DISTS_pt

    # DISTS_pt.models is torchvision.models itself: keep the original builder to call it.
    original = DISTS_pt.models.vgg16

    def vgg16(*args: Any, **kwargs: Any) -> Any:
        m = original(weights=None)
        m.load_state_dict(state, strict=False)
        return m

    DISTS_pt.models.vgg16 = vgg16
    try:
        yield
    finally:
        DISTS_pt.models.vgg16 = original


def reference_model(model: str, weights: Path) -> Any:
    """The reference package's model for ``model`` with the trunk weights in ``weights``.

    ``lpips.LPIPS(pnet_rand=True)`` (v0.1, its shipped lin weights) or ``DISTS_pytorch.DISTS``
    (its shipped alpha/beta), in eval mode.
    """
    import torch

    from ..registry import get_model

    spec = get_model(model)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        # torchvision's deprecation notes for `pretrained=`, which both packages pass.
        warnings.simplefilter("ignore", UserWarning)
        return _reference_model(spec, state)


def _reference_model(spec: Any, state: dict[str, Any]) -> Any:
    import torch

    if spec.head == "dists":
        import DISTS_pytorch
        from DISTS_pytorch import DISTS_pt

        with _offline_vgg16(state):
            ref = DISTS_pt.DISTS(load_weights=False)
        w = torch.load(
            Path(DISTS_pytorch.__file__).parent / "weights.pt",
            map_location="cpu",
            weights_only=True,
        )
        ref.alpha.data = w["alpha"]
        ref.beta.data = w["beta"]
        return ref.eval()
    if spec.head != "lpips" or spec.arch not in _LPIPS_NET:
        raise ValueError(f"expected an LPIPS model or dists for the suite, got {spec.name!r}")
    import lpips

    ref = lpips.LPIPS(
        net=_LPIPS_NET[spec.arch],
        version=spec.lpips_version or "0.1",
        pnet_rand=True,
        verbose=False,
    ).eval()
    # lpips' slices keep torchvision's module indices: slice1.0 is features.0, …
    mapped = {k: state["features." + k.split(".", 1)[1]] for k in ref.net.state_dict()}
    ref.net.load_state_dict(mapped, strict=True)
    return ref


def build_contenders(
    model: str,
    bundle: Path,
    weights: Path,
    a: np.ndarray,
    b: np.ndarray,
    *,
    diagnostics: bool = True,
    threads: int | None = None,
) -> dict[str, Callable[[], object]]:
    """Contenders scoring the same pairs with the same weights.

    ``engine``: ``Engine(bundle, device="cpu").score(a, b)`` (ORT's default threads unless
    ``threads``); ``reference``: the reference package as users call it (``lpips.LPIPS(...)(a, b,
    normalize=True)`` under ``torch.no_grad``; ``DISTS(a, b)``); ``channels_last``: the same
    reference model and inputs in channels_last under ``torch.inference_mode``;
    ``engine-trunk`` (with ``diagnostics``): the bundle's trunk graph alone (an ONNX Runtime
    session made as the engine makes its own) on ``[a_i; b_i]`` in the batches the engine's
    pair graph gets, so that engine − engine-trunk is the distance head's cost.
    """
    import torch

    from ..engine import Engine
    from ..registry import get_model

    torch.set_num_threads(os.cpu_count() or 1)
    is_dists = get_model(model).head == "dists"
    engine = Engine(bundle, device="cpu", threads=threads)
    ref = reference_model(model, weights)
    ref_cl = reference_model(model, weights).to(memory_format=torch.channels_last)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def run_engine() -> object:
        return engine.score(a, b)

    def run_reference() -> object:
        with torch.no_grad():
            if is_dists:
                return ref(ta, tb)
            return ref(ta, tb, normalize=True)

    def run_channels_last() -> object:
        with torch.inference_mode():
            xa = ta.contiguous(memory_format=torch.channels_last)
            xb = tb.contiguous(memory_format=torch.channels_last)
            if is_dists:
                return ref_cl(xa, xb)
            return ref_cl(xa, xb, normalize=True)

    contenders: dict[str, Callable[[], object]] = {
        ENGINE: run_engine,
        REFERENCE: run_reference,
        CHANNELS_LAST: run_channels_last,
    }
    if diagnostics:
        from ..engine.session import make_session

        trunk, _ = make_session(engine.bundle.graph_path("trunk"), "cpu", threads)
        step = _engine_step(engine, a.shape[2], a.shape[3], a.shape[0])
        chunks = [
            np.concatenate([a[i : i + step], b[i : i + step]]) for i in range(0, a.shape[0], step)
        ]

        def run_trunk() -> object:
            return [trunk.run(None, {"image": x}) for x in chunks]

        contenders[ENGINE_TRUNK] = run_trunk
    return contenders


def _engine_step(engine: Any, h: int, w: int, n: int) -> int:
    """Pairs per pair-graph run the engine uses at this size (n when it does not say)."""
    f = getattr(engine, "batch_len", None)
    return int(f(h, w)) if callable(f) else n


# -- the suite -----------------------------------------------------------------------------
