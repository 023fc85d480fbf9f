"""``dps-fast`` command line: a thin layer over the Python API.

Imports are lazy so ``--help`` and ``--version`` answer at once. Exit codes: 0 every pair
scored, 1 some pairs failed (their rows say why), 2 usage or whole-run errors.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ._install import install_command
from ._version import __version__

if TYPE_CHECKING:
    from .engine import Engine

app = typer.Typer(
    name="dps-fast",
    help="Fast deep perceptual similarity (LPIPS, DISTS, DPS) on ONNX Runtime.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts name extras like [export] literally
)


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _fail(msg: str, code: int = 2) -> NoReturn:
    _err(f"error: {msg}")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dps-fast {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Deep perceptual similarity between images, fast."""


# ---- shared options ----------------------------------------------------------------------
MODEL = typer.Option(
    "lpips-alex", "--model", "-m",
    help="Model name or bundle folder; several, comma-separated (score, score-pairs).",
)  # fmt: skip
WEIGHTS = typer.Option(
    None, "--weights", help="Backbone state dict (.pth/.safetensors): selects/makes its bundle."
)
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
PRECISION = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (needs the variant)")
BATCH = typer.Option(None, "--batch-size", min=1, help="Pairs per batch (an upper bound).")
WORKERS = typer.Option(None, "--workers", min=1, help="Decoding threads (default: cores, ≤ 8).")
RESIZE = typer.Option("none", "--resize", help="none | to-a | short-side:N")
OUT = typer.Option(None, "--out", "-o", help="Results file (.csv or .jsonl); default stdout.")
RESUME = typer.Option(False, "--resume", help="Skip pairs already scored in --out.")
PER_LAYER = typer.Option(False, "--per-layer", help="Add tap_<name> columns.")
SPATIAL_DIR = typer.Option(
    None, "--spatial-dir", help="Write a heatmap PNG per pair here (LPIPS models), with its scale."
)
VMAX = typer.Option(
    "auto",
    "--vmax",
    help="Heatmap scale: auto (from the run's first maps, one scale for the run) | a distance "
    "drawn white, e.g. 0.5 (fixed, compares across runs).",
)
HEATMAP = typer.Option(
    "map", "--heatmap", help="map | panel: the map alone, or A | B | map side by side."
)
SPATIAL_NPY = typer.Option(
    False, "--spatial-npy", help="Also save each raw float32 map as .npy beside its PNG."
)
DECODE = typer.Option(
    "auto", "--decode", help="auto | cpu | gpu: JPEGs on the GPU with nvImageCodec (cuda only)."
)
# --backend ray (the [ray] extra): options handed to dps_fast.distributed as they are.
BACKEND = typer.Option("local", "--backend", help="local | ray (a Ray cluster; --out is a folder).")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster (default: start a local one).")
ACTORS = typer.Option("1", "--actors", help="Ray actors: N, or MIN-MAX to autoscale.")
CPUS_PER_ACTOR = typer.Option(1.0, "--cpus-per-actor", help="CPUs per actor (decode threads).")
GPUS_PER_ACTOR = typer.Option(0.0, "--gpus-per-actor", help="GPUs per actor (0.5 shares one).")
UNIT_SIZE = typer.Option(1024, "--unit-size", min=1, help="Pairs per unit of work (Ray).")
NO_PROGRESS = typer.Option(
    600.0, "--no-progress-timeout", help="Stop a Ray run when no unit finishes for this many s."
)
CROP = typer.Option(
    0, "--crop-border", min=0, help="Pixels dropped from each side of both images (SR practice)."
)


def _make_engine(
    model: str,
    weights: Path | None,
    device: str,
    precision: str,
    batch_size: int | None,
    crop_border: int = 0,
) -> Engine:
    import importlib.util

    from .engine import Engine
    from .errors import DpsFastError
    from .hub import needs_export

    dest = needs_export(model, weights)
    if dest is not None and importlib.util.find_spec("torch") is not None:
        # The first run of a model exports its bundle: say so, it takes a while.
        _err(
            f"note: first use of {model} here: exporting its bundle once (about a minute) to {dest}"
        )
    t0 = time.perf_counter()
    try:
        engine = Engine(
            model,
            device=device,
            precision=precision,
            weights=weights,
            batch_size=batch_size,
            crop_border=crop_border,
        )
    except (DpsFastError, ValueError, FileNotFoundError) as e:
        _fail(" ".join(str(e).split()))
    if dest is not None and engine.bundle.path == dest:
        _err(f"note: exported {engine.bundle.model} in {time.perf_counter() - t0:.1f} s")
    return engine


