"""The bundle manifest as typed data: read, checked and written in this one module.

``manifest.json`` is the contract between the torch-side export and the torch-free engine
(docs/bundle-format.md specifies every field). :class:`Manifest` is its typed form: the exporter
builds one and :func:`Manifest.to_dict` writes it; :func:`Manifest.from_dict` reads one back,
refusing a malformed or edited manifest with a :class:`~dps_fast.errors.BundleError` that names
the field. :func:`graph_role` is the one place graph-role strings (``pair@fp16@uint8-nhwc``) are
made and :func:`parse_role` the one place they are taken apart.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from ._install import upgrade_hint
from .errors import BundleError, UnknownModelError
from .registry import HeadKind, get_model

# Version of the on-disk format this dps-fast writes. Format 1 (key ``schema_version``, no
# content digest) is still read; any other version is refused with the fix.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)

# Graph roles: a base, an optional precision and an optional input layout, joined by "@".
GRAPH_BASES = ("trunk", "head", "pair", "pair_spatial")
PRECISIONS = ("fp32", "fp16", "int8")
UINT8_NHWC = "uint8-nhwc"  # uint8 NHWC input (4× fewer bytes to move than float32 NCHW)
HEAD_KINDS: tuple[str, ...] = typing.get_args(HeadKind)
REDUCTIONS = ("sum", "mean")


def graph_role(base: str, precision: str = "fp32", *, uint8: bool = False) -> str:
    """The manifest's name of a graph: ``pair``, ``trunk@fp16``, ``pair@int8@uint8-nhwc`` …"""
    if base not in GRAPH_BASES:
        raise ValueError(f"expected a graph base one of {', '.join(GRAPH_BASES)}, got {base!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"expected precision one of {', '.join(PRECISIONS)}, got {precision!r}")
    prec = "" if precision == "fp32" else f"@{precision}"
    return f"{base}{prec}{'@' + UINT8_NHWC if uint8 else ''}"


def parse_role(role: str) -> tuple[str, str, bool]:
    """``(base, precision, uint8)`` of a graph role; ValueError for a string that is none."""
    base, *parts = role.split("@")
    precision = parts[0] if parts and parts[0] in PRECISIONS[1:] else "fp32"
    uint8 = bool(parts) and parts[-1] == UINT8_NHWC
    if base not in GRAPH_BASES or graph_role(base, precision, uint8=uint8) != role:
        raise ValueError(
            f"expected a graph role like 'pair', 'trunk@fp16' or 'pair@int8@uint8-nhwc', "
            f"got {role!r}"
        )
    return base, precision, uint8


def graph_file(role: str) -> str:
    """File name of a role's graph inside the bundle: ``pair@fp16`` → ``pair_fp16.onnx``."""
    return role.replace("@", "_") + ".onnx"


# -- the typed manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class TapInfo:
    """One tapped layer: node name, channels and stride (input pixels per feature pixel)."""

    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class InputInfo:
    """What the float graphs take: layout, dtype, value range and the smallest (h, w) that runs."""

    min_size: tuple[int, int]
    layout: str = "NCHW"
    dtype: str = "float32"
    range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class WeightsInfo:
    """Where the backbone weights came from: ``torchvision`` or ``file``, its name and sha256.

    ``path``: for a ``file``, its absolute path at export (what re-export commands pass as
    ``--weights``; bundles from before it existed hold the path in ``name``).
    ``imagenet_acc1``: ImageNet-1K top-1 accuracy in percent, torchvision's ``acc@1`` of the
    weights it ships (None for a weights file: its accuracy is not known).
    """

    source: str
    name: str
    sha256: str
    path: str | None = None
    imagenet_acc1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``weights`` object; optional fields only when known."""
        d: dict[str, Any] = {"source": self.source, "name": self.name, "sha256": self.sha256}
        if self.path is not None:
            d["path"] = self.path
        if self.imagenet_acc1 is not None:
            d["imagenet_acc1"] = self.imagenet_acc1
        return d

    @property
    def file(self) -> str | None:
        """The weights file's path (``--weights``) for a ``file`` source, else None."""
        return (self.path or self.name) if self.source == "file" else None


@dataclass(frozen=True)
class HeadWeightsInfo:
    """Where the head weights (LPIPS lin, DISTS alpha/beta) came from; ``none`` for DPS."""

    source: str
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    """A file inside the bundle and its sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph of the bundle: its file, hash, input and output names, input format."""

    file: str
    sha256: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_dtype: str = "float32"
    input_layout: str = "NCHW"
    quantization: dict[str, Any] | None = None  # int8 variants: how they were quantized


@dataclass(frozen=True)
class ExportInfo:
    """Who made the bundle and when: versions of dps-fast and the export tools, opset, date.

    ``other`` keeps any further keys (e.g. the generator of graphs built without torch)."""

    dps_fast: str | None = None
    date: str | None = None
    opset: int | None = None
    torch: str | None = None
    torchvision: str | None = None
    onnx: str | None = None
    other: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        known = (("dps_fast", self.dps_fast), ("torch", self.torch),
                 ("torchvision", self.torchvision), ("onnx", self.onnx),
                 ("opset", self.opset), ("date", self.date))  # fmt: skip
        return {**{k: v for k, v in known if v is not None}, **self.other}


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself (``manifest.json``), typed."""

    model: str
    description: str
    arch: str
    head: str
    reduce: str
    lpips_version: str | None
    taps: tuple[TapInfo, ...]
    input: InputInfo
    preprocessing: dict[str, Any]
    weights: WeightsInfo | None  # None: no backbone weights (graphs built without a network)
    head_weights: HeadWeightsInfo | None
    graphs: dict[str, GraphEntry]
    head_file: FileEntry
    export: ExportInfo
    validation: dict[str, Any] = field(default_factory=dict)
    lower_is_better: bool = True
    format_version: int = FORMAT_VERSION
    # Revision of the heads' numerics inside the graphs (absent: 1); see bundle.HEAD_NUMERICS.
    head_numerics: int = 1
    # Top-level fields this dps-fast does not know (written by a newer or other tool): kept,
    # written back as they were, and covered by the content digest.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def min_size(self) -> tuple[int, int]:
        return self.input.min_size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with ``content_sha256`` over every other field (format 2)."""
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "model": self.model,
            "description": self.description,
            "arch": self.arch,
            "head": self.head,
            "reduce": self.reduce,
            "head_numerics": self.head_numerics,
            "lpips_version": self.lpips_version,
            "lower_is_better": self.lower_is_better,
            "taps": [{"name": t.name, "channels": t.channels, "stride": t.stride}
                     for t in self.taps],
            "input": {"layout": self.input.layout, "dtype": self.input.dtype,
                      "range": list(self.input.range), "min_size": list(self.input.min_size)},
            "preprocessing": self.preprocessing,
            "weights": None if self.weights is None else self.weights.to_dict(),
            "head_weights": None if self.head_weights is None else {
                "source": self.head_weights.source, "sha256": self.head_weights.sha256},
            "graphs": {role: _graph_dict(g) for role, g in self.graphs.items()},
            "head_file": {"file": self.head_file.file, "sha256": self.head_file.sha256},
            "export": self.export.to_dict(),
            "validation": self.validation,
            **self.extra,
        }  # fmt: skip
        d = json.loads(json.dumps(d))  # JSON values only (tuples → lists), a deep copy
        d["content_sha256"] = content_sha256(d)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Check and type a parsed ``manifest.json``; BundleError naming the first bad field."""
        r = _Reader(d)
        version = r.get("format_version", int, None)
        if version is None:
            version = r.get("schema_version", int, None)  # format 1 named it so
        if version not in READABLE_FORMATS:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise BundleError(
                f"bundle format {version!r}: this dps-fast reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))} (it writes {FORMAT_VERSION})"
                + (f"; a newer dps-fast made it: {upgrade_hint()}" if newer else "")
            )  # fmt: skip
        if version >= 2:
            want = r.get("content_sha256", str)
            got = content_sha256(d)
            if got != want:
                raise BundleError(
                    f"manifest.json was changed after export: its content_sha256 says "
                    f"{want[:16]}…, its content hashes to {got[:16]}…"
                )
        taps = tuple(
            TapInfo(t.get("name", str), t.get("channels", int), t.get("stride", int))
            for t in r.items("taps")
        )
        inp = r.sub("input")
        hw = inp.get("min_size", list)
        rng = inp.get("range", list, [0, 1])
        graphs = {role: _graph_entry(role, g) for role, g in r.sub("graphs").mapping()}
        w, hwt = r.sub_or_none("weights"), r.sub_or_none("head_weights")
        hf, ex = r.sub("head_file"), r.sub("export")
        m = cls(
            format_version=version,
            model=r.get("model", str),
            description=r.get("description", str, ""),
            arch=r.get("arch", str, None) or "",
            head=r.get("head", str),
            reduce=r.get("reduce", str, "sum"),
            lpips_version=r.get("lpips_version", str, None),
            taps=taps,
            input=InputInfo(
                min_size=_pair_of_ints(hw, inp.path("min_size")),
                layout=inp.get("layout", str, "NCHW"),
                dtype=inp.get("dtype", str, "float32"),
                range=(_number(rng[0], inp.path("range")), _number(rng[-1], inp.path("range"))),
            ),
            preprocessing=r.get("preprocessing", dict, None) or {},
            weights=None if w is None else _weights_info(w),
            head_weights=None
            if hwt is None
            else HeadWeightsInfo(hwt.get("source", str), hwt.get("sha256", str, "")),
            graphs=graphs,
            head_file=FileEntry(hf.get("file", str), hf.get("sha256", str)),
            export=ExportInfo(
                dps_fast=ex.get("dps_fast", str, None),
                date=ex.get("date", str, None),
                opset=ex.get("opset", int, None),
                torch=ex.get("torch", str, None),
                torchvision=ex.get("torchvision", str, None),
                onnx=ex.get("onnx", str, None),
                other={k: v for k, v in ex.d.items() if k not in _EXPORT_KEYS},
            ),
            validation=r.get("validation", dict, None) or {},
            lower_is_better=r.get("lower_is_better", bool, True),
            head_numerics=r.get("head_numerics", int, 1),
            extra={k: v for k, v in r.d.items() if k not in _KNOWN_KEYS},
        )
        m.check()
        return m

    def check(self) -> None:
        """Check the fields' values: known head and reduction, taps, sizes, file names, and
        agreement with the registry's entry for this model (what decides how scores are made)."""
        if self.head not in HEAD_KINDS:
            raise BundleError(
                f"manifest field 'head': expected one of {', '.join(HEAD_KINDS)}, got {self.head!r}"
            )
        if self.reduce not in REDUCTIONS:
            raise BundleError(
                f"manifest field 'reduce': expected one of {', '.join(REDUCTIONS)}, "
                f"got {self.reduce!r}"
            )
        if not self.taps:
            raise BundleError("manifest field 'taps': expected at least one tap, got none")
        for i, t in enumerate(self.taps):
            if t.channels < 1 or t.stride < 1:
                raise BundleError(
                    f"manifest field 'taps[{i}]': expected channels and stride ≥ 1, "
                    f"got {t.channels} and {t.stride}"
                )
        h, w = self.input.min_size
        if h < 1 or w < 1:
            raise BundleError(f"manifest field 'input.min_size': expected ≥ 1, got {[h, w]}")
        for name in [g.file for g in self.graphs.values()] + [self.head_file.file]:
            check_file_name(name)
        for role in ("trunk", "head", "pair"):
            if role not in self.graphs:
                raise BundleError(f"manifest field 'graphs': the {role!r} graph is missing")
        self._check_against_registry()

    def _check_against_registry(self) -> None:
        """A registry model's bundle must score as the registry says (an edited ``reduce`` or
        ``min_size`` changes every score, or lets ONNX Runtime crash on too small an input)."""
        try:
            spec = get_model(self.model)
        except (UnknownModelError, ValueError):
            return  # a model this dps-fast does not know: only the checks above apply
        want: dict[str, Any] = {
            "head": spec.head,
            "reduce": spec.reduce,
            "lpips_version": spec.lpips_version,
            "lower_is_better": getattr(spec, "lower_is_better", True),
            "taps": list(spec.tap_names),
        }
        got: dict[str, Any] = {
            "head": self.head,
            "reduce": self.reduce,
            "head_numerics": self.head_numerics,
            "lpips_version": self.lpips_version,
            "lower_is_better": self.lower_is_better,
            "taps": [t.name for t in self.taps],
        }
        for key, value in want.items():
            if got[key] != value:
                raise BundleError(
                    f"manifest field {key!r} is {got[key]!r}, but model {self.model} has "
                    f"{value!r}: the manifest was edited or made by a different dps-fast"
                )
        for t, tap in zip(self.taps, spec.taps, strict=True):
            if tap.channels and t.channels != tap.channels:
                raise BundleError(
                    f"manifest field 'taps': tap {t.name} has {t.channels} channels, "
                    f"model {self.model} has {tap.channels}"
                )
        if spec.min_size is not None and min(self.input.min_size) < spec.min_size:
            raise BundleError(
                f"manifest field 'input.min_size' is {list(self.input.min_size)}, below "
                f"{spec.min_size}, the smallest input model {self.model} runs on"
            )


