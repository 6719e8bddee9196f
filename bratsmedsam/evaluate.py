"""The paper's evaluation on a prepared dataset's test split (the ``evaluate`` verb).

- Table 1: every detector's precision / recall / mAP50 / mAP50-95 (``detector.evaluate_detector``).
- Table 2 (extended): every segmenter row x box source (ground-truth boxes from the manifest, or each
  detector's boxes = end to end) x slice set (tumour-bearing slices only, or all test slices).
  Slice Dice = Dice of the union of the slice's predicted masks against the slice's target-region mask.
  A tumour-free slice scores 1 when nothing is predicted and 0 otherwise (``metrics.dice``), so
  false-positive detector boxes count as errors end to end. "All slices" are the test slices the
  dataset kept (``prepare`` keeps a sample of tumour-free slices, ``background_ratio``).
- 3D per case (:mod:`.evaluation.volumes`): whole-volume and BraTS 2023 lesion-wise Dice / HD95.
- Every mean comes with a 95 % bootstrap interval over patients (:func:`.evaluation.records.aggregate`).
- BraTS sub-regions (``regions`` = WT, TC, ET, on a WT dataset with label maps): every table has a row per region.
  WT is scored as above. Each inner region (TC, ET) is scored with its own GT boxes (box source ``gt``: one box per
  component of that region), and prompted from a WT mask (``subregions``: the WT mask's component boxes, the mask
  clipped to its parent): the one the GT WT boxes gave (source ``gt-wt``) and the one each detector's boxes gave
  (the detector's source), so ``gt`` vs ``gt-wt`` measures the derived inner boxes against GT inner boxes.

Results are records (:mod:`.evaluation.records`); the rows evaluated come from :mod:`.evaluation.rows`.
Boxes are inclusive pixel XYXY on ``(H, W, 3)`` slice images; volumes are ``(X, Y, Z)`` (``boxes.py``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cleanup import MIN_COMPONENT_MM3
from .errors import UserError
from .evaluation.checks import accuracy_checks
from .evaluation.records import DERIVED, GT, PROPAGATED, SliceRecord, per_case_rows, table2, volume_table
from .evaluation.rows import detector_name, load_detectors, load_segmenters, resolve_detector, segmenter_rows
from .metrics import dice
from .segmenter.model import CLOSE_PX, union_masks


@dataclass
class EvaluateConfig:
    """Everything ``evaluate`` reads. Paths may be run folders or files (see ``resolve_*``)."""

    data: Path
    detectors: list[Path] = field(default_factory=list)
    segmenters: list[Path] = field(default_factory=list)     # fine-tuned decoder runs / checkpoints
    sam_checkpoint: Path | None = None
    medsam_checkpoint: Path | None = None
    zero_shot: tuple[str, ...] = ("sam", "medsam", "litemedsam")
    split: str = "test"
    volumes: bool = True            # 3D per-case metrics (reads the studies folder from prepare.json)
    max_cases: int | None = None    # evaluate only the first N test cases (sorted by id)
    det_conf: float | str = "stored"  # "stored": the val max-F1 threshold train-detector saved in the weights
    n_boot: int = 2000
    seed: int = 0
    device: str | None = None
    cache_dir: Path | None = None   # segmenter embedding cache on disk (reused between runs)
    examples_of: str | None = None  # row name for the best/median/worst figure (default: best GT-box row)
    min_component_mm3: float = MIN_COMPONENT_MM3  # 3D clean-up scored beside the raw volumes (0: not scored)
    propagation: bool = True        # also score each detector's volume-aware segmentation in 3D
    regions: tuple[str, ...] | None = None  # None: the dataset's region; ("WT", "TC", "ET"): BraTS sub-regions
    fill_holes: bool = True         # fill the 2D holes of WT / TC masks (regions.SOLID_REGIONS), as the app does
    close_px: int = CLOSE_PX        # ... after closing their notches with a disk of this radius (0: holes only)


def eval_regions(cfg: EvaluateConfig, info: dict, data) -> tuple[str, ...]:
    """The regions scored: the dataset's own, or WT / TC / ET (which needs a WT dataset with label maps)."""
    from .regions import REGIONS, parse_region

    own = info.get("region", "WT")
    if not cfg.regions:
        return (own,)
    regions = tuple(r for r in REGIONS if r in {parse_region(x) for x in cfg.regions})
    if regions == (own,):
        return regions
    if own != "WT" or "WT" not in regions:
        raise UserError(f"evaluating {', '.join(regions)} needs a WT dataset (the inner regions are prompted from WT); "
                        f"{data} was prepared for {own}")
    if not info.get("labelmaps"):
        raise UserError(f"{data} has no label maps (prepared by an older version): run prepare again to evaluate "
                        "sub-regions")
    return regions


