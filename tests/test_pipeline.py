"""Volume pipeline: slice frames, ROI rules, propagation, 3D box merging, label geometry.

A small stand-in segmenter (threshold inside the box) makes the volume logic checkable exactly;
the real segmenter is exercised by tests/test_app_integration.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bratsmedsam.boxes import RoiIJK, axial_slice, mask_to_xyxy, put_axial_slice
from bratsmedsam.errors import UserError
from bratsmedsam.protocols import SliceSegmenter
from bratsmedsam.slicer import merge_boxes_3d, points_to_boxes
from bratsmedsam.studies import load_study, write_label
from bratsmedsam.volume import segment_roi, segment_with_boxes


class ThresholdSegmenter(SliceSegmenter):
    """Mask = bright pixels (channel 0 > 127) inside the box; predicted IoU = filled fraction of the box."""

    model_id = "threshold"

    def __init__(self):
        self.calls = 0

    def segment_many(self, images, boxes_per_image):
        from types import SimpleNamespace

        out = []
        for im, boxes in zip(images, boxes_per_image):
            self.calls += 1
            masks, ious = [], []
            for x0, y0, x1, y1 in np.rint(np.asarray(boxes).reshape(-1, 4)).astype(int):
                m = np.zeros(im.shape[:2], bool)
                m[y0:y1 + 1, x0:x1 + 1] = im[y0:y1 + 1, x0:x1 + 1, 0] > 127
                masks.append(m)
                ious.append(m.sum() / max(1, (x1 - x0 + 1) * (y1 - y0 + 1)))
            out.append(SimpleNamespace(masks=np.array(masks).reshape(-1, *im.shape[:2]), iou=np.float32(ious)))
        return out

    def segment(self, image, boxes):
        return self.segment_many([image], [boxes])[0]


def ball(shape=(40, 30, 20), centre=(20, 12, 10), radius=6):
    i, j, k = np.indices(shape)
    return ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2) <= radius ** 2


def channels_of(mask):
    return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_segment_with_boxes_puts_masks_in_voxel_order_x_is_i():
    truth = ball()
    ch = channels_of(truth)
    res = segment_with_boxes(ch, {10: np.array([[14, 6, 26, 18]], np.float32)}, ThresholdSegmenter())
    assert np.array_equal(res.label[:, :, 10], truth[:, :, 10])
    assert res.label[:, :, :10].sum() == 0 and res.slices == [10]


class SpillingSegmenter(ThresholdSegmenter):
    """A decoder that fills part of a loose box's slack: the bright pixels inside the box, grown by a third of the
    box's narrowest slack around them (kept inside the box)."""

    def segment_many(self, images, boxes_per_image):
        from scipy import ndimage

        out = super().segment_many(images, boxes_per_image)
        for res, boxes in zip(out, boxes_per_image):
            for m, (x0, y0, x1, y1) in zip(res.masks, np.rint(np.asarray(boxes).reshape(-1, 4)).astype(int)):
                ys, xs = np.nonzero(m)
                if not len(xs):
                    continue
                spill = min(xs.min() - x0, ys.min() - y0, x1 - xs.max(), y1 - ys.max()) // 3
                if spill > 0:
                    grown = ndimage.binary_dilation(m, iterations=spill)
                    m[y0:y1 + 1, x0:x1 + 1] = grown[y0:y1 + 1, x0:x1 + 1]
        return out


def test_a_second_prompt_from_the_mask_box_takes_back_what_a_loose_box_spilled():
    from bratsmedsam.volume import REFINE_MARGIN

    truth = ball(shape=(60, 50, 20), centre=(30, 25, 10), radius=6)
    loose = {10: np.array([[9, 4, 51, 46]], np.float32)}  # ~15 px of slack on every side of the tumour's 13 px
    once = segment_with_boxes(channels_of(truth), loose, SpillingSegmenter()).label[:, :, 10]
    twice = segment_with_boxes(channels_of(truth), loose, SpillingSegmenter(), refine=REFINE_MARGIN).label[:, :, 10]
    t = truth[:, :, 10]
    assert (once & t).sum() == (twice & t).sum() == t.sum()  # the tumour stays whole
    assert (twice & ~t).sum() < 0.6 * (once & ~t).sum()  # the spill shrinks (5 px rings -> 3 px rings)
    tight = segment_with_boxes(channels_of(truth), loose, ThresholdSegmenter(), refine=REFINE_MARGIN).label
    assert np.array_equal(tight, segment_with_boxes(channels_of(truth), loose, ThresholdSegmenter()).label)


def test_flat_roi_segments_only_its_middle_slice():
    truth = ball()
    res = segment_roi(channels_of(truth), RoiIJK.from_slicer([10, 30, 2, 22, 9, 10], truth.shape), ThresholdSegmenter())
    assert res.slices == [9]
    assert np.array_equal(res.label[:, :, 9], truth[:, :, 9]) and res.label.sum() == truth[:, :, 9].sum()


