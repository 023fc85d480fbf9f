"""Hostile weights, manifests, API arguments and privacy (issue 12).

Items: 13 (zero-byte weights), 19 (weights messages), 18 (manifest header and quotes),
20 (value_range), 24 (ONNX Runtime telemetry off).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dps_fast import Engine
from dps_fast.errors import WeightsError
from dps_fast.export.weights import load_state_dict_file
from dps_fast.io.pairing import PairingError, read_pairs_manifest
from tests.hostile.hostile_util import cli, image


@pytest.fixture(scope="module")
def alex(bundle: Callable[[str], Path]) -> Path:
    return bundle("lpips-alex")


def test_zero_byte_weights_get_a_message(tmp_path) -> None:
    """Item 13: the error handler itself crashed (IndexError) on torch's empty EOFError."""
    zero = tmp_path / "zero.pth"
    zero.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty \(0 bytes\)"):
        load_state_dict_file(zero)
    cut = tmp_path / "cut.pth"
    torch.save({"w": torch.ones(3)}, cut)
    cut.write_bytes(cut.read_bytes()[:10])
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_state_dict_file(cut)
    image(tmp_path / "img" / "x.png", 1)
    res = cli("score", tmp_path / "img", tmp_path / "img", "--weights", zero, code=2)
    assert "empty (0 bytes)" in res.stderr


class _Payload:
    def __reduce__(self):  # what a malicious pickle does when loaded
        return (os.system, ("echo pwned > " + os.devnull,))


def test_malicious_pickle_message_never_suggests_unsafe_loading(tmp_path) -> None:
    """Item 19: the message was torch's text cut mid-sentence, suggesting weights_only=False."""
    bad = tmp_path / "evil.pth"
    torch.save({"w": _Payload()}, bad)
    with pytest.raises(WeightsError) as e:
        load_state_dict_file(bad)
    msg = str(e.value)
    assert "weights_only" not in msg and "refused" in msg and msg.endswith(".")


def test_nan_weights_say_so(tmp_path) -> None:
    """Item 19: NaN weights gave a 34-line validation dump."""
    p = tmp_path / "nan.pth"
    torch.save({"features.0.weight": torch.tensor([1.0, float("nan")])}, p)
    with pytest.raises(WeightsError, match="the weights contain NaN") as e:
        load_state_dict_file(p)
    assert "features.0.weight" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_manifest_with_a_column_twice_is_refused(tmp_path) -> None:
    """Item 18: a header a,a,b silently used the first a."""
    m = tmp_path / "m.csv"
    m.write_text("a,a,b\nx.png,y.png,z.png\n", encoding="utf-8")
    with pytest.raises(PairingError, match="'a' more than once"):
        read_pairs_manifest(m)


def test_manifest_with_an_unterminated_quote_says_so(tmp_path) -> None:
    """Item 18: an unterminated quote was reported as "row 1: empty path"."""
    m = tmp_path / "m.csv"
    m.write_text('a,b\n"x.png,y.png\nz.png,w.png\n', encoding="utf-8")
    with pytest.raises(PairingError, match=r"not valid CSV.*quote"):
        read_pairs_manifest(m)
    m.write_text('a,b\n"x,1.png",y.png\n', encoding="utf-8")  # quoted comma: fine
    assert read_pairs_manifest(m)[0].a == "x,1.png"


@pytest.mark.parametrize("bad", [(0, float("inf")), (0,), (float("nan"), 1), (1, 0), ("a", 1)])
def test_value_range_is_validated(alex, bad) -> None:
    """Item 20: (0, inf) returned zeros, (0,) raised IndexError."""
    eng = Engine(str(alex), device="cpu")
    x = np.random.default_rng(0).random((1, 3, 40, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="value_range"):
        eng.score(x, x, value_range=bad)
    assert eng.score(x, x[:, :, ::-1].copy(), value_range=(0, 1))[0] > 0


def test_onnxruntime_telemetry_is_off(tmp_path, alex) -> None:
    """Item 24: ONNX Runtime kept a telemetry database open under the user's cache."""
    image(tmp_path / "x.png", 1)
    code = (
        "import os, dps_fast\n"
        f"e = dps_fast.Engine({str(alex)!r}, device='cpu')\n"
        f"e.score({str(tmp_path / 'x.png')!r}, {str(tmp_path / 'x.png')!r})\n"
        "links = []\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try: links.append(os.readlink('/proc/self/fd/' + fd))\n"
        "    except OSError: pass\n"
        "print(os.environ['ORT_DISABLE_TELEMETRY'])\n"
        "print(sum('DeveloperTools' in x or 'onnxruntime.db' in x for x in links))\n"
    )
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc (Linux)")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"], out.stdout
