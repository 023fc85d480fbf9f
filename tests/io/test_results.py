"""Results files (CSV, JSONL, resume, meta sidecar) and heatmaps."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dps_fast.io import (
    COLORMAP,
    ResultWriter,
    format_float,
    heatmap_name,
    meta_path,
    result_columns,
    save_heatmap,
    write_meta,
)
from dps_fast.io.resume import ResumeError, summarize_file

COLUMNS = result_columns(["conv1", "conv2"], with_id=True)

RECORDS: list[dict[str, Any]] = [
    {"a": "1.png", "b": "1.jpg", "score": 1 / 3, "error": "", "tap_conv1": 0.1, "tap_conv2": 2.0},
    {"a": "2.png", "b": "2.jpg", "score": None, "error": "2.png is truncated or corrupt"},
    {
        "a": "ü,图.png",
        "b": 'q"uote.png',
        "score": np.float32(0.25),
        "error": "",
        "tap_conv1": np.float64(1e-12),
        "tap_conv2": 123456789.123,
        "id": "p3",
    },
]


def test_columns_and_format_float() -> None:
    assert COLUMNS == ["a", "b", "score", "error", "tap_conv1", "tap_conv2", "id"]
    assert result_columns() == ["a", "b", "score", "error"]
    assert format_float(1 / 3) == "0.333333333"
    assert format_float(123456789.123) == "123456789"
    assert format_float(1e-12) == "1e-12"
    assert format_float(np.float32(0.1)) == "0.100000001"
    assert format_float(None) == "" and format_float(math.nan) == ""
    assert format_float(2) == "2"


def test_csv_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with ResultWriter(out, COLUMNS) as w:
        for r in RECORDS:
            w.write(r)
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["a"] for r in rows] == ["1.png", "2.png", "ü,图.png"]
    assert rows[0] == {
        "a": "1.png",
        "b": "1.jpg",
        "score": "0.333333333",
        "error": "",
        "tap_conv1": "0.1",
        "tap_conv2": "2",
        "id": "",
    }
    assert rows[1]["score"] == "" and rows[1]["error"] == "2.png is truncated or corrupt"
    assert rows[2]["b"] == 'q"uote.png' and rows[2]["score"] == "0.25"
    assert rows[2]["tap_conv2"] == "123456789" and rows[2]["id"] == "p3"
    assert out.read_text(encoding="utf-8").count("a,b,score") == 1
    assert summarize_file(out)["scored"] == 2  # read back: rows 1 and 3 done, 2 failed


def test_jsonl_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultWriter(out, COLUMNS) as w:
        for r in RECORDS:
            w.write(r)
    lines = out.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert list(objs[0]) == COLUMNS
    assert objs[0]["score"] == 0.333333333 and objs[0]["error"] is None and objs[0]["id"] is None
    assert objs[1]["score"] is None and objs[1]["error"] == "2.png is truncated or corrupt"
    assert objs[2]["score"] == 0.25 and objs[2]["tap_conv2"] == 123456789.0
    assert "ü,图.png" in lines[2]  # UTF-8, not \u escapes
    assert summarize_file(out)["scored"] == 2  # read back: rows 1 and 3 done, 2 failed
    ndjson = tmp_path / "out.ndjson"
    with ResultWriter(ndjson, ["a", "b", "score", "error"]) as w:
        w.write({"a": "x", "b": "y", "score": math.inf, "error": ""})
        w.write({"a": "x2", "b": "y", "score": math.nan, "error": ""})
    objs = [json.loads(line) for line in ndjson.read_text().splitlines()]
    assert objs[0]["score"] == "inf" and objs[1]["score"] is None  # PSNR of identical images


def test_stream_output() -> None:
    buf = io.StringIO()
    with ResultWriter(None, ["a", "b", "score", "error"], stream=buf) as w:
        w.write({"a": "x", "b": "y", "score": 0.5, "error": ""})
    assert not buf.closed
    assert buf.getvalue() == "a,b,score,error\nx,y,0.5,\n"
    buf = io.StringIO()
    with ResultWriter(None, ["a", "b", "score", "error"], fmt="jsonl", stream=buf) as w:
        w.write({"a": "x", "b": "y", "score": 0.5, "error": ""})
    assert json.loads(buf.getvalue()) == {"a": "x", "b": "y", "score": 0.5, "error": None}


def test_error_newlines_are_flattened(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with ResultWriter(out, ["a", "b", "score", "error"]) as w:
        w.write({"a": "x", "b": "y", "score": None, "error": "line one\nline two"})
    assert out.read_text().splitlines()[1] == "x,y,,line one line two"


def test_format_from_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.jsonl"):
        ResultWriter(tmp_path / "out.json", COLUMNS)
    with pytest.raises(ValueError, match="cannot tell the results format"):
        ResultWriter(tmp_path / "out.txt", COLUMNS)
    with ResultWriter(tmp_path / "out.txt", COLUMNS, fmt="jsonl") as w:
        assert w.format == "jsonl"
    with pytest.raises(ValueError, match="'csv' or 'jsonl'"):
        ResultWriter(tmp_path / "out.csv", COLUMNS, fmt="xml")


def test_bad_records(tmp_path: Path) -> None:
    with (
        ResultWriter(tmp_path / "out.csv", ["a", "b", "score", "error"]) as w,
        pytest.raises(ValueError, match="not columns"),
    ):
        w.write({"a": "x", "b": "y", "surprise": 1})
    with pytest.raises(ValueError, match="write after close"):
        w.write({"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="'a' and 'b'"):
        ResultWriter(tmp_path / "o.csv", ["score"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_appends_and_repairs_partial_line(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    columns = ["a", "b", "score", "error"]
    with ResultWriter(out, columns) as w:
        w.write({"a": "1", "b": "1", "score": 0.1, "error": ""})
        w.write({"a": "2", "b": "2", "score": None, "error": "broken"})
        w.write({"a": "3", "b": "3", "score": 0.3, "error": ""})
    # An interrupted run: the last row is cut in the middle.
    text = out.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    out.write_text(text[: last_start + 4])
    # error row not done, partial row ignored
    assert {k: summarize_file(out)[k] for k in ("rows", "scored")} == {"rows": 2, "scored": 1}
    with ResultWriter(out, columns, resume=True) as w:
        w.write({"a": "2", "b": "2", "score": 0.2, "error": ""})
        w.write({"a": "3", "b": "3", "score": 0.3, "error": ""})
    lines = out.read_text().splitlines()
    assert {k: summarize_file(out)[k] for k in ("rows", "scored")} == {"rows": 4, "scored": 3}
    if suffix == ".csv":
        assert lines == ["a,b,score,error", "1,1,0.1,", "2,2,,broken", "2,2,0.2,", "3,3,0.3,"]
    else:
        assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_resume_fresh_and_header_only(tmp_path: Path) -> None:
    out = tmp_path / "new.csv"
    with ResultWriter(out, ["a", "b", "score", "error"], resume=True) as w:
        w.write({"a": "1", "b": "1", "score": 1.0, "error": ""})
    assert out.read_text() == "a,b,score,error\n1,1,1,\n"
    partial_header = tmp_path / "partial.csv"
    partial_header.write_text("a,b,sc")
    with ResultWriter(partial_header, ["a", "b", "score", "error"], resume=True) as w:
        w.write({"a": "1", "b": "1", "score": 1.0, "error": ""})
    assert partial_header.read_text() == "a,b,score,error\n1,1,1,\n"


def test_without_resume_truncates(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old content\n")
    with ResultWriter(out, ["a", "b", "score", "error"]):
        pass
    assert out.read_text() == "a,b,score,error\n"


def test_resume_with_other_columns_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    with ResultWriter(out, ["a", "b", "score", "error"]) as w:
        w.write({"a": "1", "b": "1", "score": 1.0, "error": ""})
    with pytest.raises(ValueError, match="cannot resume"):
        ResultWriter(out, COLUMNS, resume=True)


def test_resume_read_bad_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"a": "1", "b": "1", "score": 1, "error": ""}\nnot json\n{"a": "2"}\n')
    with pytest.raises(ResumeError, match="line 2 is not valid JSON"):
        summarize_file(out)


def test_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    target = blocker / "out.csv"
    with pytest.raises(OSError, match="cannot write results to"):
        ResultWriter(target, COLUMNS)
    with pytest.raises(OSError, match="cannot write"):
        write_meta(target, {"model": "x"})


def test_creates_parent_folders(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "one" / "out.csv"
    with ResultWriter(out, ["a", "b", "score", "error"]):
        pass
    assert out.exists()


def test_write_meta(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    meta = {
        "model": "lpips-alex",
        "bundle": tmp_path / "bundle",
        "options": {"resize": "none", "n": np.int64(3)},
        "name": "ü",
    }
    path = write_meta(out, meta)
    assert path == tmp_path / "out.csv.meta.json" == meta_path(out)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "model": "lpips-alex"')
    loaded = json.loads(text)
    assert loaded["bundle"] == str(tmp_path / "bundle") and loaded["options"]["n"] == 3
    write_meta(out, {"model": "dists"})
    assert json.loads(path.read_text()) == {"model": "dists"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv.meta.json"]


# ---------------------------------------------------------------------------- heatmaps


def test_colormap_is_a_brightness_ramp() -> None:
    assert COLORMAP.shape == (256, 3) and COLORMAP.dtype == np.uint8
    assert COLORMAP[0].tolist() == [0, 0, 0] and COLORMAP[255].tolist() == [255, 255, 255]
    luma = COLORMAP.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luma) > 0)


def test_save_heatmap(tmp_path: Path) -> None:
    m = np.array([[0.0, 0.5, 1.0, 2.0], [-1.0, np.nan, 0.25, 0.75]], dtype=np.float32)
    path = tmp_path / "maps" / "x.png"
    save_heatmap(m, path, vmax=1.0)
    im = Image.open(path)
    assert im.mode == "RGB" and im.size == (4, 2)
    px = np.asarray(im)
    assert px[0, 0].tolist() == [0, 0, 0]
    assert px[0, 2].tolist() == [255, 255, 255] and px[0, 3].tolist() == [255, 255, 255]
    assert px[1, 0].tolist() == [0, 0, 0] and px[1, 1].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(px[0, 1], COLORMAP[128])
    np.testing.assert_array_equal(px[1, 2], COLORMAP[64])
    with pytest.raises(ValueError, match="vmax"):
        save_heatmap(m, path, vmax=0.0)
    with pytest.raises(ValueError, match="2-D"):
        save_heatmap(np.zeros((1, 2, 3)), path, vmax=1.0)


def test_heatmap_name() -> None:
    assert heatmap_name("sub/0001.png", "sub/0001.jpg") == "sub__0001.png"
    assert heatmap_name("x.png", "y.png") == "x--y.png"
    assert heatmap_name("/data/a:b.png", "/data/a:b.png") == "data__a_b.png"
    long_name = "d/" * 150 + "x.png"
    name = heatmap_name(long_name, "other.png")
    assert len(name.encode()) <= 210 and name.endswith(".png") and "/" not in name
    assert name != heatmap_name(long_name, "other2.png")
