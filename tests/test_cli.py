"""The ``dps-fast`` command line, in-process (Typer's CliRunner) and as the installed script.

A generated folder pair holds every bad case next to images in odd colour modes: each bad pair
fails on its own row with a message that says what is wrong, odd modes convert and score, and
the run goes on. Whole-run errors exit 2 with one line on stderr.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from PIL import Image
from typer.testing import CliRunner

from dps_fast import Engine, __version__, read_bundle
from dps_fast.cache import weights_key
from dps_fast.cli import app
from dps_fast.hashing import sha256_file
from dps_fast.io import decode_image, heatmap_name, resize_image
from tests.helpers import images as im
from tests.helpers.fifo import fifo_watchdog

H, W = 96, 128
DPS_FAST = Path(sys.executable).parent / "dps-fast"
BOMB_ENV = {"DPS_FAST_MAX_PIXELS": "1_000_000"}  # the 1100×1000 pair is over it, the rest not
TOL = 1e-6

# Typer's runner keeps stdout and stderr apart (result.stdout / result.stderr); the vendored
# click it uses has no mix_stderr switch.
RUNNER = CliRunner()

# ---------------------------------------------------------------------------- the folder pairs

# stem → words its error must contain (case-insensitive)
BAD: dict[str, list[str]] = {
    "bomb": ["bomb.png", "1,100,000 pixels", "limit of 1,000,000", "DPS_FAST_MAX_PIXELS"],
    "corrupt": ["corrupt.png", "truncated or corrupt"],
    "empty": ["empty.png", "empty (0 bytes)"],
    "text": ["text.png", "not an image"],
    "link": ["link.png", "broken symbolic link"],
    "dir": ["dir.png", "is a directory"],
    "fifo": ["fifo.png", "not a regular file", "fifo"],
    "mismatch": ["size mismatch", "96×128", "64×64", "--resize"],
    "tiny": ["too small", "20×24", "31×31"],
    "dup": ["duplicate stem", "dup.jpg", "dup.png", "--match relpath"],
}
# pairs that must decode to exactly B's pixels (lossless conversions): score 0
EXACT = ["deep16", "palette", "grey", "rgba", "ü-图"]
# pairs through a lossy step (JPEG, ICC maths, 16→8 bit rounding): a small score
CLOSE = ["cmyk", "deep48", "icc", "rotated"]
SCORED = ["good", *EXACT, *CLOSE]
ALL_STEMS = sorted([*BAD, *SCORED])


def _grey(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[..., None], 3, axis=2)


def make_bad_pair(root: Path) -> tuple[Path, Path]:
    """Folders A and B: every bad case, every odd mode, two unpaired files, one good pair."""
    a, b = root / "A", root / "B"
    a.mkdir(parents=True)
    b.mkdir()
    # a plain pair of different images: the scale for "small"
    im.save_array(im.textured(H, W, 1), a / "good.png")
    im.save_array(im.textured(H, W, 2), b / "good.png")
    # odd modes: A in the mode, B the upright sRGB image it must decode to
    g = im.gradient(H, W)
    im.cmyk_jpeg(g, a / "cmyk.jpg")
    im.save_array(g, b / "cmyk.png")
    v16 = np.random.default_rng(3).integers(0, 65536, (H, W), dtype=np.uint16)
    im.grey16_png(v16, a / "deep16.png")
    im.save_array(_grey(((v16.astype(np.int64) + 128) // 257).astype(np.uint8)), b / "deep16.png")
    v48 = np.random.default_rng(4).integers(0, 65536, (H, W, 3), dtype=np.uint16)
    (a / "deep48.png").write_bytes(im.png_rgb48(v48))
    im.save_array(np.round(v48 / 257).astype(np.uint8), b / "deep48.png")
    _, pal = im.palette_png(im.textured(H, W, 5), a / "palette.png")
    im.save_array(pal, b / "palette.png")
    grey = im.noise(H, W, 6, 1)[..., 0]
    im.save_array(grey, a / "grey.png")
    im.save_array(_grey(grey), b / "grey.png")
    rgba = im.noise(H, W, 7, 4)
    im.save_array(rgba, a / "rgba.png")
    im.save_array(np.ascontiguousarray(rgba[..., :3]), b / "rgba.png")
    shown = im.textured(H, W, 8)
    im.swapped_icc_png(shown, a / "icc.png")
    im.save_array(shown, b / "icc.png")
    upright = im.gradient(H, W, phase=1.3)
    im.rotated_jpeg(upright, a / "rotated.jpg")  # stored W×H, shown H×W
    im.save_array(upright, b / "rotated.png")
    uni = im.textured(H, W, 9)
    im.save_array(uni, a / "ü-图.png")
    im.save_array(uni, b / "ü-图.png")
    # bad entries in A, a good image under the same name in B
    for stem in ("corrupt", "empty", "text", "link", "dir", "fifo"):
        im.save_array(im.textured(H, W, 10), b / f"{stem}.png")
    im.truncated_png(im.noise(H, W, 11), a / "corrupt.png")
    im.empty_file(a / "empty.png")
    im.text_file(a / "text.png")
    im.broken_symlink(a / "link.png")
    im.directory(a / "dir.png")
    im.fifo(a / "fifo.png")
    im.flat_png(1000, 1100, a / "bomb.png")  # 1.1 Mpx, over BOMB_ENV's limit
    im.flat_png(1000, 1100, b / "bomb.png", value=100)
    im.save_array(im.textured(H, W, 12), a / "mismatch.png")
    im.save_array(im.textured(64, 64, 12), b / "mismatch.png")
    im.save_array(im.textured(20, 24, 13), a / "tiny.png")  # lpips-alex needs 31×31
    im.save_array(im.textured(20, 24, 14), b / "tiny.png")
    im.save_array(im.textured(H, W, 15), a / "dup.png")
    im.save_array(im.textured(H, W, 15), a / "dup.jpg", quality=95)
    im.save_array(im.textured(H, W, 16), b / "dup.png")
    im.save_array(im.textured(H, W, 17), a / "only_a.png")
    im.save_array(im.textured(H, W, 18), b / "only_b.png")
    return a, b


GOOD_NAMES = ["p0.png", "p1.png", "p2.jpg", "p3.png", "sub/p4.png", "sub/p5.png"]


def make_good_pair(root: Path) -> tuple[Path, Path]:
    """Six scorable pairs (one JPEG, two in a subfolder), all H×W."""
    a, b = root / "A", root / "B"
    for i, name in enumerate(GOOD_NAMES):
        im.save_array(im.textured(H, W, 100 + i), a / name, quality=95)
        im.save_array(im.textured(H, W, 200 + i), b / Path(name).with_suffix(".png"))
    return a, b


@pytest.fixture(scope="module")
def alex(bundle: Callable[[str], Path]) -> Path:
    return bundle("lpips-alex")


@pytest.fixture(scope="module")
def engine(alex: Path) -> Engine:
    return Engine(str(alex), device="cpu")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs and symlinks (POSIX)")
    return make_bad_pair(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_good_pair(tmp_path_factory.mktemp("good"))


# ---------------------------------------------------------------------------- helpers


def cli(*args: Any, code: int | None = 0, env: dict[str, str] | None = None) -> Any:
    """Invoke the Typer app in-process; check the exit code; re-raise unexpected exceptions."""
    result = RUNNER.invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def run_script(
    *args: Any, code: int | None = 0, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``dps-fast`` script as a subprocess (a hang fails after ``timeout``)."""
    proc = subprocess.run(
        [str(DPS_FAST), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def cli_plain_scores(a: Path, b: Path, model: Path) -> str:
    """The CSV of a plain `score` run over the bad folder pair."""
    with fifo_watchdog(a / "fifo.png"):
        return cli("score", a, b, "--model", model, code=1, env=BOMB_ENV).stdout


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def stem(name: str) -> str:
    return os.path.splitext(name)[0]


def fnum(value: Any) -> float | None:
    """A score cell (CSV string or JSON number) as a float; None when empty."""
    if value is None or value == "":
        return None
    return float(value)


def significant_digits(text: str) -> int:
    mantissa = text.lower().split("e")[0].lstrip("+-").replace(".", "")
    return len(mantissa.lstrip("0").rstrip("0")) if mantissa.strip("0") else 1


def check_bad_rows(rows: list[dict[str, Any]], a: Path, b: Path, engine: Engine) -> None:
    """Every pair of the bad folder once, in sorted order; bad ones fail, odd modes score."""
    assert [stem(r["b"]) for r in rows] == ALL_STEMS
    by_stem = {stem(r["b"]): r for r in rows}
    assert by_stem["dup"]["a"] == "dup.jpg, dup.png"
    for s, words in BAD.items():
        r = by_stem[s]
        assert fnum(r["score"]) is None, r
        for word in words:
            assert word.lower() in r["error"].lower(), (s, word, r["error"])
    for s in SCORED:
        assert by_stem[s]["error"] in ("", None), by_stem[s]  # CSV: empty; JSONL: null
    scores = {s: fnum(by_stem[s]["score"]) for s in SCORED}
    big = scores["good"]
    assert big is not None and big > 1e-3
    for s in EXACT:
        assert scores[s] is not None and abs(scores[s]) <= 1e-7, (s, scores[s])
    for s in CLOSE:
        assert scores[s] is not None and 0 <= scores[s] < 0.05 * big, (s, scores[s], big)
    # The engine on the same files agrees (its own decoding of the same paths).
    names = [(by_stem[s]["a"], by_stem[s]["b"]) for s in SCORED]
    ref = [float(engine.score(str(a / x), str(b / y))[0]) for x, y in names]
    got = [scores[s] for s in SCORED]
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def check_summary(stderr: str, scored: int, failed: int) -> None:
    assert f"summary: scored {scored}, failed {failed}" in stderr, stderr


def check_one_error_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


# ---------------------------------------------------------------------------- score: bad cases


def test_score_bad_folder_in_process(bad, engine, alex) -> None:
    a, b = bad
    with fifo_watchdog(a / "fifo.png"):
        r1 = cli("score", a, b, "--model", alex, "--workers", 1, code=1, env=BOMB_ENV)
    rows = read_csv(r1.stdout)  # no --out: the rows go to stdout, nothing else does
    assert r1.stdout.splitlines()[0] == "a,b,score,error"
    check_bad_rows(rows, a, b, engine)
    for r in rows:
        assert r["score"] == "" or significant_digits(r["score"]) <= 9, r["score"]
    err = r1.stderr
    check_summary(err, len(SCORED), len(BAD))
    assert "a,b,score" not in err
    assert re.search(r"note: 1 file\(s\) only in \S*A, not scored: only_a\.png", err), err
    assert re.search(r"note: 1 file\(s\) only in \S*B, not scored: only_b\.png", err), err
    assert "model lpips-alex, device cpu, precision fp32" in err
    # More decoding threads: the same bytes, the same order.
    with fifo_watchdog(a / "fifo.png"):
        r4 = cli("score", a, b, "--model", alex, "--workers", 4, code=1, env=BOMB_ENV)
    assert r4.stdout == r1.stdout


def test_score_bad_folder_subprocess_jsonl(bad, engine, alex, tmp_path) -> None:
    a, b = bad
    out = tmp_path / "res.jsonl"
    proc = run_script("score", a, b, "--model", alex, "--out", out, code=1, env=BOMB_ENV)
    assert proc.stdout == ""  # rows went to --out
    check_summary(proc.stderr, len(SCORED), len(BAD))
    assert "only_a.png" in proc.stderr and "only_b.png" in proc.stderr
    text = out.read_text(encoding="utf-8")
    rows = read_jsonl(text)
    assert all(list(r) == ["a", "b", "score", "error"] for r in rows)
    check_bad_rows(rows, a, b, engine)
    # JSON says "no error" as null (not ""), so `row["error"] is None` works in pipelines
    assert all(r["error"] is None for r in rows if r["score"] is not None)
    assert all(isinstance(r["error"], str) and r["error"] for r in rows if r["score"] is None)
    for number in re.findall(r'"score": ([^,}]+)', text):
        assert number == "null" or significant_digits(number) <= 9, number
    meta = json.loads((tmp_path / "res.jsonl.meta.json").read_text(encoding="utf-8"))
    assert meta["model"] == "lpips-alex"
    assert meta["bundle_sha256"] == read_bundle(alex).sha256
    assert meta["onnxruntime"] == onnxruntime.__version__
    assert meta["device"] == "cpu" and meta["precision"] == "fp32"
    assert meta["dps_fast"] == __version__
    assert meta["options"]["match"] == "stem" and meta["options"]["resize"] == "none"
    assert meta["summary"]["scored"] == len(SCORED) and meta["summary"]["failed"] == len(BAD)
    # No provenance in the rows file.
    assert "bundle_sha256" not in text and "onnxruntime" not in text


def test_odd_modes_really_convert(bad, engine) -> None:
    """The ICC and EXIF pairs score small only because the conversion happened."""
    a, b = bad
    shown = decode_image(b / "icc.png")
    raw = np.asarray(Image.open(a / "icc.png").convert("RGB"))  # pixels without the profile
    unmanaged = float(engine.score(raw, shown)[0])
    managed = float(engine.score(str(a / "icc.png"), shown)[0])
    assert managed < 0.05 * unmanaged, (managed, unmanaged)
    stored = np.asarray(Image.open(a / "rotated.jpg").convert("RGB"))
    assert stored.shape == (W, H, 3)  # on disk it is on its side; decoded it is upright
    assert decode_image(a / "rotated.jpg").shape == (H, W, 3)


def test_resume_bad_folder_jsonl(bad, engine, alex, tmp_path) -> None:
    """Cut-off JSONL, failed rows included: resume redoes the failures, no row twice."""
    a, b = bad
    out = tmp_path / "r.jsonl"
    with fifo_watchdog(a / "fifo.png"):
        cli("score", a, b, "--model", alex, "--out", out, code=1, env=BOMB_ENV)
    full = read_jsonl(out.read_text(encoding="utf-8"))
    lines = out.read_bytes().split(b"\n")
    kept = lines[:7]
    out.write_bytes(b"\n".join(kept) + b"\n" + lines[7][: len(lines[7]) // 2])
    done_before = [json.loads(x) for x in kept]
    n_done = sum(1 for r in done_before if r["score"] is not None and not r["error"])
    assert 0 < n_done < len(kept)  # some scored and some failed rows in the kept part
    with fifo_watchdog(a / "fifo.png"):
        res = cli("score", a, b, "--model", alex, "--out", out, "--resume", code=1, env=BOMB_ENV)
    assert f"skipped {n_done} (already in --out)" in res.stderr
    check_summary(res.stderr, len(SCORED) - n_done, len(BAD))
    rows = read_jsonl(out.read_text(encoding="utf-8"))
    keys = [(r["a"], r["b"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(ALL_STEMS)
    assert sorted(keys) == sorted((r["a"], r["b"]) for r in full)
    check_bad_rows(sorted(rows, key=lambda r: stem(r["b"])), a, b, engine)


# ---------------------------------------------------------------------------- score: good runs


def test_score_good_folder_csv_and_resume(good, engine, alex, tmp_path) -> None:
    a, b = good
    out = tmp_path / "res.csv"
    res = cli("score", a, b, "--model", alex, "--out", out)
    assert res.stdout == ""
    check_summary(res.stderr, len(GOOD_NAMES), 0)
    assert "only in" not in res.stderr
    text = out.read_text(encoding="utf-8")
    rows = read_csv(text)
    assert [r["a"] for r in rows] == GOOD_NAMES
    assert [r["b"] for r in rows] == [str(Path(n).with_suffix(".png")) for n in GOOD_NAMES]
    assert all(r["error"] == "" and significant_digits(r["score"]) <= 9 for r in rows)
    ref = engine.score([str(a / r["a"]) for r in rows], [str(b / r["b"]) for r in rows])
    np.testing.assert_allclose([float(r["score"]) for r in rows], ref, rtol=0, atol=TOL)
    meta = json.loads((tmp_path / "res.csv.meta.json").read_text(encoding="utf-8"))
    assert meta["model"] == "lpips-alex" and meta["options"]["dir_a"] == str(a)

    # An interrupted run: header, two rows and half of the third. The first row's score is
    # marked so that we can see it is kept as it is, not scored again.
    lines = text.split("\n")
    marked = f"{rows[0]['a']},{rows[0]['b']},0.5,"
    out.write_text("\n".join([lines[0], marked, lines[2]]) + "\n" + lines[3][:10], encoding="utf-8")
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert "skipped 2 (already in --out)" in res.stderr
    check_summary(res.stderr, len(GOOD_NAMES) - 2, 0)
    after = out.read_text(encoding="utf-8")
    assert after.count("a,b,score,error") == 1
    assert after.splitlines()[1] == marked
    again = read_csv(after)
    assert [r["a"] for r in again] == GOOD_NAMES  # each pair once (and here still in order)
    np.testing.assert_allclose(
        [float(r["score"]) for r in again[1:]],
        [float(r["score"]) for r in rows[1:]],
        rtol=0,
        atol=TOL,
    )
    # Resuming a finished file scores nothing and leaves it as it is.
    res = cli("score", a, b, "--model", alex, "--out", out, "--resume")
    assert f"skipped {len(GOOD_NAMES)} (already in --out)" in res.stderr
    check_summary(res.stderr, 0, 0)
    assert out.read_text(encoding="utf-8") == after


def test_per_layer_columns_sum_to_score(good, engine, alex, tmp_path) -> None:
    a, b = good
    out = tmp_path / "pl.csv"
    cli("score", a, b, "--model", alex, "--out", out, "--per-layer")
    text = out.read_text(encoding="utf-8")
    taps = [f"tap_{t}" for t in engine.tap_names]
    assert text.splitlines()[0] == ",".join(["a", "b", "score", "error", *taps])
    for r in read_csv(text):
        parts = [float(r[t]) for t in taps]
        assert all(p >= 0 for p in parts)
        assert all(significant_digits(r[t]) <= 9 for t in taps)
        assert abs(sum(parts) - float(r["score"])) <= TOL, r


def test_resize_makes_a_mismatched_pair_score(engine, alex, tmp_path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    big, small = im.textured(H, W, 30), im.textured(H // 2, W // 2, 31)
    im.save_array(big, a / "x.png")
    im.save_array(small, b / "x.png")
    res = cli("score", a, b, "--model", alex, code=1)
    assert "size mismatch" in read_csv(res.stdout)[0]["error"]

    res = cli("score", a, b, "--model", alex, "--resize", "to-a")
    (row,) = read_csv(res.stdout)
    ref = engine.score(big, resize_image(small, (H, W)))[0]
    assert row["error"] == "" and abs(float(row["score"]) - ref) <= TOL

    res = cli("score", a, b, "--model", alex, "--resize", "short-side:64")
    (row,) = read_csv(res.stdout)
    size = (64, 85)  # 96×128 and 48×64 both become 64×85
    ref = engine.score(resize_image(big, size), resize_image(small, size))[0]
    assert row["error"] == "" and abs(float(row["score"]) - ref) <= TOL
    check_summary(res.stderr, 1, 0)


def test_match_sorted_note(engine, alex, tmp_path) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(2):
        im.save_array(im.textured(H, W, 40 + i), a / f"a{i}.png")
        im.save_array(im.textured(H, W, 50 + i), b / f"b{i}.png")
    res = cli("score", a, b, "--model", alex, code=2)
    check_one_error_line(res.stderr, "no pairs matched", "--match sorted")
    res = cli("score", a, b, "--model", alex, "--match", "sorted")
    assert "note: paired by sorted order: 2 files each side" in res.stderr
    rows = read_csv(res.stdout)
    assert [(r["a"], r["b"]) for r in rows] == [("a0.png", "b0.png"), ("a1.png", "b1.png")]
    ref = engine.score(
        [str(a / "a0.png"), str(a / "a1.png")], [str(b / "b0.png"), str(b / "b1.png")]
    )
    np.testing.assert_allclose([float(r["score"]) for r in rows], ref, rtol=0, atol=TOL)


def test_spatial_dir_writes_one_png_per_scored_pair(bad, alex, tmp_path) -> None:
    a, b = bad
    maps = tmp_path / "maps"
    with fifo_watchdog(a / "fifo.png"):
        res = cli("score", a, b, "--model", alex, "--spatial-dir", maps, "--spatial-npy",
                  code=1, env=BOMB_ENV)  # fmt: skip
    rows = read_csv(res.stdout)
    scored = [r for r in rows if r["score"]]
    assert len(scored) == len(SCORED)
    names = [heatmap_name(r["a"], r["b"]) for r in scored]
    assert sorted(p.name for p in maps.iterdir()) == sorted(
        [*names, *(str(Path(n).with_suffix(".npy")) for n in names)]
    )
    raw = {stem(r["b"]): np.load((maps / n).with_suffix(".npy"))
           for r, n in zip(scored, names, strict=True)}  # fmt: skip
    for r in scored:
        with Image.open(maps / heatmap_name(r["a"], r["b"])) as png:
            assert png.format == "PNG" and png.width > W and png.height > H  # map + colour bar
        assert raw[stem(r["b"])].shape == (H, W)
        # the map's mean is the LPIPS score (spatial average of the per-position distance)
        assert abs(float(raw[stem(r["b"])].mean()) - float(r["score"])) <= 1e-5
    for s in EXACT:
        assert not raw[s].any(), s  # identical after decoding: distance 0 everywhere
    plain = {(r["a"], r["b"]): r["score"] for r in read_csv(cli_plain_scores(a, b, alex))}
    for r in scored:
        assert abs(float(r["score"]) - float(plain[(r["a"], r["b"])])) <= TOL


def test_heatmaps_scale_auto_fixed_and_panel(good, alex, tmp_path) -> None:
    from dps_fast.io.heatmap import auto_vmax, colorize, render_heatmap

    a, b = good
    auto_dir, fixed_dir, panel_dir = tmp_path / "auto", tmp_path / "fixed", tmp_path / "panel"
    out = tmp_path / "s.csv"
    res = cli("score", a, b, "--model", alex, "--spatial-dir", auto_dir, "--spatial-npy",
              "--out", out)  # fmt: skip
    rows = read_csv(out.read_text())
    meta = json.loads((tmp_path / "s.csv.meta.json").read_text())
    maps = {r["a"]: np.load((auto_dir / heatmap_name(r["a"], r["b"])).with_suffix(".npy"))
            for r in rows}  # fmt: skip
    assert len(maps) == len(GOOD_NAMES)
    # one batch here: the auto scale comes from all its maps, is said on stderr and in meta.json
    vmax = auto_vmax(list(maps.values()))
    assert vmax is not None and 0 < vmax < 1.0  # the old fixed scale (1.0) left maps dark
    assert meta["heatmaps"]["vmax"] == vmax and meta["heatmaps"]["auto"] is True
    assert f"white = distance {vmax:.3g}" in res.stderr
    cli("score", a, b, "--model", alex, "--spatial-dir", fixed_dir, "--vmax", "0.05")
    cli("score", a, b, "--model", alex, "--spatial-dir", panel_dir, "--heatmap", "panel")
    for r in rows:
        name, m = heatmap_name(r["a"], r["b"]), maps[r["a"]]
        title = f"{r['a']} vs {r['b']}: distance {float(r['score']):.4g}"
        for folder, v in ((auto_dir, vmax), (fixed_dir, 0.05)):
            with Image.open(folder / name) as png:
                got = np.asarray(png.convert("RGB"))
            np.testing.assert_array_equal(got, np.asarray(render_heatmap(m, vmax=v, title=title)))
            assert _has_tile(got, colorize(m, vmax=v)), (folder, name)
        with Image.open(panel_dir / name) as p:
            assert p.width > 3 * W and p.height > H  # A | B | map | colour bar
            panel = np.asarray(p.convert("RGB"))
        assert _has_tile(panel, np.asarray(decode_image(b / Path(r["b"]))))  # B as it was scored
    res = cli("score", a, b, "--model", alex, "--spatial-dir", fixed_dir, "--vmax", "-1", code=2)
    check_one_error_line(res.stderr, "--vmax", "auto", "positive")
    res = cli("score", a, b, "--model", alex, "--spatial-dir", fixed_dir, "--heatmap", "x", code=2)
    check_one_error_line(res.stderr, "map", "panel")


def _has_tile(img: np.ndarray, tile: np.ndarray) -> bool:
    """Whether ``tile`` (H, W, 3), enlarged by the heatmap's display factor, is in ``img``."""
    from dps_fast.io.heatmap import DISPLAY_MIN

    h, w = tile.shape[:2]
    k = max(1, DISPLAY_MIN // max(h, w))
    big = np.repeat(np.repeat(tile, k, axis=0), k, axis=1)
    for y in range(img.shape[0] - big.shape[0] + 1):
        for x in np.flatnonzero((img[y] == big[0, 0]).all(axis=1)):
            if x + big.shape[1] <= img.shape[1] and np.array_equal(
                img[y : y + big.shape[0], x : x + big.shape[1]], big
            ):
                return True
    return False


@pytest.mark.slow
def test_spatial_dir_with_dists_is_refused(good, bundle, tmp_path) -> None:
    a, b = good
    maps = tmp_path / "maps"
    res = cli("score", a, b, "--model", bundle("dists"), "--spatial-dir", maps, code=2)
    check_one_error_line(res.stderr, "--spatial-dir", "dists")
    assert not maps.exists()


# ---------------------------------------------------------------------------- whole-run errors


@pytest.fixture(scope="module")
def error_cases(good, tmp_path_factory) -> dict[str, tuple[list[Any], list[str]]]:
    a, b = good
    root = tmp_path_factory.mktemp("errors")
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no images here\n")
    (root / "A1").mkdir()
    im.save_array(im.textured(H, W, 60), root / "A1" / "x.png")
    (root / "B1").mkdir()
    im.save_array(im.textured(H, W, 61), root / "B1" / "y.png")
    (root / "plain-file").write_text("a file, not a folder\n")
    return {
        "folder missing": ([root / "nope", b], ["folder not found", "nope"]),
        "folder empty": ([root / "empty", b], ["no images found", "empty"]),
        "no images": ([a, root / "notes"], ["no images found", "notes"]),
        "no pairs": ([root / "A1", root / "B1"], ["no pairs matched", "x.png", "y.png"]),
        "out not writable": (
            [a, b, "--out", root / "plain-file" / "res.csv"],
            ["cannot write", "res.csv"],
        ),
        "bad --match": ([a, b, "--match", "name"], ["--match", "stem, relpath, sorted", "name"]),
        "bad --resize": ([a, b, "--resize", "half"], ["resize", "to-a", "short-side:N", "half"]),
        "resume without --out": ([a, b, "--resume"], ["--resume", "--out"]),
    }


CASES = [
    "folder missing",
    "folder empty",
    "no images",
    "no pairs",
    "out not writable",
    "bad --match",
    "bad --resize",
    "resume without --out",
]


@pytest.mark.parametrize("case", CASES)
def test_whole_run_errors_exit_2(case, error_cases, alex) -> None:
    args, words = error_cases[case]
    res = cli("score", *args, "--model", alex, code=2)
    assert res.stdout == ""
    check_one_error_line(res.stderr, *words)


def test_unknown_model_lists_valid_ones(good) -> None:
    a, b = good
    res = cli("score", a, b, "--model", "lpips-alexx", code=2)
    check_one_error_line(
        res.stderr, "unknown model 'lpips-alexx'", "lpips-alex", "dists", "dps-resnet50"
    )


def test_whole_run_errors_in_a_subprocess(good, alex, tmp_path) -> None:
    a, b = good
    proc = run_script("score", tmp_path / "missing", b, "--model", alex, code=2)
    assert proc.stdout == ""
    check_one_error_line(proc.stderr, "folder not found", "missing")
    proc = run_script("score", a, b, "--model", "no-such-model", code=2)
    check_one_error_line(proc.stderr, "unknown model", "lpips-alex")


def test_all_good_subprocess_exit_0(good, alex) -> None:
    a, b = good
    proc = run_script("score", a, b, "--model", alex, "--workers", 2)
    rows = read_csv(proc.stdout)
    assert [r["a"] for r in rows] == GOOD_NAMES and all(r["error"] == "" for r in rows)
    check_summary(proc.stderr, len(GOOD_NAMES), 0)


# ---------------------------------------------------------------------------- score-pairs


def test_score_pairs_manifest(bad, engine, alex, tmp_path) -> None:
    a, b = bad
    root = a.parent
    pairs = [
        ("A/good.png", "B/good.png", "g1"),
        ("A/good.png", "B/icc.png", "g2"),
        ("A/good.png", "B/rgba.png", "g3"),
        ("A/good.png", "B/ü-图.png", "g4"),
        ("A/icc.png", "B/icc.png", "g5"),
        ("A/cmyk.jpg", "B/cmyk.png", "g6"),
        ("A/empty.png", "B/empty.png", "bad1"),
    ]
    manifest = root / "pairs.csv"
    manifest.write_text(
        "a,b,id\n" + "".join(f"{x},{y},{i}\n" for x, y, i in pairs), encoding="utf-8"
    )
    out = tmp_path / "pairs-out.csv"
    res = cli("score-pairs", manifest, "--model", alex, "--out", out, code=1)
    check_summary(res.stderr, len(pairs) - 1, 1)
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "a,b,score,error,id"
    rows = read_csv(text)
    assert [(r["a"], r["b"], r["id"]) for r in rows] == pairs  # manifest order, ids kept
    assert "empty (0 bytes)" in rows[-1]["error"] and rows[-1]["score"] == ""
    ref = engine.score(
        [str(root / x) for x, _, _ in pairs[:-1]], [str(root / y) for _, y, _ in pairs[:-1]]
    )
    got = [float(r["score"]) for r in rows[:-1]]
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    # The pairs that `score` on the folders also makes give the same numbers there.
    folder = {stem(r["b"]): r["score"] for r in read_csv(cli_plain_scores(a, b, alex))}
    by_id = {r["id"]: float(r["score"]) for r in rows[:-1]}
    for pid, s in (("g1", "good"), ("g5", "icc"), ("g6", "cmyk")):
        assert abs(by_id[pid] - float(folder[s])) <= TOL, (pid, s)


def test_score_pairs_manifest_without_columns(tmp_path, alex) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("left,right\nx.png,y.png\n", encoding="utf-8")
    res = cli("score-pairs", manifest, "--model", alex, code=2)
    check_one_error_line(res.stderr, "no column 'a' or 'b'", "left", "right",
                         "--columns left,right")  # fmt: skip


def test_score_pairs_columns_named_otherwise(good, engine, alex, tmp_path) -> None:
    a, b = good
    manifest = tmp_path / "m.csv"
    rows_in = [(str(a / n), str(b / Path(n).with_suffix(".png"))) for n in GOOD_NAMES[:3]]
    manifest.write_text(
        "dist,note,ref\n" + "".join(f"{x},n,{y}\n" for x, y in rows_in), encoding="utf-8"
    )
    res = cli("score-pairs", manifest, "--model", alex, "--columns", "dist,ref")
    rows = read_csv(res.stdout)
    assert [(r["a"], r["b"]) for r in rows] == rows_in
    ref = engine.score([x for x, _ in rows_in], [y for _, y in rows_in])
    np.testing.assert_allclose([float(r["score"]) for r in rows], ref, rtol=0, atol=TOL)
    res = cli("score-pairs", manifest, "--model", alex, "--columns", "ref", code=2)
    check_one_error_line(res.stderr, "two different column names", "ref,dist")
    res = cli("score-pairs", manifest, "--model", alex, "--columns", "ref,gt", code=2)
    check_one_error_line(res.stderr, "no column 'gt'", "--columns")


# ---------------------------------------------------------------------------- matrix


def test_matrix_npy_and_csv(good, engine, alex, tmp_path) -> None:
    _, b = good
    labels = [str(Path(n).with_suffix(".png")) for n in GOOD_NAMES]
    out = tmp_path / "M.npy"
    res = cli("matrix", b, "--out", out, "--model", alex)
    assert "matrix: 6 images, 15 pairs" in res.stderr
    m = np.load(out)
    assert m.shape == (6, 6) and m.dtype == np.float32
    assert (tmp_path / "M.labels.txt").read_text(encoding="utf-8").splitlines() == labels
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 0)
    iu = np.triu_indices(6, 1)
    ref = engine.score([str(b / labels[i]) for i in iu[0]], [str(b / labels[j]) for j in iu[1]])
    np.testing.assert_allclose(m[iu], ref, rtol=0, atol=TOL)
    assert (m[iu] > 0).all()

    out_csv = tmp_path / "M.csv"
    cli("matrix", b, "--out", out_csv, "--model", alex)
    table = list(csv.reader(io.StringIO(out_csv.read_text(encoding="utf-8"), newline="")))
    assert table[0] == ["", *labels]
    assert [row[0] for row in table[1:]] == labels
    values = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    np.testing.assert_allclose(values, m, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------- models, export, info


@pytest.mark.slow  # a whole export of its own
def test_export_lpips_squeeze_and_info(weights_file, tmp_path) -> None:
    dest = tmp_path / "sq-bundle"
    res = cli("export", "lpips-squeeze", "--weights", weights_file("squeezenet1_1"), "--out", dest)
    assert res.stdout.strip() == str(dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"] == "lpips-squeeze"
    res = cli("info", dest)
    out = res.stdout
    assert "model      lpips-squeeze" in out
    assert "validation" in out
    for role in ("trunk", "head", "pair", "pair_spatial"):
        assert re.search(rf"^  {re.escape(role)}\s+ok\s", out, re.M), (role, out)
    assert re.search(r"^providers .*CPUExecutionProvider", out, re.M), out


def test_info_errors(tmp_path) -> None:
    res = cli("info", "lpips-alexx", code=2)
    check_one_error_line(res.stderr, "unknown model 'lpips-alexx'", "lpips-alex", "dists")
    res = cli("info", "lpips-alex", "--weights", tmp_path / "missing.pth", code=2)
    check_one_error_line(res.stderr, "weights file not found", "missing.pth")
    res = cli("info", tmp_path, code=2)
    check_one_error_line(res.stderr, f"no bundle at {tmp_path} ", "manifest.json", "export")


@pytest.mark.slow
def test_export_custom_dps(weights_file, good, tmp_path) -> None:
    dest = tmp_path / "r18"
    res = cli(
        "export", "dps", "--arch", "resnet18", "--taps", "layer1,layer2",
        "--weights", weights_file("resnet18"), "--out", dest,
    )  # fmt: skip
    assert res.stdout.strip() == str(dest)
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"] == "dps-resnet18+layer1+layer2"
    assert [t["name"] for t in manifest["taps"]] == ["layer1", "layer2"]
    a, b = good
    res = cli("score", a, b, "--model", dest)  # the custom bundle scores end to end
    rows = read_csv(res.stdout)
    assert len(rows) == len(GOOD_NAMES) and all(0 < float(r["score"]) <= 4 for r in rows)


def test_export_unknown_tap(weights_file) -> None:
    res = cli(
        "export", "dps", "--arch", "resnet18", "--taps", "layer1,layr2",
        "--weights", weights_file("resnet18"), code=2,
    )  # fmt: skip
    err = res.stderr
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "'layr2' (close:" in err and "resnet18" in err


def test_export_unknown_tap_names_only_the_bad_one(weights_file) -> None:
    res = cli(
        "export", "dps", "--arch", "resnet18", "--taps", "layer1,layr2",
        "--weights", weights_file("resnet18"), code=2,
    )  # fmt: skip
    assert "'layer1'" not in res.stderr
    close = re.search(r"'layr2' \(close: ([^)]*)\)", res.stderr)
    assert close is not None and "layer2" in close.group(1).split(", ")


@pytest.mark.slow  # a whole export of its own
def test_score_with_weights_makes_the_cached_bundle(weights_file, good, tmp_path) -> None:
    home = tmp_path / "home"
    env = {"DPS_FAST_HOME": str(home)}
    w = weights_file("squeezenet1_1")
    cached = home / "bundles" / "lpips-squeeze" / weights_key(sha256_file(w))  # the cache layout
    assert not cached.exists()
    a, b = good
    out = tmp_path / "sq.csv"
    res = cli("score", a, b, "--model", "lpips-squeeze", "--weights", w, "--out", out, env=env)
    check_summary(res.stderr, len(GOOD_NAMES), 0)
    assert (cached / "manifest.json").is_file()
    # the first run says that it exports (and where), before the long silent step
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note: ")]
    assert notes[0] == (
        "note: first use of lpips-squeeze here: exporting its bundle once (about a minute) "
        f"to {cached}"
    )
    assert notes[1].startswith("note: exported lpips-squeeze in ")
    meta = json.loads((tmp_path / "sq.csv.meta.json").read_text(encoding="utf-8"))
    assert Path(meta["bundle"]) == cached and meta["model"] == "lpips-squeeze"
    rows = read_csv(out.read_text(encoding="utf-8"))
    eng = Engine(str(cached), device="cpu")
    ref = eng.score([str(a / r["a"]) for r in rows], [str(b / r["b"]) for r in rows])
    np.testing.assert_allclose([float(r["score"]) for r in rows], ref, rtol=0, atol=TOL)
    # A second run uses the cached bundle (not exported again).
    stamp = (cached / "manifest.json").stat().st_mtime_ns
    res = cli("score", a, b, "--model", "lpips-squeeze", "--weights", w, env=env)
    assert (cached / "manifest.json").stat().st_mtime_ns == stamp
    assert "export" not in res.stderr
    # ... and the export made it the model's default: no --weights needed any more
    res = cli("score", a, b, "--model", "lpips-squeeze", "--out", out, env=env)
    meta = json.loads((tmp_path / "sq.csv.meta.json").read_text(encoding="utf-8"))
    assert Path(meta["bundle"]) == cached and "export" not in res.stderr
    # `info NAME --weights W` finds the same bundle in the cache.
    res = cli("info", "lpips-squeeze", "--weights", w, env=env)
    assert f"bundle     {cached}" in res.stdout
    # `models` lists the registry and shows the cached bundle.
    res = cli("models", env=env)
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    for name in ("lpips-alex", "dists", "dps-resnet50"):
        assert name in lines
    assert cached.name in lines["lpips-squeeze"]
    assert cached.name.startswith("sha256-")
    assert f"cache: {home}" in res.stdout


def test_models_lists_the_registry_in_a_subprocess() -> None:
    proc = run_script("models")
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"lpips-alex", "lpips-squeeze", "dists", "dps-resnet50"} <= names


# ---------------------------------------------------------------------------- version, help


def test_version_and_help() -> None:
    assert cli("--version").stdout.strip() == f"dps-fast {__version__}"
    proc = run_script("--version", timeout=60)
    assert proc.stdout.strip() == f"dps-fast {__version__}"
    proc = run_script("--help", timeout=60)
    for command in ("score", "score-pairs", "matrix", "models", "export", "info"):
        assert command in proc.stdout
    proc = run_script("score", "--help", timeout=60)
    for option in ("--model", "--resize", "--match", "--resume", "--per-layer", "--spatial-dir"):
        assert option in proc.stdout


def test_python_m_and_shell_completion() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dps_fast", "--version"], capture_output=True, text=True,
        timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == f"dps-fast {__version__}"
    assert "--install-completion" in cli("--help").stdout
    # Typer's switch for naming the shell instead of detecting it (pytest is no shell)
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = run_script("--show-completion", "bash", env=named, timeout=60)
    assert "complete" in proc.stdout and "_DPS_FAST_COMPLETE" in proc.stdout


def test_help_gives_examples_and_default_choices_first() -> None:
    top = cli("--help").stdout
    assert "..." not in top.split("Commands:")[1]  # command summaries are not cut off
    for command in ("score", "score-pairs", "matrix", "evaluate", "models", "export", "info",
                    "bench"):  # fmt: skip
        text = cli(command, "--help").stdout
        assert "Example" in text and f"dps-fast {command}" in text.split("Example")[1], command
    text = " ".join(cli("score", "--help").stdout.split())
    defaults = {"--device": "auto", "--precision": "fp32", "--match": "stem", "--resize": "none",
                "--decode": "auto", "--heatmap": "map"}  # fmt: skip
    for choices, default in defaults.items():
        after = text.split(f"{choices} <")[1].split(">", 1)[1].strip()
        assert after.startswith(default), (choices, after[:40])


@pytest.mark.parametrize(
    ("command", "metavars"),
    [("score", ["DIR_A", "DIR_B"]), ("score-pairs", ["PAIRS_CSV"]), ("matrix", ["DIR"]),
     ("export", ["MODEL"]), ("info", ["BUNDLE"])],
)  # fmt: skip
def test_help_names_arguments_as_the_readme_does(command: str, metavars: list[str]) -> None:
    usage = cli(command, "--help").stdout.splitlines()[0]
    for m in metavars:
        assert m in usage, usage
