"""The paper's evaluation on a prepared dataset's test split.

- Table 1: every detector's precision / recall / mAP50 / mAP50-95 (``detector.evaluate_detector``).
- Table 2 (extended): every segmenter row x box source (ground-truth boxes from the manifest, or each
  detector's boxes = end to end) x slice set (tumour-bearing slices only, or all test slices).
  Slice Dice = Dice of the union of the slice's predicted masks against the slice's target-region mask.
  A tumour-free slice scores 1 when nothing is predicted and 0 otherwise (``metrics.dice``), so
  false-positive detector boxes count as errors end to end. "All slices" are the test slices the
  dataset kept (``prepare`` keeps a sample of tumour-free slices, ``background_ratio``).
- 3D per case: the case's axial slices segmented (GT boxes: one box per 8-connected component of each
  slice's GT mask with >= ``min_box_pixels`` pixels; end to end: the detector on every axial slice,
  ``pipeline.detect_volume`` + ``pipeline.segment_with_boxes``, i.e. ``detect_and_segment``) and stacked
  into a volume -> whole-volume Dice and HD95 (MONAI) and the BraTS 2023 lesion-wise Dice and HD95
  (``metrics.lesion_wise``) of the dataset's target region.
- Every mean comes with a 95 % bootstrap interval over patients (slices of one patient stay together).

Boxes are inclusive pixel XYXY on ``(H, W, 3)`` slice images; volumes are ``(X, Y, Z)`` (``boxes.py``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import UserError
from .metrics import bootstrap_ci, dice, hd95, lesion_wise

NOT_SUPPLIED = "not supplied"
GT = "gt"


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


@dataclass
class SegmenterRow:
    """One row of Table 2: a zero-shot family or a fine-tuned decoder, and whether it can run."""

    name: str
    base: str
    kind: str                        # "zero-shot" | "fine-tuned"
    checkpoint: Path | None = None   # base weights (None: packaged LiteMedSAM or the decoder's recorded base)
    decoder: Path | None = None
    missing: str | None = None       # why it shows "not supplied"

    @property
    def supplied(self) -> bool:
        return self.missing is None


FAMILY_NAMES = {"sam": "SAM ViT-B", "medsam": "MedSAM ViT-B", "litemedsam": "LiteMedSAM"}


def resolve_detector(path: str | Path) -> Path:
    """A detector run folder (``weights/best.pt`` inside) or a ``.pt`` file -> the weights file."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "weights" / "best.pt", p / "best.pt"):
            if cand.is_file():
                return cand
        raise UserError(f"detector run {p} has no weights/best.pt (expected a train-detector run folder or a .pt)")
    if not p.is_file():
        raise UserError(f"detector weights {p} not found (expected a train-detector run folder or a .pt file)")
    return p


def resolve_decoder(path: str | Path) -> Path:
    """A train-segmenter run folder (``best.pt`` inside) or a decoder checkpoint file -> the checkpoint."""
    p = Path(path)
    if p.is_dir():
        found = [p / "best.pt"] if (p / "best.pt").is_file() else sorted(p.glob("**/best.pt"))
        if not found:
            raise UserError(f"segmenter run {p} has no best.pt (expected a train-segmenter run folder or checkpoint)")
        return found[0]
    if not p.is_file():
        raise UserError(f"segmenter checkpoint {p} not found (expected a train-segmenter run folder or best.pt)")
    return p


