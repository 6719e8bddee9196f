"""Detection: YOLO on every axial slice, boxes merged into 3D tumours, returned as a Slicer Markups ROI JSON."""

from __future__ import annotations

from monailabel.interfaces.tasks.infer_v2 import InferType

from bratsmedsam.atomic import write_json
from bratsmedsam.pipeline import detect_volume
from bratsmedsam.slicer import merge_boxes_3d, roi_markups

from .base import StudyInferTask, result_path


class DetectorInfer(StudyInferTask):
    def __init__(self, store, cfg, prefetch):
        super().__init__(store, cfg, InferType.DETECTION, 3,
                         "YOLO tumour boxes on all axial slices, merged per tumour", prefetch=prefetch)

    def is_valid(self) -> bool:
        return self.store.has_detector()

    def run(self, study, request):
        det = self.store.detector()
        boxes, conf = detect_volume(study.detector_channels, det, postprocess=self.cfg.postprocess)
        tumours = merge_boxes_3d(boxes, conf, study.detector_channels.shape[:3])
        markups = roi_markups(tumours, study.reference)
        return markups, {
            "detector_id": det.weights_id,
            "tumours": [{"roi_ijk": list(b.roi_ijk), "conf": round(b.conf, 4), "mean_conf": round(b.mean_conf, 4),
                         "n_slices": b.n_slices} for b in tumours],
            "slices": sorted(boxes),
        }

    def write(self, result, study, ext):
        out = result_path(".json")
        write_json(out, result)
        return out
