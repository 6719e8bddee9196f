"""Evaluation results as records, and the tables made from them.

A :class:`SliceRecord` is one slice scored by one segmenter row with one box source; a :class:`CaseRecord`
is one test case's 3D scores for the same pair. Every table is a grouping of records and one call of
:func:`aggregate` per cell: the mean with a 95 % bootstrap interval that resamples patients (a patient's
slices stay together, ``metrics.bootstrap_ci``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..metrics import bootstrap_ci

#: the box source "ground-truth boxes" (the other sources are detector names)
GT = "gt"
#: suffix of a 3D box source whose predictions went through the clean-up (small components; a detector's also
#: unsupported ones: ``pipeline.clean_per_slice``)
CLEANED = "+cleanup"
#: suffix of a 3D box source: the detector's volume-aware segmentation (``pipeline.detect_and_propagate``)
PROPAGATED = "+propagate"
#: the box source of an inner region (TC, ET) prompted from the WT mask the GT WT boxes gave (``subregions``); for
#: WT it is the GT-box result itself. (Inner regions under a detector source are always prompted this way.)
DERIVED = "gt-wt"
VOLUME_METRICS = ("volume_dice", "volume_hd95", "lesion_dice", "lesion_hd95")


@dataclass
class SliceRecord:
    """Slice Dice of the union of the row's masks for the slice's boxes against its target-region mask."""

    case: str
    z: int
    tumour: bool  # the slice has at least one target-region pixel
    segmenter: str  # row name
    boxes: str  # box source: GT or a detector name
    n_boxes: int
    dice: float
    region: str = "WT"  # the BraTS region scored (the dataset's, or one of WT / TC / ET)


@dataclass
class CaseRecord:
    """3D scores of one case: its axial slices segmented and stacked (HD95 in mm)."""

    case: str
    segmenter: str
    boxes: str
    n_slices_prompted: int
    volume_dice: float
    volume_hd95: float
    lesion_dice: float
    lesion_hd95: float
    lesion_n_gt: int
    lesion_n_detected: int
    lesion_n_fp: int
    pred_voxels: int
    gt_voxels: int
    region: str = "WT"


def aggregate(records, metric: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of ``metric`` over ``records`` with its bootstrap interval over their patients (``record.case``):
    ``{mean, ci_low, ci_high, n_patients, n_values}``; NaN values are left out."""
    return bootstrap_ci([getattr(r, metric) for r in records], [r.case for r in records], n_boot=n_boot,
                        seed=seed).as_dict()


def _by(records, *fields) -> dict[tuple, list]:
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[tuple(getattr(r, f) for f in fields)].append(r)
    return groups


def _regions_of(records, regions) -> list[str]:
    return list(regions) if regions else list(dict.fromkeys(r.region for r in records)) or ["WT"]


def table2(rows, sources, slices: list[SliceRecord], cfg, regions=None) -> list[dict]:
    """One entry per segmenter row and region: ``cells[source] = {"tumour": ci, "all": ci}`` of slice Dice, or
    "not supplied". ``regions``: the regions evaluated, in order (default: those in the records)."""
    groups = _by(slices, "segmenter", "boxes", "region")
    table = []
    for r in rows:
        for region in _regions_of(slices, regions):
            entry = {"segmenter": r.name, "region": region, "base": r.base, "kind": r.kind, "missing": r.missing,
                     "cells": {}}
            if r.supplied:
                for src in sources:
                    mine = groups.get((r.name, src, region), [])
                    entry["cells"][src] = {"tumour": aggregate([s for s in mine if s.tumour], "dice", cfg.n_boot,
                                                               cfg.seed),
                                           "all": aggregate(mine, "dice", cfg.n_boot, cfg.seed)}
            table.append(entry)
    return table


def volume_table(rows, sources, cases: list[CaseRecord], cfg, regions=None) -> list[dict]:
    """One entry per segmenter row and region: ``cells[source] = {metric: ci}`` for the 3D metrics, or "not
    supplied"."""
    groups = _by(cases, "segmenter", "boxes", "region")
    table = []
    for r in rows:
        for region in _regions_of(cases, regions):
            entry = {"segmenter": r.name, "region": region, "missing": r.missing, "cells": {}}
            if r.supplied:
                for src in sources:
                    mine = groups.get((r.name, src, region), [])
                    entry["cells"][src] = {m: aggregate(mine, m, cfg.n_boot, cfg.seed) for m in VOLUME_METRICS}
            table.append(entry)
    return table


def per_case_rows(slices: list[SliceRecord], cases: list[CaseRecord]) -> list[dict]:
    """One row per case x segmenter x box source x region: mean slice Dice (tumour / all) and the case's 3D
    scores."""
    groups = _by(slices, "case", "segmenter", "boxes", "region")
    vol = {(c.case, c.segmenter, c.boxes, c.region): c for c in cases}
    out = []
    for key in sorted(set(groups) | set(vol)):
        ss = groups.get(key, [])
        tum = [s for s in ss if s.tumour]
        row = {"case": key[0], "segmenter": key[1], "boxes": key[2], "region": key[3], "n_slices": len(ss),
               "n_tumour_slices": len(tum),
               "slice_dice_tumour": aggregate(tum, "dice")["mean"], "slice_dice_all": aggregate(ss, "dice")["mean"]}
        v = vol.get(key)
        row.update({k: getattr(v, k) if v else float("nan") for k in (*VOLUME_METRICS, "lesion_n_gt", "lesion_n_fp")})
        out.append(row)
    return out
