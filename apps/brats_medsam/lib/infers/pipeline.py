"""Automatic: detector over every axial slice -> segmenter seeded by its confident boxes, propagated through the
volume (``--conf auto_mode propagate``, the default) or on every detected box (``slices``) -> label volume.
BraTS mode: that is WT; TC and ET follow from its mask, one more decoder pass per WT slice emitting both heads
(``bratsmedsam.subregions.brats_label``) -> the label map."""

from __future__ import annotations

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType

from bratsmedsam.pipeline import segment_automatic
from bratsmedsam.slicer import merge_boxes_3d

from .base import StudyInferTask


class PipelineInfer(StudyInferTask):
    def __init__(self, store, cfg, prefetch):
        super().__init__(store, cfg, InferType.SEGMENTATION, 3,
                         "YOLO detector -> MedSAM seeded by confident boxes, propagated through the volume",
                         prefetch=prefetch)

    def is_valid(self) -> bool:
        return self.store.has_detector() and self.store.has_segmenter()

    def run(self, study, request):
        det, full = self.store.detector(), self.store.segmenter()
        region = self.request_region(request, full)
        seg = full.region(region or full.regions[0])
        res = segment_automatic(study.channels, det, seg, self.cfg.auto_mode, postprocess=self.cfg.postprocess,
                                min_component_mm3=self.cfg.min_component_mm3, spacing=study.spacing,
                                detector_channels=study.detector_channels)
        tumours = merge_boxes_3d(res.boxes, res.conf, study.channels.shape[:3])
        label, voxels = self.compose(study, full, res, region)
        return label, {
            "model_id": full.model_id, "region": (region if self.cfg.multi else self.cfg.region) or "BraTS", "region_voxels": voxels,
            "detector_id": det.weights_id, "mode": self.cfg.auto_mode, "slices": res.slices,
            "tumours": [{"roi_ijk": list(b.roi_ijk), "conf": round(b.conf, 4)} for b in tumours],
            "mean_iou": round(float(np.mean(np.concatenate(list(res.iou.values())))), 4) if res.iou else None,
            "voxels": int(res.label.sum()),
        }
