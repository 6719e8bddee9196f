"""``predict-detector``: per-slice tumour boxes for a prepared dataset split or for studies (whole volumes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..intensity import DEFAULT_DETECTOR_CHANNELS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict-detector", help="predict per-slice tumour boxes with trained YOLO weights",
                       description="Boxes per axial slice, pixel XYXY (inclusive) with confidence. Writes "
                       "OUT/boxes.json {case: {z: [[x0, y0, x1, y1, conf], ...]}} (slices without boxes "
                       "omitted) and, with --yolo-txt, OUT/labels/<case>_z<kkk>.txt ('0 cx cy w h conf').")
    p.add_argument("--weights", required=True, type=Path, help="best.pt from train-detector")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="prepared dataset folder (or its dataset.yaml); see --split")
    src.add_argument("--studies", type=Path, help="studies folder (BraTS layout): whole volumes, every slice")
    p.add_argument("--split", default="test", help="dataset split to predict (default test)")
    p.add_argument("--case", action="append", default=[], help="with --studies: only these case ids (repeatable)")
    p.add_argument("--channels", default=None,
                   help="with --studies: modalities stacked as RGB (default: the ones the detector records, else "
                        f"{','.join(DEFAULT_DETECTOR_CHANNELS)}); a detector trained on others is refused")
    p.add_argument("--conf", type=float, default=None,
                   help="minimum confidence (default: the validation max-F1 confidence train-detector stored "
                   "in the weights, else 0.25)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold")
    p.add_argument("--postprocess", action="store_true",
                   help="volume-aware clean-up (fill one-slice gaps, drop boxes isolated in z); off by default")
    p.add_argument("--yolo-txt", action="store_true", help="also write YOLO txt files (the paper's layout)")
    p.add_argument("--batch", type=int, default=16, help="slices per model call")
    p.add_argument("--device")
    p.add_argument("--out", type=Path, default=Path("runs") / "predict-detector", help="output folder")
    p.set_defaults(func=run)


def _dataset_cases(args):
    import numpy as np
    from PIL import Image

    from ..detection.layout import split_slices

    for case, items in split_slices(args.data, args.split).items():
        yield case, [z for z, _, _ in items], [np.asarray(Image.open(f).convert("RGB")) for _, f, _ in items]


def _study_cases(args):
    from ..boxes import axial_slice
    from ..cases import discover_cases, load_case
    from ..errors import CaseError, UserError
    from ..channel_check import model_channels, resolve_channels
    from ..intensity import compose_channels

    channels = resolve_channels("detector", args.channels, model_channels(args.weights, None))
    files = discover_cases(args.studies)
    if args.case:
        missing = sorted(set(args.case) - {f.case_id for f in files})
        if missing:
            raise UserError(f"{args.studies} has no case(s) {', '.join(missing)}")
        files = [f for f in files if f.case_id in set(args.case)]
    for f in files:
        try:
            case = load_case(f, channels, with_seg=False)
        except CaseError as exc:
            print(f"skipped: {exc}")
            continue
        vol = compose_channels(case, channels)  # uint8 (X, Y, Z, 3)
        yield case.case_id, list(range(vol.shape[2])), [axial_slice(vol, k) for k in range(vol.shape[2])]


def run(args) -> int:
    from tqdm import tqdm

    from .. import atomic
    from ..boxes import xyxy_to_yolo
    from ..detector import Detector, postprocess_volume

    det = Detector(args.weights, device=args.device, conf=args.conf, iou=args.iou)
    source = _dataset_cases(args) if args.data else _study_cases(args)
    result, n_boxes = {}, 0
    for case, zs, images in tqdm(source, desc="predict", unit="case"):
        boxes = det.predict(images, batch_size=args.batch)
        if args.postprocess:
            boxes = postprocess_volume(boxes, z=zs)
        result[case] = {str(z): b.rows() for z, b in zip(zs, boxes) if len(b)}
        n_boxes += sum(len(b) for b in boxes)
        if args.yolo_txt:
            for z, b, im in zip(zs, boxes, images):
                h, w = im.shape[:2]
                lines = [f"0 {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {c:.4f}"
                         for (cx, cy, bw, bh), c in zip(xyxy_to_yolo(b.xyxy, w, h), b.conf)]
                atomic.write_text(args.out / "labels" / f"{case}_z{z:03d}.txt", "".join(s + "\n" for s in lines))
    atomic.write_json(args.out / "boxes.json", result)
    atomic.write_json(args.out / "predict_detector.json", {
        "weights": str(args.weights), "weights_id": det.weights_id, "conf": det.conf, "iou": args.iou,
        "postprocess": args.postprocess, "source": str(args.data or args.studies),
        "split": args.split if args.data else None, "cases": len(result), "boxes": n_boxes})
    print(f"{n_boxes} boxes on {len(result)} cases -> {args.out / 'boxes.json'}")
    return 0
