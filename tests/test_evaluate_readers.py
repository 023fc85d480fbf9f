"""Dataset readers on synthetic replicas: every layout, its quirks, and every layout error."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from dps_fast.evaluate.items import LayoutError
from dps_fast.evaluate.readers import parse_dataset_arg, read_dataset
from tests.helpers import eval_replicas as rep


def test_bapps_2afc_and_jnd(tmp_path: Path) -> None:
    root = rep.make_bapps(tmp_path / "bapps")
    two, jnd = read_dataset("bapps", root)
    assert (two.protocol, jnd.protocol) == ("2afc", "jnd")
    assert two.subsets == ["cnn", "traditional"] and len(two.items) == 7
    it = next(i for i in two.items if i.id == "traditional/000001")
    assert it.label == pytest.approx(0.2)
    assert [p.role for p in it.pairs] == ["p0", "p1"]
    assert it.pairs[0].a == "2afc/val/traditional/p0/000001.png"
    assert it.pairs[0].b == "2afc/val/traditional/ref/000001.png"
    assert two.resize == "short-side:64"
    assert len(jnd.items) == 4 and jnd.items[2].label == pytest.approx(1 / 3)
    only, *_ = read_dataset("bapps", root, subsets=["cnn"], jnd=False)
    assert only.subsets == ["cnn"] and len(read_dataset("bapps", root, jnd=False)) == 1


def test_bapps_pairs_by_stem_not_order(tmp_path: Path) -> None:
    root = rep.make_bapps(tmp_path / "b", twoafc={"cnn": 2}, jnd={})
    d = root / "2afc/val/cnn"
    os.rename(d / "p1/000001.png", d / "p1/000009.png")
    with pytest.raises(LayoutError, match=r"p1/000001\.png missing"):
        read_dataset("bapps", root)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda d: (d / "judge/000001.npy").unlink(),
            ["judge/000001.npy missing", "ref/000001.png exists"],
        ),
        (lambda d: np.save(d / "judge/000000.npy", np.array([0.5, 0.5])), ["one fraction"]),
        (lambda d: (d / "judge/000000.npy").write_bytes(b"junk"), ["cannot read"]),
        (lambda d: [p.unlink() for p in (d / "ref").iterdir()] and (d / "ref").rmdir(), ["ref"]),
    ],
)
def test_bapps_layout_errors(tmp_path: Path, damage, words: list[str]) -> None:
    root = rep.make_bapps(tmp_path / "b", twoafc={"cnn": 2}, jnd={})
    damage(root / "2afc/val/cnn")
    with pytest.raises(LayoutError) as e:
        read_dataset("bapps", root)
    for w in words:
        assert w in str(e.value)


def test_bapps_missing_subset_and_empty_root(tmp_path: Path) -> None:
    root = rep.make_bapps(tmp_path / "b", twoafc={"cnn": 1}, jnd={})
    with pytest.raises(LayoutError, match="frameinterp"):
        read_dataset("bapps", root, subsets=["frameinterp"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="neither"):
        read_dataset("bapps", tmp_path / "empty")


def test_tid2013_case_and_std(tmp_path: Path) -> None:
    root = rep.make_tid2013(tmp_path / "tid")
    (ds,) = read_dataset("tid2013", root)
    assert len(ds.items) == 12 and ds.higher_better
    first = ds.items[0]
    assert first.id == "i01_01_1.bmp" and first.pairs[0].a_path.name == "I01_01_1.BMP"
    assert first.pairs[0].b_path.name == "I01.BMP" and first.group == "I01"
    last = ds.items[-1]
    assert last.pairs[0].b_path.name == "i03.bmp" and last.dtype == "02"
    assert first.label_std == pytest.approx(0.15)
    (root / "mos_std.txt").unlink()
    (ds,) = read_dataset("tid2013", root)
    assert math.isnan(ds.items[0].label_std)


def test_tid2013_errors(tmp_path: Path) -> None:
    root = rep.make_tid2013(tmp_path / "tid")
    (root / "mos_std.txt").write_text("0.1\n")
    with pytest.raises(LayoutError, match=r"1 lines, mos_with_names.txt has 12"):
        read_dataset("tid2013", root)
    (root / "mos_std.txt").unlink()
    rep.save(rep.base_image(8, 8, 0), root / "distorted_images" / "i01_01_1.bmp")
    with pytest.raises(LayoutError, match=r"several files .* case is ignored"):
        read_dataset("tid2013", root)
    (root / "distorted_images" / "i01_01_1.bmp").unlink()
    (root / "distorted_images" / "i02_02_2.bmp").unlink()
    with pytest.raises(LayoutError, match=r"line 8: i02_02_2.bmp not found"):
        read_dataset("tid2013", root)
    (root / "mos_with_names.txt").write_text("5.0 nonsense.png\n")
    with pytest.raises(LayoutError, match=r"like i01_01_1\.bmp"):
        read_dataset("tid2013", root)
    (root / "mos_with_names.txt").unlink()
    with pytest.raises(LayoutError, match=r"mos_with_names\.txt not found"):
        read_dataset("tid2013", root)


def test_kadid(tmp_path: Path) -> None:
    root = rep.make_kadid(tmp_path / "k")
    (ds,) = read_dataset("kadid10k", root)
    assert len(ds.items) == 6 and ds.higher_better and ds.items[1].label == 3.0
    assert ds.items[1].label_std == pytest.approx(math.sqrt(0.08)) and ds.items[1].group == "I01"
    (root / "dmos.csv").write_text("dist,ref,dmos,var\nx,y,1,0\n")
    with pytest.raises(LayoutError, match="no column dist_img, ref_img"):
        read_dataset("kadid10k", root)


def test_kadid_missing_image(tmp_path: Path) -> None:
    root = rep.make_kadid(tmp_path / "k")
    (root / "images" / "I02_03_01.png").unlink()
    with pytest.raises(LayoutError, match=r"row 7: file .*I02_03_01.png not found"):
        read_dataset("kadid10k", root)


def test_pipal(tmp_path: Path) -> None:
    root = rep.make_pipal(tmp_path / "p")
    (ds,) = read_dataset("pipal", root)
    assert len(ds.items) == 6 and ds.items[0].pairs[0].b_path.name == "A0001.bmp"
    assert ds.items[1].pairs[0].a_path.parent.name == "Distortion_2"
    (root / "Train_Label" / "A_labels.txt").write_text("A0001_00_00.bmp\n")
    with pytest.raises(LayoutError, match="expected 'name,elo'"):
        read_dataset("pipal", root)


def test_live_drops_references(tmp_path: Path) -> None:
    root = rep.make_live(tmp_path / "live")
    (ds,) = read_dataset("live", root)
    assert len(ds.items) == 982 - len(range(0, 982, 6)) and not ds.higher_better
    assert ds.items[0].id == "jp2k/img2.bmp" and ds.items[0].label == 1.0
    assert ds.items[-1].dtype == "fastfading"


def test_live_count_mismatch(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = rep.make_live(tmp_path / "live")
    savemat(root / "dmos.mat", {"dmos": np.zeros((1, 5)), "orgs": np.zeros((1, 5))})
    with pytest.raises(LayoutError, match=r"dmos \(5\), orgs \(5\) .* 982"):
        read_dataset("live", root)


def test_generic_manifest(tmp_path: Path) -> None:
    path = rep.make_manifest(tmp_path / "m")
    with pytest.raises(LayoutError, match="--higher-better"):
        read_dataset("mos", path)
    (ds,) = read_dataset("mos", path, higher_better=False)
    assert ds.name == "labels" and not ds.higher_better and len(ds.items) == 6
    assert ds.items[0].group == "ref/r0.png" and ds.items[0].label_std == 0.5
    path2 = rep.make_manifest(tmp_path / "m2", std=False)
    (ds2,) = read_dataset("mos", path2, higher_better=True)
    assert math.isnan(ds2.items[0].label_std)
    path2.write_text("ref,dist\na,b\n")
    with pytest.raises(LayoutError, match="no column score"):
        read_dataset("mos", path2, higher_better=True)


def test_parse_dataset_arg() -> None:
    assert parse_dataset_arg("tid2013=/x") == ("tid2013", Path("/x"))
    with pytest.raises(LayoutError, match="KIND one of bapps"):
        parse_dataset_arg("csiq=/x")
