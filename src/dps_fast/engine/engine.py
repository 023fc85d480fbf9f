"""The public ``Engine``: holds ONNX Runtime sessions for one bundle and scores image pairs."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import Bundle, read_bundle
from ..cuda import CudaArrayView, DeviceBatch, cuda_array_view, is_cuda_array, runtime
from ..errors import BundleError
from ..manifest import graph_role
from . import distances
from .binding import BoundTensor, run_bound
from .inputs import ImageLike, check_min_size, image_hw, pair_batches, to_batch, untrack
from .session import DEVICES, available_providers, make_session

if TYPE_CHECKING:
    from .reference import Reference

log = logging.getLogger("dps_fast.engine")

PRECISIONS = ("fp32", "fp16", "int8")
# Pixels (per side of a pair) in one batch: bounds memory whatever the image size.
DEFAULT_PIXEL_BUDGET = 4 * 512 * 512
DEFAULT_PIXEL_BUDGET_CUDA = 16 * 1024 * 1024  # GPUs want big batches; memory allows them
DEFAULT_MAX_BATCH = 32
# pairwise() on CUDA keeps every image's features on the device up to this many bytes.
DEVICE_FEATURE_BYTES = 8 * 1024**3
# Why these defaults (measured, per machine): benchmarks/results/engine-defaults.md.
# Heads computed by the blocked NumPy kernel on the host (distances.lpips_per_tap) on CPU.
NUMPY_HEADS = ("lpips", "lpips-baseline", "dps")
# On CPU, bundles with at least SPLIT_MIN_DENSITY feature floats per input pixel (Σ channels /
# stride² over the taps) score pairs of at least SPLIT_MIN_PIXELS pixels as trunk graph + NumPy
# head instead of one pair-graph run; every LPIPS-family bundle does from SPLIT_ANY_PIXELS on.
SPLIT_MIN_DENSITY = 16.0
SPLIT_MIN_PIXELS = 128 * 128
SPLIT_ANY_PIXELS = 768 * 768
# Strategies of Engine.plan (how score() runs host pairs).
ONE_VS_MANY = "one-vs-many"
SPLIT = "split"
PAIR = "pair"


# How a model name becomes a bundle folder. The engine only opens bundles; finding one by name
# (the cache, an export when allowed) lives above it, in dps_fast.hub, which installs itself here
# when the package is imported: the engine never imports the exporter, not even lazily.
BundleResolver = Callable[
    [str | os.PathLike[str], str | os.PathLike[str] | None, str, bool | None], Path
]
_resolver: BundleResolver | None = None


def set_bundle_resolver(resolver: BundleResolver | None) -> None:
    """Install how ``Engine(name)`` finds a bundle: ``resolver(model, weights, precision,
    offline)`` returns a bundle folder. None: only bundle folders are accepted."""
    global _resolver
    _resolver = resolver


def _resolve(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None,
    precision: str,
    offline: bool | None,
) -> Path:
    if _resolver is not None:
        return Path(_resolver(model, weights, precision, offline))
    if weights is not None:
        raise ValueError(
            "weights= selects a bundle by model name, which needs dps_fast.hub; pass a bundle "
            "folder instead"
        )
    return Path(model)


class Engine:
    """Deep perceptual similarity on ONNX Runtime, without torch.

    ``model`` is a registry name (``lpips-alex``, ``dists``, ``dps-resnet50`` …) or a bundle
    folder. A name is looked up in the cache and exported when missing and torch is installed,
    unless ``offline`` (or ``DPS_FAST_OFFLINE=1``): then a missing bundle is an error, and
    nothing is downloaded or exported. Sessions are made lazily per graph and shared by threads
    (``run`` is thread-safe).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "lpips-alex",
        *,
        device: str = "auto",
        precision: str = "fp32",
        weights: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        offline: bool | None = None,
        crop_border: int = 0,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"expected device one of {', '.join(DEVICES)}, got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(
                f"expected precision one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"expected batch_size a positive int or None, got {batch_size!r}")
        path = _resolve(model, weights, precision, offline)
        if not isinstance(crop_border, int) or crop_border < 0:
            raise ValueError(f"expected crop_border a non-negative int, got {crop_border!r}")
        # Graphs are hash-checked when first used, not all at open (bundles hold many variants).
        self.bundle: Bundle = read_bundle(path, verify="lazy")
        self.precision = precision
        self.threads = threads
        self.batch_size = batch_size
        # Pixels cut from each side of every image before scoring (super-resolution practice).
        self.crop_border = crop_border
        self._requested_device = device
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        for r in ("trunk", "pair"):
            self.bundle.graph_path(self._key(r))  # precision variant present? (clear error)
        # uint8 NHWC graph variants (if the bundle has them) take 8-bit inputs as they are.
        self._u8 = all(
            self.bundle.has_graph(self._key(r, True)) for r in ("trunk", "pair")
        ) and (not self.bundle.has_graph("pair_spatial")
               or self.bundle.has_graph(self._key("pair_spatial", True)))  # fmt: skip
        # Make the small head session now: it settles which device really works.
        head_session, self.device = self._session("head")
        self._providers: list[str] = list(head_session.get_providers())
        log.info(
            "dps-fast engine: model %s, device %s (providers %s), precision %s, bundle %s",
            self.bundle.model,
            self.device,
            self._providers,
            precision,
            self.bundle.path,
        )

    @classmethod
    def from_pretrained(cls, model: str = "lpips-alex", **kwargs: Any) -> Engine:
        """Engine for a registry name, exporting the bundle first when missing and torch is here
        (never with ``offline=True`` or ``DPS_FAST_OFFLINE=1``): the same as ``Engine(model)``."""
        return cls(model, **kwargs)

    # -- sessions -------------------------------------------------------------------------
    def _key(self, role: str, u8: bool = False) -> str:
        """Graph role in the bundle: ``pair``, ``pair@fp16``, ``pair@uint8-nhwc`` …"""
        precision = "fp32" if role == "head" else self.precision  # heads always run in float32
        return graph_role(role, precision, uint8=u8)

    def _session(self, role: str, u8: bool = False) -> tuple[Any, str]:
        key = self._key(role, u8)
        s = self._sessions.get(key)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                device = getattr(self, "device", self._requested_device)
                # Channels-last convolutions on CUDA; CPU trunk threads do not spin, since the
                # NumPy head or decoding follows on the same cores (engine-defaults.md), nor do
                # a classical measure's: its graphs are short and, in a run of several models,
                # another model's session runs next on those cores.
                nhwc = role != "head"
                spin = role != "trunk" and self.bundle.head != "classical"
                path = self.bundle.checked_graph_path(key)
                try:
                    s = make_session(path, device, self.threads, prefer_nhwc=nhwc, spin=spin)
                except Exception as e:
                    if not _is_graph_load_error(e):
                        raise
                    msg = " ".join(str(e).split())
                    raise BundleError(
                        f"bundle {self.bundle.path}: ONNX Runtime cannot load the {key!r} graph "
                        f"{path.name} ({msg}); {self.bundle.reexport_hint()}"
                    ) from None
                self._sessions[key] = s
        return s

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        u8 = next(iter(feed.values())).dtype == np.uint8
        sess, device = self._session(role, u8)
        if device != "cuda":
            return list(sess.run(None, feed))
        # CUDA: inputs copied once to the device, graph outputs (scores, maps) bound to host.
        return run_bound(sess, feed)

    # -- info -----------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {
            "model": self.bundle.model,
            "head": self.bundle.head,
            "taps": [t.name for t in self.bundle.taps],
            "device": self.device,
            "providers": self._providers,
            "available_providers": available_providers(),
            "precision": self.precision,
            "bundle": str(self.bundle.path),
            "bundle_sha256": self.bundle.sha256,
            "weights": None if m.weights is None else m.weights.to_dict(),
            "min_size": list(self.bundle.min_size),
            "lower_is_better": self.lower_is_better,
            "crop_border": self.crop_border,
        }

    @property
    def lower_is_better(self) -> bool:
        """Whether a smaller score means more alike (True for the deep distances; bundles
        without the manifest key ``lower_is_better`` are deep distances)."""
        return self.bundle.manifest.lower_is_better

    @property
    def taps(self) -> tuple[str, ...]:
        """Tap (layer) names, in the order of the columns of ``score(..., per_layer=True)``."""
        return tuple(t.name for t in self.bundle.taps)

    def _crop(self, batch: np.ndarray) -> np.ndarray:
        """Cut ``crop_border`` pixels from each side of a host batch (NHWC uint8 or NCHW)."""
        c = self.crop_border
        if not c:
            return batch
        h, w = image_hw(batch)
        if h <= 2 * c or w <= 2 * c:
            raise ValueError(
                f"expected images larger than twice crop_border ({c}) on each side, got "
                f"{h}×{w} (H×W); lower crop_border"
            )
        if batch.dtype == np.uint8:
            return np.ascontiguousarray(batch[:, c : h - c, c : w - c, :])
        return np.ascontiguousarray(batch[:, :, c : h - c, c : w - c])

    @property
    def accepts_uint8(self) -> bool:
        """Whether the bundle has ``@uint8-nhwc`` graphs (8-bit NHWC input as it is)."""
        return self._u8

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.bundle.taps]

    def batch_len(self, h: int, w: int) -> int:
        """Pairs per batch at this size: ``batch_size`` capped by the pixel budget."""
        cap = self.batch_size or DEFAULT_MAX_BATCH
        budget = DEFAULT_PIXEL_BUDGET_CUDA if self.device == "cuda" else DEFAULT_PIXEL_BUDGET
        return max(1, min(cap, budget // max(1, h * w)))

    # -- public API -----------------------------------------------------------------------
    def features(
        self, x: ImageLike, *, value_range: tuple[float, float] = (0.0, 1.0)
    ) -> list[np.ndarray]:
        """Tap features of images: a list of K float32 host arrays [N, C_k, h_k, w_k].

        ``x`` may also be a CUDA array (``__cuda_array_interface__``) on a ``cuda`` engine.
        """
        x = untrack(x)
        if is_cuda_array(x):
            (v,) = self._device_views({"image": x}, value_range)
            return self._run_device("trunk", {"image": v})
        batch = self._crop(to_batch(x, value_range, keep_uint8=self._u8))
        if batch.shape[0] == 0:
            raise ValueError("expected at least one image, got an empty batch")
        check_min_size(image_hw(batch), self.bundle.min_size)
        step = self.batch_len(*image_hw(batch))
        parts = [
            self._run("trunk", {"image": batch[i : i + step]})
            for i in range(0, batch.shape[0], step)
        ]
        if len(parts) == 1:  # one batch: ONNX Runtime's own arrays, no copy
            return parts[0]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def distance(
        self, fa: list[np.ndarray], fb: list[np.ndarray], *, per_layer: bool = False
    ) -> np.ndarray:
        """Score features from :meth:`features` in NumPy: (N,) or, with per_layer, (N, K)."""
        k = len(self.bundle.taps)
        if len(fa) != k or len(fb) != k:
            raise ValueError(f"expected {k} feature arrays per side, got {len(fa)} and {len(fb)}")
        # Cached features may come back as float64 (or any float): the distances run in float32.
        fa = [np.asarray(f, dtype=np.float32) for f in fa]
        fb = [np.asarray(f, dtype=np.float32) for f in fb]
        for t, (x, y) in enumerate(zip(fa, fb, strict=True)):
            if x.ndim != 4 or x.shape[1:] != y.shape[1:]:
                raise ValueError(
                    f"expected tap {t} features [N, C, h, w] of one shape on both sides, "
                    f"got {x.shape} and {y.shape}"
                )
        na, nb = fa[0].shape[0], fb[0].shape[0]
        if na != nb:
            if na == 1:
                fa = [np.broadcast_to(f, (nb, *f.shape[1:])) for f in fa]
            elif nb == 1:
                fb = [np.broadcast_to(f, (na, *f.shape[1:])) for f in fb]
            else:
                raise ValueError(f"expected equal batches or 1-vs-N, got {na} and {nb}")
        if self.bundle.head == "classical":  # the measure's own graph on the images
            per_tap = self.per_tap_from_features(fa, fb)
        else:
            per_tap = distances.per_tap_distance(
                self.bundle.head, fa, fb, self.bundle.head_weights, threads=self.threads
            )
        return per_tap if per_layer else distances.reduce_taps(per_tap, self.bundle.reduce)

    def score(
        self,
        a: ImageLike,
        b: ImageLike,
        *,
        spatial: bool = False,
        per_layer: bool = False,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> Any:
        """Distances between a and b: float32 (N,); (N, K) with per_layer; (N, H, W) with spatial.

        With both ``spatial`` and ``per_layer`` it returns ``(per_layer, map)``. On a ``cuda``
        engine, ``a`` and ``b`` may be CUDA arrays (CuPy, torch, :class:`DeviceBatch` …): uint8
        (N, H, W, 3) or float32 (N, 3, H, W) in [0, 1]; they are read in place, not copied.
        """
        if spatial and not self.bundle.has_graph("pair_spatial"):
            raise ValueError(
                f"spatial=True needs an LPIPS-family model; {self.bundle.model} "
                f"({self.bundle.head}) has no spatial map"
            )
        a, b = untrack(a), untrack(b)  # tensors that require grad: read, not differentiated
        if is_cuda_array(a) or is_cuda_array(b):
            return self._score_device(a, b, spatial, per_layer, value_range)
        ba, bb, n = pair_batches(
            self._crop(to_batch(a, value_range, keep_uint8=self._u8)),
            self._crop(to_batch(b, value_range, keep_uint8=self._u8)),
            self.bundle.min_size,
        )
        if spatial:
            self.bundle.graph_path(self._key("pair_spatial"))  # precision variant? (clear error)
        h, w = image_hw(ba)
        step = self.batch_len(h, w)
        per_tap = np.empty((n, len(self.bundle.taps)), np.float32)
        maps = np.empty((n, h, w), np.float32) if spatial else None
        plan = self.plan(ba.shape[0], bb.shape[0], h, w, spatial=spatial)
        if plan == ONE_VS_MANY:
            self._score_one_vs_many(ba, bb, step, per_tap)
        elif plan == SPLIT:
            self._score_split(ba, bb, step, per_tap)
        else:
            self._score_pair_graph(ba, bb, step, per_tap, maps)
        if spatial:
            assert maps is not None
            return (per_tap, maps) if per_layer else maps
        return per_tap if per_layer else distances.reduce_taps(per_tap, self.bundle.reduce)

    def __call__(self, a: ImageLike, b: ImageLike, **options: Any) -> Any:
        """``metric(a, b)``: the same as :meth:`score` (float32 (N,) by default)."""
        return self.score(a, b, **options)

    def reference(
        self, image: ImageLike, *, value_range: tuple[float, float] = (0.0, 1.0)
    ) -> Reference:
        """Keep one image's features to score many candidates against it (see
        :class:`Reference`; its ``nbytes`` is the memory it holds)."""
        from .reference import Reference

        return Reference(self, image, value_range=value_range)

    # -- CUDA arrays ------------------------------------------------------------------------
    def _device_views(
        self, arrays: dict[str, Any], value_range: tuple[float, float]
    ) -> list[CudaArrayView]:
        """Check CUDA array inputs (device, dtype, layout, size) and return their views."""
        if self.crop_border:
            raise ValueError(
                "crop_border is applied to host images; pass host arrays, or crop the CUDA "
                "arrays yourself and use an engine with crop_border=0"
            )
        if self.device != "cuda":
            raise ValueError(
                "CUDA arrays (objects with __cuda_array_interface__) need an engine on "
                f"device='cuda'; this engine runs on {self.device}: pass host arrays instead"
            )
        if tuple(value_range) != (0.0, 1.0):
            raise ValueError(
                "expected value_range (0, 1) for CUDA arrays (they are read in place, not "
                "rescaled): pass uint8 (N, H, W, 3) or float32 (N, 3, H, W) in [0, 1]"
            )
        views = []
        for name, x in arrays.items():
            if not is_cuda_array(x):
                raise TypeError(
                    f"expected {name} a CUDA array like the other input, got "
                    f"{type(x).__name__}: pass both sides on the device or both on the host"
                )
            v = cuda_array_view(x, name)
            shape = v.shape
            if len(shape) == 3:  # one image
                shape = (1, *shape)
            ok = len(shape) == 4 and (
                (v.dtype == np.uint8 and shape[3] == 3) or (v.dtype == np.float32 and shape[1] == 3)
            )
            if not ok:
                raise ValueError(
                    f"expected CUDA array {name} uint8 (N, H, W, 3) or float32 (N, 3, H, W), "
                    f"got {v.dtype} {v.shape}"
                )
            if v.dtype == np.uint8 and not self._u8:
                raise ValueError(
                    f"this bundle has no @uint8-nhwc graphs for uint8 CUDA arrays: "
                    f"{self.bundle.reexport_hint()}, or pass float32 NCHW"
                )
            views.append(CudaArrayView(v.ptr, shape, v.dtype, v.stream))
        if len({(v.shape, v.dtype) for v in views}) > 1:
            raise ValueError(
                "expected CUDA arrays of one dtype and shape on both sides, got "
                + " and ".join(f"{v.dtype} {v.shape}" for v in views)
            )
        hw = views[0].shape[1:3] if views[0].dtype == np.uint8 else views[0].shape[2:4]
        check_min_size((int(hw[0]), int(hw[1])), self.bundle.min_size)
        rt = runtime()
        for v in views:  # __cuda_array_interface__ v3: wait for the producer's stream
            if v.stream is not None:
                rt.synchronize(v.stream)
        return views

    def _run_device(self, role: str, views: dict[str, CudaArrayView]) -> list[np.ndarray]:
        """Run ``role`` on CUDA arrays bound in place, in pixel-budget chunks; host outputs."""
        first = next(iter(views.values()))
        u8 = first.dtype == np.uint8
        h, w = first.shape[1:3] if u8 else first.shape[2:4]
        n = first.shape[0]
        step = self.batch_len(int(h), int(w))
        per_image = first.nbytes // max(1, n)
        sess, _ = self._session(role, u8)
        parts: list[list[np.ndarray]] = []
        for i in range(0, n, step):
            j = min(n, i + step)
            feed = {name: BoundTensor(v.ptr + i * per_image, (j - i, *v.shape[1:]), v.dtype)
                    for name, v in views.items()}  # fmt: skip
            parts.append(run_bound(sess, feed))
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def _score_device(
        self, a: Any, b: Any, spatial: bool, per_layer: bool, value_range: tuple[float, float]
    ) -> Any:
        va, vb = self._device_views({"a": a, "b": b}, value_range)
        out = self._run_device("pair_spatial" if spatial else "pair", {"a": va, "b": vb})
        per_tap = out[0]
        if spatial:
            maps = out[1][:, 0]
            return (per_tap, maps) if per_layer else maps
        return per_tap if per_layer else distances.reduce_taps(per_tap, self.bundle.reduce)

    def plan(self, n_a: int, n_b: int, h: int, w: int, *, spatial: bool = False) -> str:
        """How :meth:`score` runs host pairs of this shape — the one place the strategy is chosen.

        ``"one-vs-many"``: one image against many; its trunk runs once and the head scores it
        against each of the others. ``"split"`` (CPU, LPIPS family, large enough; see
        ``SPLIT_*``): trunk graph on a and b, then the NumPy head. ``"pair"``: one pair-graph
        run per batch (both trunks and the head; ``pair_spatial`` for maps).
        """
        if spatial:
            return PAIR
        if (n_a == 1) != (n_b == 1):
            return ONE_VS_MANY
        return SPLIT if self._split_pairs(h, w) else PAIR

    def _score_split(self, ba: np.ndarray, bb: np.ndarray, step: int, per_tap: np.ndarray) -> None:
        """Trunk graph on a and b in two runs per batch, then the NumPy head on the host."""
        n = per_tap.shape[0]
        for i in range(0, n, step):
            j = min(n, i + step)
            # Two trunk runs, not one on [a; b]: no copy of the inputs into one batch, and
            # smaller activations (benchmarks/results/engine-defaults.md).
            fa = self._run("trunk", {"image": ba[i:j]})
            fb = self._run("trunk", {"image": bb[i:j]})
            per_tap[i:j] = self._host_head(fa, fb)

    def _score_pair_graph(
        self,
        ba: np.ndarray,
        bb: np.ndarray,
        step: int,
        per_tap: np.ndarray,
        maps: np.ndarray | None,
    ) -> None:
        """One pair-graph run per batch (``pair_spatial`` when ``maps`` is asked for)."""
        n = per_tap.shape[0]
        role = "pair" if maps is None else "pair_spatial"
        for i in range(0, n, step):
            j = min(n, i + step)
            xa = ba[i:j] if ba.shape[0] > 1 else np.repeat(ba, j - i, axis=0)
            xb = bb[i:j] if bb.shape[0] > 1 else np.repeat(bb, j - i, axis=0)
            out = self._run(role, {"a": xa, "b": xb})
            per_tap[i:j] = out[0]
            if maps is not None:
                maps[i:j] = out[1][:, 0]

    def _score_one_vs_many(
        self, ba: np.ndarray, bb: np.ndarray, step: int, per_tap: np.ndarray
    ) -> None:
        """1-vs-N: the single image's features are computed once and reused by the head."""
        single, many, single_is_a = (ba, bb, True) if ba.shape[0] == 1 else (bb, ba, False)
        f1 = self._run("trunk", {"image": single})
        n = many.shape[0]
        for i in range(0, n, step):
            j = min(n, i + step)
            fm = self._run("trunk", {"image": many[i:j]})
            rep = [np.broadcast_to(f, (j - i, *f.shape[1:])) for f in f1]
            fa, fb = (rep, fm) if single_is_a else (fm, rep)
            per_tap[i:j] = self.per_tap_from_features(fa, fb, chunk=j - i)

    def _split_pairs(self, h: int, w: int) -> bool:
        """Whether pairs of this size run as trunk + NumPy head (CPU, LPIPS family, large)."""
        if not self._numpy_head:
            return False
        density = sum(t.channels / max(1, t.stride) ** 2 for t in self.bundle.taps)
        px = h * w
        return px >= SPLIT_ANY_PIXELS or (density >= SPLIT_MIN_DENSITY and px >= SPLIT_MIN_PIXELS)

    @property
    def _numpy_head(self) -> bool:
        """Whether host features meet the blocked NumPy head (CPU, LPIPS family)."""
        return self.device == "cpu" and self.bundle.head in NUMPY_HEADS

    def _host_head(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
        """Per-tap distances [N, K] of host features on the CPU: NumPy for the LPIPS family,
        in as many threads as the engine's sessions (``threads``; None: one per core)."""
        return distances.per_tap_distance(
            self.bundle.head, fa, fb, self.bundle.head_weights, threads=self.threads
        )

    def per_tap_from_features(
        self, fa: list[np.ndarray], fb: list[np.ndarray], *, chunk: int = 64
    ) -> np.ndarray:
        """Per-tap distances [N, K] of two equal-length feature lists.

        The blocked NumPy head on a CPU engine for the LPIPS family, else the head graph.
        """
        k = len(self.bundle.taps)
        if len(fa) != k or len(fb) != k:
            raise ValueError(f"expected {k} feature arrays per side, got {len(fa)} and {len(fb)}")
        if self._numpy_head:
            return self._host_head(list(fa), list(fb))
        n = fa[0].shape[0]
        out = np.empty((n, k), np.float32)
        for i in range(0, n, chunk):
            j = min(n, i + chunk)
            feed = {f"a_tap{t}": np.ascontiguousarray(fa[t][i:j]) for t in range(k)}
            feed.update({f"b_tap{t}": np.ascontiguousarray(fb[t][i:j]) for t in range(k)})
            out[i:j] = self._run("head", feed)[0]
        return out

    # -- all pairs ----------------------------------------------------------------------------
    def pairwise(
        self, x: ImageLike, *, value_range: tuple[float, float] = (0.0, 1.0)
    ) -> np.ndarray:
        """All-pairs distances of N images: a symmetric float32 [N, N], zero diagonal.

        For a similarity (``lower_is_better`` False: PSNR, SSIM …) the diagonal is each
        image's score against itself (inf, 1) instead of zero.

        The trunk runs once per image. On CUDA the features stay on the device (up to
        ``DEVICE_FEATURE_BYTES``) and each row is head runs of one image against the rest,
        bound by pointer; otherwise the head graph runs on host features.
        """
        batch = self._crop(to_batch(untrack(x), value_range, keep_uint8=self._u8))
        n = batch.shape[0]
        check_min_size(image_hw(batch), self.bundle.min_size)
        m = np.zeros((n, n), np.float32)
        if not self.lower_is_better:
            self._self_scores(batch, m)
        if n < 2:
            return m
        step = self.batch_len(*image_hw(batch))
        dev = self._device_features(batch, step) if self.device == "cuda" else None
        feats = None if dev is not None else self.features(batch)
        for i in range(n - 1):
            for s in range(i + 1, n, step):
                e = min(n, s + step)
                if dev is not None:
                    per_tap = self._head_rows_device(dev, i, s, e)
                else:
                    assert feats is not None
                    fa = [f[i : i + 1] for f in feats]
                    if self._numpy_head:
                        fa = [np.broadcast_to(f, (e - s, *f.shape[1:])) for f in fa]
                        m[i, s:e] = m[s:e, i] = self.reduce(
                            self._host_head(fa, [f[s:e] for f in feats])
                        )
                        continue
                    if not self._head_broadcasts:
                        fa = [np.repeat(f, e - s, axis=0) for f in fa]
                    feed = {f"a_tap{t}": np.ascontiguousarray(f) for t, f in enumerate(fa)}
                    feed.update({f"b_tap{t}": f[s:e] for t, f in enumerate(feats)})
                    per_tap = self._run("head", feed)[0]
                d = self.reduce(per_tap)
                m[i, s:e] = d
                m[s:e, i] = d
        return m

    def _self_scores(self, batch: np.ndarray, m: np.ndarray) -> None:
        """Fill the diagonal of ``m`` with each image's score against itself."""
        n = batch.shape[0]
        step = self.batch_len(*image_hw(batch))
        for s in range(0, n, step):
            e = min(n, s + step)
            d = self.reduce(self._run("pair", {"a": batch[s:e], "b": batch[s:e]})[0])
            m[np.arange(s, e), np.arange(s, e)] = d

    @property
    def _head_broadcasts(self) -> bool:
        """Whether the head graph takes a single ``a`` against N ``b`` (DISTS's does not)."""
        return self.bundle.head not in ("dists", "classical")

    def _device_features(self, batch: np.ndarray, step: int) -> list[DeviceBatch] | None:
        """Trunk features of a host batch kept on the device, one [N, C, h, w] array per tap.

        None when they would take more than ``DEVICE_FEATURE_BYTES``.
        """
        n = batch.shape[0]
        sess, _ = self._session("trunk", batch.dtype == np.uint8)
        rt = runtime()
        out: list[DeviceBatch] = []
        for i in range(0, n, step):
            j = min(n, i + step)
            vals = run_bound(sess, {"image": batch[i:j]}, outputs_on="cuda", to_host=False)
            if not out:
                shapes = [tuple(v.shape())[1:] for v in vals]
                total = n * sum(int(np.prod(sh)) * 4 for sh in shapes)
                if total > DEVICE_FEATURE_BYTES:
                    log.info("pairwise: %.1f GB of features; keeping them on the host", total / 1e9)
                    return None
                out = [DeviceBatch((n, *sh), np.float32) for sh in shapes]
            for buf, v in zip(out, vals, strict=True):
                row = buf.nbytes // n
                rt.copy(buf.ptr + i * row, int(v.data_ptr()), row * (j - i), 0)
            rt.synchronize(0)
        return out

    def _head_rows_device(self, feats: list[DeviceBatch], i: int, s: int, e: int) -> np.ndarray:
        """Per-tap distances of image i against images s..e-1, features bound in place."""
        sess, _ = self._session("head")
        n = feats[0].shape[0]
        rt = runtime()
        keep = []
        feed: dict[str, np.ndarray | BoundTensor] = {}
        f32 = np.dtype(np.float32)
        for t, f in enumerate(feats):
            row = f.nbytes // n
            a_ptr, a_n = f.ptr + i * row, 1
            if not self._head_broadcasts:  # repeat row i: one copy, then doubling copies
                rep = DeviceBatch((e - s, *f.shape[1:]), np.float32)
                rt.copy(rep.ptr, a_ptr, row, 0)
                have = 1
                while have < e - s:
                    k = min(have, e - s - have)
                    rt.copy(rep.ptr + have * row, rep.ptr, k * row, 0)
                    have += k
                rt.synchronize(0)
                keep.append(rep)
                a_ptr, a_n = rep.ptr, e - s
            feed[f"a_tap{t}"] = BoundTensor(a_ptr, (a_n, *f.shape[1:]), f32)
            feed[f"b_tap{t}"] = BoundTensor(f.ptr + s * row, (e - s, *f.shape[1:]), f32)
        return np.asarray(run_bound(sess, feed)[0])

    def reduce(self, per_tap: np.ndarray) -> np.ndarray:
        """Scores (N,) from per-tap values: sum (LPIPS, DISTS) or mean (DPS) over taps."""
        return distances.reduce_taps(per_tap, self.bundle.reduce)

    def __repr__(self) -> str:
        return (
            f"Engine(model={self.bundle.model!r}, device={self.device!r}, "
            f"precision={self.precision!r}, bundle={str(self.bundle.path)!r})"
        )


# ONNX Runtime's errors for a graph file it cannot take (corrupt protobuf, invalid graph,
# external data outside the model's folder …), as opposed to provider or memory failures.
_GRAPH_LOAD_ERRORS = frozenset(
    {"InvalidProtobuf", "InvalidGraph", "NoSuchFile", "Fail", "NotImplemented", "InvalidArgument"}
)


def _is_graph_load_error(e: Exception) -> bool:
    t = type(e)
    return t.__module__.startswith("onnxruntime") and t.__name__ in _GRAPH_LOAD_ERRORS


__all__ = ["Engine", "set_bundle_resolver"]
