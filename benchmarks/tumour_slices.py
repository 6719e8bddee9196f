"""The slices the in-process benchmarks time: a labelled case's tumour slices (>= 50 WT pixels), evenly spaced."""

from __future__ import annotations

from pathlib import Path


def tumour_slices(case: Path, n: int):
    """``(files, wt (X, Y, Z) bool, study, ks)``: the case, its WT mask, the study as the app loads it (displayed
    FLAIR, all configured modalities), and up to ``n`` tumour slice indices spread over the tumour."""
    from bratsmedsam.cases import case_files_in, load_case
    from bratsmedsam.regions import region_mask
    from bratsmedsam.studies import load_study

    files = case_files_in(case)
    wt = region_mask(load_case(files, [], with_seg=True).seg, "WT")
    study = load_study(files.images["t2f"])
    ks = [k for k in range(wt.shape[2]) if wt[:, :, k].sum() >= 50]
    return files, wt, study, ks[:: max(1, len(ks) // n)][:n]
