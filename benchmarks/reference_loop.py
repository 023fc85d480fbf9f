"""The reference way to score two folders: one pair at a time with the PyTorch ``lpips`` package.

    python benchmarks/reference_loop.py DIR_A DIR_B OUT.csv --net alex --weights TRUNK.pth

What ``lpips_2dirs.py`` (shipped with the lpips repository) and similar command-line tools do:
for every file name present in both folders (sorted), decode both images (here with Pillow),
turn them into [1, 3, H, W] tensors, run ``lpips.LPIPS`` under ``torch.no_grad()`` and write a
CSV row. ``--weights`` loads the same trunk state dict (torchvision format) the dps-fast bundle
was exported from, so the scores are comparable. The e2e benchmark (e2e_folder.py) times this
script as a whole process, start-up included.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

NETS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def load_model(net: str, weights: Path | None) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` notes
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=weights is not None, verbose=False)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        # lpips' slices keep torchvision's module indices: slice1.0 is features.0, …
        mapped = {k: state["features." + k.split(".", 1)[1]] for k in model.net.state_dict()}
        model.net.load_state_dict(mapped, strict=True)
    return model.eval()


def to_tensor(path: Path) -> torch.Tensor:
    """Pillow decode → float tensor [1, 3, H, W] in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir_a", type=Path)
    ap.add_argument("dir_b", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--net", default="alex", choices=sorted(NETS))
    ap.add_argument("--weights", type=Path, default=None, help="trunk state dict (torchvision)")
    args = ap.parse_args(argv)

    model = load_model(args.net, args.weights)
    names = sorted(p.name for p in args.dir_a.iterdir() if (args.dir_b / p.name).is_file())
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["a", "b", "score"])
        for name in names:
            a = to_tensor(args.dir_a / name)
            b = to_tensor(args.dir_b / name)
            with torch.no_grad():
                d = model(a, b, normalize=True)  # [0, 1] inputs, as lpips_2dirs does via im2tensor
            w.writerow([name, name, f"{float(d):.9g}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
