"""YOLO training with the paper's recipe (III.B): YOLOv5s, 100 epochs, SGD, lr0 0.01, from scratch offline.

The run folder holds everything: ultralytics' ``args.yaml``, ``results.csv``, curves, ``weights/``,
our ``train_detector.json`` (arguments, device, time, final metrics) and a run-local view of the
dataset (``data/``: links to the dataset's image/label folders) so that ultralytics' label cache
lands in the run folder, not in the dataset.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

import yaml

from .. import atomic
from ..errors import UserError
from . import ultra

# The paper's recipe: the defaults of train_detector.
PAPER = {"model": "yolov5s", "epochs": 100, "imgsz": 256, "batch": 16, "optimizer": "SGD", "lr0": 0.01}
# --quick: a CPU profile that learns real boxes in a few minutes on the ~9-case sample dataset.
# nbs = batch: one optimiser step per batch (ultralytics accumulates to 64 images otherwise, so a
# short run would take only a few dozen steps); no warmup (ultralytics' minimum is 100 steps, a third
# of this run). On the 9-case sample set (403 training slices) this gave val mAP50 0.29 vs 0.20 with
# batch 16 / nbs 16 / 1 warmup epoch, for the same ~3 CPU minutes.
QUICK = {"model": "yolov5n", "epochs": 12, "imgsz": 160, "batch": 8, "optimizer": "SGD", "lr0": 0.01,
         "nbs": 8, "warmup_epochs": 0, "close_mosaic": 2}
SPLIT_KEYS = ("train", "val", "test")


def auto_device(device: str | None = None) -> str:
    """``device`` as given, else ``"0"`` (first CUDA GPU) when CUDA is available, else ``"cpu"``."""
    if device:
        return str(device)
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


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


def run_local_data(data_yaml: str | Path, run_dir: Path) -> Path:
    """Write ``run_dir/data/dataset.yaml`` whose split folders link to the dataset's; returns its path."""
    data, dirs = read_data_yaml(data_yaml)
    view = run_dir / "data"
    local = {"path": str(view.resolve()), "names": data.get("names") or {0: "tumour"}}
    for split, d in dirs.items():
        labels = labels_dir(d)
        if not labels.is_dir():
            raise UserError(f"{data_yaml}: the {split} labels folder {labels} does not exist")
        # Ultralytics resolves the image folder (following a folder link) and writes its label cache
        # beside the labels it derives from the image paths: a real folder of per-file links keeps
        # both in the run folder.
        images = view / "images" / split
        if images.is_symlink():
            images.unlink()
        elif images.is_dir():
            shutil.rmtree(images)
        images.mkdir(parents=True)
        for f in sorted(d.iterdir()):
            if f.is_file():
                (images / f.name).symlink_to(f.resolve())
        link = view / "labels" / split
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(labels.resolve(), target_is_directory=True)
        local[split] = f"images/{split}"
    return atomic.write_text(view / "dataset.yaml", yaml.safe_dump(local, sort_keys=False))


def check_overrides(overrides: dict) -> None:
    """Raise UserError for a key ultralytics does not know (typos would otherwise be silently ignored)."""
    ultra.ultralytics_module()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    unknown = sorted(set(overrides) - set(DEFAULT_CFG_DICT))
    if unknown:
        raise UserError(f"unknown ultralytics training argument(s) {', '.join(unknown)}; "
                        "see `yolo cfg` / ultralytics' default.yaml for the valid keys")


def train_detector(data_yaml, out_dir, model: str | None = None, epochs: int | None = None,
                   imgsz: int | None = None, batch: int | None = None, quick: bool = False,
                   device: str | None = None, **ultralytics_overrides) -> Path:
    """Train a YOLO detector; returns the path of ``out_dir/weights/best.pt``.

    Defaults are the paper's recipe (:data:`PAPER`: yolov5s, 100 epochs, imgsz 256, batch 16, SGD,
    lr0 0.01); ``quick=True`` swaps in :data:`QUICK` for every argument left as None. Any other
    ultralytics training argument passes through ``ultralytics_overrides`` (checked by name).
    ``model`` is a name (built from its yaml, random init: no pretrained weights exist offline),
    a model yaml, or a weights file to start from.
    """
    profile = dict(QUICK if quick else PAPER)
    given = {"model": model, "epochs": epochs, "imgsz": imgsz, "batch": batch}
    profile.update({k: v for k, v in given.items() if v is not None})
    profile.update(ultralytics_overrides)
    check_overrides({k: v for k, v in profile.items() if k != "model"})
    forbidden = {"data", "project", "name", "save_dir"} & set(ultralytics_overrides)
    if forbidden:
        raise UserError(f"train-detector sets {', '.join(sorted(forbidden))} itself: give the dataset as DATA "
                        "and the run folder as --out / out_dir")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    local_yaml = run_local_data(data_yaml, out_dir)
    model_name = profile.pop("model")
    dev = auto_device(device)
    args = {**profile, "data": str(local_yaml), "project": str(out_dir.parent), "name": out_dir.name,
            "exist_ok": True, "device": dev, "plots": profile.get("plots", True)}
    net = ultra.yolo(model_name)
    started = time.time()
    net.train(**args)
    elapsed = time.time() - started
    trainer = net.trainer
    best = Path(trainer.best)
    if not best.is_file():
        best = Path(trainer.last)
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    atomic.write_json(out_dir / "train_detector.json", {
        "data": str(Path(data_yaml).resolve()), "model": model_name, "quick": quick, "device": dev,
        "arguments": args, "seconds": round(elapsed, 1), "epochs_run": int(trainer.epoch) + 1,
        "best": str(best), "final_val_metrics": metrics,
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    })
    return best
