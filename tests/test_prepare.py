"""prepare: studies -> slice dataset. Synthetic 64x64x20 cases (plus the real case where present)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bratsmedsam import paths
from bratsmedsam.boxes import axial_slice, component_boxes_xyxy, yolo_to_xyxy
from bratsmedsam.cases import discover_cases, load_case
from bratsmedsam.cli import main as cli_main
from bratsmedsam.dataset import load_info, load_manifest, read_image, read_mask
from bratsmedsam.errors import UserError
from bratsmedsam.intensity import normalize_volume
from bratsmedsam.intensity import PAPER_CHANNELS
from bratsmedsam.prepare import PrepareConfig, prepare_dataset
from bratsmedsam.splits import split_cases, split_counts
from bratsmedsam.regions import region_mask
from conftest import REAL_CASE_ID, needs_real
from test_cases import SHAPE, write_case

GOOD = [f"BraTS-GLI-9{i:04d}-000" for i in range(5)]


def one_stack(channels) -> PrepareConfig:
    """Both models on ``channels`` (one image per slice)."""
    return PrepareConfig(detector_channels=channels, segmenter_channels=channels)


def _truncate(folder: Path, name: str):
    path = next(folder.glob(f"*-{name}.nii.gz"))
    path.write_bytes(path.read_bytes()[:400])


def _nan(images, seg):
    images["t2w"] = images["t2w"].astype(np.float32)
    images["t2w"][1, 2, 3] = np.nan


BAD = {
    "bad-truncated": ("cannot read t2f", lambda d: _truncate(write_case(d, "bad-truncated"), "t2f")),
    "bad-missing": ("missing modality t2w", lambda d: write_case(d, "bad-missing", modalities=("t1c", "t2f"))),
    "bad-shape": ("has shape", lambda d: write_case(d, "bad-shape", edit=lambda im, s: im.__setitem__("t1c", im["t1c"][:, :, :-1]))),
    "bad-nan": ("non-finite", lambda d: write_case(d, "bad-nan", edit=_nan)),
    "bad-4d": ("is 4-D", lambda d: write_case(d, "bad-4d", edit=lambda im, s: im.__setitem__("t2f", np.stack([im["t2f"]] * 2, -1)))),
    "bad-zero": ("constant", lambda d: write_case(d, "bad-zero", edit=lambda im, s: im["t1c"].fill(0))),
    "bad-labels": ("unknown label values [5]", lambda d: write_case(d, "bad-labels", edit=lambda im, s: s.__setitem__((1, 1, 1), 5))),
    "bad-noseg": ("no segmentation", lambda d: write_case(d, "bad-noseg", seg=False)),
}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prep") / "studies"
    for n, cid in enumerate(GOOD):
        write_case(d, cid, seed=n, legacy=(n == 4))  # one case with the pre-2023 naming and ET = 4
    for _, make in BAD.values():
        make(d)
    (d / "sample_montage.png").write_bytes(b"\x89PNG not really")
    (d / "cases.json").write_text("{}")
    return d


@pytest.fixture(scope="module")
def built(studies, tmp_path_factory) -> tuple[Path, dict]:
    """The paper's stack: the bad cases break t1c, t2w or t2f, and this stack reads all three."""
    out = tmp_path_factory.mktemp("prep") / "dataset"
    summary = prepare_dataset(studies, out, one_stack(PAPER_CHANNELS), workers=1, progress=False)
    return out, summary


def test_the_flair_stack_needs_only_the_flair(studies, tmp_path):
    summary = prepare_dataset(studies, tmp_path / "ds", one_stack(("t2f",) * 3), workers=1, progress=False)
    assert summary["detector_channels"] == summary["segmenter_channels"] == ["t2f", "t2f", "t2f"]
    assert "bad-missing" in summary["cases_used"]  # no t2w: not needed
    assert "bad-truncated" in summary["cases_skipped"] and "bad-nan" not in summary["cases_skipped"]  # NaN in t2w


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for kind in ("images", "labels", "masks") for p in (out / kind).rglob("*") if p.is_file()}