def check_models_fit(info: dict, detectors: list[Path], decoders: list[Path], data) -> None:
    """UserError unless every model that records its channels was trained on the dataset's stack for it (scored on
    other images, a model's numbers say nothing about it)."""
    from .channel_check import model_channels
    from .dataset import dataset_stacks

    stacks = dataset_stacks(info)
    for detector, decoder in [(d, None) for d in detectors] + [(None, d) for d in decoders]:
        for kind, (what, got) in model_channels(detector, decoder).items():
            want = getattr(stacks, kind)
            if tuple(got) != tuple(want):
                raise UserError(f"{what} was trained on channels {','.join(got)}, but {data} stacks "
                                f"{','.join(want)} for the {kind}: prepare a dataset with --{kind}-channels "
                                f"{','.join(got)} to score it")


def evaluate(cfg: EvaluateConfig, out_dir: str | Path) -> dict:
    """Run the whole evaluation and write the report folder (``report.write_report``). Returns the results."""
    from .dataset import dataset_stacks, load_info, load_manifest, read_image, read_mask
    from .evaluation.volumes import case_files, cleaned, evaluate_volume
    from .report import write_report

    t0 = time.time()
    out_dir = Path(out_dir)
    data = Path(cfg.data)
    info = load_info(data)
    records = load_manifest(data, split=cfg.split)
    if not records:
        raise UserError(f"{data} has no {cfg.split} slices (run prepare with enough cases for a {cfg.split} split)")
    by_case: dict[str, list] = defaultdict(list)
    for r in records:
        by_case[r.case].append(r)
    cases = sorted(by_case)[: cfg.max_cases] if cfg.max_cases else sorted(by_case)

    rows = segmenter_rows(cfg)
    det_weights = [resolve_detector(d) for d in cfg.detectors]
    check_models_fit(info, det_weights, [r.decoder for r in rows if r.decoder], data)
    taken: set[str] = set()
    det_names = [detector_name(w, taken) for w in det_weights]

    regions = eval_regions(cfg, info, data)
    multi = len(regions) > 1
    table1 = _table1(det_weights, det_names, data, cfg)
    segmenters = load_segmenters(rows, cfg, regions if multi else None)
    detectors = load_detectors(det_weights, det_names, cfg)
    sources = [GT] + ([DERIVED] if multi else []) + det_names

    volumes = cfg.volumes and bool(segmenters)
    if volumes:
        files = case_files(Path(info["studies"]))
    stacks = dataset_stacks(info)
    region = info.get("region", "WT")
    settings = info.get("settings", {})
    min_box = int(settings.get("min_box_pixels", 10))
    percentiles = (float(settings.get("lower_percentile", 0.5)), float(settings.get("upper_percentile", 99.5)))

    slice_rows, case_rows = [], []
    for case in tqdm(cases, desc="evaluate cases", unit="case"):
        recs = sorted(by_case[case], key=lambda r: r.z)
        images = [read_image(r.segmenter_image) for r in recs]  # the segmenter's stack
        masks = [read_mask(r.mask) for r in recs]
        boxes = {GT: [r.boxes_xyxy for r in recs]}
        seen = images if stacks.shared else [read_image(r.image) for r in recs] if detectors else []
        for name, det in detectors.items():
            boxes[name] = [sb.xyxy for sb in det.predict(seen)]
        del seen
        for row_name, seg in segmenters.items():
            if multi:
                slice_rows += _region_slices(case, recs, images, boxes, seg, row_name, regions, min_box)
                continue
            for src in sources:
                results = seg.segment_many(images, boxes[src])
                for rec, img, gtm, b, res in zip(recs, images, masks, boxes[src], results):
                    pred = union_masks(res.masks, gtm.shape)
                    slice_rows.append(SliceRecord(case, rec.z, bool(gtm.any()), row_name, src, int(len(b)),
                                                  dice(pred, gtm), region))
        if volumes:
            case_rows += evaluate_volume(files, case, stacks, region, min_box, percentiles,
                                         segmenters, detectors, cfg.min_component_mm3, cfg.propagation,
                                         regions if multi else None)
        del images, masks

    vol_sources = (sources + ([cleaned(s) for s in sources] if cfg.min_component_mm3 > 0 else [])
                   + ([d + PROPAGATED for d in det_names] if cfg.propagation else []))
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "dataset": {"path": str(data), "split": cfg.split, "region": region, "regions": list(regions),
                    "detector_channels": list(stacks.detector), "segmenter_channels": list(stacks.segmenter),
                    "studies": info.get("studies"), "cases": cases, "n_slices": sum(len(by_case[c]) for c in cases)},
        "rows": [{**asdict(r), "checkpoint": str(r.checkpoint) if r.checkpoint else None,
                  "decoder": str(r.decoder) if r.decoder else None} for r in rows],
        "detectors": det_names,
        "table1": table1,
        "table2": table2(rows, sources, slice_rows, cfg, regions),
        "volume": volume_table(rows, vol_sources, case_rows, cfg, regions) if volumes else {},
        "volume_sources": vol_sources,
        "min_component_mm3": cfg.min_component_mm3,
        "fill_holes": cfg.fill_holes,
        "close_px": cfg.close_px if cfg.fill_holes else 0,
        "slices": slice_rows,
        "per_case": per_case_rows(slice_rows, case_rows),
        "seconds": None,
    }
    results["checks"] = accuracy_checks(results)
    results["examples"] = _examples(results, segmenters, by_case, cfg)
    results["seconds"] = round(time.time() - t0, 1)
    write_report(results, out_dir)
    return results


