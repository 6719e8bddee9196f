"""The dataset layout the detector reads: an ultralytics data file, ``images/<split>/<case>_z<kkk>.png``
beside ``labels/<split>/<case>_z<kkk>.txt`` (YOLO lines; empty or missing = a tumour-free slice).

A leaf module: it imports nothing else of :mod:`bratsmedsam.detection`. Boxes it returns are
inclusive pixel XYXY (see :mod:`bratsmedsam.boxes`).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from ..boxes import yolo_to_xyxy
from ..errors import UserError

SPLIT_KEYS = ("train", "val", "test")
IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_STEM = re.compile(r"^(?P<case>.+)_z(?P<z>\d+)$")


def read_data_yaml(data_yaml: str | Path) -> tuple[dict, dict[str, Path]]:
    """An ultralytics data file -> (its dict, {split: absolute image folder}) for the splits it names."""
    p = Path(data_yaml)
    if p.is_dir():
        p = p / "dataset.yaml"
    if not p.is_file():
        raise UserError(f"detector data file {data_yaml} does not exist: expected a prepared dataset folder "
                        "or its dataset.yaml")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{p} is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or "train" not in data or "val" not in data:
        raise UserError(f"{p} must be an ultralytics data file with 'train' and 'val' image folders")
    root = Path(data.get("path") or p.parent)
    if not root.is_absolute():
        root = (p.parent / root).resolve()
    dirs = {}
    for split in SPLIT_KEYS:
        if data.get(split):
            d = Path(data[split])
            d = d if d.is_absolute() else root / d
            if not d.is_dir():
                raise UserError(f"{p}: the {split} image folder {d} does not exist")
            dirs[split] = d
    return data, dirs


def labels_dir(images_dir: Path) -> Path:
    """Ultralytics' rule: the labels of ``.../images/<x>`` live in ``.../labels/<x>``."""
    s = str(images_dir)
    i = s.rfind(f"{os.sep}images{os.sep}")
    if i < 0:
        raise UserError(f"image folder {images_dir} is not inside an 'images' folder, so its YOLO labels "
                        "cannot be found (expected .../images/<split> beside .../labels/<split>)")
    return Path(s[:i] + f"{os.sep}labels{os.sep}" + s[i + len("/images/"):])


def slices_by_case(files) -> dict[str, list[tuple[int, Path]]]:
    """Slice files named ``<case>_z<kkk>`` -> ``{case: [(z, file), ...]}``, each list sorted by z; a name
    without ``_z<kkk>`` is a case of its own at z 0. Cases in order of first appearance."""
    cases: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for f in files:
        m = _STEM.match(f.stem)
        case, z = (m["case"], int(m["z"])) if m else (f.stem, 0)
        cases[case].append((z, f))
    return {c: sorted(v) for c, v in cases.items()}


def split_slices(data_yaml, split: str) -> dict[str, list[tuple[int, Path, Path]]]:
    """``{case: [(z, image, label), ...]}`` (cases sorted, slices by z) for the images of ``split``."""
    _, dirs = read_data_yaml(data_yaml)
    if split not in dirs:
        raise UserError(f"{data_yaml} has no '{split}' split (it has {', '.join(dirs)})")
    lab = labels_dir(dirs[split])
    images = [f for f in sorted(dirs[split].iterdir()) if f.suffix.lower() in IMG_EXT]
    cases = slices_by_case(images)
    if not cases:
        raise UserError(f"the {split} image folder {dirs[split]} holds no images")
    return {c: [(z, f, lab / f"{f.stem}.txt") for z, f in cases[c]] for c in sorted(cases)}


def is_background(label: Path) -> bool:
    """A slice without tumour: its YOLO label file is missing or holds no box line."""
    return not label.is_file() or not any(line.strip() for line in label.read_text().splitlines())


def read_yolo_label(path: Path, width: int, height: int) -> np.ndarray:
    """A YOLO label file -> pixel-XYXY boxes (n, 4); a missing or empty file = no boxes."""
    if not path.is_file():
        return np.zeros((0, 4), np.float32)
    try:
        rows = [list(map(float, line.split()[1:5])) for line in path.read_text().splitlines() if line.strip()]
    except ValueError:
        raise UserError(f"{path} is not a YOLO label file (expected lines 'class cx cy w h')") from None
    return yolo_to_xyxy(np.asarray(rows, np.float64).reshape(-1, 4), width, height)