def test_bad_cases_are_skipped_with_their_reason_and_the_run_goes_on(built):
    _, summary = built
    assert summary["cases_used"] == sorted(GOOD)
    assert set(summary["cases_skipped"]) == set(BAD)
    for cid, (needle, _) in BAD.items():
        assert needle in summary["cases_skipped"][cid], (cid, summary["cases_skipped"][cid])


def test_manifest_rows_match_the_files_on_disk(built):
    out, _ = built
    recs = load_manifest(out)
    assert recs
    listed = {str(p.relative_to(out)) for r in recs for p in (r.image, r.mask, r.label)}
    assert listed == _files(out)
    for r in recs:
        assert f"/{r.split}/" in str(r.image) and r.image.stem == f"{r.case}_z{r.z:03d}" == r.mask.stem == r.label.stem


def test_boxes_are_the_extents_of_the_mask_components(built):
    out, _ = built
    for r in load_manifest(out):
        mask = read_mask(r.mask)
        assert r.area == int(mask.sum())
        expected, _ = component_boxes_xyxy(mask, PrepareConfig().min_box_pixels)
        np.testing.assert_array_equal(r.boxes_xyxy, expected)
        lines = [ln.split() for ln in r.label.read_text().splitlines()]
        assert all(ln[0] == "0" for ln in lines) and len(lines) == len(expected)
        if lines:
            yolo = np.array([[float(v) for v in ln[1:]] for ln in lines])
            np.testing.assert_allclose(yolo_to_xyxy(yolo, mask.shape[1], mask.shape[0]), expected, atol=1e-3)


def test_small_components_get_no_box(built):
    out, _ = built
    # the synthetic speck (2x2 = 4 pixels < 10) shows in masks but never in boxes
    with_speck = [r for r in load_manifest(out) if read_mask(r.mask)[40:42, 20:22].all()]
    assert with_speck
    for r in with_speck:
        assert not any(b[0] <= 20 <= b[2] and b[1] <= 40 <= b[3] for b in r.boxes_xyxy)


def test_split_is_by_patient_disjoint_and_stated(built):
    out, summary = built
    recs = load_manifest(out)
    by_case = {}
    for r in recs:
        by_case.setdefault(r.case, set()).add(r.split)
    assert all(len(s) == 1 for s in by_case.values())
    info = load_info(out)
    assert info["patient_level_split"] is True
    assert {c: s.pop() for c, s in by_case.items()} == info["splits"]
    assert sorted(info["cases_per_split"].values()) == [1, 1, 3]  # 5 cases, 6:2:2


def test_background_slices_bounded_by_the_ratio_per_case(built):
    out, _ = built
    recs = load_manifest(out)
    for cid in GOOD:
        tumour = sum(1 for r in recs if r.case == cid and len(r.boxes_xyxy))
        background = sum(1 for r in recs if r.case == cid and r.area == 0)
        assert tumour > 0
        assert background == int(np.floor(0.5 * tumour))  # enough candidates: the ratio is reached exactly


def test_brain_free_slices_are_dropped(built):
    out, _ = built
    # synthetic brain covers z = 3..16 of 20
    assert all(3 <= r.z <= 16 for r in load_manifest(out))


