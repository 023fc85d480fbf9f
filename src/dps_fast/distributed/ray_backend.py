"""Scoring pairs on a Ray cluster with Ray Data: units of work through a pool of actors.

The driver plans units (:mod:`.plan`), resolves the bundle (workers never export or download:
they use the driver's bundle folder when their node sees it with the same hash, else a copy
shipped through the object store and checked by hash), and streams one block per unit through
``map_batches`` on an ``ActorPoolStrategy`` pool. Each actor scores a unit with
:func:`.units.score_unit`; the driver writes each finished unit as a Parquet shard
(:mod:`.output`). Guards against Ray's defaults, each measured (see the README):

- actors are restarted at most ``max_restarts`` times and tasks retried at most as often
  (Ray's default is forever); an actor that dies while scoring a unit scores that unit again
  pair by pair, leaving a breadcrumb naming the pair in flight, so a pair that keeps crashing
  its worker is named and the run ends with an error instead of looping;
- resources are checked before the start (an actor pool that cannot be placed makes Ray wait,
  not fail); the no-progress timeout is set (Ray's default is 30 minutes);
- no Ray read or write tasks: blocks come from the driver and results go back to it, so the
  actors can have every CPU of the cluster.

Ray is imported by this module only: ``import dps_fast`` and the CLI never import it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from ray.data import ActorPoolStrategy

from .._version import __version__
from ..bundle import MANIFEST
from ..cache import cache_root
from ..errors import DistributedError
from ..hashing import sha256_file
from ..io.pairing import Pair, read_pairs_manifest
from .options import RayOptions
from .output import META, SUCCESS, prepare_out, scan_rows, write_json, write_shard
from .plan import Planned, assign_ids, pairs_digest, plan_units, unit_from_row
from .plan import unit_row as _unit_row
from .units import result_columns, result_schema, score_unit

__all__ = ["RayOptions", "RayRun", "build_dataset", "check_resources", "score_pairs_ray"]

log = logging.getLogger("dps_fast.distributed")

# Error text of a pair that crashed its worker on every attempt (the run then ends with exit 2).
CRASH_ERROR = "worker crashed while scoring this pair"
# DPS_FAST_RAY_FAULT (tests only): crash-once:<id>:<dir> | crash-always:<id> | raise:<id> |
# slow:<seconds per unit>
FAULT_ENV = "DPS_FAST_RAY_FAULT"

_UNIT_SCHEMA = pa.schema(
    [pa.field("unit", pa.string())]
    + [pa.field(c, pa.list_(pa.string())) for c in ("id", "a", "b", "a_path", "b_path", "error")]
)


@dataclass
class RayRun:
    """What a run did; ``crashed`` names pairs that crashed their worker on every attempt."""

    out: Path
    total: int
    scored: int
    failed: int
    skipped: int
    units: int
    seconds: float
    truncated: list[str] = field(default_factory=list)
    crashed: list[dict[str, str]] = field(default_factory=list)
    decode: str = ""

    @property
    def complete(self) -> bool:
        return not self.crashed


# ---------------------------------------------------------------------------- the bundle
def _bundle_tar(path: Path) -> bytes:
    """The bundle folder as an uncompressed tar (ONNX graphs hardly compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(path.iterdir()):
            if f.is_file():
                tar.add(f, arcname=f.name)
    return buf.getvalue()


def _unpack_bundle(blob: bytes, sha256: str) -> Path:
    """Unpack a shipped bundle into the cache, keyed by its hash (atomic rename), and check it."""
    target = cache_root() / "ray-bundles" / sha256
    if (target / MANIFEST).is_file() and sha256_file(target / MANIFEST) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha256[:16]}-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            for member in tar.getmembers():
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise DistributedError(
                        f"shipped bundle has an unexpected entry {member.name!r}"
                    )
                src = tar.extractfile(member)
                assert src is not None
                with open(tmp / member.name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        got = sha256_file(tmp / MANIFEST)
        if got != sha256:
            raise DistributedError(f"shipped bundle's manifest hash is {got}, expected {sha256}")
        try:
            os.replace(tmp, target)
        except OSError:  # another actor on this node won the race
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _worker_bundle(path: str, sha256: str, blob: list[Any] | None) -> Path:
    """The bundle on this worker: the driver's folder if it is here with the same hash."""
    p = Path(path)
    if path and (p / MANIFEST).is_file() and sha256_file(p / MANIFEST) == sha256:
        return p
    if blob is None:
        raise DistributedError(
            f"bundle {p} is not on this node (or differs from the driver's, sha256 {sha256}) "
            "and none was shipped; use a shared folder or ship_bundle='object-store'"
        )
    return _unpack_bundle(ray.get(blob[0]), sha256)


# ---------------------------------------------------------------------------- the actor
def _fault(spec: str) -> tuple[str, str, str]:
    mode, _, rest = spec.partition(":")
    pid, _, where = rest.partition(":")
    return mode, pid, where


class _UnitActor:
    """A Ray Data actor: one engine, scores one unit per batch row into result rows."""

    def __init__(
        self,
        *,
        bundle_path: str,
        bundle_sha256: str,
        bundle_blob: list[Any] | None,
        engine_options: dict[str, Any],
        score_options: dict[str, Any],
        run_id: str,
        fault: str,
    ) -> None:
        from ..engine import Engine

        self.fault = _fault(fault) if fault else ("", "", "")
        if self.fault[0] == "crash-once" and self.fault[2]:
            Path(self.fault[2], f"init-{os.getpid()}-{time.monotonic_ns()}").touch()
        path = _worker_bundle(bundle_path, bundle_sha256, bundle_blob)
        self.engine = Engine(path, **engine_options)
        self.score_options = score_options
        self.crumbs = Path(tempfile.gettempdir()) / "dps-fast-ray" / run_id

    def _on_record(self, it: Planned) -> None:
        mode, pid, where = self.fault
        if not mode or it.id != pid:
            return
        if mode == "crash-always":
            os._exit(1)
        if mode == "crash-once":
            flag = Path(where, "crashed")
            if not flag.exists():
                flag.touch()
                os._exit(1)
        if mode == "raise":
            raise RuntimeError(f"injected fault on pair {pid}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [self._unit(*unit_from_row(row)) for row in batch.to_pylist()]
        return pa.concat_tables(tables) if tables else result_schema().empty_table()

    def _unit(self, unit_id: str, items: list[Planned]) -> pa.Table:
        self.crumbs.mkdir(parents=True, exist_ok=True)
        attempts_file = self.crumbs / f"{unit_id}.attempts"
        current_file = self.crumbs / f"{unit_id}.current"
        crashed_file = self.crumbs / f"{unit_id}.crashed"
        if self.fault[0] == "slow":  # tests: units long enough to kill the driver mid-run
            time.sleep(float(self.fault[1]))
        attempts = int(attempts_file.read_text() or 0) if attempts_file.exists() else 0
        attempts_file.write_text(str(attempts + 1))
        if attempts == 0:
            table = score_unit(self.engine, items, on_record=self._on_record, **self.score_options)
        else:
            # The worker died on this unit before: score its pairs one at a time, naming the
            # pair in flight, so that a pair that kills the worker again is known and skipped.
            crashed = set(crashed_file.read_text().split("\n")) if crashed_file.exists() else set()
            if current_file.exists():
                crashed.add(current_file.read_text())
                crashed_file.write_text("\n".join(sorted(crashed)))
            parts = []
            for it in items:
                if it.id in crashed:
                    parts.append(_crash_row(it, attempts, self.score_options, self.engine))
                    continue
                current_file.write_text(it.id)
                parts.append(
                    score_unit(self.engine, [it], on_record=self._on_record, **self.score_options)
                )
            current_file.unlink(missing_ok=True)
            table = pa.concat_tables(parts)
        for f in (attempts_file, current_file, crashed_file):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # gone once no unit of this run is in flight
            self.crumbs.rmdir()
        return table


def _crash_row(it: Planned, attempts: int, options: dict[str, Any], engine: Any) -> pa.Table:
    taps = list(engine.tap_names) if options.get("per_layer") else []
    schema = result_schema(taps)
    row: dict[str, Any] = dict.fromkeys(schema.names)
    row.update(
        a=it.pair.a, b=it.pair.b, id=it.id, error=f"{CRASH_ERROR} ({attempts} attempts); not scored"
    )
    return pa.Table.from_pylist([row], schema=schema)


# ---------------------------------------------------------------------------- the driver
@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[bool]:
    """Connect to ``address`` (or start a local Ray); shut down only what this call started."""
    if ray.is_initialized():
        yield False
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise DistributedError(
            f"cannot connect to {where}: {' '.join(str(e).split())}; start it with "
            "`ray start --head` or pass --ray-address"
        ) from e
    try:
        yield True
    finally:
        ray.shutdown()


def check_resources(options: RayOptions) -> None:
    """DistributedError unless the smallest actor pool fits the cluster now (Ray would wait)."""
    lo = options.actors[0]
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total_cpu = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in nodes)
    total_gpu = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
    fits = sum(
        _fits(n.get("Resources", {}), options.cpus_per_actor, options.gpus_per_actor) for n in nodes
    )
    if fits >= lo:
        return
    want = f"{lo} actor(s) × {options.cpus_per_actor:g} CPU"
    if options.gpus_per_actor:
        want += f" + {options.gpus_per_actor:g} GPU"
    raise DistributedError(
        f"the Ray cluster cannot place {want}: it has {total_cpu:g} CPU and {total_gpu:g} GPU "
        f"on {len(nodes)} node(s), room for {fits} such actor(s). Lower --actors, "
        "--cpus-per-actor or --gpus-per-actor, or add nodes (Ray would otherwise wait for them)"
    )


def _fits(res: dict[str, Any], cpus: float, gpus: float) -> int:
    """How many actors of (cpus, gpus) one node holds."""
    n_cpu = int(float(res.get("CPU", 0)) // cpus + 1e-9)
    if gpus <= 0:
        return n_cpu
    return min(n_cpu, int(float(res.get("GPU", 0)) // gpus + 1e-9))


@dataclass
class _Plan:
    planned: list[Planned]
    engine: Any
    bundle_path: Path
    bundle_sha256: str
    engine_options: dict[str, Any]
    score_options: dict[str, Any]


def _pairs(source: str | os.PathLike[str] | Sequence[Pair]) -> list[Pair]:
    if isinstance(source, (str, os.PathLike)):
        return read_pairs_manifest(Path(source))
    return list(source)


def _make_plan(
    source: str | os.PathLike[str] | Sequence[Pair],
    *,
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None,
    device: str,
    precision: str,
    batch_size: int | None,
    resize: str,
    per_layer: bool,
    workers: int | None,
    decode: str,
    gpus: float = 0.0,
    cpus: float = 1.0,
    engine: Any = None,
    crop_border: int = 0,
) -> _Plan:
    from ..engine import Engine
    from ..io.decode import parse_resize

    parse_resize(resize)  # ValueError now rather than one per row
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"expected crop_border a non-negative int, got {crop_border!r}")
    if (device == "cuda" or decode == "gpu") and not gpus:
        what = "--device cuda" if device == "cuda" else "--decode gpu"
        raise ValueError(f"{what} needs GPUs for the actors: pass --gpus-per-actor (e.g. 1)")
    planned = assign_ids(_pairs(source))
    if engine is None:
        # The driver's engine resolves (and if need be exports) the bundle; it runs on the
        # CPU here whatever the workers use.
        engine = Engine(model, device="cpu", precision=precision, weights=weights)
    path = Path(engine.bundle.path)
    return _Plan(
        planned=planned,
        engine=engine,
        bundle_path=path,
        bundle_sha256=sha256_file(path / MANIFEST),
        engine_options={
            "device": device,
            "precision": precision,
            "batch_size": batch_size,
            # Pixels cut from each side of every image, by each actor's engine.
            "crop_border": crop_border,
            # A CPU actor computes on the CPUs Ray gave it, not on all of its node's cores.
            "threads": None if gpus else max(1, round(cpus)),
        },
        score_options={
            "per_layer": per_layer,
            "resize": resize,
            "workers": workers or max(1, round(cpus)),  # decode threads: the actor's CPUs
            "decode": decode,
        },
    )


def _dataset(
    plan: _Plan,
    planned: Sequence[Planned],
    options: RayOptions,
    run_id: str,
    ship: str,
) -> ray.data.Dataset:
    """The Ray Data pipeline: one block per unit → actor pool → result rows."""
    units = plan_units(planned, options.unit_size)
    tables = [
        pa.Table.from_pylist([_unit_row(f"{run_id}-{i:06d}", u)], schema=_UNIT_SCHEMA)
        for i, u in enumerate(units)
    ]
    blob = None
    if ship == "object-store" or (ship == "auto" and not _local_cluster()):
        blob = [ray.put(_bundle_tar(plan.bundle_path))]  # in a list: the actor arg stays small
    elif ship not in ("auto", "path"):
        raise ValueError(f"ship_bundle: expected auto, path or object-store, got {ship!r}")
    ds: ray.data.Dataset = ray.data.from_arrow(tables or [_UNIT_SCHEMA.empty_table()])
    lo, hi = options.actors
    kwargs: dict[str, Any] = {
        # ship_bundle="object-store": the shipped copy even where the driver's folder is seen.
        "bundle_path": "" if ship == "object-store" else str(plan.bundle_path),
        "bundle_sha256": plan.bundle_sha256,
        "bundle_blob": blob,
        "engine_options": plan.engine_options,
        "score_options": plan.score_options,
        "run_id": run_id,
        "fault": os.environ.get(FAULT_ENV, ""),
    }
    with warnings.catch_warnings():
        # max_restarts / max_task_retries can only be set through **ray_remote_args, which
        # Ray deprecates for removal in 2.64 (hence the [ray] extra's upper bound). Ray's own
        # DataContext copy warns about its deprecated fields too.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            _UnitActor,
            batch_size=1,  # one row is one unit
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=lo, max_size=hi),
            fn_constructor_kwargs=kwargs,
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
            max_restarts=options.max_restarts,
            max_task_retries=options.max_restarts,
        )
        ctx = ds.context
        ctx.execution_no_progress_timeout_s = options.no_progress_timeout
        ctx.max_errored_blocks = 0  # an error fails the run: rows are never dropped silently
        ctx.actor_task_retry_on_errors = False  # score_unit never raises; a raise is a bug
        ctx.enable_progress_bars = False
    return ds


def _local_cluster() -> bool:
    """True when every alive node is this machine (the driver's bundle path is theirs)."""
    here = ray.util.get_node_ip_address()
    return all(n.get("NodeManagerAddress") == here for n in ray.nodes() if n.get("Alive"))


def build_dataset(
    source: str | os.PathLike[str] | Sequence[Pair],
    *,
    model: str | os.PathLike[str] = "lpips-alex",
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
    resize: str = "none",
    per_layer: bool = False,
    workers: int | None = None,
    decode: str = "auto",
    options: RayOptions | None = None,
    ship_bundle: str = "auto",
    crop_border: int = 0,
) -> ray.data.Dataset:
    """The ``ray.data.Dataset`` of result rows for a manifest (or pairs), not yet executed.

    For composing a larger pipeline (``write_parquet``, joins …) on an initialised Ray. Rows
    follow :func:`~dps_fast.distributed.units.result_schema`; a failed pair is a row with its
    error. Resume and the output folder are :func:`score_pairs_ray`'s. ``crop_border``: pixels
    cut from each side of both images before scoring (as ``Engine(crop_border=…)``).
    """
    opts = options or RayOptions()
    opts.check()
    if not ray.is_initialized():
        raise DistributedError("build_dataset needs ray.init() first (or use score_pairs_ray)")
    plan = _make_plan(
        source,
        model=model,
        weights=weights,
        device=device,
        precision=precision,
        batch_size=batch_size,
        resize=resize,
        per_layer=per_layer,
        workers=workers,
        decode=decode,
        gpus=opts.gpus_per_actor,
        cpus=opts.cpus_per_actor,
        crop_border=crop_border,
    )
    check_resources(opts)
    return _dataset(plan, plan.planned, opts, uuid.uuid4().hex[:12], ship_bundle)


def _version_of(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return None


def _engine_provenance(plan: _Plan) -> dict[str, Any]:
    info = plan.engine.info
    return {
        "model": info["model"],
        "bundle": str(plan.bundle_path),
        "bundle_sha256": plan.bundle_sha256,
        "weights": info["weights"],
        "precision": plan.engine_options["precision"],
        "device": plan.engine_options["device"],
        "crop_border": plan.engine_options["crop_border"],
        "lower_is_better": info.get("lower_is_better", True),
    }


def score_pairs_ray(
    source: str | os.PathLike[str] | Sequence[Pair],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = "lpips-alex",
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    batch_size: int | None = None,
    resize: str = "none",
    per_layer: bool = False,
    workers: int | None = None,
    decode: str = "auto",
    options: RayOptions | None = None,
    resume: bool = False,
    ship_bundle: str = "auto",
    engine: Any = None,
    progress: Any = None,
    crop_border: int = 0,
) -> RayRun:
    """Score a manifest (or a list of pairs) on Ray into Parquet shards in the folder ``out``.

    Connects to ``options.address`` (else uses an initialised Ray, else starts a local one and
    stops it after). Every pair ends with exactly one row. ``resume=True`` continues a run in
    ``out``: unreadable shards are deleted, error rows redone, new shards appended. Raises
    DistributedError when the run cannot start or finish (the CLI's exit 2); a pair that
    crashed its worker on every attempt is a row with its error and is listed in
    ``RayRun.crashed`` (no completion marker then). ``progress(done, total)`` is called per unit.
    ``crop_border``: pixels cut from each side of both images before scoring (super-resolution
    practice, as ``Engine(crop_border=…)``); a resume must use the same.
    """
    opts = options or RayOptions()
    opts.check()
    t0 = time.perf_counter()
    out_dir = Path(out)
    plan = _make_plan(
        source,
        model=model,
        weights=weights,
        device=device,
        precision=precision,
        batch_size=batch_size,
        resize=resize,
        per_layer=per_layer,
        workers=workers,
        decode=decode,
        gpus=opts.gpus_per_actor,
        cpus=opts.cpus_per_actor,
        engine=engine,
        crop_border=crop_border,
    )
    taps = list(plan.engine.tap_names) if per_layer else []
    meta: dict[str, Any] = {
        "dps_fast": __version__,
        "backend": "ray",
        "ray": ray.__version__,
        "pyarrow": pa.__version__,
        "onnxruntime": _version_of("onnxruntime"),
        "pairs": len(plan.planned),
        "pairs_sha256": pairs_digest(plan.planned),
        "columns": result_columns(taps),
        "resize": resize,
        **_engine_provenance(plan),
        "options": {
            "per_layer": per_layer,
            "batch_size": batch_size,
            "decode": decode,
            "actors": list(opts.actors),
            "cpus_per_actor": opts.cpus_per_actor,
            "gpus_per_actor": opts.gpus_per_actor,
            "unit_size": opts.unit_size,
            "max_restarts": opts.max_restarts,
            "no_progress_timeout": opts.no_progress_timeout,
        },
    }
    state = prepare_out(out_dir, meta, resume=resume)
    write_json(out_dir / META, meta)
    todo = [it for it in plan.planned if it.id not in state.done]
    run_id = uuid.uuid4().hex[:12]
    crashed: list[dict[str, str]] = []
    n_units = 0
    if todo:
        with _ray_session(opts.address):
            check_resources(opts)
            ds = _dataset(plan, todo, opts, run_id, ship_bundle)
            n_units = len(plan_units(todo, opts.unit_size))
            done = 0
            try:
                batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
                for i, batch in enumerate(batches):
                    table: pa.Table = batch
                    write_shard(out_dir, f"{run_id}-{i:06d}", table)
                    bad = table.filter(pc.starts_with(table["error"], CRASH_ERROR))
                    crashed.extend(bad.select(["id", "a", "b"]).to_pylist())
                    done += table.num_rows
                    if progress is not None:
                        progress(done, len(todo))
            except Exception as e:
                raise _run_error(e, opts, out_dir) from e
            finally:
                shutil.rmtree(Path(tempfile.gettempdir()) / "dps-fast-ray" / run_id, True)
    ids, failed = scan_rows(out_dir)
    want = {it.id for it in plan.planned}
    missing = want.difference(ids)
    extra = len(ids) - len(set(ids))
    if missing or extra or len(set(ids)) != len(want):
        shown = ", ".join(sorted(missing)[:5])
        raise DistributedError(
            f"{out_dir}: {len(missing)} pair(s) have no row ({shown}) and {extra} have more "
            "than one; rerun with --resume"
        )
    seconds = time.perf_counter() - t0
    run = RayRun(
        out=out_dir,
        total=len(want),
        scored=len(want) - failed,
        failed=failed,
        skipped=len(plan.planned) - len(todo),
        units=n_units,
        seconds=seconds,
        truncated=state.truncated,
        crashed=crashed,
        decode=decode,
    )
    if run.complete:
        write_json(
            out_dir / SUCCESS,
            {
                "pairs": run.total,
                "scored": run.scored,
                "failed": run.failed,
                "skipped": run.skipped,
                "units": run.units,
                "seconds": round(seconds, 3),
            },
        )
    return run


def _run_error(e: BaseException, opts: RayOptions, out: Path) -> DistributedError:
    """The error that ends a run (the CLI's exit 2), saying what happened and what to do."""
    from ray.data.exceptions import ExecutionTimeoutError

    again = f"the shards written so far stay in {out}; fix the cause and rerun with --resume"
    if isinstance(e, DistributedError):
        return e
    if isinstance(e, ExecutionTimeoutError):
        return DistributedError(
            f"no unit finished for {opts.no_progress_timeout:g} s (--no-progress-timeout): the "
            "actors could not be placed, are stuck, or a unit takes longer than that (lower "
            f"--unit-size or raise the timeout); {again}"
        )
    if isinstance(e, ray.exceptions.RayActorError) or "ActorDiedError" in type(e).__name__:
        return DistributedError(
            f"a Ray worker died more than {opts.max_restarts} times (max_restarts) on a unit "
            f"that could not be narrowed to one pair (e.g. its node left); {again}"
        )
    msg = " ".join(str(e).split())
    if len(msg) > 600:
        msg = msg[:600] + " …"
    return DistributedError(f"the Ray run failed: {type(e).__name__}: {msg}; {again}")
