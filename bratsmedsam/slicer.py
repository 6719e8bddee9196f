"""Slicer's side of the frames: foreground clicks -> boxes, per-slice boxes merged into 3D tumours,
and those tumours as a Markups ROI JSON document.

Clicks and 3D boxes are voxel indices ``[i, j, k]`` of the volume ``(X, Y, Z)``; 2D boxes are inclusive
pixel XYXY on axial slice ``k`` (x = voxel i, y = voxel j; see :mod:`bratsmedsam.boxes`). Markups are in
the reference volume's physical LPS space, millimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .boxes import clip_xyxy
from .errors import UserError


def points_to_boxes(points_ijk, shape: tuple[int, int, int], radius: float = 12.0) -> dict[int, np.ndarray]:
    """Foreground clicks (voxel ``[i, j, k]``) -> one pixel-XYXY box per clicked slice.

    The box spans the slice's clicks grown by ``radius`` px (a single click becomes a square of
    side ``2 * radius + 1``), since the segmenters take box prompts.
    """
    pts = np.asarray(points_ijk, dtype=np.float64)
    if pts.size == 0:
        return {}
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise UserError(f"foreground points must be a list of [i, j, k] voxel indices, got {points_ijk!r}")
    pts = np.rint(pts).astype(int)
    inside = np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)
    if not inside.any():
        raise UserError(f"all foreground points {pts.tolist()} lie outside the image of shape {tuple(shape)}")
    out = {}
    for k in np.unique(pts[inside, 2]):
        p = pts[inside & (pts[:, 2] == k)]
        box = np.array([p[:, 0].min() - radius, p[:, 1].min() - radius, p[:, 0].max() + radius,
                        p[:, 1].max() + radius], np.float32)
        out[int(k)] = clip_xyxy(box[None], shape[1], shape[0])
    return out


@dataclass
class Box3D:
    """A tumour's 3D extent: inclusive voxel ranges, plus the detector evidence merged into it."""

    roi_ijk: tuple[int, int, int, int, int, int]  # (i0, i1, j0, j1, k0, k1), sorted
    conf: float  # highest slice confidence
    mean_conf: float
    n_slices: int
    evidence: float = 0.0  # :func:`evidence_3d`: the sum of its slices' best confidences


def evidence_3d(slice_conf) -> float:
    """How much of a volume a detector saw as one 3D candidate, and how strongly: the sum of its slices' best
    confidences (``slice_conf``: one value per slice). A tumour boxed at 0.28 on 16 slices scores 4.5, a stray spot
    boxed at 0.30 on 4 slices 1.2. The mean of the 3 best slices (stop 27) tied them up: on the real case a quick
    detector boxed a stray spot at up to 0.31 on 4 slices (mean of 3 best 0.20) and the tumour, in pieces, on up to
    17 slices at up to 0.19 (0.17); the spot led and the volume-aware Dice was 0.000 (the sum: 0.892)."""
    return float(sum(float(c) for c in slice_conf))


def merge_boxes_3d(boxes: dict[int, np.ndarray], conf: dict[int, np.ndarray],
                   shape: tuple[int, int, int]) -> list[Box3D]:
    """Merge per-slice pixel-XYXY boxes into 3D boxes: footprints overlapping in neighbouring slices
    (6-connected after rasterising each box into the ``(X, Y, Z)`` grid) form one tumour.
    Returned largest confidence first."""
    occ = np.zeros(shape, dtype=bool)
    for k, bs in boxes.items():
        for x0, y0, x1, y1 in np.rint(np.asarray(bs).reshape(-1, 4)).astype(int):
            occ[max(x0, 0):x1 + 1, max(y0, 0):y1 + 1, k] = True
    lab, n = ndimage.label(occ)
    if n == 0:
        return []
    per: dict[int, list[float]] = {c: [] for c in range(1, n + 1)}
    best: dict[int, dict[int, float]] = {c: {} for c in range(1, n + 1)}  # per candidate: slice -> best confidence
    for k, bs in boxes.items():
        cs = np.asarray(conf.get(k, np.ones(len(bs))), np.float32).reshape(-1)
        for (x0, y0, _, _), c in zip(np.rint(np.asarray(bs).reshape(-1, 4)).astype(int), cs):
            comp = int(lab[min(max(x0, 0), shape[0] - 1), min(max(y0, 0), shape[1] - 1), k])
            if comp:
                per[comp].append(float(c))
                best[comp][int(k)] = max(best[comp].get(int(k), 0.0), float(c))
    out = []
    for comp, sl in enumerate(ndimage.find_objects(lab), start=1):
        si, sj, sk = sl
        cs = per[comp] or [0.0]
        out.append(Box3D((si.start, si.stop - 1, sj.start, sj.stop - 1, sk.start, sk.stop - 1),
                         float(max(cs)), float(np.mean(cs)), len(best[comp]), evidence_3d(best[comp].values())))
    return sorted(out, key=lambda b: -b.conf)


def roi_markups(boxes: list[Box3D], reference: str | os.PathLike, name: str = "tumour") -> dict:
    """3D boxes (voxel ranges) -> a Slicer Markups ROI JSON document in the reference's physical (LPS) space."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    spacing = np.asarray(reader.GetSpacing()[:3])
    origin = np.asarray(reader.GetOrigin()[:3])
    markups = []
    for n, b in enumerate(boxes, start=1):
        i0, i1, j0, j1, k0, k1 = b.roi_ijk
        centre_ijk = np.array([(i0 + i1) / 2, (j0 + j1) / 2, (k0 + k1) / 2])
        centre = origin + direction @ (centre_ijk * spacing)
        size = (np.array([i1 - i0, j1 - j0, k1 - k0]) + 1) * spacing
        markups.append({
            "type": "ROI", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": f"{name}-{n}",
            "roiType": "Box", "center": centre.tolist(), "orientation": direction.ravel().tolist(),
            "size": size.tolist(), "insideOut": False,
            "controlPoints": [{"id": "1", "label": f"{name}-{n}", "position": centre.tolist(),
                               "orientation": direction.ravel().tolist(), "selected": True, "locked": False,
                               "visibility": True, "positionStatus": "defined"}],
            "description": f"conf {b.conf:.3f} (mean {b.mean_conf:.3f}) over {b.n_slices} slices",
        })
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                       "Resources/Schema/markups-schema-v1.0.3.json#", "markups": markups}