def test_flat_roi_uses_the_requested_slice_inside_it():
    truth = ball()
    res = segment_roi(channels_of(truth), RoiIJK.from_slicer([10, 30, 2, 22, 9, 11], truth.shape),
                      ThresholdSegmenter(), slice_index=11)
    assert res.slices == [11]


def test_3d_roi_propagates_over_the_tumour_and_stops_at_its_end():
    truth = ball()
    res = segment_roi(channels_of(truth), RoiIJK.from_slicer([8, 32, 0, 25, 0, 19], truth.shape),
                      ThresholdSegmenter(), min_pixels=1, stop_iou=0.0)
    assert np.array_equal(res.label, truth)


def test_3d_roi_keeps_masks_inside_the_roi_range():
    truth = ball()
    res = segment_roi(channels_of(truth), RoiIJK.from_slicer([8, 32, 0, 25, 8, 12], truth.shape),
                      ThresholdSegmenter(), min_pixels=1, stop_iou=0.0)
    assert np.array_equal(res.label[:, :, 8:13], truth[:, :, 8:13]) and res.label[:, :, :8].sum() == 0
    assert res.label[:, :, 13:].sum() == 0


def test_unsorted_roi_gives_the_same_mask_as_sorted():
    truth = ball()
    ch, seg = channels_of(truth), ThresholdSegmenter()
    a = segment_roi(ch, RoiIJK.from_slicer([32, 8, 25, 0, 14, 6], truth.shape), seg, min_pixels=1, stop_iou=0)
    b = segment_roi(ch, RoiIJK.from_slicer([8, 32, 0, 25, 6, 14], truth.shape), seg, min_pixels=1, stop_iou=0)
    assert np.array_equal(a.label, b.label) and a.label.sum() > 0


def test_roi_outside_the_image_is_a_user_error():
    with pytest.raises(UserError, match="outside"):
        RoiIJK.from_slicer([100, 120, 0, 5, 0, 5], (40, 30, 20))


def test_points_become_a_box_around_the_clicks_on_their_slice():
    boxes = points_to_boxes([[20, 12, 10], [24, 14, 10]], (40, 30, 20), radius=3)
    assert list(boxes) == [10]
    assert boxes[10].tolist() == [[17, 9, 27, 17]]


def test_merge_boxes_3d_joins_overlapping_neighbours_and_splits_distant_tumours():
    boxes = {k: np.array([[5, 5, 10, 10]], np.float32) for k in (3, 4, 5)}
    boxes[12] = np.array([[30, 20, 35, 25]], np.float32)
    conf = {k: np.array([0.5 + 0.1 * (k == 4)], np.float32) for k in boxes}
    merged = merge_boxes_3d(boxes, conf, (40, 30, 20))
    assert len(merged) == 2
    assert merged[0].roi_ijk == (5, 10, 5, 10, 3, 5) and merged[0].n_slices == 3
    assert merged[0].conf == pytest.approx(0.6)
    assert merged[1].roi_ijk == (30, 35, 20, 25, 12, 12)


def _nifti(tmp_path, data, name="vol.nii.gz"):
    import nibabel as nib

    affine = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, affine


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_written_label_has_the_reference_geometry(tmp_path, ext):
    import SimpleITK as sitk

    truth = ball()
    ref, _ = _nifti(tmp_path, (truth * 100).astype(np.int16) + 1)
    out = write_label(truth, ref, tmp_path / f"label{ext}")
    a, b = sitk.ReadImage(str(ref)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetDirection(), b.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(b).transpose(2, 1, 0), truth.astype(np.uint8))


def test_a_lone_volume_fills_all_channels_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    ref, affine = _nifti(tmp_path, rng.random((20, 16, 8)).astype(np.float32) + ball((20, 16, 8), (10, 8, 4), 3))
    study = load_study(ref)
    assert study.single_modality and study.channels.shape == (20, 16, 8, 3)
    assert np.array_equal(study.channels[..., 0], study.channels[..., 2])
    assert np.allclose(study.affine, affine)


def test_a_case_modality_brings_its_siblings(sample_studies):
    from bratsmedsam.cases import discover_cases

    files = discover_cases(sample_studies)[0]
    study = load_study(files.images["t2f"], ("t1c", "t2w", "t2f"))
    assert not study.single_modality and study.sources == {"t1c": "t1c", "t2w": "t2w", "t2f": "t2f"}
    assert study.reference == files.images["t2f"]
    assert axial_slice(study.channels, 0).shape[-1] == 3
    flair = load_study(files.images["t1c"], ("t2f",) * 3)  # FLAIR x3 asked for: not a stand-in
    assert flair.sources == {"t2f": "t2f"} and not flair.single_modality and flair.reference == files.images["t1c"]