def test_slice_pngs_are_rgb_uint8_in_the_requested_channel_order(studies, tmp_path):
    cid = GOOD[0]
    sub = tmp_path / "one"
    shutil.copytree(studies / cid, sub / cid)
    out = tmp_path / "ds"
    prepare_dataset(sub, out, one_stack(("t2f", "t1c", "t2w")), progress=False)
    case = load_case(discover_cases(sub)[0], ["t2f", "t1c", "t2w"])
    expected = {m: normalize_volume(case.images[m]) for m in ("t2f", "t1c", "t2w")}
    for r in load_manifest(out):
        img = read_image(r.image)
        assert img.dtype == np.uint8 and img.shape == (SHAPE[1], SHAPE[0], 3)
        for c, m in enumerate(("t2f", "t1c", "t2w")):
            np.testing.assert_array_equal(img[..., c], axial_slice(expected[m], r.z))
        np.testing.assert_array_equal(read_mask(r.mask), axial_slice(region_mask(case.seg, "WT"), r.z))
    assert load_info(out)["detector_channels"] == ["t2f", "t1c", "t2w"]


def test_region_et_masks_only_label_3(studies, tmp_path):
    sub = tmp_path / "one"
    shutil.copytree(studies / GOOD[1], sub / GOOD[1])
    out = tmp_path / "ds"
    prepare_dataset(sub, out, PrepareConfig(region="ET", background_ratio=0), progress=False)
    case = load_case(discover_cases(sub)[0], ["t1c", "t2w", "t2f"])
    recs = load_manifest(out)
    assert recs and all(r.area > 0 for r in recs)
    for r in recs:
        np.testing.assert_array_equal(read_mask(r.mask), axial_slice(case.seg == 3, r.z))


def test_dataset_yaml_names_the_split_folders(built):
    out, _ = built
    doc = yaml.safe_load((out / "dataset.yaml").read_text())
    assert Path(doc["path"]) == out.resolve()
    assert (doc["train"], doc["val"], doc["test"]) == ("images/train", "images/val", "images/test")
    assert doc["names"] == {0: "tumour"}


def test_rerun_skips_finished_cases_and_overwrite_redoes_them(studies, tmp_path):
    sub = tmp_path / "s"
    for cid in GOOD[:3]:
        shutil.copytree(studies / cid, sub / cid)
    out = tmp_path / "ds"
    first = prepare_dataset(sub, out, PrepareConfig(), progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    again = prepare_dataset(sub, out, PrepareConfig(), progress=False)
    assert again["cases_reused"] == GOOD[:3] and again["slices_written"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == mtimes
    assert (out / "manifest.csv").read_text() and again["n_slices"] == first["n_slices"]
    redo = prepare_dataset(sub, out, PrepareConfig(overwrite=True), progress=False)
    assert redo["cases_reused"] == [] and redo["slices_written"] == first["n_slices"]


def test_an_interrupted_case_is_redone_and_stray_files_removed(studies, tmp_path):
    sub = tmp_path / "s"
    for cid in GOOD[:3]:
        shutil.copytree(studies / cid, sub / cid)
    out = tmp_path / "ds"
    prepare_dataset(sub, out, PrepareConfig(), progress=False)
    victim = GOOD[1]
    (out / ".done" / f"{victim}.json").unlink()  # as if killed before its marker was written
    split = load_info(out)["splits"][victim]
    stray = out / "images" / split / f"{victim}_z019.png"
    stray.write_bytes(b"half")
    tmp_left = out / "labels" / split / f".{victim}_z005.txt.abc.tmp.txt"
    tmp_left.write_text("0 0.5")
    again = prepare_dataset(sub, out, PrepareConfig(), progress=False)
    assert victim not in again["cases_reused"] and sorted(again["cases_reused"]) == sorted(set(GOOD[:3]) - {victim})
    assert not stray.exists() and not tmp_left.exists()
    listed = {str(p.relative_to(out)) for r in load_manifest(out) for p in (r.image, r.mask, r.label)}
    assert listed == _files(out)


def test_changed_settings_redo_the_cases(studies, tmp_path):
    sub = tmp_path / "s"
    shutil.copytree(studies / GOOD[0], sub / GOOD[0])
    out = tmp_path / "ds"
    prepare_dataset(sub, out, one_stack(("t2f",) * 3), progress=False)
    img = read_image(load_manifest(out)[0].image)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])  # FLAIR x3
    again = prepare_dataset(sub, out, one_stack(PAPER_CHANNELS), progress=False)
    assert again["cases_reused"] == []
    img = read_image(load_manifest(out)[0].image)
    assert not np.array_equal(img[..., 0], img[..., 2])


