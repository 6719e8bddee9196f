"""Detector units: post-processing rules, box matching/metrics, batching and channel order, model names."""

from __future__ import annotations

import numpy as np
import pytest

from bratsmedsam.detection.evaluation import box_metrics, match, operating_metrics
from bratsmedsam.detection.layout import read_yolo_label
from bratsmedsam.detection.postprocess import postprocess_volume
from bratsmedsam.detection.predict import SliceBoxes
from bratsmedsam.errors import UserError


def sb(*rows):
    return SliceBoxes.from_rows([list(r) for r in rows]) if rows else SliceBoxes()


BOX = (50, 60, 90, 100, 0.9)


def test_postprocess_drops_a_box_with_no_overlapping_box_on_neighbouring_slices():
    out = postprocess_volume([sb(BOX), sb(BOX), sb(), sb(), sb((10, 10, 20, 20, 0.8)), sb()])
    assert [len(b) for b in out] == [1, 1, 0, 0, 0, 0]


def test_postprocess_fills_a_one_slice_gap_between_overlapping_boxes():
    below, above = (50, 60, 90, 100, 0.9), (54, 64, 94, 104, 0.7)
    out = postprocess_volume([sb(below), sb(), sb(above)])
    assert len(out[1]) == 1
    np.testing.assert_allclose(out[1].xyxy[0], [52, 62, 92, 102])
    assert out[1].conf[0] == pytest.approx(0.7)


def test_postprocess_does_not_fill_when_the_slice_already_has_the_box():
    out = postprocess_volume([sb(BOX), sb(BOX), sb(BOX)])
    assert [len(b) for b in out] == [1, 1, 1]


def test_postprocess_treats_absent_slice_numbers_as_empty():
    out = postprocess_volume([sb(BOX), sb(BOX)], z=[10, 12])
    assert [len(b) for b in out] == [0, 0]


def test_postprocess_can_be_switched_to_one_rule():
    boxes = [sb(BOX), sb(), sb(BOX), sb(), sb(), sb((1, 1, 9, 9, 0.5))]
    fill_only = postprocess_volume(boxes, drop=False)
    assert [len(b) for b in fill_only] == [1, 1, 1, 0, 0, 1]


def test_slice_boxes_rows_round_trip():
    b = sb((1.5, 2, 30, 40, 0.5))
    again = SliceBoxes.from_rows(b.rows())
    np.testing.assert_allclose(again.xyxy, b.xyxy)
    np.testing.assert_allclose(again.conf, b.conf)


def test_match_is_one_to_one_and_respects_iou_thresholds():
    gt = np.array([[0, 0, 99, 99]], np.float32)
    pred = sb((0, 0, 99, 99, 0.9), (0, 0, 99, 99, 0.8), (0, 0, 99, 59, 0.7))
    tp = match(pred, gt)
    assert tp[0].all() and not tp[1].any() and not tp[2].any()
    # IoU 0.58: a hit at 0.50 and 0.55 only
    assert match(sb((0, 0, 99, 57, 0.7)), gt)[0].tolist() == [True, True, False, False, False, False, False, False,
                                                                False, False]


def test_box_metrics_perfect_boxes_score_near_one_and_misplaced_boxes_zero():
    gts = [np.array([[10, 10, 40, 40]], np.float32), np.zeros((0, 4), np.float32), np.array([[5, 5, 20, 30]], np.float32)]
    perfect = [sb((10, 10, 40, 40, 0.9)), sb(), sb((5, 5, 20, 30, 0.8))]
    wrong = [sb((100, 100, 140, 140, 0.9)), sb((1, 1, 9, 9, 0.5)), sb((60, 5, 80, 30, 0.8))]
    good = box_metrics(perfect, gts)
    bad = box_metrics(wrong, gts)
    assert good["map50"] > 0.99 and good["map50_95"] > 0.99 and good["recall"] == pytest.approx(1.0, abs=1e-3)
    assert bad["map50"] == 0.0 and bad["recall"] == 0.0


