"""Benchmarks: the engine against the reference packages and a tuned PyTorch path.

The protocol (DESIGN.md, "Benchmark protocol"): contenders run in turn (A B C A B C …) after a
warm-up, with a short pause between contenders so that spinning worker threads go idle, and
medians are compared. FLOPs count 2 per multiply-add; the ceiling is the best of a few 4096²
float32 NumPy matrix products, measured in the same run.

Library code: nothing here prints; progress goes to the ``dps_fast.bench`` logger. torch,
torchvision, lpips, DISTS_pytorch and onnx are imported inside the functions that need them, so
importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("dps_fast.bench")

DEFAULT_MODELS: tuple[str, ...] = ("lpips-alex", "lpips-vgg", "lpips-squeeze", "dists")
DEFAULT_CASES: tuple[tuple[int, int, int], ...] = ((64, 64, 32), (256, 256, 8), (1024, 768, 2))
# Contender names, in the order they run inside a round.
ENGINE = "engine"
REFERENCE = "reference"
CHANNELS_LAST = "channels_last"
ENGINE_TRUNK = "engine-trunk"  # diagnostic: the engine's trunk graph alone on a and b
MATMUL = "matmul-4096"  # the ceiling's matrix product, in the rounds: a local ceiling per case
ROUND = "(round)"  # key of whole-round foreign loads in interleaved(foreign=…)
# A case whose full run would take longer than this gets only QUICK_ROUNDS rounds.
CASE_BUDGET_S = 180.0
QUICK_ROUNDS = 3
# Trunks built on VGG16 (slow at large sizes: quick runs skip them above 256²).
_VGG_FAMILY = ("lpips-vgg", "dists")
_LPIPS_NET = {"alexnet": "alex", "vgg16": "vgg", "squeezenet1_1": "squeeze"}
# Random trunk weights keep every key torchvision saves, except the classifiers of the big
# nets, which no trunk uses (the export loader needs only the trunk's keys).
_FULL_STATE_ARCHS = frozenset({"squeezenet1_1"})
# CPU flags worth recording with results (float and int8 matrix units).
_ISA_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_int8", "avx_vnni"}
)


# -- measurement primitives ----------------------------------------------------------------


def measure_ceiling(n: int = 4096, repeats: int = 4, *, quiet: float | None = None) -> float:
    """Best GFLOP/s of ``repeats`` float32 ``n × n`` NumPy matrix products (2 FLOPs per MAC).

    With ``quiet`` (cores), each product waits (up to 30 s) until other processes use less.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"expected n ≥ 1 and repeats ≥ 1, got n={n}, repeats={repeats}")
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: threads started, pages touched
    best = float("inf")
    for _ in range(repeats):
        if quiet is not None:
            _wait_quiet(quiet, 30.0)
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


