"""BraTS sub-regions: the inner regions (TC, ET) as heads of the one mask decoder, their prompts, and the
composition into the BraTS label map (NCR / ED / ET).

Every region is a head (mask-token slot) of ONE decoder (``segmenter.model``): one decoder pass gives every
region's mask for the same box. Two ways the inner regions are prompted:

- **The interactive prompt** (a WT box: Slicer's flat or 3D ROI, foreground clicks): :class:`SameBoxRegions`
  decodes WT, TC and ET for every box the volume code prompts (the ROI box, each propagated box), in the pass that
  segments WT, and keeps the inner masks; :meth:`SameBoxRegions.label_map` unites each slice's inner masks of the
  prompts WT kept (``VolumeResult.boxes``), clips them (``regions.nest``: ET in TC in WT) and composes the label
  map. No pass beyond WT's: the inner prompt is WT's own prompt box.
- **The automatic chain** (detector + 3D propagation of WT, and the offline "derived" evaluation rows): after WT,
  one extra pass per WT slice: each 8-connected component of the WT mask (>= ``min_pixels``) gives its tight
  pixel-XYXY box, and that pass emits the TC and ET heads together (:func:`inner_masks_2d`); clipped as above.

Both prompts are WT boxes, and fine-tuning trains every head on WT component boxes (``segmenter.samples``).
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
    """Slice level: ``{region: [bool (H, W) per image]}`` for the inner ``regions``, from ONE decoder pass per WT
    component box (:func:`parent_boxes`) emitting every inner head (``segment_regions``), each clipped to its
    parent (TC to WT, ET to TC). ``segmenter``: a :class:`~bratsmedsam.segmenter.Segmenter` serving them."""
    boxes = [parent_boxes(m, min_pixels) for m in wt_masks]
    got = segmenter.segment_regions(list(images), boxes, tuple(regions))
    out = {"WT": [np.asarray(m, bool) for m in wt_masks]}
    for r in regions:
        out[r] = [union_masks(x.masks, m.shape) for x, m in zip(got[r], wt_masks)]
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


def clean_inner(inner: dict, min_mm3: float, spacing=(1.0, 1.0, 1.0)) -> dict:
    """The automatic chain's 3D clean-up of inner regions (``cleanup.remove_small_components``, as WT's): TC's
    components under ``min_mm3`` go, then ET's (ET kept inside the cleaned TC); ``min_mm3 = 0``: unchanged."""
    from .cleanup import remove_small_components

    if min_mm3 <= 0:
        return dict(inner)
    out = dict(inner)
    if "TC" in out:
        out["TC"] = remove_small_components(out["TC"], min_mm3, spacing).label
    if "ET" in out:
        et = out["ET"] & out["TC"] if "TC" in out else out["ET"]
        out["ET"] = remove_small_components(et, min_mm3, spacing).label
    return out


def brats_label(channels: np.ndarray, wt: np.ndarray, segmenter, min_pixels: int = 10, min_component_mm3: float = 0.0,
                spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The BraTS label map uint8 ``(X, Y, Z)`` (1 NCR, 2 ED, 3 ET) of a WT volume (the automatic chain): its TC and
    ET from :func:`inner_volumes`, cleaned (:func:`clean_inner`, ``min_component_mm3``), nested and composed
    (``regions.label_map``). Only the slab of slices holding WT is worked on (a one-slice prompt pays for one slice,
    not for the whole volume)."""
    wt = np.asarray(wt, bool)
    out = np.zeros(wt.shape, np.uint8)
    ks = np.flatnonzero(wt.any(axis=(0, 1)))
    if not len(ks):
        return out
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    slab = wt[:, :, k0:k1]
    inner = clean_inner(inner_volumes(channels[:, :, k0:k1], slab, segmenter, min_pixels), min_component_mm3, spacing)
    out[:, :, k0:k1] = label_map(slab, inner["TC"], inner["ET"])
    return out


class SameBoxRegions:
    """The interactive prompt's segmenter (module docstring): a
    :class:`~bratsmedsam.protocols.SliceSegmenter` returning WT's results, whose every pass also decodes the
    ``inner`` heads for the same boxes and keeps their masks, keyed by the slice's content and the box."""

    def __init__(self, segmenter, inner: Sequence[str] = INNER):
        from .segmenter.cache import image_key

        self.seg, self.inner, self._key = segmenter, tuple(inner), image_key
        self._kept: dict[tuple[str, bytes], dict[str, np.ndarray]] = {}

    def segment(self, image, boxes_xyxy):
        return self.segment_many([image], [boxes_xyxy])[0]

    def segment_many(self, images, boxes_per_image, progress: bool = False):
        got = self.seg.segment_regions(images, boxes_per_image, ("WT", *self.inner), progress=progress)
        for i, (im, boxes) in enumerate(zip(images, boxes_per_image)):
            key = self._key(im)
            for n, box in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
                self._kept[key, box.tobytes()] = {r: got[r][i].masks[n] for r in self.inner}
        return got["WT"]

    def inner_slices(self, channels: np.ndarray, result) -> dict[int, dict[str, np.ndarray]]:
        """``{k: {region: bool (H, W)}}``: on every slice ``k`` of a WT ``VolumeResult`` made through this
        segmenter, the inner masks of the prompts it kept (``result.boxes[k]``) united, nested in WT."""
        out = {}
        for k, boxes in result.boxes.items():
            key = self._key(axial_slice(channels, k))
            kept = [self._kept[key, b.tobytes()] for b in np.asarray(boxes, np.float32).reshape(-1, 4)]
            if kept:
                nested = nest({"WT": axial_slice(result.label, k),
                               **{r: np.any([m[r] for m in kept], axis=0) for r in self.inner}})
                out[int(k)] = {r: nested[r] for r in self.inner}
        return out

    def label_map(self, channels: np.ndarray, result) -> np.ndarray:
        """The BraTS label map uint8 ``(X, Y, Z)`` of a WT ``VolumeResult`` made through this segmenter (composed on
        the slab of prompted slices only: a one-slice prompt pays for one slice)."""
        out = np.zeros(result.label.shape, np.uint8)
        inner = self.inner_slices(channels, result)
        if not inner:
            return out
        k0, k1 = min(inner), max(inner) + 1
        slab = {r: np.zeros((*result.label.shape[:2], k1 - k0), bool) for r in self.inner}
        for k, masks in inner.items():
            for r in self.inner:
                put_axial_slice(slab[r], k - k0, masks[r])
        out[:, :, k0:k1] = label_map(result.label[:, :, k0:k1], slab["TC"], slab["ET"])
        return out


def region_voxels(labels: np.ndarray) -> dict[str, int]:
    """``{"WT", "TC", "ET": voxels}`` of a BraTS label map."""
    n = np.bincount(np.asarray(labels, np.uint8).ravel(), minlength=4)
    return {"WT": int(n[1:].sum()), "TC": int(n[1] + n[3]), "ET": int(n[3])}


__all__ = ["INNER", "PARENT", "SameBoxRegions", "brats_label", "clean_inner", "inner_masks_2d", "inner_volumes", "parent_boxes",
           "region_voxels"]