def _table1(weights: list[Path], names: list[str], data: Path, cfg: EvaluateConfig) -> list[dict]:
    if not weights:
        return []
    from .detector import evaluate_detector

    out = []
    for w, name in zip(weights, names):
        m = evaluate_detector(w, data / "dataset.yaml", split=cfg.split, conf=cfg.det_conf, device=cfg.device)
        out.append({"detector": name, "weights": str(w), "precision": float(m["precision"]),
                    "recall": float(m["recall"]), "map50": float(m["map50"]), "map50_95": float(m["map50_95"])})
    return out


def _region_slices(case, recs, images, boxes: dict, seg, row_name: str, regions, min_box: int) -> list[SliceRecord]:
    """Slice records of one case for every region (module docstring): WT on each box source; each inner region on
    its own GT boxes (``gt``) and from the WT masks of the GT boxes (``gt-wt``) and of each detector's boxes."""
    from .boxes import component_boxes_xyxy
    from .dataset import read_labelmap
    from .regions import region_mask
    from .subregions import inner_masks_2d

    maps = [read_labelmap(r) for r in recs]
    truth = {g: [region_mask(m, g) for m in maps] for g in regions}
    inner = [g for g in regions if g != "WT"]
    out = []

    def add(g, src, preds, counts):
        for rec, gtm, pred, n in zip(recs, truth[g], preds, counts):
            out.append(SliceRecord(case, rec.z, bool(gtm.any()), row_name, src, int(n), dice(pred, gtm), g))

    for src, bx in boxes.items():  # GT (the manifest's WT boxes) and each detector's
        wt = [union_masks(r.masks, m.shape) for r, m in zip(seg.segment_many(images, bx, region="WT"), truth["WT"])]
        add("WT", src, wt, [len(b) for b in bx])
        if src == GT:
            add("WT", DERIVED, wt, [len(b) for b in bx])
        derived = inner_masks_2d(seg, images, wt, min_box, inner)
        for g in inner:
            add(g, DERIVED if src == GT else src, derived[g], [len(b) for b in bx])
    for g in inner:
        own = [component_boxes_xyxy(m, min_box)[0] for m in truth[g]]
        res = seg.segment_many(images, own, region=g)
        add(g, GT, [union_masks(r.masks, m.shape) for r, m in zip(res, truth[g])], [len(b) for b in own])
    return out


def _examples(results: dict, segmenters: dict, by_case: dict, cfg: EvaluateConfig) -> dict:
    """Best / median / worst tumour slices (GT boxes) of one row, with image, masks and box, for the figure."""
    from .dataset import read_image, read_mask

    if not segmenters:
        return {}
    row = cfg.examples_of
    if row not in segmenters:
        scored = [(e["cells"][GT]["tumour"]["mean"], e["segmenter"]) for e in results["table2"]
                  if e["segmenter"] in segmenters and e.get("region") == results["dataset"]["regions"][0]
                  and np.isfinite(e["cells"][GT]["tumour"]["mean"])]
        if not scored:
            return {}
        row = max(scored)[1]
    first = results["dataset"].get("regions", [None])[0]
    tum = sorted((s for s in results["slices"] if s.segmenter == row and s.boxes == GT and s.tumour
                  and s.region in (first, None)),
                 key=lambda s: s.dice)
    if not tum:
        return {}
    picks = {"worst": tum[0], "median": tum[len(tum) // 2], "best": tum[-1]}
    out = {"segmenter": row, "slices": {}}
    for label, s in picks.items():
        rec = next(r for r in by_case[s.case] if r.z == s.z)
        img, gtm = read_image(rec.image), read_mask(rec.mask)
        res = segmenters[row].segment_many([img], [rec.boxes_xyxy])[0]
        out["slices"][label] = {"case": s.case, "z": s.z, "dice": s.dice, "image": img, "gt": gtm,
                                "pred": union_masks(res.masks, gtm.shape), "boxes": rec.boxes_xyxy}
    return out
