"""YOLO training with the paper's recipe (III.B): YOLOv5s, 100 epochs, SGD, lr0 0.01, from scratch offline.

The run folder holds everything: ultralytics' ``args.yaml``, ``results.csv``, curves, ``weights/``,
our ``train_detector.json`` (arguments, device, wall and CPU time, final metrics, the operating
threshold) and a run-local view of the dataset (``data/``: links to the dataset's image/label
folders, the training slices possibly subsampled) so that ultralytics' label cache lands in the run
folder, not in the dataset.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from .. import atomic
from ..devices import ultralytics_device
from ..errors import UserError
from . import ultra
from .layout import is_background, labels_dir, read_data_yaml, slices_by_case
from .threshold import select_threshold
from .weights import store_channels

# The paper's recipe: the defaults of train_detector.
PAPER = {"model": "yolov5s", "epochs": 100, "imgsz": 256, "batch": 16, "optimizer": "SGD", "lr0": 0.01}
# --quick: a CPU profile for the ~9-case sample dataset (5 training cases), measured on 2 shared cores
# (runs of the table in the train-detector help). Training from scratch here is bound by the number
# of optimiser steps, so: every 2nd training slice per case and at most 10% tumour-free ones (128 of
# 343 images; neighbouring slices are near-duplicates), batch 8 with nbs 8 (one step per batch, no
# accumulation), 30 epochs (480 steps), no warmup, validation only after the last epoch (best.pt =
# last.pt). imgsz 224 (not 160: a quarter of the boxes are under 10 pixels wide; 256/320/384 cost
# more per step and did worse for the same CPU time). About 4 CPU minutes; val mAP50 0.29-0.48 over
# two seeds (0.37 with 256/20 epochs); 45 epochs reached val 0.55 once but test 0.08 (overfits 5 cases).
QUICK = {"model": "yolov5n", "epochs": 30, "imgsz": 224, "batch": 8, "optimizer": "SGD", "lr0": 0.01,
         "nbs": 8, "warmup_epochs": 0, "close_mosaic": 3, "val": False,
         "train_slice_step": 2, "train_background": 0.1}
# The synthetic cases of the sample dataset QUICK's 30 epochs were measured on (besides the real case).
QUICK_CASES = 8


def quick_epochs(cases: int) -> int:
    """QUICK's epochs scaled from :data:`QUICK_CASES` synthetic cases to ``cases``, so that a larger sample dataset
    trains for about the same optimiser steps and CPU time (16 cases: 15 epochs)."""
    return max(1, round(QUICK["epochs"] * QUICK_CASES / max(1, cases)))


# Our own training options (not ultralytics'): subsampling of the training slices (subsample_slices) and the
# share of real cases among the training images (mix_real).
OWN_KEYS = ("train_slice_step", "train_background", "real_weight")
_SYNTHETIC_ID = re.compile(r"^BraTS-[A-Z]+-9\d{4}-\d{3}$")  # the sample data's reserved ids (BraTS-GLI-9xxxx-000)


def is_synthetic_case(case: str) -> bool:
    """True for the synthetic sample cases' reserved ids ``BraTS-GLI-9xxxx-000``; every other case is real."""
    return bool(_SYNTHETIC_ID.match(case))