def segmenter_rows(cfg: EvaluateConfig) -> list[SegmenterRow]:
    """Table 2's rows: zero-shot SAM / MedSAM / LiteMedSAM, then every fine-tuned decoder given."""
    from .segmenter.checkpoint import load_decoder

    given = {"sam": cfg.sam_checkpoint, "medsam": cfg.medsam_checkpoint}
    flag = {"sam": "--sam-checkpoint", "medsam": "--medsam-checkpoint"}
    rows = []
    for fam in cfg.zero_shot:
        ckpt = given.get(fam)
        missing = None
        if fam in given and ckpt is None:
            missing = f"{NOT_SUPPLIED} ({flag[fam]})"
        elif ckpt is not None and not Path(ckpt).is_file():
            raise UserError(f"{flag[fam]} {ckpt} does not exist")
        rows.append(SegmenterRow(f"{FAMILY_NAMES[fam]} zero-shot", fam, "zero-shot", ckpt, None, missing))
    for i, path in enumerate(cfg.segmenters):
        dec = resolve_decoder(path)
        meta = load_decoder(dec)["meta"]
        base = meta.get("base", "litemedsam")
        label = Path(path).name if Path(path).is_dir() else Path(path).parent.name or Path(path).stem
        ckpt = given.get(base)
        missing = None
        recorded = meta.get("base_checkpoint")
        if base in given and ckpt is None and not (recorded and Path(recorded).is_file()):
            missing = f"{NOT_SUPPLIED} (base {FAMILY_NAMES.get(base, base)} weights: {flag[base]})"
        rows.append(SegmenterRow(f"{FAMILY_NAMES.get(base, base)} fine-tuned ({label})", base, "fine-tuned",
                                 ckpt, dec, missing))
    names = [r.name for r in rows]
    seen: dict[str, int] = defaultdict(int)
    for r, name in zip(rows, names):   # two runs with the same folder name: number them
        if names.count(name) > 1:
            seen[name] += 1
            r.name = f"{name} #{seen[name]}"
    return rows


def _load_segmenters(rows: list[SegmenterRow], cfg: EvaluateConfig) -> dict:
    """Load every supplied row; rows sharing an encoder share one embedding cache (the encoder is frozen)."""
    from .segmenter import load_segmenter

    loaded, caches = {}, {}
    for r in rows:
        if not r.supplied:
            continue
        seg = load_segmenter(base=r.base, checkpoint=r.checkpoint, decoder=r.decoder, device=cfg.device,
                             cache_dir=cfg.cache_dir, cache_size=320)
        if seg.encoder_id in caches:
            seg.cache = caches[seg.encoder_id]
        caches.setdefault(seg.encoder_id, seg.cache)
        loaded[r.name] = seg
    return loaded


def _detector_name(weights: Path, taken: set[str]) -> str:
    run = weights.parent.parent if weights.parent.name == "weights" else weights.parent
    name = run.name or weights.stem
    while name in taken:
        name += "'"
    taken.add(name)
    return name