class BoxDetector:
    """Detector fake: fixed pixel-XYXY boxes per slice index."""

    weights_id = "fixed"

    def __init__(self, boxes: dict):
        self.boxes = boxes
        self.conf_of: dict[int, float] = {}  # slice -> confidence of its boxes (default 0.9)

    def predict(self, images):
        from types import SimpleNamespace

        return [SimpleNamespace(xyxy=np.asarray(self.boxes.get(k, np.zeros((0, 4))), np.float32).reshape(-1, 4),
                                conf=np.full(len(self.boxes.get(k, [])), self.conf_of.get(k, 0.9), np.float32))
                for k in range(len(images))]


def test_the_automatic_chain_removes_speckle_but_keeps_the_tumour():
    from bratsmedsam.pipeline import detect_and_segment

    truth = ball()
    speck = np.zeros_like(truth)
    speck[2:4, 2:4, 3] = True  # 4 bright voxels on one slice, far from the tumour
    ch = channels_of(truth | speck)
    det = BoxDetector({**{k: [[14, 6, 26, 18]] for k in range(5, 16)}, 3: [[1, 1, 5, 5]]})
    raw = detect_and_segment(ch, det, ThresholdSegmenter(), min_component_mm3=0)
    clean = detect_and_segment(ch, det, ThresholdSegmenter())  # default: components < 50 mm^3 go
    assert raw.label[2:4, 2:4, 3].all() and not clean.label[2:4, 2:4, 3].any()
    assert np.array_equal(clean.label, raw.label & ~speck) and clean.label.sum() == truth[:, :, 5:16].sum()


def test_propagation_follows_the_tumour_past_the_detected_slices_and_drops_unconfirmed_boxes():
    from bratsmedsam.pipeline import detect_and_propagate

    truth = ball()  # slices 4..16
    ch = channels_of(truth)
    det = BoxDetector({**{k: [[14, 6, 26, 18]] for k in range(8, 13)}, 2: [[1, 1, 8, 8]]})
    det.conf_of = {2: 0.1}  # a lone, unconfident box on a slice with nothing bright
    res = detect_and_propagate(ch, det, ThresholdSegmenter(), reach=6, stop_iou=0.0, min_component_mm3=0)
    assert res.label[:, :, 5:16].sum() == truth[:, :, 5:16].sum()  # beyond the detected 8..12, both ways
    assert not res.label[:, :, 2].any() and 2 not in res.slices


def test_propagation_follows_weak_boxes_past_the_extent_and_stops_reach_slices_after_the_last():
    """A tumour the detector boxes confidently on slices 10..14 and weakly on 17 and 19 (gaps: separate candidates
    too weak to seed): the propagation goes on through them and stops ``reach`` slices after the last one, 22,
    though the bright column runs on to 33."""
    from bratsmedsam.pipeline import detect_and_propagate

    column = np.zeros((40, 30, 36), bool)
    column[16:25, 8:17, 2:34] = True
    det = BoxDetector({**{k: [[16, 8, 24, 16]] for k in range(10, 15)}, 17: [[16, 8, 24, 16]], 19: [[16, 8, 24, 16]]})
    det.conf_of = {17: 0.1, 19: 0.1}
    res = detect_and_propagate(channels_of(column), det, ThresholdSegmenter(), reach=3, stop_iou=0.0,
                               min_component_mm3=0)
    assert res.slices == list(range(7, 23))  # 10 - 3 .. 19 + 3
    assert np.array_equal(res.label, column & (np.arange(36) >= 7) & (np.arange(36) <= 22))


class OperatingDetector:
    """A detector fake with an operating confidence, as the real one: ``boxes`` ``{k: [(xyxy, conf), ...]}``;
    ``predict`` keeps those at or above the operating ``conf``, or the ``conf`` asked for."""

    weights_id = "fixed"

    def __init__(self, boxes: dict, conf: float):
        self.boxes, self.conf = boxes, conf

    def predict(self, images, conf=None):
        from types import SimpleNamespace

        floor = self.conf if conf is None else conf
        kept = [[(b, c) for b, c in self.boxes.get(k, ()) if c >= floor] for k in range(len(images))]
        return [SimpleNamespace(xyxy=np.asarray([b for b, _ in bc], np.float32).reshape(-1, 4),
                                conf=np.asarray([c for _, c in bc], np.float32)) for bc in kept]


def test_propagation_follows_boxes_under_the_operating_confidence_across_gaps():
    """A tumour boxed at the operating point (0.5) on slices 10..14 and, under it, on 17 and 20: boxes above a third
    of the operating point carry the propagation on to 20 + reach; weaker ones are not followed, and it stops at
    14 + reach. Weak boxes and detections come from one detector pass."""
    from bratsmedsam.pipeline import detect_and_propagate, detect_with_weak, weak_floor

    column = np.zeros((40, 30, 36), bool)
    column[16:25, 8:17, 2:34] = True
    box = [16, 8, 24, 16]
    runs = {}
    assert weak_floor(0.5) == pytest.approx(0.5 / 3) and weak_floor(0.1) == pytest.approx(0.05)
    for weak in (0.2, 0.1):
        det = OperatingDetector({**{k: [(box, 0.9)] for k in range(10, 15)}, 17: [(box, weak)], 20: [(box, weak)]},
                                conf=0.5)
        found, conf, weak_boxes = detect_with_weak(channels_of(column), det)
        assert sorted(found) == list(range(10, 15)) and min(conf[k].min() for k in found) == pytest.approx(0.9)
        assert sorted(weak_boxes) == ([*range(10, 15), 17, 20] if weak >= weak_floor(0.5) else list(range(10, 15)))
        runs[weak] = detect_and_propagate(channels_of(column), det, ThresholdSegmenter(), reach=3, stop_iou=0.0,
                                          min_component_mm3=0).slices
    assert runs[0.2] == list(range(7, 24)) and runs[0.1] == list(range(7, 18))