def mix_real(images: list[Path], real_weight: float | None) -> tuple[list[tuple[str, Path]], dict]:
    """Training images as (link name, file), the real cases' ones repeated so that they make up about
    ``real_weight`` of the list; and a summary (``real_share`` is the share reached).

    ``real_weight`` None: every image once (the natural share). 0: real images left out. Otherwise each real
    image appears ``copies = max(1, round(w * n_synthetic / ((1 - w) * n_real)))`` times (copy c > 0 is
    named ``<case>-r<c>_z<kkk>``, so it stays a slice of its own case); a real weight below the natural
    share does not drop real images, use 0 for that. Without real (or synthetic) images nothing is repeated.
    """
    if real_weight is not None and not 0 <= real_weight < 1:
        raise UserError(f"real_weight must be in [0, 1) (the share of real-case images in training), got {real_weight}")
    by_case = slices_by_case(images)
    real = [f for c, items in by_case.items() if not is_synthetic_case(c) for _, f in items]
    synthetic = [f for c, items in by_case.items() if is_synthetic_case(c) for _, f in items]
    if real_weight is None or not real or not synthetic:
        copies = 1
    elif real_weight == 0:
        copies = 0
    else:
        copies = max(1, round(real_weight * len(synthetic) / ((1 - real_weight) * len(real))))
    out = [(f.name, f) for f in synthetic]
    for f in real:
        out += [(f.name if c == 0 else _copy_name(f, c), f) for c in range(copies)]
    n_real = copies * len(real)
    summary = {"real_weight": real_weight, "real_cases": sorted(c for c in by_case if not is_synthetic_case(c)),
               "real_images": len(real), "copies": copies, "synthetic_images": len(synthetic),
               "training_images": len(out), "real_share": round(n_real / len(out), 4) if out else 0.0}
    return sorted(out), summary


def _copy_name(f: Path, c: int) -> str:
    case, _, z = f.stem.rpartition("_z")
    return f"{case}-r{c}_z{z}{f.suffix}"


def subsample_slices(images: list[Path], labels: Path, slice_step: int = 1,
                     background: float | None = None) -> list[Path]:
    """The training images kept by the subsampling options (all of them with the defaults).

    ``slice_step`` k: per case (names ``<case>_z<kkk>``), every k-th slice in z order (neighbouring
    axial slices are near-duplicates). ``background`` f: then at most a fraction f of the kept images
    are tumour-free ones, evenly spaced among them. Deterministic: same inputs, same subset.
    """
    if slice_step < 1:
        raise UserError(f"train_slice_step must be >= 1, got {slice_step}")
    if background is not None and not 0 <= background < 1:
        raise UserError(f"train_background must be in [0, 1), got {background}")
    kept = [f for items in slices_by_case(images).values() for n, (_, f) in enumerate(items) if n % slice_step == 0]
    if background is None:
        return sorted(kept)
    bg = [f for f in kept if is_background(labels / f"{f.stem}.txt")]
    fg = [f for f in kept if not is_background(labels / f"{f.stem}.txt")]
    n_bg = min(len(bg), int(round(background / (1 - background) * len(fg))))
    pick = np.linspace(0, len(bg) - 1, n_bg).round().astype(int) if n_bg else []
    return sorted(fg + [bg[i] for i in pick])


