"""Shared fixtures: a small sample studies folder and its prepared dataset, built once per session.

Set BRATSMEDSAM_TEST_CACHE=/some/dir to keep them (and the segmenter's on-disk embedding cache)
between runs while developing; CI builds them fresh.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bratsmedsam import paths

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REAL_CASE_ID = "BraTS-GLI-00000-000"
HAVE_REAL = (paths.real_cases_dir() / REAL_CASE_ID).is_dir()
HAVE_SRI24 = (paths.sri24_dir() / "tissues.nii.gz").is_file()
needs_real = pytest.mark.skipif(not HAVE_REAL, reason="the real BraTS case (../shared/data/brats2023) is not on this machine")

# Small enough for a 2-core CPU, big enough for a 6:2:2 split by patient.
N_SYNTHETIC = 4
SEED = 0


def _cache_root(tmp_path_factory) -> Path:
    env = os.environ.get("BRATSMEDSAM_TEST_CACHE")
    if env:
        p = Path(env)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return _cache_root(tmp_path_factory)


@pytest.fixture(scope="session")
def sample_studies(cache_root) -> Path:
    """Real case (when present) + N_SYNTHETIC synthetic cases, BraTS 2023 layout."""
    from bratsmedsam.sample_data import write_sample_studies

    out = cache_root / "studies"
    if not (out / ".complete").exists():
        write_sample_studies(out, n_cases=N_SYNTHETIC, seed=SEED)
        (out / ".complete").write_text("ok")
    return out


@pytest.fixture(scope="session")
def sample_dataset(sample_studies, cache_root) -> Path:
    """The sample studies prepared with the default settings (detector t1c,t2w,t2f; segmenter t2f,t2f,t2f; WT)."""
    from bratsmedsam.prepare import PrepareConfig, prepare_dataset

    out = cache_root / "dataset"
    if not (out / "manifest.csv").exists():
        prepare_dataset(sample_studies, out, PrepareConfig(), workers=1)
    return out


@pytest.fixture(scope="session")
def quick_detector(sample_dataset, cache_root) -> Path:
    """The README's quick detector (``train-detector --quick``) on the sample dataset, trained once per session and
    shared (the server modules serve it, the quick reproduction resumes past its own detector step with it): its run
    folder, ``weights/best.pt`` inside, and ``seconds.txt``, how long the training took."""
    import time

    from bratsmedsam.detector import train_detector

    run = cache_root / "quick-detector"
    if not (run / "seconds.txt").is_file():  # written last: a half-trained folder is trained again
        t0 = time.time()
        train_detector(sample_dataset / "dataset.yaml", run, quick=True)
        (run / "seconds.txt").write_text(f"{time.time() - t0:.1f}")
    return run


@pytest.fixture(scope="module")
def studies_copy(sample_studies, tmp_path_factory) -> Path:
    """A private copy of the sample studies for one module (its server writes ``.brats_medsam/`` inside)."""
    import shutil

    out = tmp_path_factory.mktemp("studies-copy") / "studies"
    shutil.copytree(sample_studies, out, ignore=shutil.ignore_patterns(".*"))
    return out