def test_boxes_under_the_operating_confidence_neither_seed_nor_vouch():
    """A second bright lesion that only boxes under the operating point point at stays unsegmented."""
    from bratsmedsam.pipeline import detect_and_propagate

    two = np.zeros((40, 30, 20), bool)
    two[4:12, 8:16, 6:14] = True
    two[26:34, 8:16, 6:14] = True
    det = OperatingDetector({k: [([4, 8, 11, 15], 0.9), ([26, 8, 33, 15], 0.3)] for k in range(7, 13)}, conf=0.5)
    res = detect_and_propagate(channels_of(two), det, ThresholdSegmenter(), stop_iou=0.0, min_component_mm3=0)
    assert np.array_equal(res.label, two & (np.arange(40) < 20)[:, None, None])


def test_a_second_lesion_on_the_slices_of_the_first_still_seeds():
    """Two lesions side by side on the same slices: the second candidate's seed slice already holds
    the first one's mask, yet its own seed mask is new, so it is segmented too (multifocal)."""
    from bratsmedsam.pipeline import detect_and_propagate

    two = np.zeros((40, 30, 20), bool)
    two[4:12, 8:16, 6:14] = True
    two[26:34, 8:16, 6:14] = True
    det = BoxDetector({k: [[4, 8, 11, 15], [26, 8, 33, 15]] for k in range(7, 13)})
    res = detect_and_propagate(channels_of(two), det, ThresholdSegmenter(), stop_iou=0.0, min_component_mm3=0)
    assert np.array_equal(res.label, two)


def test_a_lesion_merged_into_anothers_candidate_seeds_from_its_own_confident_boxes():
    """Two lesions whose boxes touch: ``merge_boxes_3d`` makes them one candidate and its seed follows one lesion;
    the other's confident boxes, left unsegmented, seed it in the second pass."""
    from bratsmedsam.pipeline import detect_and_propagate
    from bratsmedsam.slicer import merge_boxes_3d

    two = np.zeros((40, 30, 20), bool)
    two[4:12, 8:16, 6:14] = True
    two[15:23, 8:16, 6:14] = True
    boxes = {k: [[4, 8, 13, 15], [13, 8, 22, 15]] for k in range(7, 13)}
    assert len(merge_boxes_3d({k: np.asarray(b, np.float32) for k, b in boxes.items()},
                              {k: np.full(2, 0.9) for k in boxes}, two.shape)) == 1
    res = detect_and_propagate(channels_of(two), BoxDetector(boxes), ThresholdSegmenter(), stop_iou=0.0,
                               min_component_mm3=0)
    assert np.array_equal(res.label, two)


def test_the_automatic_modes_are_propagate_and_slices_and_nothing_else():
    from bratsmedsam.pipeline import detect_and_propagate, detect_and_segment, segment_automatic

    ch = channels_of(ball())
    det = BoxDetector({k: [[14, 6, 26, 18]] for k in range(8, 13)})
    slices = segment_automatic(ch, det, ThresholdSegmenter(), "slices")
    assert np.array_equal(slices.label, detect_and_segment(ch, det, ThresholdSegmenter()).label)
    default = segment_automatic(ch, det, ThresholdSegmenter())
    assert np.array_equal(default.label, detect_and_propagate(ch, det, ThresholdSegmenter()).label)
    with pytest.raises(UserError, match="expected one of propagate, slices"):
        segment_automatic(ch, det, ThresholdSegmenter(), "3d")


def test_the_most_confident_candidate_seeds_even_under_the_seed_confidence():
    from bratsmedsam.pipeline import detect_and_propagate

    ch = channels_of(ball())
    det = BoxDetector({k: [[14, 6, 26, 18]] for k in range(8, 13)})
    det.conf_of = dict.fromkeys(range(8, 13), 0.05)
    assert detect_and_propagate(ch, det, ThresholdSegmenter(), seed_conf=0.3, min_component_mm3=0).label.any()


