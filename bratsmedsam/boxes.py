"""Box frames, named. Every box in this project lives in exactly one of these frames.

Axial slice convention (one place, used everywhere): for a volume ``vol`` indexed ``[i, j, k]``
(NIfTI voxel order), the 2D slice at ``k`` is ``image = vol[:, :, k].T`` so that
``image[y, x] == vol[x, y, k]``: the image column ``x`` is the voxel index ``i`` and the row ``y``
is ``j``. Use :func:`axial_slice` / :func:`put_axial_slice`, never ad-hoc transposes.

Frames:
- ``xyxy`` (pixel XYXY): ``[x0, y0, x1, y1]`` float, inclusive pixel indices of the first and last
  column/row the object covers, in the slice's own pixel grid (shape ``(H, W)``). A one-pixel object at
  (x=5, y=7) is ``[5, 7, 5, 7]``. This is MedSAM's convention for boxes computed from masks.
- ``yolo`` (normalised cx, cy, w, h): what ultralytics reads and writes, relative to ``(W, H)``,
  with ``w = (x1 - x0 + 1) / W`` (the box covers whole pixels).
- model frame (``xyxy`` scaled to a segmenter's input, e.g. 256 or 1024): produced only inside the
  segmenter family code, via :func:`scale_xyxy`.
- ``roi_ijk``: Slicer's ``[i0, i1, j0, j1, k0, k1]`` voxel ROI; pairs may come unsorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import UserError


def axial_slice(vol: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` of a ``[i, j, k, ...]`` volume as an image ``[y=j, x=i, ...]``."""
    return np.swapaxes(vol[:, :, k], 0, 1)


def put_axial_slice(vol: np.ndarray, k: int, image: np.ndarray) -> None:
    """Inverse of :func:`axial_slice`: write an ``[y, x]`` image into ``vol[:, :, k]``."""
    vol[:, :, k] = np.swapaxes(image, 0, 1)


def mask_to_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """Tight pixel-XYXY box of all foreground pixels of a 2D mask, or None if it is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def mask_inside_xyxy(mask: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
    """The pixels of a 2D ``(H, W)`` mask inside one pixel-XYXY box (corners rounded), as a bool mask."""
    out = np.zeros(mask.shape, dtype=bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    out[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    return out


def component_boxes_xyxy(mask: np.ndarray, min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One pixel-XYXY box per 8-connected component of ``mask`` with at least ``min_pixels`` pixels.

    Returns ``(boxes (n, 4) float32, areas (n,) int64)`` sorted by area, largest first.
    """
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    slices = ndimage.find_objects(labels)
    boxes, keep_areas = [], []
    for idx, (sl, area) in enumerate(zip(slices, areas)):
        if area < min_pixels:
            continue
        ys, xs = sl
        boxes.append([xs.start, ys.start, xs.stop - 1, ys.stop - 1])
        keep_areas.append(area)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    order = np.argsort(keep_areas)[::-1]
    return np.asarray(boxes, np.float32)[order], np.asarray(keep_areas, np.int64)[order]


