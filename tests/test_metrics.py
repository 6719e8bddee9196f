"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from bratsmedsam.errors import UserError
from bratsmedsam.metrics import BRATS_MAX_HD95, bootstrap_ci, dice, hd95, lesion_wise


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


# --- Dice -----------------------------------------------------------------------------------------

def test_dice_of_half_overlapping_squares_is_half():
    a = _cube((10, 10), (0, 0), (4, 4))      # 16 px
    b = _cube((10, 10), (0, 2), (4, 6))      # 16 px, 8 shared
    assert dice(a, b) == pytest.approx(2 * 8 / 32)


def test_dice_identical_masks_is_one():
    a = _cube((8, 8, 8), (1, 1, 1), (5, 6, 7))
    assert dice(a, a) == pytest.approx(1.0)


def test_dice_both_empty_is_one():
    z = np.zeros((6, 6), bool)
    assert dice(z, z) == 1.0


def test_dice_prediction_on_empty_ground_truth_is_zero():
    z = np.zeros((6, 6), bool)
    assert dice(_cube((6, 6), (1, 1), (3, 3)), z) == 0.0


def test_dice_rejects_mismatched_shapes():
    with pytest.raises(UserError, match="does not match"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))


# --- HD95 -----------------------------------------------------------------------------------------

def test_hd95_of_a_shifted_cube_is_the_shift():
    a = _cube((20, 20, 20), (5, 5, 5), (10, 10, 10))
    b = _cube((20, 20, 20), (7, 5, 5), (12, 10, 10))
    assert hd95(b, a) == pytest.approx(2.0)


def test_hd95_uses_voxel_spacing():
    a = _cube((20, 20, 20), (5, 5, 5), (10, 10, 10))
    b = _cube((20, 20, 20), (7, 5, 5), (12, 10, 10))
    assert hd95(b, a, spacing=(2.0, 1.0, 1.0)) == pytest.approx(4.0)


def test_hd95_identical_masks_is_zero():
    a = _cube((12, 12), (2, 2), (8, 9))
    assert hd95(a, a) == 0.0


def test_hd95_both_empty_is_zero_and_one_empty_is_the_maximum():
    z = np.zeros((10, 10, 10), bool)
    a = _cube((10, 10, 10), (2, 2, 2), (5, 5, 5))
    assert hd95(z, z) == 0.0
    assert hd95(z, a) == BRATS_MAX_HD95
    assert hd95(a, z, max_distance=99.0) == 99.0


# --- BraTS 2023 lesion-wise -----------------------------------------------------------------------

SHAPE = (40, 40, 40)


def test_lesion_wise_perfect_single_lesion():
    gt = _cube(SHAPE, (5, 5, 5), (10, 10, 10))   # 125 voxels
    r = lesion_wise(gt, gt)
    assert (r.dice, r.hd95, r.n_gt_lesions, r.n_false_positives) == (1.0, 0.0, 1, 0)


def test_lesion_wise_empty_prediction_and_empty_ground_truth_is_one():
    z = np.zeros(SHAPE, bool)
    r = lesion_wise(z, z)
    assert (r.dice, r.hd95) == (1.0, 0.0)


def test_lesion_wise_false_positive_counts_in_the_denominator():
    gt = _cube(SHAPE, (5, 5, 5), (10, 10, 10))
    fp = _cube(SHAPE, (25, 25, 25), (28, 28, 28))
    r = lesion_wise(gt | fp, gt)
    assert r.n_false_positives == 1
    assert r.dice == pytest.approx((1.0 + 0.0) / 2)
    assert r.hd95 == pytest.approx((0.0 + BRATS_MAX_HD95) / 2)


def test_lesion_wise_missed_lesion_scores_zero_and_max_distance():
    a = _cube(SHAPE, (2, 2, 2), (7, 7, 7))
    b = _cube(SHAPE, (25, 25, 25), (30, 30, 30))
    r = lesion_wise(a, a | b)
    assert (r.n_gt_lesions, r.n_detected) == (2, 1)
    assert r.dice == pytest.approx(0.5)
    assert r.hd95 == pytest.approx(BRATS_MAX_HD95 / 2)