def test_two_stacks_write_each_models_images_and_going_back_to_one_removes_the_second(studies, tmp_path):
    sub = tmp_path / "s"
    shutil.copytree(studies / GOOD[0], sub / GOOD[0])
    out = tmp_path / "ds"
    cfg = PrepareConfig(detector_channels=PAPER_CHANNELS, segmenter_channels=("t2f",) * 3)
    summary = prepare_dataset(sub, out, cfg, progress=False)
    assert summary["detector_channels"] == list(PAPER_CHANNELS) and summary["segmenter_channels"] == ["t2f"] * 3
    case = load_case(discover_cases(sub)[0], ("t1c", "t2f"), with_seg=False)
    flair, t1c = normalize_volume(case.images["t2f"]), normalize_volume(case.images["t1c"])
    recs = load_manifest(out)
    for r in recs:
        det, seg = read_image(r.image), read_image(r.segmenter_image)
        assert r.segmenter_image.parent.parent.name == "segmenter_images" and r.segmenter_image.name == r.image.name
        assert np.array_equal(det[..., 0], axial_slice(t1c, r.z)) and np.array_equal(det[..., 2], axial_slice(flair, r.z))
        assert all(np.array_equal(seg[..., c], axial_slice(flair, r.z)) for c in range(3))
    again = prepare_dataset(sub, out, cfg, progress=False)
    assert again["cases_reused"] == [GOOD[0]]  # the second stack is part of a finished case
    one = prepare_dataset(sub, out, one_stack(PAPER_CHANNELS), progress=False)
    assert one["cases_reused"] == [] and len(recs) == one["n_slices"]
    assert all(r.segmenter_image == r.image for r in load_manifest(out))
    assert not any((out / "segmenter_images").rglob("*.png"))


def test_nothing_usable_is_an_error(studies, tmp_path):
    sub = tmp_path / "s"
    for cid in ("bad-nan", "bad-noseg"):
        shutil.copytree(studies / cid, sub / cid)
    with pytest.raises(UserError, match="no usable case.*bad-nan: .*non-finite"):
        prepare_dataset(sub, tmp_path / "ds", one_stack(PAPER_CHANNELS), progress=False)


def test_cli_prepare_reports_the_summary_and_exit_codes(studies, tmp_path, capsys):
    sub = tmp_path / "s"
    for cid in (GOOD[0], "bad-4d"):
        shutil.copytree(studies / cid, sub / cid)
    rc = cli_main(["prepare", "--studies", str(sub), "--out", str(tmp_path / "ds"), "--channels", "t2f,t2f,t2f",
                   "--region", "tc", "--min-box-pixels", "5", "--background-ratio", "1", "--split", "6:2:2",
                   "--seed", "3", "--z-step", "2", "--workers", "1", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "cases used: 1" in text and "bad-4d:" in text and "4-D" in text
    info = load_info(tmp_path / "ds")
    assert info["region"] == "TC" and info["settings"]["z_step"] == 2 and info["settings"]["min_box_pixels"] == 5
    assert all(r.z % 2 == 0 for r in load_manifest(tmp_path / "ds"))
    shutil.rmtree(sub / GOOD[0])
    assert cli_main(["prepare", "--studies", str(sub), "--out", str(tmp_path / "ds2"), "--no-progress"]) == 2


@pytest.mark.parametrize("n,expected", [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1]), (4, [2, 1, 1]),
                                        (5, [3, 1, 1]), (10, [6, 2, 2]), (802, [481, 161, 160])])
def test_split_counts_round_and_give_every_split_a_case_from_three(n, expected):
    assert split_counts(n, (0.6, 0.2, 0.2)) == expected


