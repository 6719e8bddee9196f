"""The app's training input: stored labels that are unusable are skipped with their reason, not fatal."""

from __future__ import annotations

import numpy as np
import pytest


def test_unusable_final_labels_are_listed_with_the_reason_and_the_rest_train(sample_studies, tmp_path):
    from bratsmedsam.cases import discover_cases, load_case
    from bratsmedsam.errors import UserError
    from bratsmedsam.regions import region_mask
    from bratsmedsam.studies import labelled_studies, write_label

    cases = sorted(discover_cases(sample_studies), key=lambda c: c.case_id)[:2]
    good = write_label(region_mask(load_case(cases[0], [], with_seg=True).seg, "WT"), cases[0].images["t2f"],
                       tmp_path / "good.nii.gz")
    text = tmp_path / "text.nii.gz"
    text.write_bytes(b"7 bytes")
    items = [{"image": cases[0].images["t2f"], "label": str(good)}, {"image": cases[1].images["t2f"], "label": str(text)}]
    out, skipped = labelled_studies(items, tmp_path / "studies", ("t1c", "t2w", "t2f"), "WT")
    assert [s["image"] for s in skipped] == [cases[1].case_id]
    assert "not a readable NIfTI or NRRD" in skipped[0]["reason"]
    seg = next((out / cases[0].case_id).glob("*-seg.nii.gz"))
    import nibabel as nib

    assert np.asarray(nib.load(seg).dataobj).any()
    with pytest.raises(UserError, match="no usable final label.*not a readable"):
        labelled_studies(items[1:], tmp_path / "none", ("t1c", "t2w", "t2f"), "WT")
