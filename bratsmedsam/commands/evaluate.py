"""``python main.py evaluate``: the paper's Table 1 and extended Table 2, 3D per-case metrics, a report folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cleanup import MIN_COMPONENT_MM3


def _conf(v: str):
    return v if v == "stored" else float(v)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="Table 1 (detectors), extended Table 2 (segmenters), 3D metrics -> report folder",
        description=(
            "Evaluate on the test split of a prepared dataset. Table 1: precision / recall / mAP50 / mAP50-95 "
            "of every --detector. Table 2: slice Dice of SAM, MedSAM and LiteMedSAM zero-shot and of every "
            "fine-tuned --segmenter, with ground-truth boxes and end to end with each detector's boxes, on "
            "tumour slices and on all test slices. 3D: each test case's slices stacked into a volume -> "
            "volume Dice/HD95 and BraTS 2023 lesion-wise Dice/HD95. 95 % bootstrap intervals over patients. "
            "Writes report.md, metrics.json, per_case.csv, slices.csv and figures/ into --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder (from `prepare`)")
    p.add_argument("--detector", action="append", default=[], type=Path, metavar="RUN_OR_WEIGHTS",
                   help="train-detector run folder or .pt weights (repeat for several)")
    p.add_argument("--segmenter", action="append", default=[], type=Path, metavar="RUN_OR_CKPT",
                   help="train-segmenter run folder or decoder best.pt (repeat for several)")
    p.add_argument("--sam-checkpoint", type=Path, help="SAM ViT-B weights (sam_vit_b_01ec64.pth); "
                   "without it the SAM row says 'not supplied'")
    p.add_argument("--medsam-checkpoint", type=Path, help="MedSAM ViT-B weights (medsam_vit_b.pth); "
                   "without it the MedSAM row says 'not supplied'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--no-volumes", action="store_true", help="skip the 3D per-case metrics")
    p.add_argument("--max-cases", type=int, help="evaluate only the first N cases of the split (sorted by id)")
    p.add_argument("--det-conf", type=_conf, default="stored",
                   help="detector confidence threshold end to end (default: the val max-F1 value stored in the weights)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (over patients)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--device", help="cpu, cuda, cuda:0 ... (None: CUDA when present)")
    p.add_argument("--cache-dir", type=Path, help="keep slice embeddings on disk here (reused between runs)")
    p.add_argument("--min-component-mm3", type=float, default=MIN_COMPONENT_MM3,
                   help="also score each 3D prediction with its components smaller than this removed (0: do not)")
    p.add_argument("--no-propagation", action="store_true",
                   help="do not score the volume-aware automatic segmentation (detector seeds + propagation)")
    p.add_argument("--no-fill-holes", action="store_true",
                   help="score the decoder's raw WT / TC masks, their 2D holes left open (default: filled, as served)")
    p.add_argument("--close-px", type=int, default=None,
                   help="radius (px) of the disk that closes the WT / TC masks' notches before their holes are "
                        "filled (default: the app's, 3; 0: holes only)")
    p.add_argument("--regions", default=None,
                   help="BraTS (= WT,TC,ET) or a list: score the sub-regions too, each table with a row per region "
                        "(needs a WT dataset with label maps). Default: the dataset's region")
    p.add_argument("--out", type=Path, help="report folder (default runs/evaluate/<dataset name>)")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from ..atomic import write_text
    from ..errors import UserError
    from ..evaluate import EvaluateConfig, evaluate
    from ..regions import parse_region_list
    from ..offline import PROJECT_ROOT

    if args.max_cases is not None and args.max_cases < 1:
        raise UserError(f"--max-cases must be >= 1, got {args.max_cases}")
    if args.min_component_mm3 < 0:
        raise UserError(f"--min-component-mm3 must be >= 0, got {args.min_component_mm3}")
    if args.close_px is not None and args.close_px < 0:
        raise UserError(f"--close-px must be >= 0 (0: no closing), got {args.close_px}")
    if args.n_boot < 1:
        raise UserError(f"--n-boot must be >= 1, got {args.n_boot}")
    out = args.out or PROJECT_ROOT / "runs" / "evaluate" / Path(args.data).resolve().name
    cfg = EvaluateConfig(
        data=args.data, detectors=args.detector, segmenters=args.segmenter, sam_checkpoint=args.sam_checkpoint,
        medsam_checkpoint=args.medsam_checkpoint, split=args.split, volumes=not args.no_volumes,
        max_cases=args.max_cases, det_conf=args.det_conf, n_boot=args.n_boot, seed=args.seed, device=args.device,
        cache_dir=args.cache_dir, min_component_mm3=args.min_component_mm3, propagation=not args.no_propagation,
        regions=parse_region_list(args.regions), fill_holes=not args.no_fill_holes,
    )
    if args.close_px is not None:  # None: the config's default, the app's radius
        cfg.close_px = args.close_px
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text(Path(out) / "args.yaml", yaml.safe_dump(
        {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
         for k, v in vars(args).items() if k != "func"}, sort_keys=False))
    evaluate(cfg, out)
    print(f"report: {Path(out) / 'report.md'}")
    return 0