def test_operating_metrics_count_missed_and_false_alarm_slices():
    gts = [np.array([[10, 10, 40, 40]], np.float32), np.zeros((0, 4), np.float32), np.array([[5, 5, 20, 30]], np.float32)]
    preds = [sb(), sb((1, 1, 9, 9, 0.5)), sb((5, 5, 20, 30, 0.8))]
    m = operating_metrics(preds, gts)
    assert m["tumour_slices_without_box"] == 1 and m["tumour_free_slices_with_box"] == 1
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)


def test_recall_by_size_bins_gt_boxes_by_pixel_area():
    from bratsmedsam.detection.evaluation import recall_by_size

    # GT areas: 5x5=25 (<100), 10x10=100 (100-400), 20x20=400 and 30x30=900 (400-1600), 50x50=2500 (>=1600)
    gts = [np.array([[0, 0, 4, 4], [100, 100, 109, 109]], np.float32),
           np.array([[0, 0, 19, 19], [50, 50, 79, 79]], np.float32),
           np.array([[10, 10, 59, 59]], np.float32), np.zeros((0, 4), np.float32)]
    preds = [sb((100, 100, 109, 109, 0.9)),  # finds the 100-px box, misses the tiny one
             sb((50, 50, 79, 79, 0.8), (0, 0, 9, 9, 0.7)),  # finds the 900-px box; IoU 0.25 on the 400-px one
             sb((10, 10, 59, 59, 0.6)), sb((0, 0, 9, 9, 0.5))]  # the large one; a false positive (ignored)
    rows = recall_by_size(preds, gts)
    assert [r["bin"] for r in rows] == ["<100", "100-400", "400-1600", ">=1600"]
    assert [(r["found"], r["targets"]) for r in rows] == [(0, 1), (1, 1), (1, 2), (1, 1)]
    assert [r["recall"] for r in rows] == [0.0, 1.0, 0.5, 1.0]
    assert recall_by_size([sb()], [np.zeros((0, 4), np.float32)])[0]["recall"] is None  # empty bin


def test_recall_by_size_uses_the_same_one_to_one_matching():
    from bratsmedsam.detection.evaluation import gt_found

    gt = np.array([[0, 0, 19, 19], [1, 1, 20, 20]], np.float32)  # two overlapping GT boxes
    assert gt_found(sb((0, 0, 19, 19, 0.9)), gt).tolist() == [True, False]  # one box finds one GT
    assert gt_found(sb((0, 0, 19, 19, 0.9), (1, 1, 20, 20, 0.8)), gt).tolist() == [True, True]


def test_yolo_label_reads_back_as_inclusive_pixel_boxes(tmp_path):
    f = tmp_path / "a.txt"
    # A box covering columns 10..29 and rows 40..49 of a 100x200 (W x H) image.
    f.write_text(f"0 {20 / 100} {45 / 200} {20 / 100} {10 / 200}\n")
    np.testing.assert_allclose(read_yolo_label(f, 100, 200), [[10, 40, 29, 49]], atol=1e-4)
    assert read_yolo_label(tmp_path / "missing.txt", 100, 200).shape == (0, 4)


def test_resolve_model_maps_names_to_yaml_and_refuses_missing_weights(tmp_path):
    from bratsmedsam.detection.ultra import resolve_model

    assert resolve_model("yolov5s") == "yolov5s.yaml"
    assert resolve_model("yolov5l") == "yolov5l.yaml"
    with pytest.raises(UserError, match="do not exist"):
        resolve_model(tmp_path / "yolov5s.pt")
    with pytest.raises(UserError, match="unknown detector model"):
        resolve_model("resnet50")


def test_set_arguments_are_typed_and_malformed_ones_refused():
    from bratsmedsam.commands.train_detector import parse_set

    assert parse_set(["lr0=0.02", "mosaic=0", "cos_lr=true", "optimizer=AdamW"]) == {
        "lr0": 0.02, "mosaic": 0, "cos_lr": True, "optimizer": "AdamW"}
    with pytest.raises(UserError):
        parse_set(["lr0"])


