"""3D clean-up: speckle goes, lesions stay (also a second, separate lesion)."""

from __future__ import annotations

import numpy as np

from bratsmedsam.cleanup import components, remove_small_components
from bratsmedsam.metrics import lesion_wise


def _two_lesions_and_speckle() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((60, 60, 40), bool)
    gt[10:25, 10:25, 5:20] = True          # 3,375 voxels
    gt[40:48, 40:48, 25:31] = True         # a second, smaller lesion: 384 voxels (multifocal)
    pred = gt.copy()
    pred[30, 5, 10] = pred[5, 50, 30] = True        # single-voxel specks
    pred[50:53, 10:13, 2:4] = True                  # an 18-voxel piece
    return pred, gt


def test_small_components_go_and_both_lesions_stay():
    pred, gt = _two_lesions_and_speckle()
    out = remove_small_components(pred, min_mm3=100)
    assert components(pred) == 5 and out.components_before == 5
    assert out.components_removed == 3 and out.voxels_removed == 20
    assert np.array_equal(out.label, gt)
    assert lesion_wise(pred, gt).n_false_positives == 3 and lesion_wise(out.label, gt).n_false_positives == 0


def test_the_threshold_is_in_mm3_so_a_coarser_grid_keeps_the_same_lesions():
    pred, gt = _two_lesions_and_speckle()
    # 2 mm voxels along z: the 18-voxel piece is 36 mm^3, the small lesion 768 mm^3
    out = remove_small_components(pred, min_mm3=30, spacing=(1, 1, 2))
    assert out.components_removed == 2 and out.label[50:53, 10:13, 2:4].all()


def test_zero_keeps_everything_and_an_empty_volume_stays_empty():
    pred, _ = _two_lesions_and_speckle()
    assert np.array_equal(remove_small_components(pred, 0).label, pred)
    empty = remove_small_components(np.zeros((5, 5, 5), bool))
    assert not empty.label.any() and empty.components_before == 0
