"""Interactive MedSAM: Slicer's ROI (IJK) or foreground clicks -> label volume.

BraTS mode (the default): the prompt is a WT box; every pass that segments WT emits TC and ET for the same box
(``bratsmedsam.subregions.SameBoxRegions``: one decoder, a head per region), and the result is the label map
NCR 1 / ED 2 / ET 3. ``region`` (WT, TC or ET) in the request prompts that region's head with the box instead and
returns that region alone."""

from __future__ import annotations

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferType

from bratsmedsam.boxes import RoiIJK
from bratsmedsam.errors import UserError
from bratsmedsam.slicer import points_to_boxes
from bratsmedsam.subregions import SameBoxRegions
from bratsmedsam.volume import segment_roi, segment_with_boxes

from .base import StudyInferTask


class MedSamInfer(StudyInferTask):
    def __init__(self, store, cfg, prefetch):
        super().__init__(store, cfg, InferType.DEEPEDIT, 3,
                         "MedSAM-family segmenter prompted by an ROI box (flat: that slice; 3D: every slice, "
                         "propagated from the largest) or foreground clicks", prefetch=prefetch)

    def is_valid(self) -> bool:
        return self.store.has_segmenter()

    def run(self, study, request):
        full = self.store.segmenter()
        region = self.request_region(request, full)
        same_box = SameBoxRegions(full) if region is None else None  # the BraTS map: every head in WT's passes
        seg = same_box or full.region(region or full.regions[0])
        shape = study.channels.shape[:3]
        roi = request.get("roi")
        fg = request.get("foreground") or []
        if roi not in (None, [], ""):
            r = RoiIJK.from_slicer(roi, shape)
            if r.depth > self.cfg.max_roi_depth:
                raise HTTPException(status_code=422, detail=f"the ROI spans {r.depth} slices; this server segments "
                                                            f"at most {self.cfg.max_roi_depth} per request")
            sl = request.get("slice")
            k = int(sl) if isinstance(sl, (int, float)) and not isinstance(sl, bool) else None
            res = segment_roi(study.channels, r, seg, slice_index=k, flat_max_depth=self.cfg.flat_roi_max_depth)
            prompt = {"roi_ijk": [r.i0, r.i1, r.j0, r.j1, r.k0, r.k1], "flat": r.depth <= self.cfg.flat_roi_max_depth}
        elif fg:
            res = segment_with_boxes(study.channels, points_to_boxes(fg, shape), seg)
            prompt = {"foreground": np.asarray(fg).tolist()}
        else:
            raise UserError("medsam needs a prompt: 'roi' [i0, i1, j0, j1, k0, k1] or 'foreground' [[i, j, k], ...]")
        label, voxels = self.compose(study, full, res, region, same_box)
        return label, {
            "model_id": full.model_id, "decoder": full.meta.get("checkpoint_sha256") or full.model_id,
            "region": (region if self.cfg.multi else self.cfg.region) or "BraTS", "region_voxels": voxels,
            "prompt": prompt, "slices": res.slices,
            "iou": {str(k): [round(float(v), 4) for v in res.iou[k]] for k in res.slices},
            "voxels": int(res.label.sum()),
        }
