"""``dps-fast evaluate``: how well measures agree with people, per model, tap and dataset.

Readers for BAPPS, TID2013, KADID-10k, PIPAL, LIVE and a generic MOS manifest; scoring through
the engine's pipeline into resumable score files; the field's measures (2AFC, JND mAP, SROCC,
KROCC, PLCC raw and fitted, RMSE, outlier ratio) with clustered BCa bootstrap CIs. scipy and
matplotlib (the ``[eval]`` extra) are imported only when used.
"""

from __future__ import annotations

from .items import Dataset, Item, ItemPair, LayoutError
from .run import EvalConfig, EvalResult, evaluate

__all__ = ["Dataset", "EvalConfig", "EvalResult", "Item", "ItemPair", "LayoutError", "evaluate"]
