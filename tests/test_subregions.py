"""BraTS sub-regions: nesting and the label map, inner prompts derived from the WT mask, region decoders on one
embedding, their checkpoint, prepare's label maps, multi-label files, and the app's modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.regions import (BRATS, BRATS_LABELS, REGION_LABEL, label_map, mode_regions, nest, parse_mode,
                                 parse_region_list, region_masks)
from bratsmedsam.segmenter import load_segmenter
from bratsmedsam.segmenter.checkpoint import save_decoder
from bratsmedsam.subregions import inner_masks_2d, parent_boxes


# -- regions and composition ------------------------------------------------------------------------------
def test_label_map_nests_et_in_tc_in_wt_and_writes_ncr_ed_et():
    wt = np.zeros((6, 6), bool)
    wt[1:5, 1:5] = True
    tc = np.zeros_like(wt)
    tc[2:4, 2:6] = True  # sticks out of WT at column 5
    et = np.zeros_like(wt)
    et[2, 2:6] = True  # inside TC except where TC left WT
    et[0, 0] = True  # outside everything
    lm = label_map(wt, tc, et)
    assert lm[0, 0] == 0 and lm[2, 5] == 0  # clipped to the parents
    assert lm[2, 2] == BRATS_LABELS["ET"] and lm[3, 2] == BRATS_LABELS["NCR"] and lm[1, 1] == BRATS_LABELS["ED"]
    back = region_masks(lm)
    assert np.array_equal(back["WT"], wt) and np.array_equal(back["TC"], nest({"WT": wt, "TC": tc})["TC"])


def test_a_brats_label_map_round_trips_through_its_region_masks():
    seg = np.random.default_rng(0).integers(0, 4, (8, 9)).astype(np.uint8)
    m = region_masks(seg)
    assert np.array_equal(label_map(m["WT"], m["TC"], m["ET"]), seg)


def test_modes_and_region_lists_parse_or_say_what_was_expected():
    assert parse_mode("brats") == BRATS and parse_mode("tc") == "TC"
    assert mode_regions(BRATS) == ("WT", "TC", "ET") and mode_regions("ET") == ("ET",)
    assert parse_region_list("BraTS") == ("WT", "TC", "ET") and parse_region_list("wt, et") == ("WT", "ET")
    assert parse_region_list("") is None
    with pytest.raises(UserError, match="BraTS"):
        parse_mode("XX")
    assert REGION_LABEL == {"WT": 2, "TC": 1, "ET": 3}


# -- inner prompts from the WT mask -----------------------------------------------------------------------
class BoxEcho:
    """Stand-in segmenter: each region's "mask" is its box, shrunk by a region-dependent margin; records prompts."""

    def __init__(self):
        self.calls = []

    def segment_many(self, images, boxes, region=None, progress=False):
        from types import SimpleNamespace

        self.calls.append((region, [np.asarray(b).copy() for b in boxes]))
        shrink = {"TC": 1, "ET": 2}.get(region, 0)
        out = []
        for im, bx in zip(images, boxes):
            masks = np.zeros((len(bx), *im.shape[:2]), bool)
            for n, (x0, y0, x1, y1) in enumerate(np.asarray(bx, int)):
                masks[n, y0 + shrink:y1 + 1 - shrink, x0 + shrink:x1 + 1 - shrink] = True
            masks[:, 0, 0] = True  # a stray pixel outside WT: clipped away by the nesting
            out.append(SimpleNamespace(masks=masks, iou=np.ones(len(bx), np.float32)))
        return out


def test_inner_regions_are_prompted_with_the_wt_components_boxes_and_clipped_to_their_parent():
    wt = np.zeros((20, 20), bool)
    wt[2:8, 3:9] = True
    wt[12:18, 12:16] = True
    seg = BoxEcho()
    got = inner_masks_2d(seg, [np.zeros((20, 20, 3), np.uint8)], [wt], min_pixels=4)
    boxes = parent_boxes(wt, 4)
    assert sorted(boxes.tolist()) == [[3, 2, 8, 7], [12, 12, 15, 17]]
    assert [r for r, _ in seg.calls] == ["TC", "ET"]
    for _, prompts in seg.calls:
        assert np.array_equal(prompts[0], boxes)
    assert not got["TC"][0][0, 0] and not got["ET"][0][0, 0]  # the stray pixel is outside WT
    assert (got["ET"][0] <= got["TC"][0]).all() and (got["TC"][0] <= wt).all()
    assert got["TC"][0][3, 4] and not got["TC"][0][2, 3]  # shrunk by one pixel inside the WT box


# -- region decoders --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi(cache_root):
    return load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", backend="torch",
                          regions=("WT", "TC", "ET"))


