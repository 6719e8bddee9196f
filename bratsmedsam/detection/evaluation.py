"""Detector evaluation on a dataset split: the paper's Table 1 columns plus per-case slice errors.

One prediction pass per case (all its slices batched) at a low confidence (0.001, as ultralytics'
val does) gives precision / recall (at the max-F1 confidence), mAP50 and mAP50-95 computed by
ultralytics' own ``ap_per_class``. At the operating confidence (``conf``) it counts, per case, tumour
slices that got no box and tumour-free slices that got one, and measures the volume post-processing
(:func:`postprocess_volume`) against the raw boxes. Boxes: inclusive pixel XYXY throughout.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..boxes import box_area, box_iou_xyxy
from .layout import read_yolo_label, split_slices
from .postprocess import postprocess_volume
from .predict import Detector, SliceBoxes
from .weights import DEFAULT_CONF

IOUV = np.linspace(0.5, 0.95, 10)
# Recall by tumour size: GT box area in pixels (inclusive corners, (x1-x0+1)*(y1-y0+1)), bin edges.
# At imgsz 224 a 240-pixel slice shrinks 0.93x per side: boxes under 100 px are under ~9 px across there.
SIZE_BINS = (100, 400, 1600)


def _greedy(iou: np.ndarray, order: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """One greedy pass (predictions in ``order``): (bool per prediction: hit, bool per GT: hit)."""
    tp = np.zeros(iou.shape[0], bool)
    used = np.zeros(iou.shape[1], bool)
    for i in order:
        cand = np.where(~used & (iou[i] >= thr), iou[i], -1.0)
        j = int(cand.argmax())
        if cand[j] >= 0:
            used[j] = True
            tp[i] = True
    return tp, used


def match(pred: SliceBoxes, gt: np.ndarray) -> np.ndarray:
    """Greedy matching by confidence: bool (n_pred, 10), true where a prediction hits an unused GT at IoUV[t]."""
    tp = np.zeros((len(pred), len(IOUV)), bool)
    if not len(pred) or not len(gt):
        return tp
    iou = box_iou_xyxy(pred.xyxy, gt)
    order = np.argsort(-pred.conf, kind="stable")
    for t, thr in enumerate(IOUV):
        tp[:, t] = _greedy(iou, order, thr)[0]
    return tp


def gt_found(pred: SliceBoxes, gt: np.ndarray, iou_thr: float = 0.5) -> np.ndarray:
    """bool (n_gt,): which GT boxes (pixel XYXY) the same greedy matching as :func:`match` finds at ``iou_thr``."""
    if not len(pred) or not len(gt):
        return np.zeros(len(gt), bool)
    return _greedy(box_iou_xyxy(pred.xyxy, gt), np.argsort(-pred.conf, kind="stable"), iou_thr)[1]


def recall_by_size(preds: list[SliceBoxes], gts: list[np.ndarray], bins=SIZE_BINS, iou_thr: float = 0.5) -> list[dict]:
    """Recall at IoU ``iou_thr`` per GT-box area bin: ``[{bin, lo, hi, targets, found, recall}]`` (``hi``
    exclusive, None = open; ``recall`` None for an empty bin), one row per bin of ``bins`` edges."""
    edges = [0, *bins, None]
    found = np.concatenate([gt_found(p, g, iou_thr) for p, g in zip(preds, gts)] or [np.zeros(0, bool)])
    areas = np.concatenate([box_area(g) for g in gts] or [np.zeros(0)])
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (areas >= lo) & (areas < hi if hi is not None else True)
        n, k = int(sel.sum()), int(found[sel].sum())
        label = f"<{hi}" if lo == 0 else (f">={lo}" if hi is None else f"{lo}-{hi}")
        rows.append({"bin": label, "lo": lo, "hi": hi, "targets": n, "found": k, "recall": k / n if n else None})
    return rows


def box_metrics(preds: list[SliceBoxes], gts: list[np.ndarray]) -> dict:
    """Precision, recall (max-F1 point), mAP50, mAP50-95 over slices, via ultralytics' ap_per_class."""
    from . import ultra

    ultra.ultralytics_module()
    from ultralytics.utils.metrics import ap_per_class

    tps = [match(p, g) for p, g in zip(preds, gts)]
    n_gt = int(sum(len(g) for g in gts))
    conf = np.concatenate([p.conf for p in preds]) if preds else np.zeros(0)
    if n_gt == 0 or conf.size == 0:
        return {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map50_95": 0.0, "best_f1_conf": None,
                "n_boxes": int(conf.size),
                "n_targets": n_gt}
    tp = np.concatenate(tps)
    _, _, p, r, _, ap, _, _, _, f1_curve, x, _ = ap_per_class(tp, conf, np.zeros(conf.size), np.zeros(n_gt))
    return {"precision": float(p[0]), "recall": float(r[0]), "map50": float(ap[0, 0]),
            "map50_95": float(ap[0].mean()), "best_f1_conf": float(x[int(f1_curve.mean(0).argmax())]),
            "n_boxes": int(conf.size), "n_targets": n_gt}


