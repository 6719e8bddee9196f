"""``sample-data``: write the sample studies folder (real BraTS case + synthetic cases on real anatomy)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample-data",
        help="write sample BraTS-format studies: the real case + synthetic gliomas on real anatomy",
        description=(
            "Write OUT/<id>/<id>-{t1c,t1n,t2w,t2f,seg}.nii.gz (BraTS 2023 layout, 240x240x155, 1 mm): the real "
            "BraTS 2023 case(s) copied byte for byte, and N synthetic cases (ids BraTS-GLI-90000-000 + index) on "
            "the SRI24 atlas anatomy (or nilearn's MNI152 when the atlas is absent). Also writes "
            "sample_info.json, sample_ratios.json and sample_montage.png."
        ),
    )
    p.add_argument("--out", default="sample_studies", help="output studies folder (default: sample_studies)")
    p.add_argument("--cases", type=int, default=8, help="number of synthetic cases (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical cases (default: 0)")
    p.add_argument("--real-cases", metavar="DIR", default=None,
                   help="folder of real BraTS 2023 case folders to copy (default: ../shared/data/brats2023 if present)")
    p.add_argument("--atlas", metavar="DIR", default=None,
                   help="SRI24 atlas folder (default: ../shared/data/sri24 if present, else nilearn's MNI152)")
    p.add_argument("--mni152", action="store_true", help="use nilearn's MNI152 anatomy even if the SRI24 atlas exists")
    p.add_argument("--no-real", action="store_true", help="do not copy the real case(s)")
    p.add_argument("--no-montage", action="store_true", help="skip sample_montage.png")
    p.add_argument("--profile", choices=("standard", "randomised"), default="standard",
                   help="standard (default): calibrated on the real case; randomised: domain randomisation for "
                   "detector training (wider contrast curves and ratios, stronger bias field, noise range, thick "
                   "slices / blur, elongated, lobulated tumours with satellites); parameters per case in sample_info.json")
    p.add_argument("--randomise", dest="profile", action="store_const", const="randomised",
                   help="shorthand for --profile randomised")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..sample_data import DEFAULT, write_sample_studies

    if args.cases < 0:
        raise UserError(f"--cases must be a whole number >= 0, got {args.cases}")
    if args.no_real and args.real_cases:
        raise UserError("--no-real and --real-cases contradict each other: give one of them")
    if args.mni152 and args.atlas:
        raise UserError("--mni152 and --atlas contradict each other: give one of them")
    real = None if args.no_real else (args.real_cases or DEFAULT)
    atlas = None if args.mni152 else (args.atlas or DEFAULT)
    info = write_sample_studies(args.out, n_cases=args.cases, seed=args.seed, real_dir=real, atlas_dir=atlas,
                                montage=not args.no_montage, profile=args.profile)
    n_real = len(info["real_cases"])
    print(f"wrote {n_real} real + {args.cases} synthetic case(s) to {args.out}")
    return 0