def test_unknown_ultralytics_argument_is_refused_before_training(tmp_path):
    from bratsmedsam.detector import train_detector

    with pytest.raises(UserError, match="lr_zero"):
        train_detector(tmp_path / "nowhere", tmp_path / "run", lr_zero=0.1)


def test_run_location_arguments_cannot_be_overridden(tmp_path):
    from bratsmedsam.detector import train_detector

    with pytest.raises(UserError, match="project"):
        train_detector(tmp_path / "nowhere", tmp_path / "run", project=str(tmp_path / "elsewhere"))


def test_missing_data_file_is_a_user_error(tmp_path):
    from bratsmedsam.detector import train_detector

    with pytest.raises(UserError, match="does not exist"):
        train_detector(tmp_path / "nowhere", tmp_path / "run", quick=True)


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    """A real (untrained) YOLOv5n detection checkpoint saved the way ultralytics saves one."""
    from bratsmedsam.detection.ultra import yolo

    path = tmp_path_factory.mktemp("weights") / "untrained.pt"
    yolo("yolov5n").save(path)
    return path


def test_predict_batches_slices_skips_empty_ones_and_feeds_bgr(untrained_weights):
    from bratsmedsam.detector import Detector

    det = Detector(untrained_weights, device="cpu", imgsz=64, conf=0.0)  # conf 0: an untrained model boxes every slice
    calls = []
    real = det.model.predict

    def spy(source, **kw):
        calls.append([b.copy() for b in source])
        return real(source, **kw)

    det.model.predict = spy
    rng = np.random.default_rng(0)
    images = [np.zeros((64, 48, 3), np.uint8) for _ in range(24)]
    for i in range(5, 24):
        images[i] = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    images[7][..., 0], images[7][..., 2] = 200, 10  # red in RGB
    out = det.predict(images, batch_size=8)
    assert len(out) == 24 and all(isinstance(b, SliceBoxes) for b in out)
    assert [len(c) for c in calls] == [8, 8, 3]  # 19 non-empty slices, no call for the 5 blank ones
    assert calls[0][2][..., 2].min() == 200 and calls[0][2][..., 0].max() == 10  # slice 7 arrives BGR
    assert all(len(b) == 0 for b in out[:5]) and all(len(b) > 0 for b in out[5:])
    for b in out[5:]:
        assert b.xyxy.dtype == np.float32 and b.xyxy.shape[1] == 4
        assert (b.xyxy[:, 0] <= b.xyxy[:, 2]).all() and b.xyxy[:, 2].max() <= 47 and b.xyxy[:, 3].max() <= 63


def test_predict_rejects_non_rgb_uint8_slices(untrained_weights):
    from bratsmedsam.detector import Detector

    det = Detector(untrained_weights, device="cpu")
    with pytest.raises(UserError, match="uint8"):
        det.predict([np.zeros((32, 32), np.float32)])


def test_weights_id_follows_the_file_content(untrained_weights, tmp_path):
    from bratsmedsam.detector import Detector

    from bratsmedsam.detection.ultra import yolo

    copy = tmp_path / "copy.pt"
    copy.write_bytes(untrained_weights.read_bytes())
    assert Detector(copy).weights_id == Detector(untrained_weights).weights_id
    other = tmp_path / "other.pt"
    yolo("yolov5n").save(other)  # another random initialisation
    assert Detector(other).weights_id != Detector(untrained_weights).weights_id


def test_detector_operates_at_the_confidence_stored_in_its_weights(untrained_weights, tmp_path):
    from bratsmedsam.detection.weights import store_threshold
    from bratsmedsam.detector import Detector

    tuned = tmp_path / "tuned.pt"
    tuned.write_bytes(untrained_weights.read_bytes())
    store_threshold(tuned, {"conf": 0.123, "split": "val"})
    published = tmp_path / "published.pt"  # the app copies the .pt alone: the threshold must travel inside it
    published.write_bytes(tuned.read_bytes())
    assert Detector(published).conf == pytest.approx(0.123)
    assert Detector(published, conf=0.6).conf == pytest.approx(0.6)  # an explicit conf wins
    assert Detector(untrained_weights).conf == pytest.approx(0.25)  # nothing stored: the default


