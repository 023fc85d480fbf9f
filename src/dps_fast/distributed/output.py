"""The output folder of a distributed run: Parquet shards, provenance, completion marker.

``OUT/part-<run>-<unit>.parquet`` shards of one fixed schema, written by the driver as units
finish (temp file + rename, so a shard is whole or absent); ``OUT/_dps_meta.json`` holds the
provenance; ``OUT/_SUCCESS`` (JSON counts) is written last, only when every pair has exactly
one row. Files starting with ``.`` or ``_`` are not data: ``pyarrow.dataset`` skips them.
No Ray here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DistributedError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "META",
    "SUCCESS",
    "ResumeState",
    "prepare_out",
    "read_results",
    "scan_rows",
    "write_json",
    "write_shard",
]

META = "_dps_meta.json"
SUCCESS = "_SUCCESS"
SHARD_PREFIX = "part-"
# What a resume must find unchanged in the meta of the run it continues.
RESUME_KEYS = ("pairs_sha256", "bundle_sha256", "columns", "resize", "precision", "crop_border")
# What a key meant in outputs written before it was recorded.
RESUME_DEFAULTS: dict[str, Any] = {"crop_border": 0}


@dataclass
class ResumeState:
    """What a resume found: ids already scored, and what it cleaned up."""

    done: set[str] = field(default_factory=set)
    truncated: list[str] = field(default_factory=list)
    redo: int = 0


def _shards(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{SHARD_PREFIX}*.parquet") if p.is_file())


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DistributedError(f"cannot write {path}: {e.strerror or e}") from e


def write_shard(out: Path, name: str, table: pa.Table) -> Path:
    """Write one shard whole (temp file + rename): a killed driver leaves no partial shard."""
    import pyarrow.parquet as pq

    path = out / f"{SHARD_PREFIX}{name}.parquet"
    tmp = out / f".{path.name}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DistributedError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def _read(path: Path, columns: list[str] | None = None) -> pa.Table | None:
    """A shard's table, or None when it cannot be read (truncated by a crash or by hand)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        del e
        return None


def prepare_out(out: Path, meta: dict[str, Any], *, resume: bool) -> ResumeState:
    """Make ``out`` ready for a run and return the ids a resume can skip.

    Without ``resume`` the folder must hold no results. With it: shards that cannot be read are
    deleted, rows with an error (and repeats of an id) are removed from their shards (which are
    rewritten whole) so that those pairs are scored again, and the completion marker goes.
    """
    state = ResumeState()
    old_meta = out / META
    shards = _shards(out) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise DistributedError(f"--out {out} is a file; the Ray backend writes a folder")
    if not resume:
        if shards:  # a meta alone is from a run that stopped before its first unit
            raise DistributedError(
                f"{out} already holds results; pass --resume to continue that run, or choose "
                "a new --out folder"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DistributedError(f"cannot create {out}: {e.strerror or e}") from e
        return state
    if shards and not old_meta.exists():
        raise DistributedError(
            f"cannot resume {out}: it has shards but no {META} (not a dps-fast Ray output); "
            "choose a new --out folder"
        )
    if old_meta.exists():
        try:
            before = json.loads(old_meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DistributedError(f"cannot resume {out}: {META} is unreadable ({e})") from e
        d = RESUME_DEFAULTS
        changed = [k for k in RESUME_KEYS if before.get(k, d.get(k)) != meta.get(k, d.get(k))]
        if changed:
            raise DistributedError(
                f"cannot resume {out}: this run differs from the one that wrote it in "
                f"{', '.join(changed)}; run with the same pairs and options, or choose a new "
                "--out folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(f".{SHARD_PREFIX}*.tmp"):
        tmp.unlink(missing_ok=True)
    (out / SUCCESS).unlink(missing_ok=True)
    for shard in shards:
        table = _read(shard)
        if table is None:
            state.truncated.append(shard.name)
            shard.unlink()
            continue
        keep = []
        for i, (pid, err, score) in enumerate(
            zip(
                table.column("id").to_pylist(),
                table.column("error").to_pylist(),
                table.column("score").to_pylist(),
                strict=True,
            )
        ):
            if err or score is None or pid in state.done:
                state.redo += 1
                continue
            state.done.add(pid)
            keep.append(i)
        if len(keep) == table.num_rows:
            continue
        if keep:
            write_shard(out, shard.name[len(SHARD_PREFIX) : -len(".parquet")], table.take(keep))
        else:
            shard.unlink()
    return state


def scan_rows(out: Path) -> tuple[list[str], int]:
    """Every id in the shards (with repeats) and how many rows have an error."""
    ids: list[str] = []
    failed = 0
    for shard in _shards(out):
        table = _read(shard, ["id", "error"])
        if table is None:
            raise DistributedError(f"shard {shard} cannot be read; rerun with --resume")
        ids.extend(table.column("id").to_pylist())
        failed += sum(1 for e in table.column("error").to_pylist() if e)
    return ids, failed


def read_results(out: str | os.PathLike[str], columns: Iterable[str] | None = None) -> pa.Table:
    """All rows of a run's output folder as one table (rows in no particular order)."""
    import pyarrow.dataset as pads

    cols = None if columns is None else list(columns)
    return pads.dataset(os.fspath(out), format="parquet").to_table(columns=cols)
