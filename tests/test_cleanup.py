"""3D clean-up: speckle goes, lesions stay (also a second, separate lesion)."""

from __future__ import annotations

import numpy as np

from bratsmedsam.cleanup import components, remove_small_components, remove_unsupported_components
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


def test_components_no_confident_box_lies_on_go_and_a_multifocal_lesion_with_one_stays():
    pred, gt = _two_lesions_and_speckle()
    stray = np.zeros_like(pred)
    stray[30:45, 45:58, 33:40] = True  # a large false positive (1,365 voxels): bigger than any size threshold
    pred |= stray
    # boxes are pixel XYXY on axial slice k: x = voxel i, y = voxel j
    boxes = {12: np.array([[10, 10, 24, 24]], np.float32),   # sure (>= SURE_CONF), on the big lesion
             27: np.array([[40, 40, 47, 47]], np.float32),   # the second lesion: a weak box on one slice
             28: np.array([[40, 40, 47, 47]], np.float32),   # and a confident one on the next
             35: np.array([[31, 46, 44, 57]], np.float32)}   # on the stray component, but weak
    conf = {12: np.array([0.8], np.float32), 27: np.array([0.15], np.float32), 28: np.array([0.35], np.float32),
            35: np.array([0.12], np.float32)}
    out = remove_unsupported_components(pred, boxes, conf, min_conf=0.3)
    assert np.array_equal(out.label, gt) and out.components_before == 6 and out.components_removed == 4
    assert lesion_wise(out.label, gt).n_false_positives == 0
    # no box reaches the bar: the component with the most 3D evidence is kept, the rest go
    weak = {k: v * 0.2 for k, v in conf.items()}
    kept = remove_unsupported_components(pred, boxes, weak, min_conf=0.3).label
    assert kept[10:25, 10:25, 5:20].all() and kept.sum() == 15 ** 3
    assert not remove_unsupported_components(pred, {}, {}, 0.3).label.any()  # no detection, nothing supported


def test_a_box_under_the_sure_bar_vouches_only_for_a_lesion_boxed_on_two_slices():
    pred, gt = _two_lesions_and_speckle()
    stray = np.zeros_like(pred)
    stray[30:45, 45:58, 33:40] = True  # a false positive the detector boxed once, fairly confidently
    pred |= stray
    boxes = {12: np.array([[10, 10, 24, 24]], np.float32), 28: np.array([[40, 40, 47, 47]], np.float32),
             29: np.array([[40, 40, 47, 47]], np.float32), 36: np.array([[31, 46, 44, 57]], np.float32)}
    conf = {12: np.array([0.8], np.float32), 28: np.array([0.35], np.float32), 29: np.array([0.2], np.float32),
            36: np.array([0.45], np.float32)}
    out = remove_unsupported_components(pred, boxes, conf, min_conf=0.3, sure_conf=0.5, min_slices=2).label
    assert np.array_equal(out, gt)  # the once-boxed stray goes; the second lesion, boxed on two slices, stays
    sure = remove_unsupported_components(pred, boxes, {**conf, 36: np.array([0.5], np.float32)}, 0.3).label
    assert np.array_equal(sure, gt | stray)  # one box at SURE_CONF is enough
    one = remove_unsupported_components(pred, boxes, conf, min_conf=0.3, min_slices=1).label
    assert np.array_equal(one, gt | stray)  # min_slices 1: the rule before, any box >= min_conf vouches



def test_a_box_vouches_for_its_lesion_not_for_a_fragment_beside_it_in_the_same_box():
    pred, gt = _two_lesions_and_speckle()
    fragment = np.zeros_like(pred)
    fragment[26:29, 12:16, 11:13] = True  # 24 voxels inside the big lesion's box, apart from the lesion (> 1 voxel)
    pred |= fragment
    boxes = {12: np.array([[10, 10, 29, 24]], np.float32),   # the lesion's box, the fragment inside it
             28: np.array([[40, 40, 47, 47]], np.float32),   # the second lesion's own boxes
             29: np.array([[40, 40, 47, 47]], np.float32)}
    conf = {12: np.array([0.8], np.float32), 28: np.array([0.35], np.float32), 29: np.array([0.35], np.float32)}
    out = remove_unsupported_components(pred, boxes, conf, min_conf=0.3).label
    assert np.array_equal(out, gt)  # the fragment and the specks go, both lesions stay
    fragment_box = {**boxes, 11: np.array([[26, 12, 28, 15]], np.float32)}  # a confident box of its own
    kept = remove_unsupported_components(pred, fragment_box, {**conf, 11: np.array([0.5], np.float32)}, 0.3).label
    assert np.array_equal(kept, gt | fragment)


def test_the_component_the_detector_saw_on_most_slices_stays_beside_a_vouched_one():
    """The big lesion boxed at 0.28 on 8 slices (3D evidence 2.24, no box at the bar) and a stray component boxed at
    0.35 on 2 slices (vouched: 3D evidence 0.70): both stay; the second lesion, boxed at 0.2 once, goes."""
    pred, gt = _two_lesions_and_speckle()
    stray = np.zeros_like(pred)
    stray[30:45, 45:58, 33:40] = True
    pred |= stray
    boxes = {**{k: np.array([[10, 10, 24, 24]], np.float32) for k in range(8, 16)},
             28: np.array([[40, 40, 47, 47]], np.float32),
             35: np.array([[31, 46, 44, 57]], np.float32), 36: np.array([[31, 46, 44, 57]], np.float32)}
    conf = {**{k: np.array([0.28], np.float32) for k in range(8, 16)}, 28: np.array([0.2], np.float32),
            35: np.array([0.35], np.float32), 36: np.array([0.35], np.float32)}
    out = remove_unsupported_components(pred, boxes, conf, min_conf=0.3, sure_conf=0.5, min_slices=2).label
    big = np.zeros_like(pred)
    big[10:25, 10:25, 5:20] = True
    assert np.array_equal(out, big | stray)
