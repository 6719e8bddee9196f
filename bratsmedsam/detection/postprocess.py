"""Volume-aware clean-up of per-slice boxes (off by default; see evaluate_detector's measurement).

Tumours are 3D: a true box on slice z almost always overlaps a box on z-1 or z+1, while many false
positives are isolated. Two rules, both in inclusive pixel XYXY on the axial slices of one volume,
applied in this order:
1. fill a one-slice gap: when slices z-1 and z+1 hold overlapping boxes (IoU >= ``iou_thr``) and z
   holds none that overlaps them, add their average box at z with the lower of the two confidences;
2. drop a box that overlaps (IoU >= ``iou_thr``) no box on the ``reach`` neighbouring slices each side.
"""

from __future__ import annotations

import numpy as np

from ..boxes import box_iou_xyxy
from .predict import SliceBoxes

_EMPTY = SliceBoxes()


def _sorted(xyxy, conf) -> SliceBoxes:
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    conf = np.asarray(conf, np.float32).reshape(-1)
    order = np.argsort(-conf, kind="stable")
    return SliceBoxes(xyxy[order], conf[order])


def fill_gaps(at: dict[int, SliceBoxes], iou_thr: float) -> dict[int, SliceBoxes]:
    """Rule 1 on ``{z: boxes}``; only slices present in ``at`` are filled."""
    out = dict(at)
    for z, cur in at.items():
        below, above = at.get(z - 1, _EMPTY), at.get(z + 1, _EMPTY)
        if not len(below) or not len(above):
            continue
        new_xyxy, new_conf = [], []
        for i, j in zip(*np.nonzero(box_iou_xyxy(below.xyxy, above.xyxy) >= iou_thr)):
            box = (below.xyxy[i] + above.xyxy[j]) / 2
            known = [a for a in (cur.xyxy, np.asarray(new_xyxy, np.float32).reshape(-1, 4)) if len(a)]
            if known and box_iou_xyxy(box[None], np.concatenate(known)).max() >= iou_thr:
                continue
            new_xyxy.append(box)
            new_conf.append(min(below.conf[i], above.conf[j]))
        if new_xyxy:
            out[z] = _sorted(np.concatenate([cur.xyxy, np.asarray(new_xyxy, np.float32)]),
                             np.concatenate([cur.conf, np.asarray(new_conf, np.float32)]))
    return out


def drop_isolated(at: dict[int, SliceBoxes], iou_thr: float, reach: int = 1) -> dict[int, SliceBoxes]:
    """Rule 2 on ``{z: boxes}``: keep a box only if it overlaps a box within ``reach`` slices."""
    out = {}
    for z, cur in at.items():
        others = [at[z + d].xyxy for d in range(-reach, reach + 1) if d and len(at.get(z + d, _EMPTY))]
        if not len(cur) or not others:
            out[z] = SliceBoxes() if len(cur) else cur
            continue
        keep = box_iou_xyxy(cur.xyxy, np.concatenate(others)).max(axis=1) >= iou_thr
        out[z] = SliceBoxes(cur.xyxy[keep], cur.conf[keep])
    return out


def postprocess_volume(boxes: list[SliceBoxes], z: list[int] | None = None, iou_thr: float = 0.1,
                       reach: int = 1, drop: bool = True, fill: bool = True) -> list[SliceBoxes]:
    """Clean the boxes of one volume's slices; returns a new list in the same order.

    ``boxes[n]`` belongs to axial slice ``z[n]`` (default ``z = range(len(boxes))``); an absent slice
    number counts as a slice without boxes, and gaps are filled only on slices that are present.
    """
    z = list(range(len(boxes))) if z is None else [int(v) for v in z]
    if len(z) != len(boxes):
        raise ValueError(f"{len(boxes)} slices of boxes but {len(z)} slice numbers")
    at = dict(zip(z, boxes))
    if fill:
        at = fill_gaps(at, iou_thr)
    if drop:
        at = drop_isolated(at, iou_thr, reach)
    return [at[v] for v in z]
