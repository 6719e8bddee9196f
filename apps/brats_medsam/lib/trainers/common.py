"""A training run from the datastore's ``final`` labels (``bratsmedsam.studies.labelled_studies``), and atomic
publishing of its result."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from bratsmedsam.atomic import atomic_path

logger = logging.getLogger(__name__)


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
