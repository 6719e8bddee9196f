"""``python main.py reproduce``: prepare -> train detector(s) -> fine-tune decoder -> evaluate, one run folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="the whole paper pipeline in one run folder (profiles: paper = GPU recipe, quick = 2-core CPU)",
        description=(
            "Run prepare -> train-detector -> train-segmenter -> evaluate with the settings of --profile "
            "(saved as profile.yaml in the run folder). 'paper': the paper's hyperparameters (YOLOv5s + YOLOv5l, "
            "100 epochs SGD lr0 0.01; MedSAM decoder 100 epochs; a GPU job; needs --medsam-checkpoint). "
            "'quick': finishes on a 2-core CPU in about 10-15 minutes on the sample studies (LiteMedSAM). "
            "A YAML file of the same shape as profile.yaml may be given instead. Finished steps are skipped "
            "on a re-run with the same --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--studies", required=True, type=Path, help="BraTS studies folder (one sub-folder per case)")
    p.add_argument("--profile", default="quick", help="paper, quick, or a profile YAML file")
    p.add_argument("--out", type=Path, help="run folder (default runs/reproduce/<profile>)")
    p.add_argument("--sam-checkpoint", type=Path, help="SAM ViT-B weights for the zero-shot SAM row")
    p.add_argument("--medsam-checkpoint", type=Path, help="MedSAM ViT-B weights (zero-shot row; base of 'paper')")
    p.add_argument("--device", help="cpu, cuda, cuda:0 ... (None: CUDA when present)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..offline import PROJECT_ROOT
    from ..reproduce import load_profile, reproduce

    profile = load_profile(args.profile)
    out = args.out or PROJECT_ROOT / "runs" / "reproduce" / profile.name
    res = reproduce(args.studies, out, profile, sam_checkpoint=args.sam_checkpoint,
                    medsam_checkpoint=args.medsam_checkpoint, device=args.device)
    print(f"reproduce: done in {res['timings']['total']:.0f} s; report: {Path(out) / 'evaluation' / 'report.md'}")
    return 0
