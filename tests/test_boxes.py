"""Box frames: the one place where slice orientation and box conventions are pinned down."""

import numpy as np
import pytest

from bratsmedsam import boxes
from bratsmedsam.errors import UserError


def test_axial_slice_maps_x_to_i_and_y_to_j():
    vol = np.zeros((5, 7, 3), np.uint8)
    vol[4, 1, 2] = 9  # i=4, j=1, k=2
    img = boxes.axial_slice(vol, 2)
    assert img.shape == (7, 5)
    assert img[1, 4] == 9  # image[y=j, x=i]


def test_put_axial_slice_inverts_axial_slice():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (6, 4, 3, 3)).astype(np.uint8)
    out = np.zeros_like(vol)
    for k in range(3):
        boxes.put_axial_slice(out, k, boxes.axial_slice(vol, k))
    assert np.array_equal(out, vol)


def test_component_boxes_are_inclusive_extents_largest_first():
    m = np.zeros((20, 30), bool)
    m[2:5, 3:4] = True      # 3x1 component: rows 2-4, col 3
    m[10:16, 10:20] = True  # 6x10 component
    b, areas = boxes.component_boxes_xyxy(m)
    assert b.tolist() == [[10, 10, 19, 15], [3, 2, 3, 4]]
    assert areas.tolist() == [60, 3]


def test_component_boxes_drop_small_components():
    m = np.zeros((20, 20), bool)
    m[0, 0] = True
    m[5:10, 5:10] = True
    b, _ = boxes.component_boxes_xyxy(m, min_pixels=2)
    assert b.tolist() == [[5, 5, 9, 9]]


def test_yolo_round_trip_and_whole_pixel_width():
    xyxy = np.array([[0, 0, 9, 4], [10.0, 20.0, 30.0, 25.0]], np.float32)
    yolo = boxes.xyxy_to_yolo(xyxy, width=40, height=50)
    assert yolo[0].tolist() == pytest.approx([5 / 40, 2.5 / 50, 10 / 40, 5 / 50])
    assert np.allclose(boxes.yolo_to_xyxy(yolo, 40, 50), xyxy, atol=1e-4)


def test_ultralytics_exclusive_corners_become_inclusive():
    assert boxes.ultralytics_to_xyxy(np.array([[2, 3, 10, 12]])).tolist() == [[2, 3, 9, 11]]


def test_clip_rejects_box_outside_image():
    with pytest.raises(UserError, match="outside"):
        boxes.clip_xyxy(np.array([[300, 10, 320, 20]]), height=240, width=240)


def test_clip_rejects_inverted_and_nan_boxes():
    with pytest.raises(UserError, match="inverted"):
        boxes.clip_xyxy(np.array([[30, 10, 20, 20]]), 240, 240)
    with pytest.raises(UserError, match="finite"):
        boxes.clip_xyxy(np.array([[np.nan, 10, 20, 20]]), 240, 240)


def test_clip_clips_partially_outside_box():
    assert boxes.clip_xyxy(np.array([[-5, 10, 250, 20]]), 240, 240).tolist() == [[0, 10, 239, 20]]


def test_iou_of_identical_and_disjoint_boxes():
    a = np.array([[0, 0, 9, 9]])
    b = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [5, 0, 14, 9]])
    assert boxes.box_iou_xyxy(a, b)[0].tolist() == pytest.approx([1.0, 0.0, 50 / 150])


def test_slicer_roi_with_unsorted_pairs_is_sorted_and_clipped():
    roi = boxes.RoiIJK.from_slicer([120, 80, 60.4, 100, 77, 77], shape=(240, 240, 155))
    assert (roi.i0, roi.i1, roi.j0, roi.j1, roi.k0, roi.k1) == (80, 120, 60, 100, 77, 77)
    assert roi.depth == 1
    assert roi.box_xyxy.tolist() == [80, 60, 120, 100]


@pytest.mark.parametrize("bad", [[1, 2, 3], "abc", [0, 10, 0, 10, 0, float("nan")], [300, 400, 0, 10, 0, 1]])
def test_slicer_roi_rejects_malformed_or_outside(bad):
    with pytest.raises(UserError):
        boxes.RoiIJK.from_slicer(bad, shape=(240, 240, 155))