def _ellipse():
    yy, xx = np.mgrid[:120, :140]
    mask = ((yy - 60) / 25) ** 2 + ((xx - 70) / 35) ** 2 <= 1
    img = np.full((120, 140, 3), 40, np.uint8)
    img[mask] = 200
    return img, np.array([[35, 35, 105, 85]], np.float32)


def test_region_decoders_are_separate_copies_of_the_pretrained_decoder_on_one_embedding(multi):
    assert multi.regions == ("WT", "TC", "ET") and multi.decoders["WT"] is multi.net.mask_decoder
    assert multi.decoders["TC"] is not multi.decoders["WT"] and multi.decoders["ET"] is not multi.decoders["TC"]
    img, box = _ellipse()
    misses = multi.cache.misses
    wt, tc = multi.segment(img, box, region="WT"), multi.segment(img, box, region="TC")
    assert np.array_equal(wt.masks, tc.masks)  # zero-shot: the same weights
    assert multi.cache.misses - misses <= 1  # one encoder pass serves every region
    with torch.no_grad():
        for p in multi.decoders["TC"].output_hypernetworks_mlps.parameters():
            p.mul_(-1.0)
    try:
        flipped = multi.region("TC").segment(img, box)
        assert not np.array_equal(flipped.masks, wt.masks)
        assert np.array_equal(multi.segment(img, box).masks, wt.masks)  # WT (the default) unchanged
    finally:
        with torch.no_grad():
            for p in multi.decoders["TC"].output_hypernetworks_mlps.parameters():
                p.mul_(-1.0)


def test_a_region_without_a_decoder_is_a_user_error(multi, cache_root):
    single = load_segmenter("litemedsam", device="cpu", cache_size=0, backend="torch")
    img, box = _ellipse()
    with pytest.raises(UserError, match="decoders for WT"):
        single.segment(img, box, region="ET")


def test_one_checkpoint_holds_every_region_decoder_and_loads_them_back(multi, tmp_path):
    states = {r: {k: v.clone() + 0.01 * (i + 1) for k, v in d.state_dict().items()}
              for i, (r, d) in enumerate(multi.decoders.items())}
    meta = {"base": "litemedsam", "base_checkpoint": str(multi.base_checkpoint),
            "base_checkpoint_sha256": multi.base_sha256, "preprocess": multi.fam.preprocess_id, "region": "WT",
            "regions": ["WT", "TC", "ET"]}
    path = save_decoder(tmp_path / "best.pt", states["WT"], meta,
                        extra={"region_decoders": {"TC": states["TC"], "ET": states["ET"]}})
    tuned = load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch")
    assert tuned.regions == ("WT", "TC", "ET") and tuned.meta["region_decoders_trained"] == ["WT", "TC", "ET"]
    for r in tuned.regions:
        for k, v in states[r].items():
            assert torch.equal(tuned.decoders[r].state_dict()[k], v), (r, k)


def test_a_single_region_checkpoint_asked_for_three_regions_starts_the_others_zero_shot(multi, tmp_path):
    state = {k: v.clone() + 0.01 for k, v in multi.net.mask_decoder.state_dict().items()}
    meta = {"base": "litemedsam", "base_checkpoint_sha256": multi.base_sha256, "preprocess": multi.fam.preprocess_id,
            "region": "WT"}
    path = save_decoder(tmp_path / "wt.pt", state, meta)
    tuned = load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch", regions=("WT", "TC", "ET"))
    assert tuned.meta["region_decoders_trained"] == ["WT"]
    key = next(iter(state))
    assert torch.equal(tuned.decoders["WT"].state_dict()[key], state[key])
    assert torch.equal(tuned.decoders["TC"].state_dict()[key], multi.decoders["TC"].state_dict()[key])


# -- data: prepare's label maps, multi-label files ----------------------------------------------------------
def test_prepare_writes_each_slices_brats_label_map(sample_dataset, sample_studies):
    from bratsmedsam.boxes import axial_slice
    from bratsmedsam.cases import discover_cases, load_case
    from bratsmedsam.dataset import load_info, load_manifest, read_labelmap, read_mask

    assert load_info(sample_dataset)["labelmaps"] is True
    recs = [r for r in load_manifest(sample_dataset) if r.area > 0][:3]
    files = {c.case_id: c for c in discover_cases(sample_studies)}
    for r in recs:
        seg = load_case(files[r.case], [], with_seg=True).seg
        lm = read_labelmap(r)
        assert np.array_equal(lm, axial_slice(seg, r.z))
        assert np.array_equal(lm > 0, read_mask(r.mask))  # the WT mask is the label map's union


