"""Run the interleaved engine suite and write JSON + markdown under benchmarks/results/.

    python benchmarks/run_suite.py [--quick] [--name 2026-11-26-cpu-2core-xeon]

The same suite as ``dps-fast bench``, plus the machine's description in the files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

from dps_fast import bench

HERE = Path(__file__).resolve().parent


def _engine_source_hash() -> str:
    """sha256 (16 hex) of the engine sources that were timed: the engine changes quickly."""
    import dps_fast.engine as eng

    h = hashlib.sha256()
    for p in sorted(Path(eng.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default=time.strftime("%Y-%m-%d") + "-cpu")
    ap.add_argument("--models", default=",".join(bench.DEFAULT_MODELS))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    load_before = Path("/proc/loadavg").read_text().strip()
    t0 = time.time()
    rows = bench.run_engine_suite(args.quick, models=tuple(args.models.split(",")))
    env = bench.environment(rows[0]["ceiling_gflops"] if rows else None)
    env.update(
        {
            "quick": args.quick,
            "engine_source_sha256": _engine_source_hash(),
            "loadavg_before": load_before,
            "loadavg_after": Path("/proc/loadavg").read_text().strip(),
            "suite_seconds": round(time.time() - t0, 1),
        }
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"environment": env, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    md = [
        f"# Engine suite {env['date']} — {env['cpu_model']}, {env['cpu_count']} cores",
        "",
        f"- fp32 matmul ceiling: {env.get('ceiling_gflops', 0):.1f} GFLOP/s (best 4096² NumPy)",
        f"- versions: {json.dumps(env['versions'])}",
        f"- engine sources sha256: {env['engine_source_sha256']}; suite took "
        f"{env['suite_seconds']} s",
        "",
        bench.markdown_table(rows),
        "",
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(md), encoding="utf-8")
    print(bench.format_table(rows))


if __name__ == "__main__":
    main()