def xyxy_to_yolo(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel XYXY (inclusive) -> normalised ``cx, cy, w, h`` for an image of ``(height, width)``."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    cx = b[:, 0] + w / 2
    cy = b[:, 1] + h / 2
    return np.stack([cx / width, cy / height, w / width, h / height], axis=1)


def yolo_to_xyxy(boxes_yolo: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`xyxy_to_yolo`."""
    b = np.asarray(boxes_yolo, np.float64).reshape(-1, 4)
    w = b[:, 2] * width
    h = b[:, 3] * height
    x0 = b[:, 0] * width - w / 2
    y0 = b[:, 1] * height - h / 2
    return np.stack([x0, y0, x0 + w - 1, y0 + h - 1], axis=1).astype(np.float32)


def ultralytics_to_xyxy(boxes_ultra: np.ndarray) -> np.ndarray:
    """Ultralytics' ``boxes.xyxy`` (continuous corners, exclusive end) -> inclusive pixel XYXY."""
    b = np.asarray(boxes_ultra, np.float32).reshape(-1, 4).copy()
    b[:, 2:] -= 1
    return b


def scale_xyxy(boxes_xyxy: np.ndarray, scale_x: float, scale_y: float | None = None) -> np.ndarray:
    """Scale pixel-XYXY boxes into another grid (e.g. the 256 or 1024 model frame)."""
    scale_y = scale_x if scale_y is None else scale_y
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] *= scale_x
    b[:, [1, 3]] *= scale_y
    return b


def expand_xyxy(box: np.ndarray, margin: float, limit: np.ndarray) -> np.ndarray:
    """Grow a pixel-XYXY box by ``margin`` px per side, then clip it to the ``limit`` box (float32 ``(4,)``)."""
    out = np.asarray(box, np.float32) + np.array([-margin, -margin, margin, margin], np.float32)
    out[[0, 1]] = np.maximum(out[[0, 1]], limit[[0, 1]])
    out[[2, 3]] = np.minimum(out[[2, 3]], limit[[2, 3]])
    return out


def clip_xyxy(boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip boxes to the image; raises if a box lies wholly outside it or is inverted."""
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    if not np.all(np.isfinite(b)):
        raise UserError(f"box coordinates must be finite numbers, got {b.tolist()}")
    bad = (b[:, 0] > b[:, 2]) | (b[:, 1] > b[:, 3])
    if bad.any():
        raise UserError(f"box {b[bad][0].tolist()} is inverted: expected x0 <= x1 and y0 <= y1 (pixel XYXY)")
    outside = (b[:, 2] < 0) | (b[:, 3] < 0) | (b[:, 0] > width - 1) | (b[:, 1] > height - 1)
    if outside.any():
        raise UserError(
            f"box {b[outside][0].tolist()} lies outside the {width}x{height} image (pixel XYXY, x=column, y=row)"
        )
    out = b.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height - 1)
    return out


def box_area(xyxy: np.ndarray) -> np.ndarray:
    """Pixel areas of inclusive pixel-XYXY boxes (n, 4) -> (n,)."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return (xyxy[:, 2] - xyxy[:, 0] + 1) * (xyxy[:, 3] - xyxy[:, 1] + 1)


def box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of inclusive pixel-XYXY boxes: ``(n, 4) x (m, 4) -> (n, m)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0 + 1, 0, None) * np.clip(iy1 - iy0 + 1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass(frozen=True)
class RoiIJK:
    """A sorted voxel ROI: inclusive index ranges ``i0..i1``, ``j0..j1``, ``k0..k1``."""

    i0: int
    i1: int
    j0: int
    j1: int
    k0: int
    k1: int

    @classmethod
    def from_slicer(cls, roi: list | tuple, shape: tuple[int, int, int]) -> "RoiIJK":
        """Slicer's ``[i0, i1, j0, j1, k0, k1]`` (pairs possibly unsorted) -> sorted ROI clipped to ``shape``."""
        try:
            vals = [float(v) for v in roi]
        except (TypeError, ValueError):
            raise UserError(f"roi must be six numbers [i0, i1, j0, j1, k0, k1], got {roi!r}") from None
        if len(vals) != 6 or not all(np.isfinite(vals)):
            raise UserError(f"roi must be six finite numbers [i0, i1, j0, j1, k0, k1], got {roi!r}")
        pairs = []
        for axis, (a, b) in enumerate(zip(vals[0::2], vals[1::2])):
            lo, hi = int(round(min(a, b))), int(round(max(a, b)))
            if hi < 0 or lo > shape[axis] - 1:
                raise UserError(
                    f"roi {roi!r} lies outside the image along axis {'ijk'[axis]} (size {shape[axis]})"
                )
            pairs += [max(lo, 0), min(hi, shape[axis] - 1)]
        return cls(*pairs)

    @property
    def box_xyxy(self) -> np.ndarray:
        """The ROI's in-plane extent as a pixel-XYXY box on an axial slice (x = i, y = j)."""
        return np.array([self.i0, self.j0, self.i1, self.j1], dtype=np.float32)

    @property
    def depth(self) -> int:
        return self.k1 - self.k0 + 1
