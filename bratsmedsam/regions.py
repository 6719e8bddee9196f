"""BraTS target regions as unions of labels (1 NCR, 2 ED, 3 ET)."""

from __future__ import annotations

import numpy as np

from .errors import UserError

REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def parse_region(region: str) -> str:
    """``"wt"`` / ``"WT"`` -> ``"WT"``; :class:`UserError` for anything not in :data:`REGIONS`."""
    key = str(region).strip().upper()
    if key not in REGIONS:
        raise UserError(f"unknown region {region!r}: expected one of {', '.join(REGIONS)}")
    return key


def region_mask(seg: np.ndarray, region: str = "WT") -> np.ndarray:
    """Bool array of ``seg``'s shape: voxels whose label belongs to ``region`` (WT, TC or ET)."""
    return np.isin(seg, REGIONS[parse_region(region)])