def test_3d_evidence_is_the_sum_of_a_candidates_slices_best_confidences():
    from bratsmedsam.slicer import evidence_3d

    assert evidence_3d([0.9]) == pytest.approx(0.9)
    assert evidence_3d([0.19] * 17) > evidence_3d([0.31, 0.25, 0.05, 0.05])  # the real case's tumour over a stray spot
    assert evidence_3d([0.3, 0.3, 0.1, 0.05]) == pytest.approx(0.75) and evidence_3d([]) == 0.0
    boxes = {k: np.array([[5, 5, 10, 10], [6, 6, 9, 9]], np.float32) for k in (3, 4)}  # two boxes on each slice
    conf = {k: np.array([0.6, 0.9], np.float32) for k in boxes}
    (cand,) = merge_boxes_3d(boxes, conf, (40, 30, 20))
    assert cand.n_slices == 2 and cand.evidence == pytest.approx(2 * 0.9)  # each slice counts its best box


def test_the_lead_candidate_is_the_one_seen_on_most_slices_not_the_most_confident_box():
    """A tumour boxed at 0.25 on slices 6..14 and a stray bright spot boxed at 0.29 on two slices, all under the seed
    confidence: the tumour is the lead (3D evidence 2.25 against 0.58) and is segmented; the stray spot is not."""
    from bratsmedsam.pipeline import detect_and_propagate, lead_candidate

    truth = ball()
    stray = np.zeros_like(truth)
    stray[2:6, 24:28, 1:3] = True
    det = BoxDetector({**{k: [[14, 6, 26, 18]] for k in range(6, 15)}, 1: [[1, 23, 6, 28]], 2: [[1, 23, 6, 28]]})
    det.conf_of = {**dict.fromkeys(range(6, 15), 0.25), 1: 0.29, 2: 0.29}
    boxes = {k: np.asarray(b, np.float32) for k, b in det.boxes.items()}
    cands = merge_boxes_3d(boxes, {k: np.array([c], np.float32) for k, c in det.conf_of.items()}, truth.shape)
    assert cands[0].conf == pytest.approx(0.29) and lead_candidate(cands) is cands[1]
    res = detect_and_propagate(channels_of(truth | stray), det, ThresholdSegmenter(), seed_conf=0.3, stop_iou=0.0)
    middle = (np.arange(20) >= 5) & (np.arange(20) <= 15)  # its end slices hold under min_pixels
    assert np.array_equal(res.label, truth & middle) and not (res.label & stray).any()
    assert lead_candidate([]) is None


class ObjectIoUSegmenter(ThresholdSegmenter):
    """Mask = bright pixels inside the box; predicted IoU = that mask's IoU with the whole bright region of the
    slice (a decoder that knows when its box cut the object)."""

    def segment_many(self, images, boxes_per_image):
        out = super().segment_many(images, boxes_per_image)
        for im, res in zip(images, out):
            whole = im[..., 0] > 127
            res.iou = np.float32([(m & whole).sum() / max(1, (m | whole).sum()) for m in res.masks])
        return out


def test_a_seed_box_inside_the_tumour_grows_to_the_scale_with_the_best_predicted_iou():
    from bratsmedsam.pipeline import SEED_SCALES, seed_prompt

    image = np.zeros((60, 60, 3), np.uint8)
    image[20:41, 20:41] = 255  # the tumour: x, y 20..40
    limit = np.array([0, 0, 59, 59], np.float32)
    inner = np.array([26, 26, 34, 34], np.float32)  # 9 x 9 px inside the 21 x 21 px tumour
    box, mask, iou = seed_prompt(ObjectIoUSegmenter(), image, inner, limit)
    assert box.tolist() == [20, 20, 40, 40] and SEED_SCALES[-1] == 2.5  # x2.5 about the centre: the tumour's box
    assert mask.sum() == 21 * 21 and iou.tolist() == [1.0]
    exact = np.array([20, 20, 40, 40], np.float32)  # a right box: every larger scale predicts the same, x1 stays
    assert seed_prompt(ObjectIoUSegmenter(), image, exact, limit)[0].tolist() == exact.tolist()
    tight = np.array([15, 15, 45, 45], np.float32)
    assert seed_prompt(ObjectIoUSegmenter(), image, inner, tight)[0].tolist() == [20, 20, 40, 40]  # inside the limit
    assert seed_prompt(ObjectIoUSegmenter(), image, inner, np.array([24, 24, 36, 36], np.float32))[0].tolist() == \
        [24, 24, 36, 36]


class LooseBoxFiller(ObjectIoUSegmenter):
    """A decoder that fills a box over 4x the bright area inside it (as a fine-tuned one filled a weak detector's
    wide boxes), else draws the bright pixels; predicted IoU: with the slice's whole bright region."""

    def __init__(self):
        super().__init__()
        self.prompts_per_call: list[int] = []

    def segment_many(self, images, boxes_per_image):
        out = super().segment_many(images, boxes_per_image)
        self.prompts_per_call += [len(np.asarray(b).reshape(-1, 4)) for b in boxes_per_image]
        for im, res, boxes in zip(images, out, boxes_per_image):
            whole = im[..., 0] > 127
            for m, (x0, y0, x1, y1) in zip(res.masks, np.rint(np.asarray(boxes).reshape(-1, 4)).astype(int)):
                if (x1 - x0 + 1) * (y1 - y0 + 1) > 4 * max(1, m.sum()):
                    m[y0:y1 + 1, x0:x1 + 1] = True
            res.iou = np.float32([(m & whole).sum() / max(1, (m | whole).sum()) for m in res.masks])
        return out


