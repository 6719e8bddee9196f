"""Per-study uncertainty of the current models, for active learning ("label this study next").

Formula (each term in [0, 1]; higher = the models are less sure):

    u_det   = mean over detected boxes of (1 - conf)            (1.0 if nothing was detected:
                                                                  every study here has a tumour)
    u_seg   = mean over segmented boxes of (1 - predicted IoU)   (the segmenter's own quality estimate)
    u_agree = mean over segmented boxes of (1 - IoU(box, tight box of its mask))
                                                                 (detector box vs. mask extent disagree)
    score   = (w_det * u_det + w_seg * u_seg + w_agree * u_agree) / (w_det + w_seg + w_agree)

Defaults: all weights 1. The detector runs on every ``z_step``-th axial slice; the segmenter on at most
``max_seg_slices`` detected slices spread evenly over the detected range (the encoder is the costly part).
Boxes are pixel XYXY (inclusive) on axial slices ``boxes.axial_slice(channels, k)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .atomic import write_json
from .boxes import axial_slice, box_iou_xyxy, mask_to_xyxy
from .protocols import SliceDetector, SliceSegmenter


@dataclass
class StudyUncertainty:
    score: float
    u_det: float
    u_seg: float
    u_agree: float
    n_boxes: int  # detector boxes over the scanned slices
    n_segmented: int  # boxes passed to the segmenter
    models: dict  # {"detector": weights id, "segmenter": model id} the score was computed with


def combine(conf: np.ndarray, iou_pred: np.ndarray, box_mask_iou: np.ndarray,
            weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[float, float, float, float]:
    """The formula above on flat arrays: detector confidences, predicted IoUs, box-vs-mask IoUs.
    Returns ``(score, u_det, u_seg, u_agree)``."""
    conf, iou_pred, box_mask_iou = (np.clip(np.asarray(a, np.float64).reshape(-1), 0, 1)
                                    for a in (conf, iou_pred, box_mask_iou))
    u_det = float(np.mean(1 - conf)) if conf.size else 1.0
    u_seg = float(np.mean(1 - iou_pred)) if iou_pred.size else 1.0
    u_agree = float(np.mean(1 - box_mask_iou)) if box_mask_iou.size else 1.0
    w = np.asarray(weights, np.float64)
    score = float(np.dot(w, [u_det, u_seg, u_agree]) / w.sum())
    return score, u_det, u_seg, u_agree


def study_uncertainty(channels: np.ndarray, detector: SliceDetector, segmenter: SliceSegmenter, z_step: int = 2,
                      max_seg_slices: int = 6,
                      weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      detector_channels: np.ndarray | None = None) -> StudyUncertainty:
    """Score one study: ``channels`` uint8 ``(X, Y, Z, 3)`` (the segmenter's stack; the detector reads
    ``detector_channels`` where given); ``detector.predict`` and ``segmenter.segment_many``."""
    from .pipeline import detector_input

    ks = list(range(0, channels.shape[2], max(1, z_step)))
    seen = detector_input(channels, detector_channels)
    found = detector.predict([axial_slice(seen, k) for k in ks])
    det = [(k, np.asarray(sb.xyxy, np.float32).reshape(-1, 4), np.asarray(sb.conf, np.float32).reshape(-1))
           for k, sb in zip(ks, found) if len(sb.xyxy)]
    conf = np.concatenate([c for _, _, c in det]) if det else np.zeros(0)
    pick = [det[i] for i in sorted(set(np.linspace(0, len(det) - 1, min(len(det), max_seg_slices))
                                       .round().astype(int).tolist()))] if det else []
    ious, agree = [], []
    if pick:
        segs = segmenter.segment_many([axial_slice(channels, k) for k, _, _ in pick], [b for _, b, _ in pick])
        for (_, boxes, _), seg in zip(pick, segs):
            ious.extend(np.asarray(seg.iou, np.float64).tolist())
            for box, mask in zip(boxes, seg.masks):
                tight = mask_to_xyxy(mask)
                agree.append(0.0 if tight is None else float(box_iou_xyxy(box[None], tight[None])[0, 0]))
    score, u_det, u_seg, u_agree = combine(conf, np.asarray(ious), np.asarray(agree), weights)
    models = {"detector": getattr(detector, "weights_id", "?"), "segmenter": getattr(segmenter, "model_id", "?")}
    return StudyUncertainty(score, u_det, u_seg, u_agree, int(conf.size), len(agree), models)


class UncertaintyStore:
    """Scores per study id in one JSON file, written atomically: ``{id: {score, u_det, ..., models, ts}}``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        import json

        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def is_current(self, study_id: str, models: dict) -> bool:
        return self.load().get(study_id, {}).get("models") == models

    def put(self, study_id: str, result: StudyUncertainty) -> None:
        scores = self.load()
        scores[study_id] = {**asdict(result), "ts": time.time()}
        write_json(self.path, scores)

    def most_uncertain(self, candidates: list[str]) -> tuple[str | None, dict | None]:
        """The candidate with the highest stored score (unscored candidates rank after scored ones)."""
        scores = self.load()
        scored = [c for c in candidates if c in scores]
        if scored:
            best = max(scored, key=lambda c: scores[c]["score"])
            return best, scores[best]
        return (candidates[0], None) if candidates else (None, None)
