"""``demo``: the README's first command - everything working on the embedded sample data, then serve."""

from __future__ import annotations

import time
from pathlib import Path

from ..offline import PROJECT_ROOT

#: the demo's synthetic cases: twice the ~8 the quick detector's profile was made for (10 training cases instead of
#: 5), trained for as many optimiser steps (``detection.training.quick_epochs``). On the real case held out of
#: training, two data seeds, P / R / mAP50: 0.760 / 0.581 / 0.524 and 0.818 / 0.650 / 0.628, against 0.297 / 0.300 /
#: 0.178 and 0.407 / 0.515 / 0.371 with 8 cases (README "The demo's detector: twice the cases")
CASES = 16


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="sample studies -> dataset -> quick detector (once) -> MONAI Label server on 127.0.0.1",
        description="Builds runs/demo/{studies,dataset,detector} when missing (each step is skipped when its "
        "output exists), then serves the app on the sample studies. First run on a 2-core CPU: see README.",
    )
    p.add_argument("--dir", type=Path, default=PROJECT_ROOT / "runs" / "demo", help="demo folder (default runs/demo)")
    p.add_argument("--cases", type=int, default=CASES, help=f"synthetic cases besides the real one (default {CASES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=("standard", "randomised"), default="randomised",
                   help="sample-data profile of the synthetic cases (default randomised: domain randomisation, "
                   "whose quick detector did better on the held-out real case than one trained on standard cases; "
                   "see README, 'Detector: domain randomisation')")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="build everything but do not start the server")
    p.set_defaults(func=run)


def _step(name: str, argv: list[str]) -> None:
    from ..cli import main as cli_main
    from ..errors import UserError

    print(f"\n== demo: {name}\n   python main.py {' '.join(argv)}", flush=True)
    t0 = time.time()
    code = cli_main(argv)
    if code != 0:
        raise UserError(f"demo step '{name}' failed (exit {code}); see the message above")
    print(f"== demo: {name} done in {time.time() - t0:.0f} s", flush=True)


def _add_unlabelled_real(studies: Path) -> None:
    """The real studies without labels (``../shared/data/brats2023-unlabelled``) join the demo, copied byte for
    byte: real anatomy to annotate from scratch. ``prepare`` skips them (no segmentation) with that reason."""
    import shutil

    from ..atomic import atomic_path
    from ..paths import unlabelled_cases_dir

    src = unlabelled_cases_dir()
    if not src.is_dir():
        return
    for case in sorted(p for p in src.iterdir() if p.is_dir() and (p / f"{p.name}-t1c.nii.gz").is_file()):
        dest = studies / case.name
        for f in sorted(case.glob(f"{case.name}-*.nii.gz")):
            if not (dest / f.name).is_file():
                with atomic_path(dest / f.name) as tmp:
                    shutil.copyfile(f, tmp)
        print(f"== demo: real unlabelled study {case.name} in {dest}", flush=True)


def run(args) -> int:
    root: Path = args.dir
    studies, dataset, det_dir = root / "studies", root / "dataset", root / "detector"
    weights = det_dir / "weights" / "best.pt"
    if not (studies / "sample_info.json").exists():
        _step("sample studies", ["sample-data", "--out", str(studies), "--cases", str(args.cases),
                                 "--seed", str(args.seed), "--profile", args.profile])
    _add_unlabelled_real(studies)
    if not (dataset / "manifest.csv").exists():
        _step("prepare dataset", ["prepare", "--studies", str(studies), "--out", str(dataset), "--workers", "2"])
    if not weights.exists():
        from ..detection.training import quick_epochs

        _step("train quick detector", ["train-detector", "--data", str(dataset / "dataset.yaml"), "--quick",
                                       "--epochs", str(quick_epochs(args.cases)), "--out", str(det_dir)])
    if args.no_serve:
        print(f"demo ready: studies {studies}, detector {weights}")
        return 0
    # The BraTS segmentations go in as "original" labels: every study starts unlabelled for the annotation loop.
    _step("serve", ["serve", "--studies", str(studies), "--detector", str(weights), "--port", str(args.port),
                    "--seg-tag", "original"])
    return 0