def test_a_prompt_widened_by_a_loose_detector_box_gives_way_to_the_masks_own_when_predicted_worse():
    """A 9 x 9 px column boxed tightly on slices 8..12 and by boxes 25 px wide on 13..17: widened by those, the
    decoder fills them; decoded beside the mask's own prompt, the own one's mask is predicted better and kept."""
    from bratsmedsam.pipeline import detect_and_propagate
    from bratsmedsam.volume import best_prompt

    column = np.zeros((40, 30, 20), bool)
    column[16:25, 10:19, 3:18] = True
    det = BoxDetector({**{k: [[16, 10, 24, 18]] for k in range(8, 13)}, **{k: [[8, 2, 32, 26]] for k in range(13, 18)}})
    det.conf_of = dict.fromkeys(range(13, 18), 0.5)  # the seed is a tight box
    seg = LooseBoxFiller()
    res = detect_and_propagate(channels_of(column), det, seg, reach=0, stop_iou=0.0, min_component_mm3=0)
    assert np.array_equal(res.label, column & (np.arange(20) >= 8) & (np.arange(20) <= 17))
    assert res.boxes[15].tolist() == [[13, 7, 27, 21]]  # the mask's box + 3 px, not the detector's
    assert seg.prompts_per_call.count(2) == 5  # slices 13..17: widened 2.8x, checked
    det = BoxDetector({**{k: [[16, 10, 24, 18]] for k in range(8, 13)}, **{k: [[12, 6, 28, 22]] for k in range(13, 18)}})
    det.conf_of = dict.fromkeys(range(13, 18), 0.5)  # hints widening the 15 x 15 px prompt 1.28x: not checked
    seg = LooseBoxFiller()
    res = detect_and_propagate(channels_of(column), det, seg, reach=0, stop_iou=0.0, min_component_mm3=0)
    assert 2 not in seg.prompts_per_call and res.boxes[15].tolist() == [[12, 6, 28, 22]]
    image = channels_of(column)[:, :, 15].transpose(1, 0, 2)
    box, mask, iou = best_prompt(LooseBoxFiller(), image, ([8, 2, 32, 26], [13, 7, 27, 21]), np.float32([0, 0, 39, 29]))
    assert box.tolist() == [13, 7, 27, 21] and mask.sum() == 81 and iou.tolist() == [1.0]


def test_propagation_grows_with_the_detector_where_the_tumour_widens():
    """Seeded at a tumour's narrow end, mask-derived boxes alone stay narrow; an overlapping detector box on the
    next slice lets the prompt widen with the tumour."""
    from bratsmedsam.volume import VolumeResult, propagate

    cone = np.zeros((60, 60, 12), bool)
    for k in range(12):
        r = 2 + 4 * k  # widens by 2 px a side a slice: faster than the 1 px margin
        cone[30 - r // 2:30 + r // 2 + 1, 30 - r // 2:30 + r // 2 + 1, k] = True
    ch = channels_of(cone)
    seed = axial_slice(cone, 0).astype(bool)
    limit = np.array([0, 0, 59, 59], np.float32)
    hints = {k: mask_to_xyxy(axial_slice(cone, k).astype(bool))[None] for k in range(12)}
    runs = {}
    for name, h, w in (("masks only", None, None), ("with detector boxes", hints, None),
                       ("with weak boxes", None, hints)):  # boxes under the operating point: they never widen
        res = VolumeResult(label=np.zeros(cone.shape, bool))
        put_axial_slice(res.label, 0, seed)
        propagate(ch, ThresholdSegmenter(), res, 0, seed, (0, 11), limit, margin=1, stop_iou=0.0, hints=h, weak=w)
        runs[name] = res.label
    assert runs["with detector boxes"].sum() == cone.sum()
    assert runs["masks only"].sum() < 0.7 * cone.sum()
    assert np.array_equal(runs["with weak boxes"], runs["masks only"])


def test_a_decoder_trained_with_neighbour_samples_propagates_with_a_tighter_margin():
    """The margin around the previous mask's box follows the decoder's training record: 3 px zero-shot, 1 px for a
    decoder fine-tuned with neighbour samples (it fills a looser box)."""
    from bratsmedsam.pipeline import detect_and_propagate, propagation_margin

    column = np.zeros((40, 30, 20), bool)
    column[16:25, 8:17, 4:16] = True  # x 16..24, y 8..16
    det = BoxDetector({k: [[16, 8, 24, 16]] for k in range(9, 12)})
    tuned = ThresholdSegmenter()
    tuned.meta = {"config": {"neighbour_samples": True}}
    assert propagation_margin(ThresholdSegmenter()) == 3.0 and propagation_margin(tuned) == 1.0
    multi = ThresholdSegmenter()  # a multi-region run trains without neighbour samples, whatever it was asked
    multi.meta = {"config": {"neighbour_samples": True, "regions": ["BraTS"]}, "neighbour_samples": False}
    served = ThresholdSegmenter()  # a one-region decoder loaded for the sub-regions too keeps its record
    served.meta = {"config": {"neighbour_samples": True, "regions": None}, "neighbour_samples": True,
                   "regions": ["WT", "TC", "ET"]}
    old = ThresholdSegmenter()  # a record from before the entry: its config decides
    old.meta = {"config": {"neighbour_samples": True, "regions": ["BraTS"]}}
    assert propagation_margin(multi) == 3.0 and propagation_margin(served) == 1.0 and propagation_margin(old) == 3.0
    kept = ThresholdSegmenter()  # a fine-tuning that kept zero-shot's weights (epoch 0), recorded before the fix
    kept.meta = {"config": {"neighbour_samples": True, "regions": None}, "neighbour_samples": True, "epoch": 0}
    assert propagation_margin(kept) == 3.0
    tuned.meta = {**tuned.meta, "epoch": 2}
    assert propagation_margin(tuned) == 1.0
    mixed = ThresholdSegmenter()  # half zero-shot's weights, half epoch 2's: half way between the margins
    mixed.meta = {**tuned.meta, "mix": 0.5}
    assert propagation_margin(mixed) == pytest.approx(2.0)
    mixed.meta["mix"] = 0.25
    assert propagation_margin(mixed) == pytest.approx(2.5)
    for seg, m in ((ThresholdSegmenter(), 3), (tuned, 1), (mixed, 2.5)):
        res = detect_and_propagate(channels_of(column), det, seg, stop_iou=0.0, min_component_mm3=0)
        assert res.boxes[14][0].tolist() == [16 - m, 8 - m, 24 + m, 16 + m]  # a propagated slice's prompt
        assert np.array_equal(res.label, column & (np.arange(20) >= 6)[None, None] & (np.arange(20) <= 14)[None, None])


def _cylinder(shape=(40, 30, 20), centre=(12, 14), radius=5, k0=3, k1=16):
    i, j, k = np.indices(shape)
    return ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= radius ** 2) & (k >= k0) & (k <= k1)


