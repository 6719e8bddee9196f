"""The automatic chain: the detector on every axial slice, then the segmenter on each slice's boxes.

Frames as in :mod:`bratsmedsam.volume`: ``channels`` uint8 ``(X, Y, Z, 3)``, boxes inclusive pixel XYXY
on axial slice ``k`` (``boxes.axial_slice``), keyed by ``k``.
"""

from __future__ import annotations

import numpy as np

from .boxes import axial_slice
from .cleanup import MIN_COMPONENT_MM3, remove_small_components
from .protocols import SliceDetector, SliceSegmenter
from .volume import VolumeResult, check_channels, segment_with_boxes


def detect_volume(channels: np.ndarray, detector: SliceDetector, postprocess: bool = False) -> tuple[dict, dict]:
    """Run the detector over every axial slice -> ``(boxes {k: (n,4) xyxy}, conf {k: (n,)})``, empty slices left out."""
    check_channels(channels)
    images = [axial_slice(channels, k) for k in range(channels.shape[2])]
    found = detector.predict(images)
    if postprocess:
        from .detection.postprocess import postprocess_volume

        found = postprocess_volume(found)
    boxes, conf = {}, {}
    for k, sb in enumerate(found):
        if len(sb.xyxy):
            boxes[k] = np.asarray(sb.xyxy, np.float32).reshape(-1, 4)
            conf[k] = np.asarray(sb.conf, np.float32).reshape(-1)
    return boxes, conf


def detect_and_segment(channels: np.ndarray, detector: SliceDetector, segmenter: SliceSegmenter,
                       postprocess: bool = False, progress: bool = False,
                       min_component_mm3: float = MIN_COMPONENT_MM3,
                       spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> VolumeResult:
    """Detector on all slices, then the segmenter on each slice's detected boxes -> 3D mask, from which
    26-connected components under ``min_component_mm3`` are removed (:mod:`bratsmedsam.cleanup`; 0: kept)."""
    boxes, conf = detect_volume(channels, detector, postprocess=postprocess)
    result = segment_with_boxes(channels, boxes, segmenter, progress=progress)
    result.conf = conf
    result.label = remove_small_components(result.label, min_component_mm3, spacing).label
    return result
