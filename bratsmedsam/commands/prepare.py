"""``python main.py prepare``: BraTS studies -> 2D slice dataset (PNG slices, masks, YOLO labels, manifest)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from ..prepare import PrepareConfig
    from ._stacks import add_stack_arguments

    d = PrepareConfig()
    p = subparsers.add_parser(
        "prepare",
        help="BraTS NIfTI studies -> 2D slice dataset with YOLO labels, masks and a manifest",
        description=(
            "Read every case folder of --studies (BraTS 2023 or legacy naming), check it, normalise each "
            "volume to 0-255, and write axial slices as RGB PNGs (images/: the detector's stack; "
            "segmenter_images/: the segmenter's, where it differs), the "
            "target-region masks, YOLO labels, manifest.csv, prepare.json and an ultralytics dataset.yaml "
            "into --out, split 6:2:2 by patient. Bad cases are reported and skipped. A re-run skips the "
            "cases already done with the same settings (use --overwrite to redo them)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--studies", required=True, help="folder with one sub-folder per case")
    p.add_argument("--out", required=True, help="dataset folder to write")
    add_stack_arguments(p, "--channels")
    p.add_argument("--region", default=d.region, choices=["WT", "TC", "ET"], type=str.upper,
                   help="target region: WT = labels 1,2,3; TC = 1,3; ET = 3")
    p.add_argument("--min-box-pixels", type=int, default=d.min_box_pixels,
                   help="smallest tumour component (pixels) that gets a box")
    p.add_argument("--background-ratio", type=float, default=d.background_ratio,
                   help="max tumour-free brain slices kept per tumour slice, per case (0 = none)")
    p.add_argument("--split", default=":".join(f"{v:g}" for v in d.split),
                   help="train:val:test fractions by patient, e.g. 6:2:2")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the patient split")
    p.add_argument("--z-step", type=int, default=d.z_step, help="use every n-th axial slice")
    p.add_argument("--lower-percentile", type=float, default=d.lower_percentile,
                   help="intensity clip: lower percentile of the brain voxels")
    p.add_argument("--upper-percentile", type=float, default=d.upper_percentile,
                   help="intensity clip: upper percentile of the brain voxels")
    p.add_argument("--workers", type=int, default=1, help="parallel processes over cases")
    p.add_argument("--overwrite", action="store_true", help="redo every case, even those already done")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS
    from ..dataset import dataset_stacks
    from ..prepare import PrepareConfig, prepare_dataset
    from ._stacks import given_stacks

    detector_channels, segmenter_channels = given_stacks(args)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    cfg = PrepareConfig(
        detector_channels=detector_channels or DEFAULT_DETECTOR_CHANNELS,
        segmenter_channels=segmenter_channels or DEFAULT_SEGMENTER_CHANNELS, region=args.region, min_box_pixels=args.min_box_pixels,
        background_ratio=args.background_ratio, split=args.split, seed=args.seed, z_step=args.z_step,
        overwrite=args.overwrite, lower_percentile=args.lower_percentile, upper_percentile=args.upper_percentile,
    )
    s = prepare_dataset(args.studies, args.out, cfg, workers=args.workers, progress=not args.no_progress)
    stacks = dataset_stacks(s)
    print(f"dataset: {s['dataset']}  (channels: {stacks.describe()}; region {s['region']})")
    print(f"cases used: {len(s['cases_used'])} "
          f"(train {s['cases_per_split']['train']}, val {s['cases_per_split']['val']}, test {s['cases_per_split']['test']}; "
          f"{len(s['cases_reused'])} already done)")
    print(f"slices: {s['n_slices']} ({s['n_tumour_slices']} tumour, {s['n_background_slices']} background; "
          f"train {s['slices_per_split']['train']}, val {s['slices_per_split']['val']}, test {s['slices_per_split']['test']})")
    print(f"cases skipped: {len(s['cases_skipped'])}")
    for case, reason in s["cases_skipped"].items():
        print(f"  {case}: {reason}")
    print(f"time: {s['seconds']:.1f} s, {s['slices_written']} slices written")
    sys.stdout.flush()
    return 0