def test_a_dip_between_larger_masks_is_prompted_again_from_its_neighbours():
    """A seed box that held part of the tumour's slice leaves that slice (and its next) with part of a mask while
    the slices around have all of it: the dip is prompted from the masks on both sides."""
    from bratsmedsam.pipeline import fill_dips
    from bratsmedsam.volume import VolumeResult

    truth = _cylinder()
    label = truth.copy()
    label[:, :, 9:11] = False
    label[10:14, 12:16, 9:11] = truth[10:14, 12:16, 9:11]  # 16 of the 81 pixels on z 9 and 10
    doubted = VolumeResult(label=label.copy())  # the stand-in's IoU here: 81 of 169 box pixels, under 0.5
    assert fill_dips(channels_of(truth), ThresholdSegmenter(), doubted, margin=1.0) == 0
    assert np.array_equal(doubted.label, label)
    result = VolumeResult(label=label)
    seg = ThresholdSegmenter()
    assert fill_dips(channels_of(truth), seg, result, margin=1.0, stop_iou=0.0) == 2 and seg.calls == 2
    assert np.array_equal(result.label, truth)
    assert sorted(result.boxes) == [9, 10] and result.boxes[9][0].tolist() == [6, 8, 18, 20]  # x=i 7..17, y=j 9..19


def test_a_tapering_end_is_no_dip_and_another_lesion_stays_out_of_the_dips_prompt():
    from bratsmedsam.pipeline import fill_dips
    from bratsmedsam.volume import VolumeResult

    cone = ball()  # its slices shrink towards both ends: no slice has larger masks on both sides
    seg = ThresholdSegmenter()
    result = VolumeResult(label=cone.copy())
    assert fill_dips(channels_of(cone), seg, result, margin=1.0, stop_iou=0.0) == 0 and seg.calls == 0
    assert np.array_equal(result.label, cone)
    a, b = _cylinder(centre=(10, 8), radius=4), _cylinder(centre=(30, 22), radius=4)
    label = a | b
    label[:, :, 9] = False
    label[9:12, 7:10, 9] = True  # a's dip; b is missing on z 9 too, its slices are no anchor for a's prompt
    result = VolumeResult(label=label)
    assert fill_dips(channels_of(a | b), ThresholdSegmenter(), result, margin=1.0, stop_iou=0.0) == 1
    assert np.array_equal(result.label[:, :, 9], a[:, :, 9])  # a filled from its own masks, b not drawn in
    assert result.boxes[9][0].tolist() == [5, 3, 15, 13]  # a alone (x=i 6..14, y=j 4..12, + 1)


