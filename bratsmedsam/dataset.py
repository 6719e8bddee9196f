"""Reading a prepared dataset (the output of ``prepare``; layout in docs/DESIGN.md).

``manifest.csv`` has one row per slice: ``case,z,split,image,mask,label,boxes_xyxy,area,segmenter_image`` with
paths relative to the dataset folder and ``boxes_xyxy`` a JSON list of inclusive pixel-XYXY boxes. ``image`` is the
slice in the detector's channel stack, ``segmenter_image`` in the segmenter's (the same file when the stacks are the
same; datasets written before there were two stacks lack the column, and their one image serves both).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

MANIFEST = "manifest.csv"
INFO = "prepare.json"
DATA_YAML = "dataset.yaml"
COLUMNS = ("case", "z", "split", "image", "mask", "label", "boxes_xyxy", "area", "segmenter_image")
_ONE_STACK_COLUMNS = COLUMNS[:-1]  # a dataset of one stack, written before the segmenter had its own
SPLITS = ("train", "val", "test")


@dataclass
class SliceRecord:
    """One slice of the dataset. Paths are absolute; ``boxes_xyxy`` float32 ``(n, 4)`` inclusive pixel XYXY."""

    case: str
    z: int
    split: str
    image: Path  # in the detector's stack
    mask: Path
    label: Path
    boxes_xyxy: np.ndarray
    area: int  # tumour (target-region) pixels in the slice
    segmenter_image: Path  # in the segmenter's stack (``image`` when the stacks are the same)


def slice_stem(case: str, z: int) -> str:
    """File stem of slice ``z`` of ``case``: ``<case>_z<kkk>``."""
    return f"{case}_z{z:03d}"


def _dataset_dir(dataset_dir: str | Path) -> Path:
    d = Path(dataset_dir)
    if not (d / MANIFEST).is_file():
        raise UserError(f"{d} is not a prepared dataset: {MANIFEST} is missing (run `python main.py prepare` first)")
    return d


def load_manifest(dataset_dir: str | Path, split: str | None = None) -> list[SliceRecord]:
    """All slices of a prepared dataset (optionally one split), in manifest order."""
    d = _dataset_dir(dataset_dir)
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    out = []
    with open(d / MANIFEST, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) not in (COLUMNS, _ONE_STACK_COLUMNS):
            raise UserError(f"{d / MANIFEST} has columns {reader.fieldnames}, expected {list(COLUMNS)}")
        for row in reader:
            if split is not None and row["split"] != split:
                continue
            boxes = np.asarray(json.loads(row["boxes_xyxy"]), dtype=np.float32).reshape(-1, 4)
            out.append(SliceRecord(
                case=row["case"], z=int(row["z"]), split=row["split"],
                image=d / row["image"], mask=d / row["mask"], label=d / row["label"],
                boxes_xyxy=boxes, area=int(row["area"]), segmenter_image=d / row.get("segmenter_image", row["image"]),
            ))
    return out


def manifest_row(rec: dict) -> dict:
    """A manifest row (strings) from a record dict with relative paths and a boxes list."""
    return {**rec, "boxes_xyxy": json.dumps(rec["boxes_xyxy"])}


def labelmap_path(rec: SliceRecord) -> Path:
    """The slice's BraTS label map PNG (``labelmaps/<split>/<stem>.png``, beside ``masks/``), written by ``prepare``
    since multi-region support; older datasets lack it (:func:`read_labelmap` says so)."""
    return rec.mask.parent.parent.parent / "labelmaps" / rec.mask.parent.name / rec.mask.name


def read_labelmap(rec: SliceRecord) -> np.ndarray:
    """The slice's BraTS label map as uint8 ``(H, W)`` in {0, 1 NCR, 2 ED, 3 ET}."""
    from PIL import Image

    path = labelmap_path(rec)
    if not path.is_file():
        raise UserError(f"{path} does not exist: the dataset was prepared before label maps were written "
                        "(run prepare again for multi-region fine-tuning or evaluation)")
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2 or arr.max(initial=0) > 3:
        raise UserError(f"label map {path} has shape {arr.shape} and values up to {arr.max(initial=0)}: expected a "
                        "single-channel PNG with BraTS labels 0-3")
    return arr.astype(np.uint8)


def has_labelmaps(dataset_dir: str | Path) -> bool:
    """Whether ``prepare`` wrote label maps for this dataset (``prepare.json``)."""
    try:
        return bool(load_info(dataset_dir).get("labelmaps"))
    except UserError:
        return False


def dataset_stacks(info: dict):
    """The channel stacks (``intensity.Stacks``) a dataset's ``prepare.json`` records: a dataset of one stack
    (``channels``) gives it to both models, one that records none the paper's (the default before either)."""
    from .intensity import PAPER_CHANNELS, Stacks

    if info.get("detector_channels"):
        return Stacks(tuple(info["detector_channels"]), tuple(info.get("segmenter_channels") or info["detector_channels"]))
    one = tuple(info.get("channels") or PAPER_CHANNELS)  # as recorded (not re-validated)
    return Stacks(one, one)


def load_info(dataset_dir: str | Path) -> dict:
    """``prepare.json``: settings (channel stacks, region, ...), studies dir, cases used/skipped, ``splits`` {case: split}."""
    path = _dataset_dir(dataset_dir) / INFO
    if not path.is_file():
        raise UserError(f"{path} is missing: the dataset was not finished by `prepare`")
    return json.loads(path.read_text())


def read_image(path: str | Path) -> np.ndarray:
    """A slice PNG as uint8 ``(H, W, 3)``, channels in the dataset's modality order."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"slice image {path} does not exist")
    with Image.open(path) as im:
        if im.mode != "RGB":
            raise UserError(f"slice image {path} is {im.mode}, expected an 8-bit RGB PNG")
        return np.asarray(im, dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as bool ``(H, W)`` (stored as uint8 0/255)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask {path} does not exist")
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise UserError(f"mask {path} has shape {arr.shape}, expected a single-channel (H, W) image")
    return arr > 0