def test_write_label_map_keeps_the_values_and_the_reference_geometry(sample_studies, tmp_path):
    import SimpleITK as sitk

    from bratsmedsam.cases import discover_cases
    from bratsmedsam.studies import write_label_map

    ref = discover_cases(sample_studies)[0].images["t2f"]
    shape = sitk.ReadImage(str(ref)).GetSize()
    lm = np.zeros(shape, np.uint8)
    lm[10:20, 10:20, 30] = 2
    lm[12:15, 12:15, 30] = 1
    lm[13, 13, 30] = 3
    out = write_label_map(lm, ref, tmp_path / "x.nrrd")
    img, refimg = sitk.ReadImage(str(out)), sitk.ReadImage(str(ref))
    assert img.GetSize() == refimg.GetSize() and np.allclose(img.GetOrigin(), refimg.GetOrigin())
    assert np.allclose(img.GetDirection(), refimg.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), lm)
    with pytest.raises(UserError, match="0-255"):
        write_label_map(lm.astype(bool), ref, tmp_path / "y.nrrd")


def test_build_store_in_brats_mode_keeps_the_label_map_and_rewrites_when_the_mode_changes(sample_studies, tmp_path):
    import nibabel as nib

    from bratsmedsam.studies import build_store

    store = tmp_path / "store"
    build_store(sample_studies, store, region="WT")
    label = next((store / "labels" / "final").glob("*.nii.gz"))
    assert set(np.unique(np.asarray(nib.load(str(label)).dataobj))) <= {0, 1}
    build_store(sample_studies, store, region=BRATS)
    assert set(np.unique(np.asarray(nib.load(str(label)).dataobj))) == {0, 1, 2, 3}


# -- the app's settings ------------------------------------------------------------------------------------
def _settings(conf):
    import sys
    from pathlib import Path

    app = Path(__file__).resolve().parents[1] / "apps" / "brats_medsam"
    sys.path.insert(0, str(app))
    try:
        from lib.configs.settings import AppSettings
    finally:
        sys.path.remove(str(app))
    return AppSettings.from_conf(str(app), conf)


def test_the_app_defaults_to_wt_and_serves_the_brats_label_map_when_asked(tmp_path):
    default = _settings({"model_dir": str(tmp_path)})
    assert not default.multi and default.labels == {"WT": 1} and default.regions == ("WT",)
    multi = _settings({"model_dir": str(tmp_path), "region": "BraTS"})
    assert multi.multi and multi.labels == {"NCR": 1, "ED": 2, "ET": 3} and multi.regions == ("WT", "TC", "ET")
    assert multi.dataset_region == "WT"
    one = _settings({"model_dir": str(tmp_path), "region": "tc"})
    assert not one.multi and one.labels == {"TC": 1} and one.regions == ("TC",) and one.dataset_region == "TC"
    with pytest.raises(UserError, match="--conf region"):
        _settings({"model_dir": str(tmp_path), "region": "necrosis"})


# -- evaluation rows per region ----------------------------------------------------------------------------
def test_evaluation_scores_every_region_with_own_and_wt_derived_boxes_and_the_report_has_their_rows(
        sample_dataset, tmp_path):
    from bratsmedsam.dataset import load_manifest, read_image
    from bratsmedsam.evaluate import EvaluateConfig, _region_slices
    from bratsmedsam.evaluation.records import DERIVED, GT, table2
    from bratsmedsam.evaluation.rows import SegmenterRow
    from bratsmedsam.report import table2_markdown

    recs = [r for r in load_manifest(sample_dataset) if r.area > 0][:4]
    images = [read_image(r.image) for r in recs]
    slices = _region_slices(recs[0].case, recs, images, {GT: [r.boxes_xyxy for r in recs]}, BoxEcho(), "echo",
                            ("WT", "TC", "ET"), 10)
    got = {(s.region, s.boxes) for s in slices}
    assert got == {(r, b) for r in ("WT", "TC", "ET") for b in (GT, DERIVED)}
    assert all(len([s for s in slices if (s.region, s.boxes) == key]) == len(recs) for key in got)
    wt = {s.z: s.dice for s in slices if s.region == "WT" and s.boxes == GT}
    assert wt == {s.z: s.dice for s in slices if s.region == "WT" and s.boxes == DERIVED}
    cfg = EvaluateConfig(data=sample_dataset, n_boot=20)
    rows = [SegmenterRow("echo", "litemedsam", "zero-shot")]
    results = {"dataset": {"regions": ["WT", "TC", "ET"]}, "detectors": [],
               "table2": table2(rows, [GT, DERIVED], slices, cfg, ("WT", "TC", "ET"))}
    md = table2_markdown(results)
    assert [line.split("|")[2].strip() for line in md.splitlines()[2:]] == ["WT", "TC", "ET"]
    assert "GT WT boxes, inner boxes derived" in md.splitlines()[0]
