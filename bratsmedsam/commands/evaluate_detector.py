"""``evaluate-detector``: the paper's Table 1 columns (P, R, mAP50, mAP50-95) on a split, per-case slice errors,
and the measured effect of the volume post-processing."""

from __future__ import annotations

import argparse
from pathlib import Path


def _conf(value: str) -> float | str | None:
    return None if value == "auto" else value if value == "stored" else float(value)


def format_recall_by_size(by_size: dict) -> str:
    """The recall-by-size table: one column per GT-box area bin, rows raw / postprocessed (found/targets)."""
    bins = [r["bin"] for r in by_size["raw"]]
    lines = [f"recall by GT box area (pixels) at conf {by_size['conf']:.3f}, IoU {by_size['iou']}:",
             f"  {'':<14}" + "".join(f"{b:>16}" for b in bins)]
    for name in ("raw", "postprocessed"):
        cells = [f"{'-' if r['recall'] is None else format(r['recall'], '.3f')} ({r['found']}/{r['targets']})"
                 for r in by_size[name]]
        lines.append(f"  {name:<14}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-detector", help="precision / recall / mAP50 / mAP50-95 of a trained detector",
                       description="Evaluate YOLO weights on a prepared dataset split (default test). Writes "
                       "OUT/evaluate_detector.json and OUT/per_case.csv; prints Table 1's row and the "
                       "post-processing comparison at --conf.")
    p.add_argument("--weights", required=True, type=Path)
    p.add_argument("--data", required=True, help="prepared dataset folder (or its dataset.yaml)")
    p.add_argument("--split", default="test")
    p.add_argument("--conf", type=_conf, default="stored",
                   help="operating confidence for per-case counts and the post-processing comparison: a number, "
                   "'stored' (default: the validation max-F1 confidence train-detector stored in the weights, "
                   "else 0.25) or 'auto' (this split's own max-F1 confidence; for the validation split)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold")
    p.add_argument("--postprocess", action="store_true", help="headline P/R and per-case counts after post-processing")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device")
    p.add_argument("--out", type=Path, default=Path("runs") / "evaluate-detector")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import atomic
    from ..detector import evaluate_detector

    res = evaluate_detector(args.weights, args.data, split=args.split, conf=args.conf, iou=args.iou,
                            postprocess=args.postprocess, device=args.device, batch_size=args.batch)
    atomic.write_json(args.out / "evaluate_detector.json", res)
    cols = ["slices", "tumour_slices", "tumour_slices_without_box", "tumour_free_slices_with_box", "tp", "fp", "fn"]
    rows = ["case," + ",".join(cols)] + [f"{c}," + ",".join(str(v[k]) for k in cols) for c, v in res["per_case"].items()]
    atomic.write_text(args.out / "per_case.csv", "\n".join(rows) + "\n")
    print(f"{res['split']}: {res['n_slices']} slices, {res['n_cases']} cases")
    print(f"{'precision':>10} {'recall':>8} {'mAP50':>8} {'mAP50-95':>9}")
    print(f"{res['precision']:10.3f} {res['recall']:8.3f} {res['map50']:8.3f} {res['map50_95']:9.3f}")
    print(f"at conf {res['conf']:.3f}:        {'P':>6} {'R':>6} {'F1':>6} {'AP50':>6} {'missed':>7} {'false':>6}")
    for name, m in res["operating"].items():
        print(f"  {name:<20} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {m['ap50']:6.3f} "
              f"{m['tumour_slices_without_box']:7d} {m['tumour_free_slices_with_box']:6d}")
    print(format_recall_by_size(res["recall_by_size"]))
    print(f"-> {args.out / 'evaluate_detector.json'}")
    return 0
