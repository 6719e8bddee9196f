"""BraTS sub-regions from one WT segmentation: the inner regions' prompts derived from the WT mask, region
decoders on the same embeddings, and the composition into the BraTS label map (NCR / ED / ET).

How the inner prompts are made (the automatic chain and a WT-box prompt alike): on every axial slice, each
8-connected component of the WT mask (>= ``min_pixels``) gives one pixel-XYXY box (its tight box); the TC decoder
is prompted with those boxes and its mask is clipped to the WT mask; the ET decoder is prompted with the same boxes
and clipped to the TC mask (``regions.nest``). TC and ET lie inside WT, so the WT mask's box holds them; the inner
decoders are fine-tuned on these parent boxes as well as on their own regions' boxes (``segmenter.samples``).

Frames as in :mod:`bratsmedsam.volume`: ``channels`` uint8 ``(X, Y, Z, 3)``; slice images ``(H, W, 3)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .boxes import axial_slice, component_boxes_xyxy, put_axial_slice
from .regions import PARENT, label_map, nest
from .segmenter.model import union_masks

#: the regions segmented inside the whole tumour, in nesting order
INNER = ("TC", "ET")


def parent_boxes(mask: np.ndarray, min_pixels: int = 10) -> np.ndarray:
    """The inner regions' prompts on one slice: one pixel-XYXY box per 8-connected component of the (WT) ``mask``
    with at least ``min_pixels`` pixels, ``(n, 4)`` float32."""
    return component_boxes_xyxy(np.asarray(mask, bool), min_pixels)[0]


def inner_masks_2d(segmenter, images: Sequence[np.ndarray], wt_masks: Sequence[np.ndarray], min_pixels: int = 10,
                   regions: Sequence[str] = INNER) -> dict[str, list[np.ndarray]]:
    """Slice level: ``{region: [bool (H, W) per image]}`` for the inner ``regions``, each decoder prompted with the
    WT masks' component boxes (:func:`parent_boxes`) and clipped to its parent (TC to WT, ET to TC). ``segmenter``
    is a :class:`~bratsmedsam.segmenter.Segmenter` with those region decoders."""
    boxes = [parent_boxes(m, min_pixels) for m in wt_masks]
    out = {"WT": [np.asarray(m, bool) for m in wt_masks]}
    for r in regions:
        res = segmenter.segment_many(list(images), boxes, region=r)
        out[r] = [union_masks(x.masks, m.shape) for x, m in zip(res, wt_masks)]
    for i in range(len(wt_masks)):
        nested = nest({r: out[r][i] for r in out})
        for r in regions:
            out[r][i] = nested[r]
    return {r: out[r] for r in regions}


def inner_volumes(channels: np.ndarray, wt: np.ndarray, segmenter, min_pixels: int = 10, batch_slices: int = 8,
                  regions: Sequence[str] = INNER) -> dict[str, np.ndarray]:
    """Volume level: ``{region: bool (X, Y, Z)}`` for the inner ``regions`` of a WT volume, slice by slice as
    :func:`inner_masks_2d` (only slices with WT are prompted; their embeddings are the ones WT used)."""
    out = {r: np.zeros(wt.shape, bool) for r in regions}
    ks = [int(k) for k in np.flatnonzero(np.asarray(wt, bool).any(axis=(0, 1)))]
    for i in range(0, len(ks), batch_slices):
        chunk = ks[i:i + batch_slices]
        got = inner_masks_2d(segmenter, [axial_slice(channels, k) for k in chunk],
                             [axial_slice(wt, k) for k in chunk], min_pixels, regions)
        for r in regions:
            for k, m in zip(chunk, got[r]):
                put_axial_slice(out[r], k, m)
    return out


def brats_label(channels: np.ndarray, wt: np.ndarray, segmenter, min_pixels: int = 10) -> np.ndarray:
    """The BraTS label map uint8 ``(X, Y, Z)`` (1 NCR, 2 ED, 3 ET) of a WT volume: its TC and ET from
    :func:`inner_volumes`, nested and composed (``regions.label_map``). Only the slab of slices holding WT is
    worked on (a one-slice prompt pays for one slice, not for the whole volume)."""
    wt = np.asarray(wt, bool)
    out = np.zeros(wt.shape, np.uint8)
    ks = np.flatnonzero(wt.any(axis=(0, 1)))
    if not len(ks):
        return out
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    slab = wt[:, :, k0:k1]
    inner = inner_volumes(channels[:, :, k0:k1], slab, segmenter, min_pixels)
    out[:, :, k0:k1] = label_map(slab, inner["TC"], inner["ET"])
    return out


def region_voxels(labels: np.ndarray) -> dict[str, int]:
    """``{"WT", "TC", "ET": voxels}`` of a BraTS label map."""
    n = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=4)
    return {"WT": int(n[1:].sum()), "TC": int(n[1] + n[3]), "ET": int(n[3])}


__all__ = ["INNER", "PARENT", "brats_label", "inner_masks_2d", "inner_volumes", "parent_boxes", "region_voxels"]
