"""``train-detector``: train the YOLO tumour detector (paper III.B recipe by default, ``--quick`` for CPUs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

QUICK_HELP = ("CPU profile: yolov5n, imgsz 224, 30 epochs, batch 8 (one optimiser step per batch), no warmup, "
              "every 2nd training slice with at most 10%% tumour-free ones, validation after the last epoch only; "
              "about 4 CPU minutes on the 9-case sample dataset (val mAP50 0.3-0.5 depending on the seed, test "
              "~0.2: rough boxes, large tumours found, small fragments missed; the paper's recipe is a GPU job). "
              "Like every run, it stores the validation max-F1 confidence in best.pt for inference")


def parse_set(items: list[str]) -> dict:
    """``["lr0=0.02", "mosaic=0", "cos_lr=true"]`` -> typed dict (values parsed as YAML scalars)."""
    import yaml

    from ..errors import UserError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value (an ultralytics training argument), got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-detector", help="train the YOLO tumour-box detector on a prepared dataset",
                       description="Train YOLO on a prepared dataset. Defaults = the paper's recipe: yolov5s "
                       "from its yaml (no pretrained weights offline), 100 epochs, imgsz 256, batch 16, SGD, "
                       "lr0 0.01, every training slice. After training, the confidence with the best F1 on the val split "
                       "is stored in weights/best.pt (predict-detector, evaluate-detector, the app use it by default). "
                       "Writes runs/train-detector/<name>/ (args.yaml, results.csv, curves, weights/best.pt, "
                       "train_detector.json). --set also takes train_slice_step=K (every K-th training slice per "
                       "case) and train_background=F (at most a fraction F of tumour-free training slices).")
    p.add_argument("--data", required=True, help="prepared dataset folder (or its dataset.yaml)")
    p.add_argument("--model", help="yolov5s (default) | yolov5l | other ultralytics name | model .yaml | "
                   "weights .pt to start from")
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--device", help="cpu, 0, or several GPUs 0,1,... (ultralytics' own multi-GPU DDP: it "
                   "starts one process per GPU and splits --batch over them); default: CUDA when present, else cpu")
    p.add_argument("--quick", action="store_true", help=QUICK_HELP)
    p.add_argument("--real-weight", type=float, metavar="W",
                   help="share of real-case training images (ids not BraTS-GLI-9xxxx-000), 0 <= W < 1: each real "
                   "image is repeated round(W * synthetic / ((1 - W) * real)) times (at least once; 0 leaves real "
                   "cases out); default: every image once. The share reached is printed and written to "
                   "train_detector.json (real_mixing)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any ultralytics training argument, repeatable (e.g. --set lr0=0.02 --set mosaic=0)")
    p.add_argument("--out", type=Path, help="run folder (default runs/train-detector/<name>)")
    p.add_argument("--name", help="run name under runs/train-detector/ (default <model>-<time>)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..detector import PAPER, QUICK, train_detector

    model = args.model or (QUICK if args.quick else PAPER)["model"]
    out = args.out or Path("runs") / "train-detector" / (args.name or f"{Path(model).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    overrides = parse_set(args.overrides)
    if args.real_weight is not None:
        overrides["real_weight"] = args.real_weight
    best = train_detector(args.data, out, model=args.model, epochs=args.epochs, imgsz=args.imgsz,
                          batch=args.batch, quick=args.quick, device=args.device, **overrides)
    print(f"best weights: {best}")
    print(f"run folder:   {Path(out).resolve()}")
    return 0