def test_a_stored_threshold_of_none_falls_back_to_the_default(untrained_weights, tmp_path):
    from bratsmedsam.detection.weights import store_threshold
    from bratsmedsam.detector import Detector

    w = tmp_path / "w.pt"
    w.write_bytes(untrained_weights.read_bytes())
    store_threshold(w, {"conf": None, "split": "val"})
    assert Detector(w).conf == pytest.approx(0.25)


def _slices(root, cases, n, tumour_z):
    img, lab = root / "images" / "train", root / "labels" / "train"
    img.mkdir(parents=True)
    lab.mkdir(parents=True)
    for c in cases:
        for z in range(n):
            (img / f"{c}_z{z:03d}.png").write_bytes(b"")
            (lab / f"{c}_z{z:03d}.txt").write_text("0 0.5 0.5 0.1 0.1\n" if z in tumour_z else "")
    return sorted(img.iterdir()), lab


def test_subsampling_keeps_every_kth_slice_per_case(tmp_path):
    from bratsmedsam.detection.training import subsample_slices

    files, lab = _slices(tmp_path, ["A", "B"], 10, range(10))
    kept = subsample_slices(files, lab, slice_step=3)
    assert [f.stem for f in kept] == [f"{c}_z{z:03d}" for c in "AB" for z in (0, 3, 6, 9)]
    assert subsample_slices(files, lab) == files


def test_subsampling_caps_the_background_fraction_and_keeps_every_tumour_slice(tmp_path):
    from bratsmedsam.detection.layout import is_background
    from bratsmedsam.detection.training import subsample_slices

    files, lab = _slices(tmp_path, ["A", "B"], 20, range(5, 15))  # 20 tumour + 20 background slices
    kept = subsample_slices(files, lab, background=0.2)
    bg = [f for f in kept if is_background(lab / f"{f.stem}.txt")]
    assert len(kept) - len(bg) == 20 and len(bg) == 5  # 5 / 25 = 0.2
    assert len({f.stem[0] for f in bg}) == 2  # spread over both cases, not the first ones only
    assert subsample_slices(files, lab, background=0.0) == [f for f in files if not is_background(lab / f"{f.stem}.txt")]


def test_subsampling_options_are_checked(tmp_path):
    from bratsmedsam.detection.training import subsample_slices

    files, lab = _slices(tmp_path, ["A"], 4, range(2))
    with pytest.raises(UserError, match="train_slice_step"):
        subsample_slices(files, lab, slice_step=0)
    with pytest.raises(UserError, match="train_background"):
        subsample_slices(files, lab, background=1.0)


def test_a_near_zero_stored_threshold_is_floored_so_slices_are_not_flooded(untrained_weights, tmp_path):
    from bratsmedsam.detection.weights import MIN_STORED_CONF
    from bratsmedsam.detection.weights import store_threshold
    from bratsmedsam.detector import Detector

    w = tmp_path / "w.pt"
    w.write_bytes(untrained_weights.read_bytes())
    store_threshold(w, {"conf": 0.001, "split": "val"})
    assert Detector(w).conf == pytest.approx(MIN_STORED_CONF)


def test_predict_keeps_at_most_max_det_boxes_per_slice(untrained_weights):
    from bratsmedsam.detector import Detector

    rng = np.random.default_rng(0)
    img = rng.integers(1, 255, (128, 128, 3), dtype=np.uint8)
    assert len(Detector(untrained_weights, conf=0.0, max_det=5).predict([img])[0]) > 2  # more than 2 to cap
    boxes = Detector(untrained_weights, conf=0.0, max_det=2).predict([img])[0]
    assert len(boxes) == 2


