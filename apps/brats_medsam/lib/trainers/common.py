"""From the datastore's ``final`` labels to a training run, and atomic publishing of its result."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np

from bratsmedsam.atomic import atomic_path, save_nifti
from bratsmedsam.errors import UserError
from bratsmedsam.pipeline import find_case_files
from bratsmedsam.regions import REGIONS
from bratsmedsam.validation import check_label_file

logger = logging.getLogger(__name__)


def labelled_studies(datalist: list[dict], out: Path, channels, region: str,
                     label_values=(1,)) -> tuple[Path, list[dict]]:
    """Write a BraTS-layout studies folder for ``prepare_dataset``: per datastore item, the configured
    modalities (symlinks to the case's files; the image itself where a modality is missing) and a
    ``seg`` whose foreground carries a label value inside ``region`` (so the region mask is the label).
    A label that is unusable (unreadable, off the image's grid, unknown values) is skipped, not fatal:
    returns ``(folder, [{"image": id, "reason": ...}, ...])``."""
    import nibabel as nib

    fg_value = REGIONS[region][-1]
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = 0, []
    for item in datalist:
        image, label = Path(item["image"]), Path(item["label"])
        files = find_case_files(image)
        cid = re.sub(r"[^A-Za-z0-9_.-]", "_", files.case_id if files else image.name.split(".")[0])
        try:
            ref = nib.load(str(image))
            seg = check_label_file(label, image, label_values, what=f"label {label.name}")
        except (UserError, OSError, ValueError) as exc:
            logger.warning(f"{cid}: label skipped: {exc}")
            skipped.append({"image": cid, "reason": str(exc)})
            continue
        case_dir = out / cid
        case_dir.mkdir(exist_ok=True)
        for mod in channels:
            src = Path(files.images[mod]) if files and mod in files.images else image
            link = case_dir / f"{cid}-{mod}{''.join(src.suffixes[-2:]) if src.name.endswith('.nii.gz') else '.nii'}"
            if not link.exists():
                link.symlink_to(src.resolve())
        seg_img = nib.Nifti1Image((seg > 0).astype(np.uint8) * np.uint8(fg_value), ref.affine)
        save_nifti(seg_img, case_dir / f"{cid}-seg.nii.gz")
        written += 1
    if not written:
        why = "; ".join(f"{s['image']}: {s['reason']}" for s in skipped[:5])
        raise UserError("no usable final label in the datastore: submit a label (tag 'final') first"
                        + (f" (skipped: {why})" if why else ""))
    if written == 1:  # fine-tuning keeps the best epoch by validation Dice: one labelled study serves as both
        only = next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
        alias = out / f"{only.name}__val"
        if not alias.exists():
            alias.symlink_to(only.resolve(), target_is_directory=True)
    return out, skipped


def split_for(n_cases: int) -> tuple[float, float, float]:
    """Training cases vs. validation cases (best epoch) for a handful of labelled studies; no test split."""
    return (0.5, 0.5, 0.0) if n_cases <= 2 else (0.75, 0.25, 0.0)


def publish(src: str | Path, target: Path) -> Path:
    """Copy a finished checkpoint beside ``target`` and ``os.replace`` it in: readers see old or new, never half."""
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    logger.info(f"published {target}")
    return target


def run_dir(model_dir: Path, kind: str) -> Path:
    d = model_dir / "train" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    d.mkdir(parents=True, exist_ok=True)
    return d
