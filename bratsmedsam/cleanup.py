"""3D clean-up of a segmented volume: 26-connected components too small to be a lesion are removed, and (the
automatic per-slice chain) components no confident detection supports.

Slice-by-slice box-prompted segmentation leaves small disconnected pieces ("speckle") next to the tumour: each is a
false-positive lesion for the BraTS 2023 lesion-wise metric (Dice 0, HD95 374 mm), however small. The threshold is
in mm^3 (voxels at 1 mm), so it means the same on any grid; BraTS itself ignores ground-truth lesions of <= 50 mm^3.
Removal is MONAI's ``RemoveSmallObjects`` (scikit-image underneath). Volumes are bool ``(X, Y, Z)``.

Support (:func:`remove_unsupported_components`): segmenting every detected box on its slice turns each of a weak
detector's stray boxes into a 3D component of its own, often larger than any size threshold; a component is kept
only when at least one box of confidence >= :data:`MIN_SUPPORT_CONF` vouches for it (boxes: inclusive pixel XYXY on
axial slice ``k``, x = voxel i, y = voxel j, as in :mod:`bratsmedsam.volume`). A box vouches for one lesion: the
component with the most voxels inside the box on its slice (the detector draws one box per lesion, so a fragment the
segmenter left beside the lesion inside the same box is not vouched for: on the real case, an 88 mm^3 fragment in the
tumour's own box was a false-positive lesion that halved the lesion-wise Dice). A box under :data:`SURE_CONF`
vouches only for a lesion that boxes (of any confidence) point at on at least :data:`MIN_SUPPORT_SLICES` axial
slices: a lesion of 50 mm^3 spans several 1 mm slices, so a detector that saw something on one slice alone, fairly
but not very confidently, has not seen a lesion (on the synthetic test case, one such box at 0.39 seeded a 6,000-voxel
false lesion: volume Dice 0.772 with it, 0.829 without; no real-case row changed). A multifocal tumour keeps every
lesion a confident box was drawn around; prompts a person gave (GT boxes, an ROI) carry no confidence and are all
support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

#: default minimum component volume (mm^3): BraTS's own smallest counted lesion; on the real case it removed 13 of
#: 18 end-to-end false-positive components and nothing the GT boxes found (README "3D clean-up")
MIN_COMPONENT_MM3 = 50.0
#: a detection this confident supports the component it lies on: the volume-aware mode's seed confidence
#: (``pipeline.SEED_CONF``, chosen on held-out synthetic cases), so both automatic modes trust the same boxes
MIN_SUPPORT_CONF = 0.3
#: a box this confident vouches for its lesion on its own; a less confident one (>= MIN_SUPPORT_CONF) only for a
#: lesion the detector boxes on at least MIN_SUPPORT_SLICES axial slices (module docstring)
SURE_CONF = 0.5
MIN_SUPPORT_SLICES = 2


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


def remove_unsupported_components(label: np.ndarray, boxes: dict, conf: dict, min_conf: float = MIN_SUPPORT_CONF,
                                  sure_conf: float = SURE_CONF, min_slices: int = MIN_SUPPORT_SLICES) -> Cleaned:
    """Keep the 26-connected components of ``label`` that a box ``boxes[k]`` vouches for - the component with the most
    voxels inside the box on its axial slice ``k`` (module docstring) - with ``conf[k] >= sure_conf``, or with
    ``conf[k] >= min_conf`` where boxes vouch for that component on at least ``min_slices`` slices; drop the others.
    The component with the most 3D evidence (``slicer.evidence_3d`` of its vouching boxes, ties to the most
    confident box) is always kept: a weak detector still yields its best guess, and it is the volume-aware mode's
    lead candidate (``pipeline.lead_candidate``)."""
    from .slicer import evidence_3d

    label = np.asarray(label, bool)
    cc, before = ndimage.label(label, structure=ndimage.generate_binary_structure(3, 3))
    top = np.full(before + 1, -1.0)  # per component: the most confident box vouching for it
    seen: list[dict[int, float]] = [{} for _ in range(before + 1)]  # slice -> best confidence of a box vouching
    X, Y = label.shape[:2]
    for k, bs in boxes.items():
        for b, c in zip(np.asarray(bs, np.float32).reshape(-1, 4), np.asarray(conf.get(k, ()), np.float32).reshape(-1)):
            x0, y0 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
            x1, y1 = min(X - 1, int(np.ceil(b[2]))), min(Y - 1, int(np.ceil(b[3])))
            counts = np.bincount(cc[x0:x1 + 1, y0:y1 + 1, int(k)].ravel(), minlength=before + 1)
            counts[0] = 0
            if not counts.any():
                continue
            vouched = int(counts.argmax())
            top[vouched] = max(top[vouched], float(c))
            seen[vouched][int(k)] = max(seen[vouched].get(int(k), 0.0), float(c))
    keep = (top >= sure_conf) | ((top >= min_conf) & (np.array([len(s) for s in seen]) >= min_slices))
    keep[0] = False
    evidence = np.array([evidence_3d(s.values()) if s else -1.0 for s in seen])
    evidence[0] = -1.0
    if evidence.max() >= 0:  # as the volume-aware mode's lead: the detector's strongest 3D evidence
        keep[int(np.lexsort((top, evidence))[-1])] = True
    out = keep[cc]
    dropped = int(before) - int(keep.sum())
    return Cleaned(out, int(before), dropped, int(label.sum() - out.sum()))