def test_predict_can_keep_boxes_under_the_operating_confidence_for_one_call(untrained_weights):
    """The volume-aware chain asks for the weak boxes too (``pipeline.detect_with_weak``): one call at a lower
    confidence, the detector's own operating point untouched."""
    from bratsmedsam.detector import Detector

    img = np.random.default_rng(0).integers(1, 255, (128, 128, 3), dtype=np.uint8)
    det = Detector(untrained_weights, conf=0.9)
    assert len(det.predict([img])[0]) == 0  # an untrained model is never 0.9 sure
    weak = det.predict([img], conf=0.0)[0]
    assert len(weak) > 0 and (weak.conf < 0.9).all() and det.conf == 0.9 and len(det.predict([img])[0]) == 0


def test_running_the_detector_leaves_torchs_thread_count_as_it_was(tmp_path):
    """ultralytics sets torch's threads to cores - 1 when it picks a device; in a server that would halve
    every other torch computation on a 2-core machine."""
    import torch
    from ultralytics import YOLO

    from bratsmedsam.detection.predict import Detector
    from bratsmedsam.offline import configure

    configure()
    path = tmp_path / "untrained.pt"
    YOLO("yolov5n.yaml").save(str(path))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Detector(path, device="cpu").predict([np.full((64, 64, 3), 80, np.uint8)])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


REAL, SYN = "BraTS-GLI-00000-000", "BraTS-GLI-90000-000"


def test_real_weight_repeats_real_images_to_the_stated_share(tmp_path):
    from bratsmedsam.detection.training import mix_real

    files, _ = _slices(tmp_path, [REAL, SYN], 10, range(10))
    files += _slices(tmp_path / "more", ["BraTS-GLI-90001-000", "BraTS-GLI-90002-000"], 10, range(10))[0]
    named, mix = mix_real(files, 0.5)  # 10 real, 30 synthetic: 3 copies of each real image
    assert mix["copies"] == 3 and mix["real_share"] == 0.5 and len(named) == 60
    real_names = [n for n, f in named if f.stem.startswith(REAL)]
    assert len(real_names) == 30 and len(set(real_names)) == 30  # every copy its own file name
    assert f"{REAL}-r2_z004.png" in real_names
    assert mix_real(files, 0.25)[1]["real_share"] == 0.25  # the natural share: once each
    assert mix_real(files, None)[1] | {"real_weight": 0.25} == mix_real(files, 0.25)[1]
    named0, mix0 = mix_real(files, 0.0)
    assert mix0["real_share"] == 0.0 and all(not f.stem.startswith(REAL) for _, f in named0)


def test_real_weight_without_real_cases_repeats_nothing_and_is_checked(tmp_path):
    from bratsmedsam.detection.training import is_synthetic_case, mix_real

    files, _ = _slices(tmp_path, [SYN], 5, range(5))
    named, mix = mix_real(files, 0.5)
    assert len(named) == 5 and mix["real_share"] == 0.0 and mix["real_cases"] == []
    assert is_synthetic_case(SYN) and not is_synthetic_case(REAL) and not is_synthetic_case("my_study")
    with pytest.raises(UserError, match="real_weight"):
        mix_real(files, 1.0)


def test_run_local_data_links_each_real_copy_with_its_label(tmp_path):
    import yaml

    from bratsmedsam.detection.training import run_local_data

    root = tmp_path / "ds"
    _slices(root, [REAL, SYN], 4, range(2))
    for split in ("val",):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val"}))
    _, counts, mix = run_local_data(root / "dataset.yaml", tmp_path / "run", real_weight=0.75)
    assert mix["copies"] == 3 and counts["train"] == 16
    view = tmp_path / "run" / "data"
    assert (view / "labels" / "train" / f"{REAL}-r2_z001.txt").read_text() == "0 0.5 0.5 0.1 0.1\n"
    assert (view / "images" / "train" / f"{REAL}-r2_z001.png").resolve() == (root / "images" / "train" / f"{REAL}_z001.png").resolve()
