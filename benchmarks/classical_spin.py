"""Classical sessions with and without thread spinning, in one run of three models.

    python benchmarks/classical_spin.py [--rounds 5] [--name NAME]

The same ``PairScorer`` run of lpips-alex (seeded random trunk), ``ssim`` and ``psnr`` over 48
JPEG pairs (256×256 and 1024×768, in-process, decoding included), with the classical measures'
ONNX Runtime sessions made as before commit cd72d1d (worker threads spin after a run) and as
now (they do not). The lpips-alex sessions are made alike in both. Contenders in turn after one
warm-up each, medians over rounds (``bench.interleaved``); ``fgn`` is the most CPU cores other
processes used in a kept round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import dps_fast.engine.engine as engine_module
from dps_fast import Engine, bench
from dps_fast.io.pairing import pair_dirs
from dps_fast.pipeline import PairScorer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from e2e_folder import make_folders  # noqa: E402


def _engines(bundle: Path, spin: bool) -> list[Engine]:
    """lpips-alex, ssim, psnr; the classical sessions spinning or not (made now, not lazily)."""
    make = engine_module.make_session

    def make_session(path: Path, device: str, threads: int | None, **kw: Any) -> Any:
        if spin and "classical" in path.parts and not path.name.startswith("trunk"):
            kw["spin"] = True
        return make(path, device, threads, **kw)

    engine_module.make_session = make_session
    try:
        engines = [Engine(m, device="cpu") for m in (str(bundle), "ssim", "psnr")]
        x = np.zeros((1, 64, 64, 3), np.uint8)
        for e in engines:
            e.score(x, x)  # the pair sessions exist before the timing
    finally:
        engine_module.make_session = make
    return engines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default=None, help="results file stem under benchmarks/results/")
    args = ap.parse_args()
    env = bench.environment()
    bundle, _ = bench.prepare_bundle("lpips-alex", bench.default_cache_dir())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dps-fast-spin-") as tmp:
        for w, h in ((256, 256), (1024, 768)):
            da, db = make_folders(Path(tmp) / f"jpeg-{w}x{h}", w, h, 48)
            pairs = pair_dirs(da, db).pairs
            sets = {"spinning": _engines(bundle, True), "not spinning": _engines(bundle, False)}

            def run(es: list[Engine], pairs: list[Any] = pairs) -> Callable[[], None]:
                def go() -> None:
                    for _ in PairScorer(es).run(pairs):
                        pass

                return go

            loads: dict[str, list[float | None]] = {}
            t = bench.interleaved({k: run(v) for k, v in sets.items()}, rounds=args.rounds,
                                  foreign=loads)  # fmt: skip
            kept = [v for v in loads.get(bench.ROUND, []) if v is not None]
            ratios = [b / a for a, b in zip(t["spinning"], t["not spinning"], strict=True)]
            rows.append({
                "size": f"{w}x{h}", "pairs": 48,
                "spinning_s": statistics.median(t["spinning"]),
                "not_spinning_s": statistics.median(t["not spinning"]),
                "ratio": statistics.median(ratios), "ratios": ratios,
                "rounds": len(ratios), "fgn": max(kept) if kept else None,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# Classical sessions with and without thread spinning, one run of three models",
        "",
        f"`benchmarks/classical_spin.py`, {env.get('date')}; {env['cpu_model']}, "
        f"{env['cpu_count']} vCPUs; onnxruntime {env['versions'].get('onnxruntime')}. "
        "**The CPUs were shared with other jobs** (fgn: the most cores other processes used "
        "in a kept round). `PairScorer` over 48 JPEG pairs with lpips-alex, ssim and psnr, "
        "in-process, decoding included (seconds, medians).",
        "",
        "| size | classical sessions spinning | not spinning | ratio (median per round) | "
        "per-round ratios | rounds | fgn |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        per = ", ".join(f"{x:.2f}" for x in r["ratios"])
        lines.append(
            f"| {r['size']} | {r['spinning_s']:.2f} | {r['not_spinning_s']:.2f} | "
            f"{r['ratio']:.3f} | {per} | {r['rounds']} | {r['fgn'] or 0:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.name:
        out = HERE / "results" / args.name
        out.with_suffix(".md").write_text(text, encoding="utf-8")
        payload = {"environment": env, "rows": rows, "when": time.strftime("%H:%M UTC")}
        out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