def run_local_data(data_yaml: str | Path, run_dir: Path, slice_step: int = 1,
                   background: float | None = None, real_weight: float | None = None) -> tuple[Path, dict[str, int], dict]:
    """Write ``run_dir/data/dataset.yaml`` whose split folders link to the dataset's.

    The train split is subsampled by :func:`subsample_slices` (``slice_step``, ``background``), then its
    real cases weighted by :func:`mix_real` (``real_weight``; its labels linked file by file, repeats
    included); val and test are linked whole. Returns (its path, {split: images linked}, mix_real's summary).
    """
    data, dirs = read_data_yaml(data_yaml)
    view = run_dir / "data"
    local = {"path": str(view.resolve()), "names": data.get("names") or {0: "tumour"}}
    counts = {}
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
        files = sorted(f for f in d.iterdir() if f.is_file())
        link = view / "labels" / split
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        if split == "train":
            named, mixing = mix_real(subsample_slices(files, labels, slice_step, background), real_weight)
            link.mkdir()
            for name, f in named:
                (images / name).symlink_to(f.resolve())
                label = labels / f"{f.stem}.txt"
                if label.is_file():
                    (link / f"{Path(name).stem}.txt").symlink_to(label.resolve())
            counts[split] = len(named)
        else:
            for f in files:
                (images / f.name).symlink_to(f.resolve())
            link.symlink_to(labels.resolve(), target_is_directory=True)
            counts[split] = len(files)
        local[split] = f"images/{split}"
    return atomic.write_text(view / "dataset.yaml", yaml.safe_dump(local, sort_keys=False)), counts, mixing


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
                   device: str | None = None, **overrides) -> Path:
    """Train a YOLO detector; returns the path of ``out_dir/weights/best.pt``.

    Defaults are the paper's recipe (:data:`PAPER`: yolov5s, 100 epochs, imgsz 256, batch 16, SGD,
    lr0 0.01, every training slice); ``quick=True`` swaps in :data:`QUICK` for every argument left
    as None. ``overrides``: our own :data:`OWN_KEYS` (training-slice subsampling) or any ultralytics
    training argument (checked by name). ``model`` is a name (built from its yaml, random init: no
    pretrained weights exist offline), a model yaml, or a weights file to start from.

    After training, the validation split's max-F1 confidence is stored in the best weights
    (:func:`bratsmedsam.detection.threshold.select_threshold`): ``Detector(weights)`` operates there.
    """
    profile = dict(QUICK if quick else PAPER)
    given = {"model": model, "epochs": epochs, "imgsz": imgsz, "batch": batch}
    profile.update({k: v for k, v in given.items() if v is not None})
    profile.update(overrides)
    own = {k: profile.pop(k) for k in OWN_KEYS if k in profile}
    check_overrides({k: v for k, v in profile.items() if k != "model"})
    forbidden = {"data", "project", "name", "save_dir"} & set(overrides)
    if forbidden:
        raise UserError(f"train-detector sets {', '.join(sorted(forbidden))} itself: give the dataset as DATA "
                        "and the run folder as --out / out_dir")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    local_yaml, counts, mixing = run_local_data(data_yaml, out_dir, slice_step=int(own.get("train_slice_step") or 1),
                                                background=own.get("train_background"),
                                                real_weight=own.get("real_weight"))
    print(f"training images: {mixing['training_images']} ({mixing['synthetic_images']} synthetic, "
          f"{mixing['real_images']} real x {mixing['copies']}); real share {mixing['real_share']:.3f} "
          f"(real_weight {mixing['real_weight']}; real cases: {', '.join(mixing['real_cases']) or 'none'})", flush=True)
    model_name = profile.pop("model")
    dev = ultralytics_device(device)
    args = {**profile, "data": str(local_yaml), "project": str(out_dir.parent), "name": out_dir.name,
            "exist_ok": True, "device": dev, "plots": profile.get("plots", True)}
    net = ultra.yolo(model_name)
    started, cpu0 = time.time(), _cpu_seconds()
    net.train(**args)
    elapsed, cpu = time.time() - started, _cpu_seconds() - cpu0
    trainer = net.trainer
    best = Path(trainer.best)
    if not best.is_file():
        best = Path(trainer.last)
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    operating = select_threshold(best, local_yaml, device=dev.split(",")[0])  # validation: one GPU
    channels = dataset_channels(data_yaml)
    if channels:
        store_channels(best, channels)
    atomic.write_json(out_dir / "train_detector.json", {
        "data": str(Path(data_yaml).resolve()), "model": model_name, "quick": quick, "device": dev,
        "arguments": args, "subsampling": own, "images": counts, "real_mixing": mixing, "seconds": round(elapsed, 1),
        "cpu_seconds": round(cpu, 1), "epochs_run": int(trainer.epoch) + 1,
        "best": str(best), "final_val_metrics": metrics, "operating_threshold": operating, "channels": channels,
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    })
    return best


def dataset_channels(data_yaml) -> list[str] | None:
    """The detector's channels (``images/``) of the prepared dataset whose ``dataset.yaml`` is ``data_yaml`` (its
    ``prepare.json``), or None for a dataset ``prepare`` did not make."""
    from ..dataset import load_info

    try:
        info = load_info(Path(data_yaml).parent)
        got = info.get("detector_channels") or info.get("channels")
    except (UserError, OSError, ValueError, AttributeError):
        return None
    return [str(c) for c in got] if isinstance(got, list) and len(got) == 3 else None


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ultralytics' data-loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