def content_sha256(d: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, compact), ``content_sha256`` left out.

    Not a signature: it catches corruption and edits by hand, not a deliberate forger (see
    docs/bundle-format.md, "Integrity").
    """
    body = {k: v for k, v in d.items() if k != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_file_name(name: str) -> None:
    """A file named in the manifest must be a plain name inside the bundle folder."""
    bad = (
        not name
        or name in (".", "..")
        or len(PurePosixPath(name).parts) != 1
        or len(PureWindowsPath(name).parts) != 1
        or "\0" in name
    )
    if bad:
        raise BundleError(
            f"manifest names file {name!r}: expected a plain file name inside the bundle "
            "folder (no folders, no absolute paths)"
        )


def _graph_dict(g: GraphEntry) -> dict[str, Any]:
    d: dict[str, Any] = {
        "file": g.file,
        "sha256": g.sha256,
        "inputs": list(g.inputs),
        "outputs": list(g.outputs),
        "input_dtype": g.input_dtype,
        "input_layout": g.input_layout,
    }
    if g.quantization is not None:
        d["quantization"] = g.quantization
    return d


def _graph_entry(role: str, r: _Reader) -> GraphEntry:
    try:
        _, _, uint8 = parse_role(role)
    except ValueError as e:
        raise BundleError(f"manifest field 'graphs': {e}") from None
    return GraphEntry(
        file=r.get("file", str),
        sha256=r.get("sha256", str),
        inputs=tuple(r.get("inputs", list, [])),
        outputs=tuple(r.get("outputs", list, [])),
        input_dtype=r.get("input_dtype", str, "uint8" if uint8 else "float32"),
        input_layout=r.get("input_layout", str, "NHWC" if uint8 else "NCHW"),
        quantization=r.get("quantization", dict, None),
    )


def _weights_info(w: _Reader) -> WeightsInfo:
    acc = w.get("imagenet_acc1", object, None)
    acc = None if acc is None else _number(acc, w.path("imagenet_acc1"))
    if acc is not None and not 0.0 <= acc <= 100.0:
        raise BundleError(
            f"manifest field {w.path('imagenet_acc1')!r}: expected a percentage in [0, 100], "
            f"got {acc!r}"
        )
    return WeightsInfo(
        w.get("source", str),
        w.get("name", str),
        w.get("sha256", str),
        path=w.get("path", str, None),
        imagenet_acc1=acc,
    )


def _pair_of_ints(v: list[Any], path: str) -> tuple[int, int]:
    if len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise BundleError(f"manifest field {path!r}: expected [h, w] integers, got {v!r}")
    return int(v[0]), int(v[1])


def _number(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BundleError(f"manifest field {path!r}: expected numbers, got {v!r}")
    return float(v)


_MISSING = object()
_EXPORT_KEYS = frozenset({"dps_fast", "date", "opset", "torch", "torchvision", "onnx"})
_KNOWN_KEYS = frozenset(
    {"format_version", "schema_version", "content_sha256", "model", "description", "arch",
     "head", "head_numerics", "reduce", "lpips_version", "lower_is_better", "taps", "input",
     "preprocessing", "weights", "head_weights", "graphs", "head_file", "export", "validation"}
)  # fmt: skip


class _Reader:
    """Typed access to one JSON object of the manifest; errors name the field's path."""

    def __init__(self, d: Any, prefix: str = "") -> None:
        if not isinstance(d, dict):
            where = f"field {prefix!r}" if prefix else "manifest"
            raise BundleError(f"{where}: expected a JSON object, got {type(d).__name__}")
        self.d = d
        self.prefix = prefix

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.d or (self.d[key] is None and default is None):
            if default is _MISSING:
                raise BundleError(f"manifest field {self.path(key)!r} is missing")
            return default
        v = self.d[key]
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if not ok:
            raise BundleError(
                f"manifest field {self.path(key)!r}: expected {_KIND_NAMES.get(kind, kind)}, "
                f"got {type(v).__name__}"
            )
        return v

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self.path(key))

    def sub_or_none(self, key: str) -> _Reader | None:
        v = self.get(key, dict, None)
        return None if v is None else _Reader(v, self.path(key))

    def items(self, key: str) -> list[_Reader]:
        return [_Reader(x, f"{self.path(key)}[{i}]") for i, x in enumerate(self.get(key, list))]

    def mapping(self) -> list[tuple[str, _Reader]]:
        return [(k, _Reader(v, self.path(k))) for k, v in self.d.items()]


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a JSON list",
    dict: "a JSON object",
}
