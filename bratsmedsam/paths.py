"""Default locations of the real data the project reads but never ships.

``../shared/data`` beside the checkout holds the real BraTS case and the SRI24 atlas on the
development machines; anywhere else set ``BRATSMEDSAM_SHARED_DATA`` or pass explicit paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from .offline import PROJECT_ROOT


def shared_data_dir() -> Path:
    return Path(os.environ.get("BRATSMEDSAM_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def real_cases_dir() -> Path:
    """Folder of real BraTS 2023 cases (one sub-folder per case)."""
    return shared_data_dir() / "brats2023"


def unlabelled_cases_dir() -> Path:
    """Folder of real BraTS 2023 studies without segmentation (one sub-folder per case)."""
    return shared_data_dir() / "brats2023-unlabelled"


def sri24_dir() -> Path:
    return shared_data_dir() / "sri24"
