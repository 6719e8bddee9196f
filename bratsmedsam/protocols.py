"""What the volume code needs of a detector and a segmenter: two small ``Protocol``s.

The real ones are :class:`bratsmedsam.detector.Detector` and :class:`bratsmedsam.segmenter.Segmenter`;
tests pass stand-ins with the same methods. Slices are uint8 ``(H, W, 3)``; boxes are inclusive pixel
XYXY float32 ``(n, 4)`` on that slice (see :mod:`bratsmedsam.boxes`).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class SliceBoxesLike(Protocol):
    """One slice's detections: ``xyxy`` ``(n, 4)`` pixel XYXY and ``conf`` ``(n,)``, best first."""

    xyxy: np.ndarray
    conf: np.ndarray


class SliceMasks(Protocol):
    """One slice's segmentation: ``masks`` bool ``(n, H, W)`` (one per box), ``iou`` ``(n,)`` predicted IoU."""

    masks: np.ndarray
    iou: np.ndarray


class SliceDetector(Protocol):
    """Boxes for each slice, in order."""

    def predict(self, images: Sequence[np.ndarray]) -> list[SliceBoxesLike]: ...


class SliceSegmenter(Protocol):
    """Masks for the boxes of each slice (one call for many slices lets the encoder batch)."""

    def segment(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> SliceMasks: ...

    def segment_many(self, images: Sequence[np.ndarray], boxes_per_image: Sequence[np.ndarray]) -> list[SliceMasks]:
        ...
