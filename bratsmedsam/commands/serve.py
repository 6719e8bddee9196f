"""``serve``: the MONAI Label app on a BraTS studies folder (offline, 127.0.0.1 by default).

The studies folder keeps its BraTS layout. ``serve`` builds a flat MONAI Label datastore inside it,
``STUDIES/.brats_medsam/store/``: one image per case, ``<case_id>.nii.gz``, a symlink to the case's
displayed modality (t2f, else t1c); the app finds the sibling modalities through the link. A case's
BraTS segmentation becomes the label ``labels/<seg-tag>/<case_id>.nii.gz`` (the app's region as value 1).
Published models live in ``STUDIES/.brats_medsam/model/`` unless ``--model-dir`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..offline import PROJECT_ROOT

APP_DIR = PROJECT_ROOT / "apps" / "brats_medsam"


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the MONAI Label app (detector / medsam / pipeline) on a studies folder",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--studies", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--detector", type=Path, help="YOLO weights to serve (copied into the model folder)")
    p.add_argument("--decoder", type=Path, help="fine-tuned mask decoder checkpoint (train-segmenter output)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-dir", type=Path, help="published models (default STUDIES/.brats_medsam/model)")
    p.add_argument("--channels", default="t1c,t2w,t2f", help="modalities stacked as the models' 3 channels")
    p.add_argument("--region", default="WT", choices=["WT", "TC", "ET"], help="the label the app draws")
    p.add_argument("--display", default="t2f,t1c", help="modality shown per study, first one present")
    p.add_argument("--seg-tag", default="final", choices=["final", "original", "none"],
                   help="datastore tag for existing BraTS segmentations (final = used for training)")
    p.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="extra app setting (see apps/brats_medsam/lib/configs/settings.py)")
    p.add_argument("--dry-run", action="store_true", help="build the datastore, print the command, do not start")
    p.set_defaults(func=run)


def build_store(studies: Path, store: Path, display=("t2f", "t1c"), region: str = "WT",
                seg_tag: str = "final") -> dict:
    """Flat datastore for ``studies`` (see the module docstring). Returns ``{case_id: displayed file}``."""
    import numpy as np

    from ..cases import discover_cases, load_case
    from ..pipeline import write_label
    from ..regions import region_mask

    shown = {}
    (store / "labels" / "final").mkdir(parents=True, exist_ok=True)
    for files in discover_cases(studies):
        mod = next((m for m in display if m in files.images), None) or next(iter(sorted(files.images)), None)
        if mod is None:
            continue
        src = Path(files.images[mod]).resolve()
        ext = ".nii.gz" if src.name.endswith(".nii.gz") else ".nii"
        link = store / f"{files.case_id}{ext}"
        if link.is_symlink() and link.resolve() != src:
            link.unlink()
        if not link.exists():
            link.symlink_to(src)
        shown[files.case_id] = src
        if files.seg is not None and seg_tag != "none":
            target = store / "labels" / seg_tag / f"{files.case_id}.nii.gz"
            if not target.exists() or target.stat().st_mtime < Path(files.seg).stat().st_mtime:
                seg = load_case(files, [], with_seg=True).seg
                write_label(region_mask(seg, region).astype(np.uint8), src, target)
    return shown


def server_command(args, store: Path, model_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(store),
           "--host", args.host, "--port", str(args.port),
           "--conf", "model_dir", str(model_dir), "--conf", "channels", args.channels,
           "--conf", "region", args.region, "--conf", "sam2", "false"]
    for k, v in args.conf:
        cmd += ["--conf", k, v]
    return cmd


def run(args) -> int:
    from ..atomic import atomic_path
    from ..errors import UserError
    import shutil

    studies = args.studies.resolve()
    if not studies.is_dir():
        raise UserError(f"studies folder {studies} does not exist (expected one sub-folder per BraTS case)")
    store = studies / ".brats_medsam" / "store"
    model_dir = (args.model_dir or studies / ".brats_medsam" / "model").resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    shown = build_store(studies, store, tuple(args.display.split(",")), args.region, args.seg_tag)
    for src, name in ((args.detector, "detector.pt"), (args.decoder, "medsam_decoder.pt")):
        if src is not None:
            if not src.is_file():
                raise UserError(f"{src}: no such weights file")
            with atomic_path(model_dir / name) as tmp:
                shutil.copyfile(src, tmp)
    cmd = server_command(args, store, model_dir)
    print(f"serving {len(shown)} studies from {studies} on http://{args.host}:{args.port}", flush=True)
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "true")
    os.execve(sys.executable, cmd, env)
    return 0  # not reached