def operating_metrics(preds: list[SliceBoxes], gts: list[np.ndarray]) -> dict:
    """Box precision/recall/F1 at IoU 0.5 for boxes as given, plus slice-level misses and false alarms."""
    tp = sum(int(match(p, g)[:, 0].sum()) for p, g in zip(preds, gts))
    n_pred = sum(len(p) for p in preds)
    n_gt = sum(len(g) for g in gts)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gt if n_gt else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "tp": tp, "fp": n_pred - tp, "fn": n_gt - tp,
            "tumour_slices_without_box": sum(1 for p, g in zip(preds, gts) if len(g) and not len(p)),
            "tumour_free_slices_with_box": sum(1 for p, g in zip(preds, gts) if not len(g) and len(p))}


def _above(b: SliceBoxes, conf: float) -> SliceBoxes:
    k = b.conf >= conf
    return SliceBoxes(b.xyxy[k], b.conf[k])


def evaluate_detector(weights, data_yaml, split: str = "test", conf: float | str | None = "stored", iou: float = 0.5,
                      postprocess: bool = False, device=None, batch_size: int = 16,
                      detector: Detector | None = None) -> dict:
    """Evaluate ``weights`` on ``split`` of a YOLO dataset (a prepared dataset folder or its yaml).

    Returns ``{split, weights_id, conf, postprocess, n_cases, n_slices, precision, recall, map50,
    map50_95, operating: {raw, postprocessed}, per_case: {case: {...}}}``. ``conf="stored"``: operate at
    the confidence stored in the weights by train-detector (else 0.25); ``conf=None``: at this split's
    max-F1 confidence (use it on the validation split only). ``recall_by_size``: at ``conf``, raw and
    post-processed, recall per GT-box area bin (:data:`SIZE_BINS`). The headline mAP columns
    come from the raw low-confidence boxes (ultralytics' protocol); ``postprocess=True`` makes the
    headline precision/recall the post-processed ones at ``conf``.
    """
    cases = split_slices(data_yaml, split)
    det = detector or Detector(weights, device=device, conf=0.001, iou=iou)
    by_case = {}
    for case, items in tqdm(cases.items(), desc=f"evaluate {split}", unit="case"):
        images = [np.asarray(Image.open(f).convert("RGB")) for _, f, _ in items]
        gts = [read_yolo_label(lab, im.shape[1], im.shape[0]) for (_, _, lab), im in zip(items, images)]
        by_case[case] = (items, gts, det.predict(images, batch_size=batch_size))
    all_preds = [p for _, _, preds in by_case.values() for p in preds]
    all_gts = [g for _, gts, _ in by_case.values() for g in gts]
    table = box_metrics(all_preds, all_gts)
    if conf == "stored":
        stored = getattr(det, "stored_conf", None)
        conf = stored if stored is not None else DEFAULT_CONF
    elif conf is None:
        conf = table["best_f1_conf"] if table["best_f1_conf"] is not None else DEFAULT_CONF
    raw_op, post_op, per_case = [], [], {}
    for case, (items, gts, preds) in by_case.items():
        op = [_above(p, conf) for p in preds]
        post = postprocess_volume(op, z=[z for z, _, _ in items])
        raw_op += op
        post_op += post
        chosen = post if postprocess else op
        per_case[case] = {
            "slices": len(items), "tumour_slices": sum(1 for g in gts if len(g)),
            **{k: v for k, v in operating_metrics(chosen, gts).items()
               if k in ("tumour_slices_without_box", "tumour_free_slices_with_box", "tp", "fp", "fn")},
        }
    raw = operating_metrics(raw_op, all_gts)
    pp = operating_metrics(post_op, all_gts)
    raw["ap50"] = box_metrics(raw_op, all_gts)["map50"]
    pp["ap50"] = box_metrics(post_op, all_gts)["map50"]
    by_size = {"raw": recall_by_size(raw_op, all_gts), "postprocessed": recall_by_size(post_op, all_gts)}
    head = pp if postprocess else None
    return {
        "split": split, "weights": str(weights), "weights_id": det.weights_id, "conf": conf, "iou": iou,
        "postprocess": postprocess, "n_cases": len(cases), "n_slices": len(all_gts),
        "precision": head["precision"] if head else table["precision"],
        "recall": head["recall"] if head else table["recall"],
        "map50": table["map50"], "map50_95": table["map50_95"],
        "table": table, "operating": {"raw": raw, "postprocessed": pp}, "per_case": per_case,
        "recall_by_size": {"area": "GT box area in pixels (inclusive corners)", "iou": 0.5, "conf": conf, **by_size},
    }