def test_split_is_seeded_and_stable_when_a_case_is_added():
    ids = [f"c{i:03d}" for i in range(50)]
    a, b = split_cases(ids, seed=0), split_cases(ids, seed=0)
    assert a == b and split_cases(ids, seed=1) != a
    grown = split_cases(ids + ["c999"], seed=0)
    assert sum(grown[c] != a[c] for c in ids) <= 2


def test_two_workers_give_the_same_dataset_as_one(studies, tmp_path):
    sub = tmp_path / "s"
    for cid in GOOD[:3] + ["bad-zero"]:
        shutil.copytree(studies / cid, sub / cid)
    one = prepare_dataset(sub, tmp_path / "a", PrepareConfig(), workers=1, progress=False)
    two = prepare_dataset(sub, tmp_path / "b", PrepareConfig(), workers=2, progress=False)
    assert one["splits"] == two["splits"] and one["cases_skipped"] == two["cases_skipped"]
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


@needs_real
def test_real_case_gives_tumour_slices_with_boxes(tmp_path):
    sub = tmp_path / "s"
    shutil.copytree(paths.real_cases_dir() / REAL_CASE_ID, sub / REAL_CASE_ID)
    summary = prepare_dataset(sub, tmp_path / "ds", PrepareConfig(), progress=False)
    recs = load_manifest(tmp_path / "ds")
    assert summary["n_tumour_slices"] > 30 and len(recs) == summary["n_slices"]
    img = read_image(recs[len(recs) // 2].image)
    assert img.shape == (240, 240, 3) and img.max() == 255


@pytest.mark.slow
def test_ultralytics_trains_on_the_prepared_dataset(built, tmp_path):
    from bratsmedsam import offline

    offline.configure()
    from ultralytics import YOLO

    out, _ = built
    model = YOLO("yolov8n.yaml")
    model.train(data=str(out / "dataset.yaml"), epochs=1, imgsz=64, batch=8, workers=0, device="cpu",
                project=str(tmp_path), name="t", plots=False, val=True, verbose=False, amp=False)
    assert (tmp_path / "t" / "weights" / "last.pt").is_file()
    metrics = json.loads(json.dumps(model.trainer.metrics, default=float))
    assert "metrics/mAP50(B)" in metrics


def test_a_case_failing_the_data_checks_leaves_a_consistent_split(studies, tmp_path):
    sub = tmp_path / "s"
    for cid in GOOD[:3] + ["bad-nan", "bad-labels"]:  # headers fine, data bad: found only while reading
        shutil.copytree(studies / cid, sub / cid)
    out = tmp_path / "ds"
    summary = prepare_dataset(sub, out, one_stack(PAPER_CHANNELS), progress=False)
    assert sorted(summary["cases_skipped"]) == ["bad-labels", "bad-nan"]
    assert sorted(summary["splits"].values()) == ["test", "train", "val"]  # 3 cases: one per split
    assert {r.case: r.split for r in load_manifest(out)} == summary["splits"]
    listed = {str(p.relative_to(out)) for r in load_manifest(out) for p in (r.image, r.mask, r.label)}
    assert listed == _files(out)


def test_an_external_cohort_can_be_prepared_all_test(studies, tmp_path):
    """A site scoring our models on its own labelled studies: --split 0:0:1 puts every case in test."""
    sub = tmp_path / "s"
    for cid in GOOD[:2]:
        shutil.copytree(studies / cid, sub / cid)
    summary = prepare_dataset(sub, tmp_path / "ds", PrepareConfig(split="0:0:1"), progress=False)
    assert summary["cases_per_split"] == {"train": 0, "val": 0, "test": 2}
    assert {r.split for r in load_manifest(tmp_path / "ds")} == {"test"}
    with pytest.raises(UserError, match="not all 0"):
        prepare_dataset(sub, tmp_path / "ds0", PrepareConfig(split="0:0:0"), progress=False)