def _make_engines(
    model: str,
    weights: Path | None,
    device: str,
    precision: str,
    batch_size: int | None,
    crop_border: int = 0,
) -> list[Engine]:
    """One engine per model of ``--model a,b,c`` (each image is then decoded once for all)."""
    from .pipeline import model_list

    try:
        names = model_list(model)
    except ValueError as e:
        _fail(str(e))
    if len(names) > 1 and weights is not None:
        _fail("--weights selects one model's bundle; use it with a single --model")
    return [_make_engine(m, weights, device, precision, batch_size, crop_border) for m in names]


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal): pairs done, rate, ETA.

    Advanced per scored batch (``PairScorer(on_progress=…)``), redrawn at most every 0.1 s.
    """

    def __init__(self, total: int, *, stream: Any = None, on: bool | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.on = self.stream.isatty() if on is None else on
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.on or (not force and now - self.last < 0.1 and self.done < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / max(self.total, 1)
        bar = "#" * int(frac * 30)
        if self.done >= self.total:
            tail = f"{_clock(elapsed)} in all"
        elif self.done:
            tail = f"ETA {_clock((self.total - self.done) / rate)}"
        else:
            tail = "ETA --:--"
        self.stream.write(
            f"\r[{bar:<30}] {self.done}/{self.total} pairs, {rate:.1f} pairs/s, {tail}   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _resume_command(ctx: typer.Context) -> str:
    """The command line of this run (options at their default left out) with ``--resume``:
    what continues an interrupted run."""
    import shlex

    parts = ["dps-fast", ctx.info_name or ""]
    for p in ctx.command.params:
        value = ctx.params.get(p.name or "")
        if p.param_type_name == "argument":
            parts.append(str(value))
            continue
        if p.name == "resume" or value is None or value == p.default or not p.opts:
            continue
        flag = max(p.opts, key=len)  # the long form
        if getattr(p, "is_flag", False):
            if value:
                parts.append(flag)
            continue
        parts += [flag, str(value)]
    return shlex.join([*parts, "--resume"])


def _parse_vmax(vmax: str) -> float | None:
    """``--vmax``: None for auto, else a positive number (exit 2 saying what is expected)."""
    if vmax.strip().lower() == "auto":
        return None
    try:
        v = float(vmax)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v < float("inf")):
        _fail(f"--vmax must be auto or a positive number (e.g. 0.5), got {vmax!r}")
    return v


def _run_scoring(
    ctx: typer.Context,
    engine: list[Engine],
    pairs: list[Any],
    opts: ScoreOptions,
    *,
    options: dict[str, Any],
    notes: list[str],
) -> int:
    """Score ``pairs`` into ``--out`` (or stdout) with :class:`~dps_fast.scoring_run.ScoringRun`;
    this layer only turns its errors into exit codes and messages and draws the progress."""
    from .errors import DpsFastError
    from .pipeline import PairScorer
    from .scoring_run import ScoringRun, provenance

    out = opts.out
    if opts.resume and out is None:
        _fail("--resume needs --out FILE (the file to resume)")
    try:
        scorer = PairScorer(
            engine, resize=opts.resize, per_layer=opts.per_layer, spatial_dir=opts.spatial_dir,
            workers=opts.workers, decode=opts.decode, vmax=_parse_vmax(opts.vmax),
            heatmap_style=opts.heatmap, spatial_npy=opts.spatial_npy,
        )  # fmt: skip
        run = ScoringRun(scorer, pairs, provenance=provenance(engine, options), out=out,
                         resume=opts.resume, notes=notes)  # fmt: skip
    except ValueError as e:
        _fail(str(e))
    try:
        run.__enter__()
    except (DpsFastError, OSError, ValueError) as e:
        _fail(" ".join(str(e).split()))
    try:
        return _write_rows(run, resume_cmd=_resume_command(ctx))
    finally:
        run.__exit__(None, None, None)


def _write_rows(run: Any, *, resume_cmd: str = "") -> int:
    """Write the run's rows; write failures (full disk, closed pipe) exit 2; Ctrl-C says how
    many pairs were written and prints ``resume_cmd``, the command that continues."""
    from .errors import DpsFastError

    out = run.out
    try:
        run.open_writer()
    except (OSError, ValueError) as e:
        _fail_write(e, out)
    for n in run.notes:
        _err(n)
    progress = _Progress(len(run.todo))
    run.scorer.on_progress = progress.advance
    try:
        run.write_rows()
    except DpsFastError as e:  # e.g. a graph of the bundle that fails its check on first use
        progress.close()
        _fail(" ".join(str(e).split()))
    except OSError as e:
        _fail_write(e, out)
    except KeyboardInterrupt:
        progress.close()
        _err(f"interrupted: {run.written} of {len(run.todo)} pairs written")
        if out is not None:
            _err(f"continue with:\n  {resume_cmd}")
        else:
            _err("rows went to stdout: run with --out FILE to be able to continue with --resume")
        raise typer.Exit(130) from None
    progress.close()
    try:
        outcome = run.finish()
    except OSError as e:
        _fail(f"{e}; every row is in {out}, rerun with --resume to write the meta again")
    _print_summary(outcome.run, outcome.provenance, outcome.whole, out)
    return 1 if outcome.failed else 0


def _fail_write(e: Exception, out: Path | None) -> NoReturn:
    """Exit 2 for a failed write: a closed pipe quietly, a file with how to go on."""
    if out is None and isinstance(e.__cause__ or e, BrokenPipeError):
        _quiet_stdout()
        _fail("the output pipe was closed before every row was written")
    if out is not None and isinstance(e, OSError):
        _fail(f"{e}; the rows written so far are kept — free some space and rerun with --resume")
    _fail(str(e))


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the exit flush does not fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _print_summary(
    summary: dict[str, Any],
    prov: dict[str, Any],
    whole: dict[str, Any] | None = None,
    out: Path | None = None,
) -> None:
    """This run's counts; the statistics describe the whole results file after a resume."""
    from .io.summary import summary_lines

    for line in summary_lines(summary, prov, whole, out):
        _err(line)