class _ForeignLoad:
    """CPU cores used by other processes (and stolen by the hypervisor) over an interval.

    From /proc/stat (all CPUs' busy time, steal included) minus this process's CPU time; None
    where /proc/stat is missing. Resolution is the kernel tick (10 ms), so short intervals read
    coarsely. With ``children``, the CPU time of this process's waited-for child processes
    counts as its own (contenders that run a subprocess).
    """

    def __init__(self, children: bool = False) -> None:
        self._hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._t0 = self._busy0 = self._own0 = 0.0
        self._children = children

    def _own(self) -> float:
        if not self._children:
            return time.process_time()
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                parts = f.readline().split()
        except OSError:
            return None
        v = [float(x) for x in parts[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice; guest ⊂ user.
        busy = sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0.0)
        return busy / self._hz

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = self._busy() or 0.0
        self._own0 = self._own()

    def stop(self) -> float | None:
        busy = self._busy()
        wall = time.perf_counter() - self._t0
        if busy is None or wall <= 0:
            return None
        own = self._own() - self._own0
        return max(0.0, (busy - self._busy0 - own) / wall)


def _wait_quiet(quiet: float, max_wait_s: float, step: float = 0.2) -> float | None:
    """Sleep in ``step`` slices until other processes use under ``quiet`` cores (or time's up)."""
    probe = _ForeignLoad()
    waited = 0.0
    while True:
        probe.start()
        time.sleep(step)
        waited += step
        load = probe.stop()
        if load is None or load <= quiet or waited >= max_wait_s:
            return load


def interleaved(
    contenders: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    pause: float = 0.2,
    *,
    budget_s: float | None = None,
    min_rounds: int = QUICK_ROUNDS,
    foreign: dict[str, list[float | None]] | None = None,
    quiet: float | None = None,
    max_wait_s: float = 30.0,
    retries: int = 0,
    children: bool = False,
) -> dict[str, list[float]]:
    """Time contenders in turn: warm-up each, then rounds A B C A B C …; seconds per round.

    A pause of ``pause`` seconds precedes every call so that the previous contender's worker
    threads stop spinning. With ``budget_s``, when the first timed round shows that ``rounds``
    rounds would take longer than that, only ``min_rounds`` rounds are run (the lists are then
    shorter: their length says how many rounds ran).

    On a shared machine: ``foreign`` (a dict to fill) receives, per kept call, the CPU cores
    other processes used during it (coarse: kernel ticks are 10 ms), and under the key
    ``"(round)"`` the same for each kept round as a whole. With ``quiet`` (cores), each pause is
    stretched (up to ``max_wait_s``) until other processes use less than that, and a round in
    which they used more is run again, at most ``retries`` times in all. With ``children``,
    contenders that run subprocesses are not counted as foreign load (their CPU time, once
    waited for, is this process's).
    """
    if not contenders:
        raise ValueError("expected at least one contender, got none")
    if rounds < 1 or warmup < 0 or pause < 0:
        raise ValueError(
            f"expected rounds ≥ 1, warmup ≥ 0, pause ≥ 0; got {rounds}, {warmup}, {pause}"
        )
    probe = _ForeignLoad(children)

    def settle() -> None:
        if quiet is None or pause <= 0:
            time.sleep(pause)
        else:
            _wait_quiet(quiet, max_wait_s, step=pause)

    for _ in range(warmup):
        for fn in contenders.values():
            settle()
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    loads: dict[str, list[float | None]] = {name: [] for name in contenders}
    loads[ROUND] = []
    round_probe = _ForeignLoad(children)
    planned = rounds
    retries_left = retries
    first = next(iter(contenders))
    while len(times[first]) < planned:
        this_t: dict[str, float] = {}
        this_l: dict[str, float | None] = {}
        round_probe.start()
        for name, fn in contenders.items():
            settle()
            probe.start()
            t0 = time.perf_counter()
            fn()
            this_t[name] = time.perf_counter() - t0
            this_l[name] = probe.stop()
        # Judged over the whole round: one call can be shorter than a few kernel ticks.
        round_load = round_probe.stop()
        noisy = quiet is not None and round_load is not None and round_load > quiet
        if noisy and retries_left > 0:
            retries_left -= 1
            log.info("round discarded: other processes used %.2f cores during it", round_load)
            continue
        for name in contenders:
            times[name].append(this_t[name])
            loads[name].append(this_l[name])
        loads[ROUND].append(round_load)
        if len(times[first]) == 1 and budget_s is not None and planned > min_rounds:
            per_round = sum(this_t.values()) + pause * len(contenders)
            if per_round * planned > budget_s:
                planned = max(1, min_rounds)
                log.info(
                    "a round takes %.1f s: %d rounds would exceed %.0f s, running %d",
                    per_round,
                    rounds,
                    budget_s,
                    planned,
                )
    if foreign is not None:
        foreign.update(loads)
    return times


# -- FLOPs ---------------------------------------------------------------------------------


def _trunk_graph(bundle_or_spec: Any) -> Path:
    from .bundle import Bundle, read_bundle

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
    from .hub import resolve_bundle

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


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else platform.processor())."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def environment(ceiling_gflops: float | None = None) -> dict[str, Any]:
    """Versions, CPU and thread counts of this run (and the ceiling when given)."""
    from importlib import metadata

    from ._version import __version__

    versions: dict[str, str | None] = {"dps_fast": __version__, "numpy": np.__version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "onnx", "lpips"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        versions["DISTS_pytorch"] = metadata.version("DISTS_pytorch")
    except metadata.PackageNotFoundError:
        versions["DISTS_pytorch"] = None
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_vendor": info.get("vendor_id"),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cpu_isa": sorted(flags & _ISA_FLAGS),
        "hypervisor": "hypervisor" in flags,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }
    if ceiling_gflops is not None:
        env["ceiling_gflops"] = ceiling_gflops
    return env


