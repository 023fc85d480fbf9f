"""The Python twins of the CLI: dps_fast.score_dirs / score_pairs / distance_matrix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import dps_fast
from dps_fast.samples import distortion_pairs


def _folders(tmp_path, n: int = 5):
    a, b = distortion_pairs(n, 64, 80, seed=3)
    da, db = tmp_path / "A", tmp_path / "B"
    da.mkdir()
    db.mkdir()
    u8a = (a * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    u8b = (b * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    for i in range(n):
        Image.fromarray(u8a[i]).save(da / f"{i:02d}.png")
        Image.fromarray(u8b[i]).save(db / f"{i:02d}.png")
    (da / "broken.png").write_bytes(b"not an image")
    (db / "broken.png").write_bytes(b"not an image")
    return da, db, u8a, u8b


def test_score_dirs_records_match_engine(tmp_path, engines) -> None:
    eng = engines("lpips-squeeze")
    da, db, u8a, u8b = _folders(tmp_path)
    recs = list(dps_fast.score_dirs(da, db, engine=eng, per_layer=True, workers=2))
    assert [r["a"] for r in recs] == [
        "00.png",
        "01.png",
        "02.png",
        "03.png",
        "04.png",
        "broken.png",
    ]
    assert recs[-1]["score"] is None and "not an image" in recs[-1]["error"]
    got = np.array([r["score"] for r in recs[:-1]], np.float64)
    np.testing.assert_allclose(got, eng.score(u8a, u8b), rtol=0, atol=1e-6)
    taps = [k for k in recs[0] if k.startswith("tap_")]
    assert len(taps) == len(eng.tap_names)
    # skip= leaves out pairs already done (what --resume uses)
    rest = list(dps_fast.score_dirs(da, db, engine=eng, skip={("00.png", "00.png")}))
    assert next(r["a"] for r in rest) == "01.png"


def test_score_pairs_reuses_shared_images(tmp_path, engines) -> None:
    eng = engines("lpips-squeeze")
    _, _, u8a, u8b = _folders(tmp_path)
    manifest = tmp_path / "pairs.csv"
    rows = ["a,b,id"] + [f"A/00.png,B/{i:02d}.png,p{i}" for i in range(5)]
    manifest.write_text("\n".join(rows) + "\n")
    recs = list(dps_fast.score_pairs(manifest, engine=eng))
    assert [r["id"] for r in recs] == [f"p{i}" for i in range(5)]
    want = eng.score(u8a[:1], u8b)  # 1-vs-N
    np.testing.assert_allclose([r["score"] for r in recs], want, rtol=0, atol=1e-6)


def test_shared_image_decoded_once_per_run(tmp_path, engines) -> None:
    """A reference used by pairs in several decode windows is decoded once for the run (while
    it fits the decode cache), not once per window; with no cache, once per window."""
    from dps_fast.io.pairing import read_pairs_manifest
    from dps_fast.pipeline import PairScorer

    eng = engines("lpips-squeeze")
    _, _, u8a, u8b = _folders(tmp_path)
    manifest = tmp_path / "pairs.csv"
    rows = ["a,b"] + [f"A/00.png,B/{i % 5:02d}.png" for i in range(12)]
    manifest.write_text("\n".join(rows) + "\n")
    pairs = read_pairs_manifest(manifest)
    ref = tmp_path / "A" / "00.png"
    kept = PairScorer(eng, window=3, workers=2)
    recs = list(kept.run(pairs))
    assert kept.decodes[ref] == 1  # four windows, one decode
    assert all(kept.decodes[tmp_path / "B" / f"{i:02d}.png"] == 1 for i in range(5))
    want = eng.score(u8a[:1], u8b)
    np.testing.assert_allclose([r["score"] for r in recs], np.tile(want, 3)[:12], atol=1e-6)
    per_window = PairScorer(eng, window=3, workers=2, decode_cache_bytes=0)
    assert [r["score"] for r in per_window.run(pairs)] == [r["score"] for r in recs]
    assert per_window.decodes[ref] == 4


def test_feature_reuse_matches_pair_scores_and_caches_copies(tmp_path, engines) -> None:
    """Per-tap distances through the feature-reuse path equal the pair graph's, the first batch
    (reference computed with it) and the next (reference from the cache) alike; the cache
    holds the reference's own features, not views that keep a whole batch alive."""
    from collections import Counter
    from pathlib import Path

    from dps_fast.pipeline import FeatureCache
    from dps_fast.pipeline.features import per_tap_reusing_features

    eng = engines("lpips-squeeze")
    _, _, u8a, u8b = _folders(tmp_path)
    ref = Path("ref.png")
    pairs = [((Path(f"d{i}.png"), u8b[i]), (ref, u8a[0])) for i in range(5)]
    uses: Counter[Path | None] = Counter({ref: 10, **{Path(f"d{i}.png"): 1 for i in range(5)}})
    cache = FeatureCache(1 << 30)
    want = eng.score(u8b, np.repeat(u8a[:1], 5, axis=0), per_layer=True)
    first = per_tap_reusing_features(0, eng, pairs, cache, uses)
    kept = cache.get((0, ref, u8a[0].shape))
    assert kept is not None and all(f.base is None for f in kept)
    again = per_tap_reusing_features(0, eng, pairs[::-1], cache, uses)
    np.testing.assert_allclose(first, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(again, want[::-1], rtol=0, atol=1e-6)


def test_distance_matrix(tmp_path, engines) -> None:
    eng = engines("lpips-squeeze")
    da, _, u8a, _ = _folders(tmp_path, n=4)
    (da / "broken.png").unlink()
    m, labels = dps_fast.distance_matrix(da, engine=eng)
    assert labels == ["00.png", "01.png", "02.png", "03.png"]
    assert m.shape == (4, 4) and np.allclose(m, m.T) and np.all(np.diag(m) == 0)
    np.testing.assert_allclose(m[0, 1:], eng.score(u8a[:1], u8a[1:]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["lpips-squeeze", "dists", "dps-resnet18"])
def test_pairwise_matches_pair_scores(engines, model) -> None:
    """Every head: one trunk run per image, then 1-vs-rest head runs (DISTS's repeats row i)."""
    eng = engines(model)
    x, _ = distortion_pairs(5, 64, 64, seed=11)
    m = eng.pairwise(x)
    assert m.shape == (5, 5) and np.array_equal(m, m.T) and np.all(np.diag(m) == 0)
    i, j = np.triu_indices(5, 1)
    np.testing.assert_allclose(m[i, j], eng.score(x[i], x[j]), rtol=1e-5, atol=1e-6)
    assert eng.pairwise(x[:1]).shape == (1, 1)