def _one_side_notes(only_a: list[str], only_b: list[str], dir_a: Path, dir_b: Path) -> list[str]:
    notes = []
    for names, d in ((only_a, dir_a), (only_b, dir_b)):
        if names:
            shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            notes.append(f"note: {len(names)} file(s) only in {d}, not scored: {shown}")
    return notes


# ---- score and score-pairs: one option set --------------------------------------------------
@dataclass(frozen=True)
class ScoreOptions:
    """The options ``score`` and ``score-pairs`` share, parsed once (see ``_SCORE_OPTIONS``)."""

    model: str
    weights: Path | None
    device: str
    precision: str
    batch_size: int | None
    workers: int | None
    resize: str
    out: Path | None
    resume: bool
    per_layer: bool
    spatial_dir: Path | None
    vmax: str
    heatmap: str
    spatial_npy: bool
    decode: str
    backend: str
    ray_address: str | None
    actors: str
    cpus_per_actor: float
    gpus_per_actor: float
    unit_size: int
    no_progress_timeout: float
    crop_border: int


# The one declaration of those options: name → (type, Typer option), in --help order.
_SCORE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (str, MODEL),
    "weights": (Path | None, WEIGHTS),
    "device": (str, DEVICE),
    "precision": (str, PRECISION),
    "batch_size": (int | None, BATCH),
    "workers": (int | None, WORKERS),
    "resize": (str, RESIZE),
    "out": (Path | None, OUT),
    "resume": (bool, RESUME),
    "per_layer": (bool, PER_LAYER),
    "spatial_dir": (Path | None, SPATIAL_DIR),
    "vmax": (str, VMAX),
    "heatmap": (str, HEATMAP),
    "spatial_npy": (bool, SPATIAL_NPY),
    "decode": (str, DECODE),
    "backend": (str, BACKEND),
    "ray_address": (str | None, RAY_ADDRESS),
    "actors": (str, ACTORS),
    "cpus_per_actor": (float, CPUS_PER_ACTOR),
    "gpus_per_actor": (float, GPUS_PER_ACTOR),
    "unit_size": (int, UNIT_SIZE),
    "no_progress_timeout": (float, NO_PROGRESS),
    "crop_border": (int, CROP),
}