# -- contenders ----------------------------------------------------------------------------


def _matmul_4096() -> Callable[[], object]:
    rng = np.random.default_rng(0)
    x = rng.random((4096, 4096), dtype=np.float32)
    y = rng.random((4096, 4096), dtype=np.float32)
    out = np.empty_like(x)
    return lambda: np.matmul(x, y, out=out)


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
    model: str, cache_dir: Path, seed: int = 0, *, int8: bool = False
) -> tuple[Path, Path]:
    """(bundle folder, weights file) for ``model`` on seeded random trunk weights; made once.

    ``int8`` adds the quantized ``@int8`` graph variants (``dps-fast export --int8``).
    """
    from .bundle import MANIFEST, read_bundle
    from .registry import get_model

    spec = get_model(model)
    weights = cache_dir / "weights" / f"{spec.arch}-seed{seed}.pth"
    if not weights.is_file():
        make_random_weights(spec.arch, weights, seed)
    out = cache_dir / "bundles" / f"{model}-seed{seed}{'-int8' if int8 else ''}"
    ready = (out / MANIFEST).is_file() and (not int8 or read_bundle(out).has_graph("pair@int8"))
    if not ready:
        from .export import export_model

        log.info("exporting %s (random trunk, seed %d) to %s", model, seed, out)
        export_model(spec, weights=weights, out=out, force=True, int8=int8)
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

    from .registry import get_model

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

    from .engine import Engine
    from .registry import get_model

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
        from .engine.session import make_session

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


def check_requirements(models: Sequence[str] = DEFAULT_MODELS) -> None:
    """Raise ImportError naming every package the suite needs for ``models`` and lacks."""
    import importlib.util

    need = ["torch", "torchvision", "onnx", "onnxruntime", "lpips"]
    if any(m == "dists" for m in models):
        need.append("DISTS_pytorch")
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"the benchmark suite needs {', '.join(missing)}: pip install 'dps-fast[export,cpu]'"
        )


def suite_plan(
    quick: bool,
    models: Sequence[str] = DEFAULT_MODELS,
    cases: Sequence[tuple[int, int, int]] = DEFAULT_CASES,
) -> list[tuple[str, tuple[int, int, int]]]:
    """(model, (H, W, N)) pairs the suite runs: quick keeps cases up to 256² and skips VGG
    trunks above 256²."""
    plan = []
    for m in models:
        for c in cases:
            h, w, n = (int(v) for v in c)
            if quick and (h * w > 256 * 256 or (m in _VGG_FAMILY and h * w > 256 * 256)):
                continue
            plan.append((m, (h, w, n)))
    return plan