def _union(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(masks, bool)
    return m.any(axis=0) if m.shape[0] else np.zeros(shape, bool)


def _gt_boxes_volume(gt: np.ndarray, min_pixels: int) -> dict[int, np.ndarray]:
    """GT prompts for 3D: one pixel-XYXY box per 8-connected component of each axial slice's mask."""
    from .boxes import axial_slice, component_boxes_xyxy

    out = {}
    for k in np.flatnonzero(gt.any(axis=(0, 1))):
        b, _ = component_boxes_xyxy(axial_slice(gt, int(k)), min_pixels=min_pixels)
        if len(b):
            out[int(k)] = b
    return out


def _volume_scores(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    lw = lesion_wise(pred, gt, spacing=spacing)
    return {"volume_dice": dice(pred, gt), "volume_hd95": hd95(pred, gt, spacing=spacing),
            "lesion_dice": lw.dice, "lesion_hd95": lw.hd95, "lesion_n_gt": lw.n_gt_lesions,
            "lesion_n_detected": lw.n_detected, "lesion_n_fp": lw.n_false_positives,
            "pred_voxels": int(pred.sum()), "gt_voxels": int(gt.sum())}


def _case_files(studies: Path) -> dict:
    from .cases import discover_cases

    if not Path(studies).is_dir():
        raise UserError(f"the dataset's studies folder {studies} (from prepare.json) does not exist; "
                        "3D metrics need it (or pass --no-volumes)")
    return {c.case_id: c for c in discover_cases(studies)}


def evaluate(cfg: EvaluateConfig, out_dir: str | Path) -> dict:
    """Run the whole evaluation and write the report folder (``report.write_report``). Returns the results."""
    from .dataset import load_info, load_manifest, read_image, read_mask
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
    taken: set[str] = set()
    det_names = [_detector_name(w, taken) for w in det_weights]

    table1 = _table1(det_weights, det_names, data, cfg)
    segmenters = _load_segmenters(rows, cfg)
    detectors = _load_detectors(det_weights, det_names, cfg)
    sources = [GT] + det_names

    volumes = cfg.volumes and bool(segmenters)
    if volumes:
        files = _case_files(Path(info["studies"]))
    channels_order = tuple(info.get("channels", ("t1c", "t2w", "t2f")))
    region = info.get("region", "WT")
    settings = info.get("settings", {})
    min_box = int(settings.get("min_box_pixels", 10))
    percentiles = (float(settings.get("lower_percentile", 0.5)), float(settings.get("upper_percentile", 99.5)))

    slice_rows, case_rows = [], []
    for case in tqdm(cases, desc="evaluate cases", unit="case"):
        recs = sorted(by_case[case], key=lambda r: r.z)
        images = [read_image(r.image) for r in recs]
        masks = [read_mask(r.mask) for r in recs]
        boxes = {GT: [r.boxes_xyxy for r in recs]}
        for name, det in detectors.items():
            boxes[name] = [sb.xyxy for sb in det.predict(images)]
        for row_name, seg in segmenters.items():
            for src in sources:
                results = seg.segment_many(images, boxes[src])
                for rec, img, gtm, b, res in zip(recs, images, masks, boxes[src], results):
                    pred = _union(res.masks, gtm.shape)
                    slice_rows.append({"case": case, "z": rec.z, "tumour": bool(gtm.any()), "segmenter": row_name,
                                       "boxes": src, "n_boxes": int(len(b)), "dice": dice(pred, gtm)})
        if volumes:
            case_rows += _evaluate_volume(files, case, channels_order, region, min_box, percentiles,
                                           segmenters, detectors)
        del images, masks

    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "dataset": {"path": str(data), "split": cfg.split, "region": region, "channels": list(channels_order),
                    "studies": info.get("studies"), "cases": cases, "n_slices": sum(len(by_case[c]) for c in cases)},
        "rows": [{**asdict(r), "checkpoint": str(r.checkpoint) if r.checkpoint else None,
                  "decoder": str(r.decoder) if r.decoder else None} for r in rows],
        "detectors": det_names,
        "table1": table1,
        "table2": table2(rows, sources, slice_rows, cfg),
        "volume": volume_table(rows, sources, case_rows, cfg) if volumes else {},
        "slices": slice_rows,
        "per_case": per_case_rows(slice_rows, case_rows),
        "seconds": None,
    }
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


def _load_detectors(weights: list[Path], names: list[str], cfg: EvaluateConfig) -> dict:
    if not weights:
        return {}
    from .detector import Detector

    return {n: Detector(w, device=cfg.device, conf=None if cfg.det_conf == "stored" else cfg.det_conf) for w, n in zip(weights, names)}


def _evaluate_volume(files: dict, case: str, channels_order, region: str, min_box: int, percentiles,
                     segmenters: dict, detectors: dict) -> list[dict]:
    """3D rows of one case: every segmenter x (GT boxes, each detector)."""
    from .cases import load_case
    from .intensity import compose_channels
    from .pipeline import detect_volume, segment_with_boxes
    from .regions import region_mask

    if case not in files:
        raise UserError(f"test case {case} is not in the studies folder any more; 3D metrics need its volumes")
    vol = load_case(files[case], modalities=tuple(dict.fromkeys(channels_order)), with_seg=True)
    channels = compose_channels(vol, channels_order, *percentiles)   # the same slices prepare wrote
    gt = region_mask(vol.seg, region)
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(vol.affine)[:3, :3], axis=0))
    prompts = {GT: _gt_boxes_volume(gt, min_box)}
    for name, det in detectors.items():
        prompts[name], _ = detect_volume(channels, det)
    out = []
    for row_name, seg in segmenters.items():
        for src, bx in prompts.items():
            pred = segment_with_boxes(channels, bx, seg).label
            out.append({"case": case, "segmenter": row_name, "boxes": src, "n_slices_prompted": len(bx),
                        **_volume_scores(pred, gt, spacing)})
    return out