def _with_score_options(
    *, after: dict[str, str] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the shared scoring options (``_SCORE_OPTIONS``) as one ``opts:
    ScoreOptions`` argument. The command declares only its own parameters; ``after`` places
    one of its options after a shared one in --help (``{"match": "workers"}``)."""
    after = after or {}

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        placed = {p.name: p for p in own if p.name in after}
        params = [p for p in own if p.name not in placed]
        kw = inspect.Parameter.KEYWORD_ONLY
        for name, (kind, option) in _SCORE_OPTIONS.items():
            params.append(inspect.Parameter(name, kw, default=option, annotation=kind))
            params += [placed[o] for o, a in after.items() if a == name]
        params = [p.replace(kind=kw) if p.kind == p.POSITIONAL_OR_KEYWORD else p for p in params]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> None:
            shared = {k: kwargs.pop(k) for k in _SCORE_OPTIONS}
            fn(**kwargs, opts=ScoreOptions(**shared))

        hints = {k: v for k, v in fn.__annotations__.items() if k != "opts"}
        command.__annotations__ = {**hints, **{k: t for k, (t, _) in _SCORE_OPTIONS.items()}}
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return command

    return wrap


def _score(
    ctx: typer.Context,
    pairs: list[Any],
    opts: ScoreOptions,
    *,
    options: dict[str, Any],
    notes: list[str],
) -> NoReturn:
    """What ``score`` and ``score-pairs`` do once their pairs are known: the Ray backend, or
    engines and a scoring run; exits with the run's code."""
    if opts.backend != "local":
        raise typer.Exit(_ray_backend(pairs, opts))
    engine = _make_engines(opts.model, opts.weights, opts.device, opts.precision,
                           opts.batch_size, opts.crop_border)  # fmt: skip
    raise typer.Exit(_run_scoring(ctx, engine, pairs, opts, options=options, notes=notes))


def _ray_backend(pairs: list[Any], opts: ScoreOptions) -> int:
    """--backend ray: score on a Ray cluster into a folder of Parquet shards."""
    from .distributed.cli_run import run_ray_cli

    if "," in opts.model:
        _fail("--backend ray scores one model per run; run it once per model")
    if opts.spatial_dir is not None:
        _fail("--spatial-dir is not available with --backend ray")
    if opts.out is None:
        _fail("--backend ray needs --out DIR (a folder of Parquet shards)")
    code, messages = run_ray_cli(
        pairs, opts.out, backend=opts.backend, resume=opts.resume, model=opts.model,
        weights=opts.weights, device=opts.device, precision=opts.precision,
        batch_size=opts.batch_size, resize=opts.resize, per_layer=opts.per_layer,
        workers=opts.workers, decode=opts.decode, address=opts.ray_address, actors=opts.actors,
        cpus_per_actor=opts.cpus_per_actor, gpus_per_actor=opts.gpus_per_actor,
        unit_size=opts.unit_size, no_progress_timeout=opts.no_progress_timeout,
        crop_border=opts.crop_border,
    )  # fmt: skip
    for m in messages:
        _err(m)
    return code


def _check_resize(resize: str) -> None:
    from .io.decode import parse_resize

    parse_resize(resize)


@app.command()
@_with_score_options(after={"match": "workers"})
def score(
    ctx: typer.Context,
    dir_a: Path = typer.Argument(..., metavar="DIR_A", help="Folder A (e.g. restored images)."),
    dir_b: Path = typer.Argument(..., metavar="DIR_B", help="Folder B (e.g. ground truth)."),
    match: str = typer.Option("stem", "--match", help="stem | relpath | sorted"),
    *,
    opts: ScoreOptions,
) -> None:
    """Score the image pairs of two folders.

    One row per pair; pairs are matched by file stem in both folders' trees (--match).

    \b
    Examples:
      dps-fast score restored/ reference/ --out scores.csv
      dps-fast score restored/ reference/ --out scores.csv --resume
      dps-fast score restored/ reference/ --spatial-dir maps --heatmap panel
    """
    from .io.pairing import MATCH_MODES, PairingError, pair_dirs

    if match not in MATCH_MODES:
        _fail(f"--match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    try:
        _check_resize(opts.resize)
        pairing = pair_dirs(dir_a, dir_b, match=match)
    except (PairingError, ValueError) as e:
        _fail(" ".join(str(e).split()))
    notes = _one_side_notes(pairing.only_a, pairing.only_b, dir_a, dir_b)
    if pairing.note:
        notes.insert(0, f"note: {pairing.note}")
    options = {"dir_a": str(dir_a), "dir_b": str(dir_b), "match": match, "resize": opts.resize,
               "per_layer": opts.per_layer, "batch_size": opts.batch_size}  # fmt: skip
    _score(ctx, pairing.pairs, opts, options=options, notes=notes)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links followed); False when either is missing."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


@app.command("score-pairs")
@_with_score_options()
def score_pairs_cmd(
    ctx: typer.Context,
    pairs_csv: Path = typer.Argument(
        ..., metavar="PAIRS_CSV", help="CSV with columns a,b (optional id)."
    ),
    columns: str = typer.Option(
        "a,b", "--columns", help="The manifest's A and B path columns, e.g. ref,dist."
    ),
    *,
    opts: ScoreOptions,
) -> None:
    """Score the pairs listed in a CSV manifest.

    Paths are relative to the manifest's folder; columns a,b (or --columns), id optional.

    \b
    Examples:
      dps-fast score-pairs pairs.csv --out scores.jsonl
      dps-fast score-pairs pairs.csv --columns ref,dist --out scores.csv
    """
    from .io.pairing import PairingError, read_pairs_manifest

    if opts.out is not None and _same_file(opts.out, pairs_csv):
        _fail(f"--out {opts.out} is the manifest being read; write the results to another file")
    try:
        _check_resize(opts.resize)
        pairs = read_pairs_manifest(pairs_csv, columns)
    except (PairingError, ValueError) as e:
        _fail(" ".join(str(e).split()))
    options = {"manifest": str(pairs_csv), "columns": columns, "resize": opts.resize,
               "per_layer": opts.per_layer, "batch_size": opts.batch_size}  # fmt: skip
    _score(ctx, pairs, opts, options=options, notes=[])


@app.command()
def matrix(
    folder: Path = typer.Argument(..., metavar="DIR", help="Folder of images (recursive)."),
    out: Path = typer.Option(..., "--out", "-o", help="M.npy (+ M.labels.txt) or M.csv"),
    model: str = MODEL,
    weights: Path | None = WEIGHTS,
    device: str = DEVICE,
    precision: str = PRECISION,
    batch_size: int | None = BATCH,
    workers: int | None = WORKERS,
    resize: str = typer.Option(
        "none", "--resize", help="none | short-side:N | WxH (e.g. 256x256): one size for all."
    ),
    crop: str = typer.Option(
        "none", "--crop", help="none | center: crop to W:H before --resize WxH (no stretching)."
    ),
    max_memory: str = typer.Option(
        "1GB", "--max-memory", help="Features held at once, e.g. 1GB, 300MB; beyond, passes."
    ),
    crop_border: int = CROP,
) -> None:
    """All-pairs distance matrix of a folder.

    Features are computed once per image while they fit --max-memory, else in passes (as many
    held as fit, the rest streamed past them: memory stays bounded, the trunk runs more than
    once per image). --crop-border N drops N pixels from each side after --resize. An
    unreadable image gets a NaN row and column and is named on stderr and in M.npy.meta.json
    (exit 1).

    \b
    Examples:
      dps-fast matrix photos/ --out m.npy
      dps-fast matrix photos/ --out m.csv --resize 256x256 --crop center --max-memory 300MB
      dps-fast matrix sr/ --out m.npy --model psnr-y --crop-border 4
    """
    from .io.pairing import list_images
    from .matrix import parse_budget, parse_matrix_resize
    from .matrix_file import MATRIX_SUFFIXES, write_matrix_file

    if out.suffix not in MATRIX_SUFFIXES:
        _fail(f"--out must end in .npy or .csv, got {out.name!r}")
    if not folder.is_dir():
        _fail(f"folder not found: {folder}")
    try:
        budget = parse_budget(max_memory)
        rs = parse_matrix_resize(resize, crop)
    except ValueError as e:
        _fail(f"--max-memory/--resize/--crop: {e}")
    if not list_images(folder):
        _fail(f"no images found in {folder}")
    engine = _make_engine(model, weights, device, precision, batch_size, crop_border)

    def say_plan(plan: Any) -> None:
        _err(f"matrix: {plan.describe()}")

    options = {"dir": str(folder), "resize": str(rs), "crop": crop, "max_memory": budget,
               "batch_size": batch_size, "crop_border": crop_border}  # fmt: skip
    try:
        res = write_matrix_file(folder, out, engine=engine, resize=rs, max_feature_bytes=budget,
                                workers=workers, on_plan=say_plan, options=options)  # fmt: skip
    except ValueError as e:
        _fail(" ".join(str(e).split()))
    except OSError as e:
        _fail(str(e))
    n = len(res.labels)
    for name, why in res.errors.items():
        _err(f"  unreadable (NaN row and column): {name}: {why}")
    _err(
        f"matrix: {n} images, {n * (n - 1) // 2} pairs in {res.seconds:.2f} s "
        f"({engine.info['model']}, {engine.device})"
        + (f", {len(res.errors)} unreadable" if res.errors else "")
        + f" → {out}"
    )
    raise typer.Exit(1 if res.errors else 0)


@app.command()
def evaluate(
    datasets: list[str] = typer.Argument(
        None, metavar="KIND=PATH...", help="bapps|tid2013|kadid10k|pipal|live|mos=PATH"
    ),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="Model name or bundle (repeat for several)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    weights: Path | None = WEIGHTS,
    device: str = DEVICE,
    precision: str = PRECISION,
    batch_size: int | None = BATCH,
    workers: int | None = WORKERS,
    resize: str | None = typer.Option(
        None, "--resize", help="Override each dataset's protocol (BAPPS short-side:64)."
    ),
    subsets: str | None = typer.Option(None, "--subsets", help="BAPPS subsets, e.g. cnn,val/color"),
    jnd: bool = typer.Option(True, "--jnd/--no-jnd", help="Also BAPPS JND (when present)."),
    higher_better: bool = typer.Option(False, "--higher-better", help="mos= scores: MOS-like."),
    lower_better: bool = typer.Option(False, "--lower-better", help="mos= scores: DMOS-like."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Deterministic subset of N."),
    resume: bool = typer.Option(False, "--resume", help="Keep the pairs already scored in --out."),
    from_scores: Path | None = typer.Option(
        None, "--from-scores", help="Recompute every statistic from DIR/scores (no engine)."
    ),
    fit: str = typer.Option("logistic4", "--fit", help="logistic4 | logistic5 | none"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="BCa resamples (0: no CI)."),
    ci: float = typer.Option(0.95, "--ci", help="Confidence level."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    outlier_k: float = typer.Option(2.0, "--outlier-k", help="Outlier beyond k·σ."),
    tap_subsets: str | None = typer.Option(
        None, "--tap-subsets", help="single,prefix: main measure per layer subset."
    ),
    hf: bool = typer.Option(False, "--hf", help="High-frequency features, outliers vs inliers."),
    hf_cutoff: float = typer.Option(0.25, "--hf-cutoff", help="Radial cutoff (cycles/pixel)."),
    plots: bool = typer.Option(False, "--plots", help="Write plots/ (matplotlib)."),
    aggregate: Path | None = typer.Option(None, "--aggregate", help="Weights TOML file."),
    accuracy: list[str] = typer.Option([], "--accuracy", help="NAME=ACC (ImageNet top-1 %)."),
    robustness: bool = typer.Option(
        False, "--robustness", help="Rank flips under 1-3 px shifts, monotonicity ladders."
    ),
    decode: str = DECODE,
) -> None:
    """How well models agree with human judgments.

    Scores, measures, CIs (needs [eval]).

    \b
    Example:
      dps-fast evaluate tid2013=data/TID2013 --model lpips-alex --out eval/
    """
    from .evaluate.cli import main as run_evaluate

    raise typer.Exit(
        run_evaluate(
            datasets or [], models=model, out=out, weights=weights, device=device,
            precision=precision, batch_size=batch_size, workers=workers, resize=resize,
            subsets=subsets, jnd=jnd, higher_better=higher_better, lower_better=lower_better,
            limit=limit, resume=resume, from_scores=from_scores, fit=fit, bootstrap=bootstrap,
            ci=ci, seed=seed, outlier_k=outlier_k, tap_subsets=tap_subsets, decode=decode,
            hf=hf, hf_cutoff=hf_cutoff, plots=plots, aggregate=aggregate, accuracy=accuracy,
            robustness=robustness,
        )
    )  # fmt: skip


@app.command()
def models() -> None:
    """List the models and the bundles in the cache.

    \b
    Example:
      dps-fast models
    """
    from .cache import cache_root, cached_bundles
    from .registry import list_models

    cached = cached_bundles()
    rows = [("model", "head", "taps", "cached", "description")]
    for s in list_models():
        rows.append(
            (s.name, s.head, str(len(s.taps)),
             ",".join(cached.get(s.name, [])) or ("shipped" if s.classical else "-"),
             s.description)
        )  # fmt: skip
    for name, keys in cached.items():
        if name not in {s.name for s in list_models()}:
            rows.append((name, "custom", "?", ",".join(keys), "custom export"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    typer.echo(f"\ncache: {cache_root()}")


@app.command()
def export(
    model: str = typer.Argument(
        ..., metavar="MODEL", help="Registry name, or 'dps' with --arch and --taps."
    ),
    weights: Path | None = WEIGHTS,
    out: Path | None = typer.Option(None, "--out", "-o", help="Bundle folder (default: cache)."),
    arch: str | None = typer.Option(None, "--arch", help="torchvision architecture (dps)."),
    taps: str | None = typer.Option(None, "--taps", help="Comma-separated node names (dps)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing bundle."),
    fp16: bool = typer.Option(False, "--fp16", help="Also make float16 graph variants (GPU)."),
    int8: bool = typer.Option(
        False, "--int8", help="Also make int8 (quantized trunk) graph variants (CPU)."
    ),
    alias: str | None = typer.Option(
        None, "--alias", help="A name for this bundle: later commands take -m NAME."
    ),
) -> None:
    """Export a model to a validated ONNX bundle.

    Needs the [export] extra (PyTorch). A bundle exported into the cache becomes its model's
    default: later commands find it by the model name (or --alias), without --weights.

    \b
    Examples:
      dps-fast export lpips-alex
      dps-fast export lpips-alex --weights alexnet-owt-7be5be79.pth --int8
      dps-fast export lpips-alex --weights finetuned.pth --alias my-alex
      dps-fast export dps --arch resnet18 --taps layer1,layer2
    """
    from .errors import DpsFastError
    from .hub import check_alias, remember_export
    from .registry import custom_dps_spec, get_model

    try:
        if alias is not None:
            check_alias(alias)
            if out is not None:
                _fail("--alias names a bundle in the cache; leave out --out")
        if model == "dps":
            if not arch or not taps:
                _fail("`dps-fast export dps` needs --arch A --taps T1,T2")
            spec = custom_dps_spec(arch, [t.strip() for t in taps.split(",") if t.strip()])
        else:
            if arch or taps:
                _fail("--arch/--taps go with `dps-fast export dps`")
            spec = get_model(model)
    except (DpsFastError, ValueError) as e:
        _fail(" ".join(str(e).split()))
    if spec.classical:
        from .hub import resolve_bundle

        _err(f"{spec.name} is a classical measure shipped with dps-fast: nothing to export")
        typer.echo(str(resolve_bundle(spec.name)))
        return
    try:
        from .export import export_model
    except ImportError as e:
        _fail(f"export needs PyTorch: {install_command('export')} ({e})")
    t0 = time.perf_counter()
    try:
        path = export_model(spec, weights=weights, out=out, force=force, fp16=fp16, int8=int8)
    except DpsFastError as e:
        _fail(str(e))
    except FileNotFoundError as e:
        _fail(str(e))
    _err(f"exported {spec.name} in {time.perf_counter() - t0:.1f} s")
    if out is None:
        try:
            remember_export(path, alias)
        except (OSError, ValueError) as e:
            _fail(f"exported to {path}, but could not record it as the default: {e}")
        name = alias or spec.name
        _err(f"`-m {name}` now finds this bundle (no --weights needed)")
    typer.echo(str(path))


@app.command()
def info(
    bundle: str = typer.Argument(
        ..., metavar="BUNDLE", help="Bundle folder or model name (looked up in the cache)."
    ),
    weights: Path | None = WEIGHTS,
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Show a bundle: manifest, validation, providers.

    \b
    Examples:
      dps-fast info lpips-alex
      dps-fast info path/to/bundle --json
    """
    from .bundle import read_bundle
    from .cache import cached_bundles
    from .errors import DpsFastError
    from .hub import alias_gone_message, cached_bundle_path, export_command

    p = Path(bundle)
    try:
        # A registry name is looked up in the cache; a path is read as it is.
        is_path = p.exists() or "/" in bundle or os.sep in bundle
        if not (p / "manifest.json").is_file() and not is_path:
            gone = alias_gone_message(bundle) if weights is None else None
            if gone is not None:
                _fail(gone)
            p = cached_bundle_path(bundle, weights)
            if not (p / "manifest.json").is_file():
                others = cached_bundles().get(p.parent.name, [])
                also = f"; the cache has {', '.join(others)} for it" if others else ""
                _fail(
                    f"no bundle for {bundle} in the cache ({p}){also}; make one with "
                    f"`{export_command(p.parent.name, weights)}`"
                )
        b = read_bundle(p)
    except (DpsFastError, ValueError, FileNotFoundError) as e:
        _fail(" ".join(str(e).split()))
    try:
        from .engine.session import available_providers

        providers = ", ".join(available_providers())
    except Exception as e:
        providers = f"unavailable ({e})"
    m = b.manifest
    if as_json:
        typer.echo(json.dumps(m.to_dict(), indent=2))
        return
    typer.echo(f"bundle     {b.path}")
    typer.echo(f"model      {m.model} ({m.description})")
    typer.echo(f"head       {m.head}  reduce {m.reduce}  lpips {m.lpips_version}")
    typer.echo("taps       " + ", ".join(f"{t.name}[{t.channels}]/{t.stride}" for t in m.taps))
    typer.echo(f"min size   {list(m.min_size)}")
    typer.echo(f"direction  {'lower' if m.lower_is_better else 'higher'} is better")
    if m.head == "classical":
        for k, v in m.extra.get("conventions", {}).items():
            typer.echo(f"  {k:<14} {v}")
        typer.echo(f"graphs     {', '.join(m.graphs)}")
        typer.echo(f"providers  {providers}")
        return
    w = m.weights
    typer.echo(
        f"weights    {w.source} {w.name} sha256 {w.sha256[:16]}…" if w else "weights    none"
    )
    typer.echo(f"graphs     {', '.join(m.graphs)}")
    ex = m.export
    typer.echo(
        f"exported   {ex.date} by dps-fast {ex.dps_fast}, torch {ex.torch}, "
        f"onnx {ex.onnx}, opset {ex.opset}, bundle format {m.format_version}"
    )
    typer.echo("validation (max |Δ| / relative vs PyTorch, worst per graph):")
    for role, v in m.validation.get("graphs", {}).items():
        worst = max(v["outputs"], key=lambda o: o["rel_diff"])
        ok = all(o["ok"] for o in v["outputs"])
        typer.echo(
            f"  {role:<13} {'ok' if ok else 'FAIL'}  {worst['max_abs_diff']:.3g} / "
            f"{worst['rel_diff']:.3g}  ({len(v['shapes'])} shapes)"
        )
    typer.echo(f"providers  {providers}")


@app.command()
def bench(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="About a minute: lpips-alex and lpips-squeeze, 64² and 256², 3 rounds.",
    ),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models (default: alex, vgg, squeeze, dists)."
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Do not wait for other processes to go quiet before each call."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Keep the exported bundles here (reused by later runs)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Time the engine against the PyTorch path.

    The lpips package and channels_last PyTorch, same weights and inputs. Progress goes to
    stderr, the table to stdout.

    \b
    Example:
      dps-fast bench --quick --no-wait
    """
    from . import bench as _bench
    from ._tempdirs import owned_tempdir
    from .errors import DpsFastError
    from .registry import get_model

    default = _bench.QUICK_MODELS if quick else _bench.DEFAULT_MODELS
    names = [m.strip() for m in models.split(",") if m.strip()] if models else list(default)
    try:
        for m in names:
            get_model(m)
        _bench.check_requirements(names)
    except (DpsFastError, ImportError) as e:
        _fail(" ".join(str(e).split()))
    options: dict[str, Any] = {"quiet": None if no_wait else 0.3}
    if quick:  # no diagnostic contender, no per-round ceiling: the three contenders only
        options.update(diagnostics=False, local_ceiling=False)

    def run(where: Path) -> list[dict[str, Any]]:
        return _bench.run_engine_suite(
            quick=quick, models=names, cache_dir=where, progress=lambda m: _err(f"bench: {m}"),
            **options,
        )  # fmt: skip

    if cache_dir is None and quick:
        with owned_tempdir("dps-fast-bench-") as tmp:
            _err(f"bench: bundles and weights go to {tmp} (removed at the end; --cache-dir keeps)")
            rows = run(tmp)
    else:
        where = cache_dir if cache_dir is not None else _bench.default_cache_dir()
        _err(f"bench: bundles and weights go to {where} (kept and reused; delete it to free space)")
        rows = run(where)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(_bench.format_table(rows))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