def summarize(
    model: str,
    case: tuple[int, int, int],
    times: dict[str, list[float]],
    gflop_per_image: float | None,
    ceiling: float | None,
    *,
    planned_rounds: int,
    foreign: dict[str, list[float | None]] | None = None,
) -> list[dict[str, Any]]:
    """One row per contender: medians, pairs/s, trunk GFLOP/s, share of ceiling, speed-ups."""
    h, w, n = case
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    rl = [v for v in (foreign or {}).get(ROUND, []) if v is not None]
    local = 2.0 * 4096**3 / min(times[MATMUL]) / 1e9 if MATMUL in times else None
    for name, ts in times.items():
        if name == MATMUL:
            continue
        m = med[name]
        fl = [v for v in (foreign or {}).get(name, []) if v is not None]
        gfs = None if gflop_per_image is None else gflop_per_image * 2 * n / m
        rows.append(
            {
                "model": model,
                "h": h,
                "w": w,
                "batch": n,
                "contender": name,
                "median_s": m,
                "min_s": min(ts),
                "max_s": max(ts),
                "pairs_per_s": n / m,
                "trunk_gflop_per_image": gflop_per_image,
                "trunk_gflops": gfs,
                "ceiling_gflops": ceiling,
                "ceiling_frac": None if (gfs is None or not ceiling) else gfs / ceiling,
                "local_ceiling_gflops": local,
                "local_ceiling_frac": None if (gfs is None or not local) else gfs / local,
                "speedup_vs_reference": med[REFERENCE] / m if REFERENCE in med else None,
                "speedup_vs_channels_last": (
                    med[CHANNELS_LAST] / m if CHANNELS_LAST in med else None
                ),
                "rounds": len(ts),
                "rounds_reduced": len(ts) < planned_rounds,
                "rounds_s": list(ts),
                "foreign_cores_max": max(fl) if fl else None,
                "foreign_cores_median": statistics.median(fl) if fl else None,
                "foreign_cores_round_max": max(rl) if rl else None,
            }
        )
    return rows


def run_engine_suite(
    quick: bool,
    models: Sequence[str] = DEFAULT_MODELS,
    cases: Sequence[tuple[int, int, int]] = DEFAULT_CASES,
    *,
    rounds: int | None = None,
    pause: float = 0.2,
    cache_dir: str | os.PathLike[str] | None = None,
    diagnostics: bool = True,
    case_budget_s: float | None = CASE_BUDGET_S,
    ceiling: float | None = None,
    seed: int = 0,
    quiet: float | None = 0.3,
    local_ceiling: bool = True,
) -> list[dict[str, Any]]:
    """Engine vs reference package vs channels_last PyTorch, per model and case (H, W, N pairs).

    Exports each model once (seeded random trunk weights in torchvision format, under
    ``cache_dir``, default ``$TMPDIR/dps-fast-bench``), then times the contenders of
    :func:`build_contenders` on the same inputs with :func:`interleaved`. ``quick``: 3 rounds,
    cases up to 256², no VGG trunk above 256². A case whose rounds would take longer than
    ``case_budget_s`` runs 3 rounds (``rounds_reduced`` in its rows). Returns one row per
    contender and case (see :func:`summarize`); the ceiling (measured first unless given) is in
    every row. ``quiet`` (cores; None: off): on a shared machine, wait for other processes to
    go quiet before each call and run a round again when they used more than that during it
    (:func:`interleaved`); the rows keep the foreign load seen per call. ``local_ceiling``: a
    4096² matrix product runs in every round too, and the best of them is each case's own
    ceiling (``local_ceiling_gflops``, ``local_ceiling_frac``): on a virtual machine whose
    speed drifts, that is the fairer yardstick.
    """
    check_requirements(models)
    import torch

    from .samples import distortion_pairs

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    n_rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else 7)
    torch.set_num_threads(os.cpu_count() or 1)
    measured = ceiling is None
    if ceiling is None:
        ceiling = measure_ceiling(quiet=quiet)
        log.info("fp32 matmul ceiling (start): %.1f GFLOP/s", ceiling)
    raw: list[Any] = []
    prepared: dict[str, tuple[Path, Path]] = {}
    for model, (h, w, n) in suite_plan(quick, models, cases):
        if model not in prepared:
            prepared[model] = prepare_bundle(model, cache, seed)
        bundle, weights = prepared[model]
        a, b = distortion_pairs(n, h, w, seed=seed)
        contenders = build_contenders(model, bundle, weights, a, b, diagnostics=diagnostics)
        if local_ceiling:
            contenders[MATMUL] = _matmul_4096()
        log.info("%s %d×%d ×%d: %d rounds of %s", model, h, w, n, n_rounds, list(contenders))
        loads: dict[str, list[float | None]] = {}
        times = interleaved(
            contenders,
            rounds=n_rounds,
            warmup=1,
            pause=pause,
            budget_s=case_budget_s,
            min_rounds=min(QUICK_ROUNDS, n_rounds),
            foreign=loads,
            quiet=quiet,
            retries=n_rounds if quiet is not None else 0,
        )
        del contenders
        raw.append((model, (h, w, n), times, loads, trunk_gflops(bundle, h, w)))
    if measured:
        # Best of the ceilings measured before and after: the machine's clock and neighbours
        # move during a long run; the best is the honest upper bound.
        end = measure_ceiling(quiet=quiet)
        log.info("fp32 matmul ceiling (end): %.1f GFLOP/s", end)
        ceiling = max(ceiling, end)
    rows: list[dict[str, Any]] = []
    for model, case, times, loads, gfl in raw:
        rows += summarize(model, case, times, gfl, ceiling, planned_rounds=n_rounds, foreign=loads)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