def test_lesion_wise_ignores_ground_truth_lesions_of_at_most_50_voxels():
    big = _cube(SHAPE, (2, 2, 2), (7, 7, 7))            # 125 voxels
    small = _cube(SHAPE, (25, 25, 25), (30, 30, 27))    # 5*5*2 = 50 voxels: ignored
    r = lesion_wise(big, big | small)
    assert r.n_gt_lesions == 1
    assert (r.dice, r.hd95) == (1.0, 0.0)


def test_lesion_wise_prediction_of_an_ignored_small_lesion_is_not_a_false_positive():
    big = _cube(SHAPE, (2, 2, 2), (7, 7, 7))
    small = _cube(SHAPE, (25, 25, 25), (30, 30, 27))
    r = lesion_wise(big | small, big | small)
    assert (r.n_false_positives, r.dice) == (0, 1.0)


def test_lesion_wise_dilation_groups_nearby_lesions_into_one():
    a = _cube(SHAPE, (5, 5, 5), (10, 10, 10))
    b = _cube(SHAPE, (14, 5, 5), (19, 10, 10))   # 4-voxel gap: dilations (3 each) touch
    far = _cube(SHAPE, (30, 5, 5), (35, 10, 10))  # 11-voxel gap: its own lesion
    r = lesion_wise(a | b | far, a | b | far)
    assert r.n_gt_lesions == 2


def test_lesion_wise_prediction_near_but_outside_a_lesion_is_matched_not_false_positive():
    gt = _cube(SHAPE, (5, 5, 5), (10, 10, 10))
    near = _cube(SHAPE, (12, 5, 5), (14, 10, 10))   # 2-voxel gap: inside the 3-iteration dilation
    r = lesion_wise(near, gt)
    assert r.n_false_positives == 0
    assert r.n_detected == 1
    assert r.dice == 0.0   # matched, but no overlap with the lesion itself


def test_lesion_wise_prediction_components_are_26_connected():
    gt = _cube(SHAPE, (5, 5, 5), (10, 10, 10))
    diag = np.zeros(SHAPE, bool)
    diag[30, 30, 30] = diag[31, 31, 31] = True       # touch at a corner: one component
    r = lesion_wise(gt | diag, gt)
    assert r.n_false_positives == 1


def test_lesion_wise_only_false_positives_scores_zero():
    fp = _cube(SHAPE, (5, 5, 5), (8, 8, 8))
    r = lesion_wise(fp, np.zeros(SHAPE, bool))
    assert (r.dice, r.hd95) == (0.0, BRATS_MAX_HD95)


def test_lesion_wise_rejects_2d_masks():
    with pytest.raises(UserError, match="3D"):
        lesion_wise(np.zeros((4, 4)), np.zeros((4, 4)))


# --- bootstrap ------------------------------------------------------------------------------------

def test_bootstrap_resamples_patients_not_values():
    # Patient a: 99 slices of 1.0; patient b: 1 slice of 0.0. Any resample that draws b only gives 0,
    # so the interval must reach 0 (resampling slices would almost never get there).
    values = [1.0] * 99 + [0.0]
    patients = ["a"] * 99 + ["b"]
    ci = bootstrap_ci(values, patients, n_boot=2000, seed=0)
    assert ci.mean == pytest.approx(0.99)
    assert ci.n_patients == 2
    assert ci.low < 0.6 and ci.high == pytest.approx(1.0)


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.5, 1.0, size=30)
    a = bootstrap_ci(values, seed=3)
    b = bootstrap_ci(values, seed=3)
    assert a.low <= a.mean <= a.high
    assert (a.low, a.high) == (b.low, b.high)


def test_bootstrap_of_a_single_patient_has_zero_width():
    ci = bootstrap_ci([0.2, 0.4], ["p", "p"])
    assert (ci.mean, ci.low, ci.high) == (pytest.approx(0.3), pytest.approx(0.3), pytest.approx(0.3))


def test_bootstrap_drops_nan_values():
    ci = bootstrap_ci([0.5, float("nan")], ["a", "b"])
    assert ci.mean == 0.5 and ci.n_values == 1