def test_the_volume_aware_chain_fills_dips_unless_told_not_to(monkeypatch):
    from bratsmedsam import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "fill_dips", lambda *a, **k: calls.append(1) or 0)
    column = _cylinder()
    boxes, conf = {9: np.array([[9, 7, 19, 17]], np.float32)}, {9: np.array([0.9], np.float32)}
    for dips in (True, False):
        pipeline.propagate_detections(channels_of(column), boxes, conf, ThresholdSegmenter(), dips=dips)
    assert len(calls) == 1


def test_an_unconfident_candidate_next_to_a_propagated_tumour_seeds_and_a_distant_one_does_not():
    """A column boxed confidently on slices 12..16 and at 0.1 on 4..7, nothing between: the confident candidate's
    propagation ends 3 slices past its boxes (9), within ``reach`` of the other candidate, which is the same tumour
    the propagation lost and seeds its own. A bright blob far away, boxed at 0.1 too, stays out."""
    vol = np.zeros((60, 40, 22), bool)
    vol[10:19, 8:17, 2:20] = True                  # the tumour: slices 2..19
    blob = np.zeros_like(vol)
    blob[44:53, 24:33, 4:8] = True                 # far from it in plane, on the slices of the weak candidate
    det = BoxDetector({**{k: [[10, 8, 18, 16]] for k in range(12, 17)},
                       **{k: [[10, 8, 18, 16], [44, 24, 52, 32]] for k in range(4, 8)}})
    det.conf_of = dict.fromkeys(range(4, 8), 0.1)
    runs = {adjacent: pipeline_run(vol | blob, det, adjacent) for adjacent in (True, False)}
    assert np.array_equal(runs[True], vol)        # 2..19: down from the weak candidate, up to 16 + 3
    assert np.array_equal(runs[False], vol & (np.arange(22) >= 9))


def pipeline_run(truth, det, adjacent):
    from bratsmedsam import pipeline

    boxes, conf, weak = pipeline.detect_with_weak(channels_of(truth), det)
    return pipeline.propagate_detections(channels_of(truth), boxes, conf, ThresholdSegmenter(), reach=3,
                                         stop_iou=0.0, min_component_mm3=0, weak=weak, adjacent=adjacent).label


class FixedIoUSegmenter(ThresholdSegmenter):
    """The bright pixels inside each box, each prompt's predicted IoU given in turn."""

    def __init__(self, ious):
        super().__init__()
        self.ious = np.float32(ious)

    def segment_many(self, images, boxes_per_image):
        out = super().segment_many(images, boxes_per_image)
        for res in out:
            res.iou = self.ious[:len(res.masks)]
        return out


def test_the_first_prompt_stays_unless_another_is_predicted_better_by_more_than_the_tolerance():
    from bratsmedsam.volume import HINT_TOLERANCE, best_prompt

    image = np.full((30, 30, 3), 255, np.uint8)
    limit = np.float32([0, 0, 29, 29])
    wide, own = [2, 2, 25, 25], [8, 8, 16, 16]
    assert best_prompt(FixedIoUSegmenter([0.80, 0.83]), image, (wide, own), limit)[0].tolist() == own
    box, mask, iou = best_prompt(FixedIoUSegmenter([0.80, 0.83]), image, (wide, own), limit, HINT_TOLERANCE)
    assert box.tolist() == wide and mask.sum() == 24 * 24 and iou.tolist() == pytest.approx([0.80])
    assert best_prompt(FixedIoUSegmenter([0.70, 0.83]), image, (wide, own), limit, HINT_TOLERANCE)[0].tolist() == own
    assert 0 < HINT_TOLERANCE < 0.1


def test_an_unconfident_candidate_joined_to_a_propagated_tumour_by_weak_boxes_seeds():
    """A column dark on slices 8..10, boxed confidently on 14..18, at 0.15 (operating point 0.1, seed confidence
    0.3) on 3..6, and weakly (0.06) on 7..13: the propagation from 14 stops at the dark gap, 5 slices from the
    unconfident candidate, which the weak boxes still join to it; it seeds and the column's lower part is found.
    Without the weak boxes' chain, only the upper part."""
    from bratsmedsam import pipeline

    column = np.zeros((40, 30, 22), bool)
    column[16:25, 8:17, 2:21] = True
    column[:, :, 8:11] = False
    box = [16, 8, 24, 16]
    det = OperatingDetector({**{k: [(box, 0.9)] for k in range(14, 19)}, **{k: [(box, 0.15)] for k in range(3, 7)},
                             **{k: [(box, 0.06)] for k in range(7, 14)}}, conf=0.1)
    ch = channels_of(column)
    boxes, conf, weak = pipeline.detect_with_weak(ch, det)
    assert sorted(weak) == list(range(3, 19)) and sorted(boxes) == [*range(3, 7), *range(14, 19)]
    runs = {}
    for chained in (True, False):
        res = pipeline.propagate_detections(ch, boxes, conf, ThresholdSegmenter(), reach=3, stop_iou=0.0,
                                            min_component_mm3=0, support_conf=0, weak=weak if chained else None)
        runs[chained] = res.label
    assert np.array_equal(runs[True], column)
    assert np.array_equal(runs[False], column & (np.arange(22) >= 11))
