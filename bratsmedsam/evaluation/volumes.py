"""3D per case: a test case's axial slices segmented and stacked, scored as a volume.

GT prompts: one pixel-XYXY box per 8-connected component of each axial slice's mask (>= ``min_box``
pixels); end to end: the detector on every axial slice (``pipeline.detect_volume``). Scores: whole-volume
Dice and HD95 (MONAI) and the BraTS 2023 lesion-wise Dice and HD95 (``metrics.lesion_wise``) of the
dataset's target region. Volumes are ``(X, Y, Z)``; slices ``boxes.axial_slice``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cleanup import remove_small_components
from ..errors import UserError
from ..metrics import dice, hd95, lesion_wise
from .records import CLEANED, DERIVED, GT, PROPAGATED, CaseRecord


def gt_boxes_volume(gt: np.ndarray, min_pixels: int) -> dict[int, np.ndarray]:
    """GT prompts for 3D: one pixel-XYXY box per 8-connected component of each axial slice's mask."""
    from ..boxes import axial_slice, component_boxes_xyxy

    out = {}
    for k in np.flatnonzero(gt.any(axis=(0, 1))):
        b, _ = component_boxes_xyxy(axial_slice(gt, int(k)), min_pixels=min_pixels)
        if len(b):
            out[int(k)] = b
    return out


def per_slice_label(channels: np.ndarray, boxes: dict, segmenter, detected: bool) -> np.ndarray:
    """The per-slice chain's 3D mask for ``boxes``: a detector's (``detected``) prompted as the app's ``slices``
    mode prompts them, each box once more from its mask's box (``pipeline.detect_and_segment``); GT boxes once."""
    from ..volume import REFINE_MARGIN, segment_with_boxes

    return segment_with_boxes(channels, boxes, segmenter, refine=REFINE_MARGIN if detected else 0.0).label


def score_volume(case: str, segmenter: str, boxes: str, n_prompted: int, pred: np.ndarray, gt: np.ndarray,
                 spacing, region: str = "WT") -> CaseRecord:
    """One :class:`CaseRecord` from a predicted and a ground-truth bool ``(X, Y, Z)`` volume (spacing in mm)."""
    lw = lesion_wise(pred, gt, spacing=spacing)
    return CaseRecord(case, segmenter, boxes, n_prompted, volume_dice=dice(pred, gt),
                      volume_hd95=hd95(pred, gt, spacing=spacing), lesion_dice=lw.dice, lesion_hd95=lw.hd95,
                      lesion_n_gt=lw.n_gt_lesions, lesion_n_detected=lw.n_detected,
                      lesion_n_fp=lw.n_false_positives, pred_voxels=int(pred.sum()), gt_voxels=int(gt.sum()),
                      region=region)


def case_files(studies: Path) -> dict:
    """``{case_id: CaseFiles}`` of the dataset's studies folder (from prepare.json)."""
    from ..cases import discover_cases

    if not Path(studies).is_dir():
        raise UserError(f"the dataset's studies folder {studies} (from prepare.json) does not exist; "
                        "3D metrics need it (or pass --no-volumes)")
    return {c.case_id: c for c in discover_cases(studies)}