_COLUMNS = (
    "model",
    "case",
    "contender",
    "median ms",
    "pairs/s",
    "GFLOP/s",
    "%ceil",
    "%local",
    "×ref",
    "×cl",
    "rounds",
    "fgn",
)


def _cells(r: dict[str, Any]) -> list[str]:
    frac = None if r.get("ceiling_frac") is None else 100 * r["ceiling_frac"]
    local = None if r.get("local_ceiling_frac") is None else 100 * r["local_ceiling_frac"]
    return [
        str(r["model"]),
        f"{r['h']}×{r['w']}×{r['batch']}",
        str(r["contender"]),
        f"{1e3 * r['median_s']:.2f}",
        f"{r['pairs_per_s']:.2f}",
        _fmt(r.get("trunk_gflops"), ".1f"),
        _fmt(frac, ".1f"),
        _fmt(local, ".1f"),
        _fmt(r.get("speedup_vs_reference"), ".2f"),
        _fmt(r.get("speedup_vs_channels_last"), ".2f"),
        f"{r['rounds']}{'*' if r.get('rounds_reduced') else ''}",
        _fmt(r.get("foreign_cores_round_max"), ".2f"),
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`run_engine_suite` rows.

    ×ref, ×cl: speed-up over the reference package and over channels_last PyTorch (median
    times); %ceil: trunk GFLOP/s over the run's matmul ceiling; %local: over the best matmul
    within the case's own rounds; rounds with * were cut to save time;
    fgn: most CPU cores other processes used during one kept round of the case.
    """
    body = [_cells(r) for r in rows]
    widths = [max([len(c), *(len(b[i]) for b in body)]) for i, c in enumerate(_COLUMNS)]
    left = {0, 1, 2}

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            c.ljust(wd) if i in left else c.rjust(wd)
            for i, (c, wd) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(_COLUMNS), "-" * (sum(widths) + len(widths) - 1)]
    out += [line(b) for b in body]
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`format_table` as a GitHub markdown table."""
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * 3 + "---:|" * (len(_COLUMNS) - 3)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(out)


__all__ = [
    "DEFAULT_CASES",
    "DEFAULT_MODELS",
    "build_contenders",
    "check_requirements",
    "environment",
    "format_table",
    "graph_gflops",
    "interleaved",
    "markdown_table",
    "measure_ceiling",
    "prepare_bundle",
    "reference_model",
    "run_engine_suite",
    "suite_plan",
    "summarize",
    "trunk_gflops",
]
