"""Per-study uncertainty: the documented formula, its ordering, and the score store."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bratsmedsam.protocols import SliceDetector, SliceSegmenter
from bratsmedsam.uncertainty import UncertaintyStore, combine, study_uncertainty


def test_combine_is_the_mean_of_the_three_terms():
    score, u_det, u_seg, u_agree = combine([0.9, 0.7], [0.8], [0.5])
    assert (u_det, u_seg, u_agree) == pytest.approx((0.2, 0.2, 0.5))
    assert score == pytest.approx(0.3)


def test_nothing_detected_is_maximal_uncertainty():
    assert combine([], [], [])[0] == 1.0


class FakeDetector(SliceDetector):
    weights_id = "det"

    def __init__(self, conf):
        self.conf = conf

    def predict(self, images):
        box = np.array([[4, 4, 11, 11]], np.float32)
        return [SimpleNamespace(xyxy=box, conf=np.float32([self.conf])) for _ in images]


class FakeSegmenter(SliceSegmenter):
    model_id = "seg"

    def __init__(self, iou, shrink):
        self.iou, self.shrink = iou, shrink

    def segment_many(self, images, boxes):
        out = []
        for im, b in zip(images, boxes):
            m = np.zeros(im.shape[:2], bool)
            x0, y0, x1, y1 = np.asarray(b, int)[0]
            s = self.shrink
            m[y0 + s:y1 + 1 - s, x0 + s:x1 + 1 - s] = True
            out.append(SimpleNamespace(masks=m[None], iou=np.float32([self.iou])))
        return out


def test_unsure_models_score_higher_than_sure_ones():
    ch = np.zeros((16, 16, 10, 3), np.uint8)
    sure = study_uncertainty(ch, FakeDetector(0.95), FakeSegmenter(0.95, 0))
    unsure = study_uncertainty(ch, FakeDetector(0.4), FakeSegmenter(0.5, 3))
    assert unsure.score > sure.score
    assert sure.u_agree == pytest.approx(0.0) and unsure.u_agree > 0.5
    assert sure.n_segmented <= 6 and sure.models == {"detector": "det", "segmenter": "seg"}


def test_store_serves_the_most_uncertain_candidate(tmp_path):
    ch = np.zeros((16, 16, 4, 3), np.uint8)
    store = UncertaintyStore(tmp_path / "u.json")
    store.put("a", study_uncertainty(ch, FakeDetector(0.95), FakeSegmenter(0.95, 0)))
    store.put("b", study_uncertainty(ch, FakeDetector(0.3), FakeSegmenter(0.4, 2)))
    assert store.most_uncertain(["a", "b", "c"])[0] == "b"
    assert store.most_uncertain(["a", "c"])[0] == "a"
    assert store.is_current("a", {"detector": "det", "segmenter": "seg"})
    assert not store.is_current("a", {"detector": "det2", "segmenter": "seg"})
