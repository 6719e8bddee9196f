"""3D clean-up of a segmented volume: 26-connected components too small to be a lesion are removed.

Slice-by-slice box-prompted segmentation leaves small disconnected pieces ("speckle") next to the tumour: each is a
false-positive lesion for the BraTS 2023 lesion-wise metric (Dice 0, HD95 374 mm), however small. The threshold is
in mm^3 (voxels at 1 mm), so it means the same on any grid; BraTS itself ignores ground-truth lesions of <= 50 mm^3.
Removal is MONAI's ``RemoveSmallObjects`` (scikit-image underneath). Volumes are bool ``(X, Y, Z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

#: default minimum component volume (mm^3): BraTS's own smallest counted lesion; on the real case it removed 13 of
#: 18 end-to-end false-positive components and nothing the GT boxes found (README "3D clean-up")
MIN_COMPONENT_MM3 = 50.0


@dataclass(frozen=True)
class Cleaned:
    label: np.ndarray  # bool (X, Y, Z)
    components_before: int
    components_removed: int
    voxels_removed: int


def components(label: np.ndarray) -> int:
    """Number of 26-connected foreground components."""
    return int(ndimage.label(np.asarray(label, bool), structure=ndimage.generate_binary_structure(3, 3))[1])


def remove_small_components(label: np.ndarray, min_mm3: float = MIN_COMPONENT_MM3,
                            spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Cleaned:
    """Drop every 26-connected component of ``label`` smaller than ``min_mm3`` (``0`` keeps everything)."""
    from monai.transforms import RemoveSmallObjects

    label = np.asarray(label, bool)
    cc, before = ndimage.label(label, structure=ndimage.generate_binary_structure(3, 3))
    min_size = int(np.ceil(min_mm3 / float(np.prod([float(s) for s in spacing])))) if min_mm3 > 0 else 0
    sizes = np.bincount(cc.ravel())[1:]
    small = sizes < min_size
    if not small.any():  # nothing to remove (also: clean-up off, empty volume)
        return Cleaned(label, int(before), 0, 0)
    out = np.asarray(RemoveSmallObjects(min_size=min_size, connectivity=3)(label[None]))[0].astype(bool)
    return Cleaned(out, int(before), int(small.sum()), int(sizes[small].sum()))