def _ci(values, patients, cfg) -> dict:
    return bootstrap_ci(values, patients, n_boot=cfg.n_boot, seed=cfg.seed).as_dict()


def table2(rows, sources, slice_rows, cfg) -> list[dict]:
    """One entry per segmenter row: {source: {"tumour": ci, "all": ci}} or "not supplied"."""
    table = []
    for r in rows:
        entry = {"segmenter": r.name, "base": r.base, "kind": r.kind, "missing": r.missing, "cells": {}}
        if r.supplied:
            for src in sources:
                mine = [s for s in slice_rows if s["segmenter"] == r.name and s["boxes"] == src]
                tum = [s for s in mine if s["tumour"]]
                entry["cells"][src] = {
                    "tumour": _ci([s["dice"] for s in tum], [s["case"] for s in tum], cfg),
                    "all": _ci([s["dice"] for s in mine], [s["case"] for s in mine], cfg),
                }
        table.append(entry)
    return table


VOLUME_METRICS = ("volume_dice", "volume_hd95", "lesion_dice", "lesion_hd95")


def volume_table(rows, sources, case_rows, cfg) -> list[dict]:
    table = []
    for r in rows:
        entry = {"segmenter": r.name, "missing": r.missing, "cells": {}}
        if r.supplied:
            for src in sources:
                mine = [c for c in case_rows if c["segmenter"] == r.name and c["boxes"] == src]
                entry["cells"][src] = {m: _ci([c[m] for c in mine], [c["case"] for c in mine], cfg)
                                       for m in VOLUME_METRICS}
        table.append(entry)
    return table


def per_case_rows(slice_rows, case_rows) -> list[dict]:
    """One row per case x segmenter x box source: mean slice Dice (tumour / all) and the 3D scores."""
    groups: dict[tuple, list] = defaultdict(list)
    for s in slice_rows:
        groups[(s["case"], s["segmenter"], s["boxes"])].append(s)
    vol = {(c["case"], c["segmenter"], c["boxes"]): c for c in case_rows}
    out = []
    for key in sorted(set(groups) | set(vol)):
        ss = groups.get(key, [])
        tum = [s["dice"] for s in ss if s["tumour"]]
        row = {"case": key[0], "segmenter": key[1], "boxes": key[2], "n_slices": len(ss), "n_tumour_slices": len(tum),
               "slice_dice_tumour": float(np.mean(tum)) if tum else float("nan"),
               "slice_dice_all": float(np.mean([s["dice"] for s in ss])) if ss else float("nan")}
        v = vol.get(key, {})
        row.update({k: v.get(k, float("nan")) for k in (*VOLUME_METRICS, "lesion_n_gt", "lesion_n_fp")})
        out.append(row)
    return out


def _examples(results: dict, segmenters: dict, by_case: dict, cfg: EvaluateConfig) -> dict:
    """Best / median / worst tumour slices (GT boxes) of one row, with image, masks and box, for the figure."""
    from .dataset import read_image, read_mask

    if not segmenters:
        return {}
    row = cfg.examples_of
    if row not in segmenters:
        scored = [(e["cells"][GT]["tumour"]["mean"], e["segmenter"]) for e in results["table2"]
                  if e["segmenter"] in segmenters and np.isfinite(e["cells"][GT]["tumour"]["mean"])]
        if not scored:
            return {}
        row = max(scored)[1]
    tum = sorted((s for s in results["slices"] if s["segmenter"] == row and s["boxes"] == GT and s["tumour"]),
                 key=lambda s: s["dice"])
    if not tum:
        return {}
    picks = {"worst": tum[0], "median": tum[len(tum) // 2], "best": tum[-1]}
    out = {"segmenter": row, "slices": {}}
    for label, s in picks.items():
        rec = next(r for r in by_case[s["case"]] if r.z == s["z"])
        img, gtm = read_image(rec.image), read_mask(rec.mask)
        res = segmenters[row].segment(img, rec.boxes_xyxy)
        out["slices"][label] = {"case": s["case"], "z": s["z"], "dice": s["dice"], "image": img, "gt": gtm,
                                "pred": _union(res.masks, gtm.shape), "boxes": rec.boxes_xyxy}
    return out