def evaluate_volume(files: dict, case: str, stacks, region: str, min_box: int, percentiles,
                    segmenters: dict, detectors: dict, min_component_mm3: float = 0.0,
                    propagation: bool = False, regions=None) -> list[CaseRecord]:
    """3D records of one case: every segmenter x (GT boxes, each detector); with ``min_component_mm3`` also each
    prediction after the 3D clean-up, as box source ``<source>+cleanup`` (:func:`cleaned`); with ``propagation``
    also each detector's volume-aware segmentation (``pipeline.detect_and_propagate``), as ``<detector>+propagate``.
    ``stacks`` (``intensity.Stacks``): the dataset's; detectors read its detector stack, segmenters the other."""
    from ..cases import load_case
    from ..intensity import compose_stacks
    from ..pipeline import clean_per_slice, detect_with_weak
    from ..regions import region_mask

    if case not in files:
        raise UserError(f"test case {case} is not in the studies folder any more; 3D metrics need its volumes")
    vol = load_case(files[case], modalities=stacks.modalities, with_seg=True)
    seen, channels = compose_stacks(vol, stacks, *percentiles)   # the same slices prepare wrote
    gt = region_mask(vol.seg, region)
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(vol.affine)[:3, :3], axis=0))
    prompts, confidences, weak = {GT: gt_boxes_volume(gt, min_box)}, {}, {}
    for name, det in detectors.items():  # one pass: the detections, and the weak boxes the propagation follows
        prompts[name], confidences[name], weak[name] = detect_with_weak(seen, det)
    if regions and len(regions) > 1:
        return _region_volumes(case, vol.seg, channels, prompts, confidences, weak, segmenters, regions, min_box,
                               spacing, min_component_mm3, propagation)
    out = []
    for row_name, seg in segmenters.items():
        for src, bx in prompts.items():
            pred = per_slice_label(channels, bx, seg, src in confidences)
            out.append(score_volume(case, row_name, src, len(bx), pred, gt, spacing))
            if min_component_mm3 > 0:  # a detector's: also its unsupported components (pipeline.clean_per_slice)
                kept = (clean_per_slice(pred, bx, confidences[src], min_component_mm3, spacing) if src in confidences
                        else remove_small_components(pred, min_component_mm3, spacing).label)
                out.append(score_volume(case, row_name, cleaned(src), len(bx), kept, gt, spacing))
        if propagation:
            from ..pipeline import propagate_detections

            for name in detectors:  # the same detections as the per-slice rows: the detector runs once per case
                res = propagate_detections(channels, prompts[name], confidences[name], seg,
                                           min_component_mm3=min_component_mm3, spacing=spacing, weak=weak[name])
                out.append(score_volume(case, row_name, name + PROPAGATED, len(res.slices), res.label, gt, spacing))
    return out


def _region_volumes(case, seg, channels, prompts, confidences, weak, segmenters, regions, min_box, spacing,
                    min_component_mm3, propagation) -> list[CaseRecord]:
    """3D records of one case for every BraTS region: WT as in :func:`evaluate_volume`; each inner region on its
    own GT boxes (``gt``), and derived from each WT prediction (``subregions.inner_volumes``: from the GT WT boxes'
    as ``gt-wt``, from a detector's as that detector's source, volume-aware included)."""
    from ..pipeline import clean_per_slice, propagate_detections
    from ..regions import region_mask
    from ..subregions import clean_inner, inner_volumes
    from ..volume import segment_with_boxes

    truth = {g: region_mask(seg, g) for g in regions}
    inner = [g for g in regions if g != "WT"]
    out = []

    def add(row, src, g, n, pred):
        out.append(score_volume(case, row, src, n, pred, truth[g], spacing, g))
        if min_component_mm3 > 0 and not src.endswith(PROPAGATED):  # propagated results are cleaned already
            # a detector's (and what was derived from it): also its unsupported components, as per slice for WT
            kept = (clean_per_slice(pred, prompts[src], confidences[src], min_component_mm3, spacing)
                    if src in confidences else remove_small_components(pred, min_component_mm3, spacing).label)
            out.append(score_volume(case, row, cleaned(src), n, kept, truth[g], spacing, g))

    for row_name, sg in segmenters.items():
        wt_preds = {src: (per_slice_label(channels, bx, sg.region("WT"), src in confidences), len(bx))
                    for src, bx in prompts.items()}
        if propagation:
            for name in confidences:
                res = propagate_detections(channels, prompts[name], confidences[name], sg.region("WT"),
                                           min_component_mm3=min_component_mm3, spacing=spacing, weak=weak[name])
                wt_preds[name + PROPAGATED] = (res.label, len(res.slices))
        for src, (wt, n) in wt_preds.items():
            add(row_name, src, "WT", n, wt)
            if src == GT:
                add(row_name, DERIVED, "WT", n, wt)
            derived = inner_volumes(channels, wt, sg, min_box, regions=inner)
            if src.endswith(PROPAGATED):  # the app's automatic chain cleans the inner regions as it cleans WT
                derived = clean_inner(derived, min_component_mm3, spacing)
            for g in inner:
                add(row_name, DERIVED if src == GT else src, g, n, derived[g])
        for g in inner:
            own = gt_boxes_volume(truth[g], min_box)
            add(row_name, GT, g, len(own), segment_with_boxes(channels, own, sg.region(g)).label)
    return out


def cleaned(source: str) -> str:
    """The box-source name of a prediction after the 3D clean-up."""
    return f"{source}{CLEANED}"
