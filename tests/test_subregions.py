"""BraTS sub-regions: nesting and the label map, inner prompts (the WT prompt's own box, or derived from the WT
mask), the regions as heads of one decoder (one pass, their checkpoint, fine-tuning), prepare's label maps,
multi-label files, and the app's modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.regions import (BRATS, BRATS_LABELS, REGION_LABEL, label_map, mode_regions, nest, parse_mode,
                                 parse_region_list, region_masks)
from bratsmedsam.segmenter import load_segmenter
from bratsmedsam.segmenter.checkpoint import save_decoder
from bratsmedsam.subregions import SameBoxRegions, inner_masks_2d, parent_boxes


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
    """Stand-in segmenter: each region's "mask" is its box, shrunk by a region-dependent margin; records prompts
    (one entry per decoder pass: the regions it emitted and the boxes)."""

    def __init__(self):
        self.calls = []

    def segment_regions(self, images, boxes, regions, progress=False):
        from types import SimpleNamespace

        self.calls.append((tuple(regions), [np.asarray(b).copy() for b in boxes]))
        out = {}
        for region in regions:
            shrink = {"TC": 1, "ET": 2}.get(region, 0)
            out[region] = []
            for im, bx in zip(images, boxes):
                masks = np.zeros((len(bx), *im.shape[:2]), bool)
                for n, (x0, y0, x1, y1) in enumerate(np.asarray(bx, int).reshape(-1, 4)):
                    masks[n, y0 + shrink:y1 + 1 - shrink, x0 + shrink:x1 + 1 - shrink] = True
                masks[:, 0, 0] = True  # a stray pixel outside WT: clipped away by the nesting
                out[region].append(SimpleNamespace(masks=masks, iou=np.ones(len(bx), np.float32)))
        return out

    def segment_many(self, images, boxes, region=None, progress=False):
        return self.segment_regions(images, boxes, (region or "WT",))[region or "WT"]

    def segment(self, image, boxes):
        return self.segment_many([image], [boxes])[0]


def test_derived_inner_regions_come_from_one_pass_on_the_wt_components_boxes_clipped_to_their_parent():
    wt = np.zeros((20, 20), bool)
    wt[2:8, 3:9] = True
    wt[12:18, 12:16] = True
    seg = BoxEcho()
    got = inner_masks_2d(seg, [np.zeros((20, 20, 3), np.uint8)], [wt], min_pixels=4)
    boxes = parent_boxes(wt, 4)
    assert sorted(boxes.tolist()) == [[3, 2, 8, 7], [12, 12, 15, 17]]
    assert [r for r, _ in seg.calls] == [("TC", "ET")]  # both inner heads from the same pass
    assert np.array_equal(seg.calls[0][1][0], boxes)
    assert not got["TC"][0][0, 0] and not got["ET"][0][0, 0]  # the stray pixel is outside WT
    assert (got["ET"][0] <= got["TC"][0]).all() and (got["TC"][0] <= wt).all()
    assert got["TC"][0][3, 4] and not got["TC"][0][2, 3]  # shrunk by one pixel inside the WT box


def test_a_wt_box_prompt_gets_tc_and_et_from_its_own_passes_with_the_same_box():
    from bratsmedsam.boxes import RoiIJK, axial_slice
    from bratsmedsam.regions import region_masks
    from bratsmedsam.volume import segment_roi

    channels = np.zeros((30, 24, 5, 3), np.uint8)
    channels[..., 0] = np.arange(5)  # slices differ in content
    echo = BoxEcho()
    same = SameBoxRegions(echo)
    flat = segment_roi(channels, RoiIJK.from_slicer([4, 20, 3, 15, 2, 2], channels.shape[:3]), same)
    assert [r for r, _ in echo.calls] == [("WT", "TC", "ET")]  # one pass: WT and both inner heads
    lm = same.label_map(channels, flat)
    m = region_masks(lm)
    assert np.array_equal(m["WT"], flat.label)
    wt2 = axial_slice(flat.label, 2)
    assert axial_slice(m["TC"], 2).sum() < wt2.sum() and axial_slice(m["ET"], 2).sum() < axial_slice(m["TC"], 2).sum()
    assert not axial_slice(m["TC"], 2)[0, 0]  # nested in WT
    deep = segment_roi(channels, RoiIJK.from_slicer([4, 20, 3, 15, 0, 4], channels.shape[:3]), same)
    assert all(r == ("WT", "TC", "ET") for r, _ in echo.calls)  # the 3D ROI and its propagation too
    lm3 = same.label_map(channels, deep)
    assert (lm3 > 0).sum() == deep.label.sum() and set(np.unique(lm3)) == {0, 1, 2, 3}


# -- one decoder, a head per region -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi(cache_root):
    return load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", backend="torch",
                          regions=("WT", "TC", "ET"))


@pytest.fixture(scope="module")
def single(cache_root):
    return load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", backend="torch")


def _ellipse():
    yy, xx = np.mgrid[:120, :140]
    mask = ((yy - 60) / 25) ** 2 + ((xx - 70) / 35) ** 2 <= 1
    img = np.full((120, 140, 3), 40, np.uint8)
    img[mask] = 200
    return img, np.array([[35, 35, 105, 85]], np.float32)


def test_the_regions_are_token_slots_of_the_networks_one_decoder(multi):
    assert multi.regions == ("WT", "TC", "ET") and multi.slots == {"WT": 0, "TC": 2, "ET": 3}
    assert not hasattr(multi, "decoders")  # no per-region copies
    mlps = multi.net.mask_decoder.output_hypernetworks_mlps
    for s in (2, 3):  # zero-shot: token 0's MLP on the inner slots
        for a, b in zip(mlps[s].parameters(), mlps[0].parameters()):
            assert torch.equal(a, b)


def test_one_pass_returns_every_region_and_equals_the_per_region_calls(multi):
    img, box = _ellipse()
    flipped = np.ascontiguousarray(img[::-1])
    boxes = [np.concatenate([box, [[10, 10, 60, 50]]]).astype(np.float32), box]
    calls = []
    real = multi.net.mask_decoder.transformer.forward
    multi.net.mask_decoder.transformer.forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        together = multi.segment_regions([img, flipped], boxes)
    finally:
        del multi.net.mask_decoder.transformer.forward
    assert len(calls) == 1  # 3 prompts, 3 regions: one transformer pass (decode_batch 4)
    assert set(together) == {"WT", "TC", "ET"}
    for r in multi.regions:
        alone = multi.segment_many([img, flipped], boxes, region=r)
        for a, b in zip(together[r], alone):
            assert np.array_equal(a.masks, b.masks) and np.allclose(a.iou, b.iou, atol=1e-6)


def test_wt_mode_is_upstreams_single_mask_decode_and_the_brats_heads_leave_it_unchanged(single, multi):
    from bratsmedsam.segmenter.model import close_notches, decode, fill_holes

    img, box = _ellipse()
    net = single.net
    emb = single.embed([img])
    frame = single.fam.frame(*img.shape[:2])
    bm = torch.from_numpy(single.fam.boxes_to_model(box, frame))
    with torch.inference_mode():
        ref_logits, ref_iou = decode(net, net.mask_decoder, emb, bm)  # upstream MaskDecoder, multimask_output=False
    # then WT's notches closed and its 2D holes filled (regions.SOLID_REGIONS)
    ref = fill_holes(close_notches(single.fam.masks(ref_logits, frame), single.close_px))
    got = single.segment(img, box)
    assert single.regions == ("WT",) and single.slots == {"WT": 0}
    assert np.array_equal(got.masks, ref) and np.allclose(got.iou, ref_iou[:, 0].numpy(), atol=1e-6)
    in_brats = multi.segment(img, box, region="WT")
    assert np.array_equal(in_brats.masks, got.masks) and np.allclose(in_brats.iou, got.iou, atol=1e-6)


def test_solid_regions_masks_get_their_holes_filled_and_ets_rim_stays_open(multi, monkeypatch):
    from bratsmedsam.segmenter.model import fill_holes

    yy, xx = np.mgrid[:120, :140]
    r = np.hypot(yy - 60, xx - 70)
    ring = (r <= 30) & (r >= 15)  # a rim around a 15 px hole, as the decoder leaves inside a necrotic core
    hole = r < 15
    assert np.array_equal(fill_holes(ring[None])[0], ring | hole)
    assert fill_holes(np.zeros((0, 120, 140), bool)).shape == (0, 120, 140)
    # whatever the decoder's logits, the family's masks are rings: what the Segmenter returns per region
    monkeypatch.setattr(multi.fam, "masks", lambda logits, frame: np.repeat(ring[None], logits.shape[0], 0))
    img, box = _ellipse()
    out = multi.segment_regions([img], [box])
    assert out["WT"][0].masks[0][hole].all() and out["TC"][0].masks[0][hole].all()
    assert np.array_equal(out["ET"][0].masks[0], ring)  # ET is a rim: its hole is the necrosis it surrounds
    monkeypatch.setattr(multi, "fill_holes", False)  # evaluate --no-fill-holes: the raw masks
    raw = multi.segment_regions([img], [box])
    assert all(np.array_equal(raw[g][0].masks[0], ring) for g in ("WT", "TC", "ET"))


def test_a_solid_regions_notch_narrower_than_the_disk_is_closed_and_a_wider_bay_and_et_stay_as_drawn(multi,
                                                                                                         monkeypatch):
    """A fine-tuned decoder cut cracks into solid tumour masks (the synthetic test case's GT-box HD95 came from their
    floors): a crack 5 px wide closes at the default radius 3; a bay 20 px wide, wider than the disk, is kept, and
    nothing is added outside the drawn disc's convex hull."""
    from bratsmedsam.segmenter.model import CLOSE_PX, close_notches

    yy, xx = np.mgrid[:120, :140]
    disc = np.hypot(yy - 60, xx - 70) <= 30
    crack = (np.abs(xx - 70) <= 2) & (yy < 60)         # 5 px wide, from the top edge to the centre
    bay = (np.abs(xx - 70) <= 10) & (yy > 75)          # 21 px wide, at the bottom
    drawn = disc & ~crack & ~bay
    assert CLOSE_PX == 3
    closed = close_notches(drawn[None])[0]
    assert closed[disc & crack & (yy > 35)].all()       # the crack is closed (its mouth at the rim may stay open)
    assert not closed[disc & bay & (yy > 80)].any()     # the bay is wider than the disk: kept
    assert not (closed & ~disc).any() and (closed >= drawn).all()
    assert np.array_equal(close_notches(drawn[None], 0)[0], drawn)
    assert close_notches(np.zeros((0, 120, 140), bool), 4).shape == (0, 120, 140)
    edge = np.zeros((40, 40), bool)
    edge[:, :12] = True                                 # a mask touching the image edge is not eaten by the closing
    assert np.array_equal(close_notches(edge[None])[0], edge)
    monkeypatch.setattr(multi.fam, "masks", lambda logits, frame: np.repeat(drawn[None], logits.shape[0], 0))
    img, box = _ellipse()
    out = multi.segment_regions([img], [box])
    inside = disc & crack & (yy > 35)
    assert out["WT"][0].masks[0][inside].all() and out["TC"][0].masks[0][inside].all()
    assert np.array_equal(out["ET"][0].masks[0], drawn)
    monkeypatch.setattr(multi, "close_px", 0)           # evaluate --close-px 0: holes only
    assert np.array_equal(multi.segment_regions([img], [box])["WT"][0].masks[0], drawn)


def test_the_openvino_decoder_emits_every_region_from_one_inference_equal_to_pytorch(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("BRATSMEDSAM_OPENVINO_CACHE", str(tmp_path / "ov"))
    img, box = _ellipse()
    boxes = np.concatenate([box, [[10, 10, 60, 50]]]).astype(np.float32)
    ref = load_segmenter("litemedsam", device="cpu", backend="torch", cache_size=0, regions=("WT", "TC", "ET"))
    ov = load_segmenter("litemedsam", device="cpu", cache_size=0, regions=("WT", "TC", "ET"))
    ov.encoder = ref.encoder  # same embeddings: only the decoders differ
    compiled = ov._openvino_decoder()
    assert compiled is not None
    shapes = []

    class Counting:
        current = compiled.current

        def __call__(self, emb, bm):
            out = compiled(emb, bm)
            shapes.append(tuple(out[0].shape))
            return out

    ov._ov_decoder = Counting()
    got, want = ov.segment_regions([img], [boxes]), ref.segment_regions([img], [boxes])
    assert shapes == [(2, 3, 256, 256)]  # one inference, every region's head
    for r in ("WT", "TC", "ET"):
        a, b = got[r][0], want[r][0]
        assert (a.masks != b.masks).mean() < 1e-4 and np.allclose(a.iou, b.iou, atol=1e-4)
    assert np.array_equal(ov.segment(img, boxes, region="TC").masks, got["TC"][0].masks)


def test_a_region_not_served_is_a_user_error(single):
    img, box = _ellipse()
    with pytest.raises(UserError, match="serves WT"):
        single.segment(img, box, region="ET")


def _meta(seg, **extra):
    return {"base": "litemedsam", "base_checkpoint": str(seg.base_checkpoint), "base_checkpoint_sha256": seg.base_sha256,
            "preprocess": seg.fam.preprocess_id, "region": "WT", **extra}


def test_one_checkpoint_holds_the_decoder_and_its_region_slots_and_loads_them_back(multi, tmp_path):
    state = {k: v.clone() + 0.01 for k, v in multi.net.mask_decoder.state_dict().items()}
    path = save_decoder(tmp_path / "best.pt", state, _meta(multi, regions=["WT", "TC", "ET"],
                                                          region_slots={"WT": 0, "TC": 1, "ET": 3}))
    tuned = load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch")
    assert tuned.regions == ("WT", "TC", "ET") and tuned.slots == {"WT": 0, "TC": 1, "ET": 3}
    assert tuned.meta["region_heads_trained"] == ["WT", "TC", "ET"]
    for k, v in state.items():  # trained heads are loaded as they are (no zero-shot copy over them)
        assert torch.equal(tuned.net.mask_decoder.state_dict()[k], v), k


def test_an_old_checkpoint_with_a_decoder_copy_per_region_is_a_clear_user_error(multi, tmp_path):
    state = multi.net.mask_decoder.state_dict()
    path = save_decoder(tmp_path / "old.pt", state, _meta(multi, regions=["WT", "TC", "ET"]),
                        extra={"region_decoders": {"TC": state, "ET": state}})
    with pytest.raises(UserError, match=r"old.pt holds one decoder copy per region .*--regions BraTS"):
        load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch")


def test_a_wt_checkpoint_asked_for_three_regions_starts_the_inner_heads_zero_shot(multi, tmp_path):
    state = {k: v.clone() + 0.01 for k, v in multi.net.mask_decoder.state_dict().items()}
    path = save_decoder(tmp_path / "wt.pt", state, _meta(multi))
    tuned = load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch", regions=("WT", "TC", "ET"))
    assert tuned.meta["region_heads_trained"] == ["WT"] and tuned.slots == {"WT": 0, "TC": 2, "ET": 3}
    mlps = tuned.net.mask_decoder.output_hypernetworks_mlps
    assert all(torch.equal(a, b) for a, b in zip(mlps[3].parameters(), mlps[0].parameters()))
    key = "transformer.layers.0.self_attn.q_proj.weight"
    assert torch.equal(tuned.net.mask_decoder.state_dict()[key], state[key])


def test_a_tc_checkpoint_cannot_serve_the_brats_regions(multi, tmp_path):
    path = save_decoder(tmp_path / "tc.pt", multi.net.mask_decoder.state_dict(), _meta(multi, region="TC"))
    with pytest.raises(UserError, match="trained for TC alone"):
        load_segmenter(decoder=path, device="cpu", cache_size=0, backend="torch", regions=("WT", "TC", "ET"))


def test_a_fine_tune_step_changes_the_tc_and_et_heads_and_trains_only_the_heads_with_targets(cache_root):
    from bratsmedsam.segmenter.finetune import FinetuneConfig, train_epoch
    from bratsmedsam.segmenter.model import heads_decoder
    from bratsmedsam.segmenter.samples import Sample

    seg = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", backend="torch",
                         regions=("WT", "TC", "ET"))
    img, box = _ellipse()
    emb = seg.embed([img])
    dec = seg.net.mask_decoder
    wt = np.zeros(img.shape[:2], bool)
    wt[40:80, 40:100] = True
    tc = np.zeros_like(wt)
    tc[50:70, 55:85] = True
    samples = [Sample(0, box[0], wt, "WT", {"WT": wt, "TC": tc, "ET": np.zeros_like(wt)})]
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    heads = ("WT", "TC", "ET")
    module = heads_decoder(dec, [seg.slots[r] for r in heads])
    opt = torch.optim.SGD(dec.parameters(), lr=0.1)
    cfg = FinetuneConfig(batch_size=1, jitter_frac=0.0, jitter_px=0.0)
    train_epoch(seg, module, samples, lambda i, v=0: emb[i:i + 1], opt, cfg, np.random.default_rng(0), heads=heads)
    after = dec.state_dict()
    changed = lambda prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))  # noqa
    for s in (0, 2, 3):  # WT, TC, ET heads
        assert changed(f"output_hypernetworks_mlps.{s}.")
    assert not changed("output_hypernetworks_mlps.1.")  # the unused slot
    # an own-box TC sample trains the TC head alone: the ET head's MLP gets no gradient
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    train_epoch(seg, module, [Sample(0, box[0], tc, "TC", {"TC": tc})], lambda i, v=0: emb[i:i + 1], opt, cfg,
                np.random.default_rng(0), heads=heads)
    after = dec.state_dict()
    assert changed("output_hypernetworks_mlps.2.") and not changed("output_hypernetworks_mlps.3.")


def test_make_samples_gives_wt_boxes_a_target_per_head_and_inner_boxes_their_own_head():
    from bratsmedsam.segmenter.samples import SplitData, make_samples

    wt = np.zeros((20, 20), bool)
    wt[2:12, 2:12] = True
    tc = np.zeros_like(wt)
    tc[4:8, 4:8] = True
    et = np.zeros_like(wt)
    boxes = np.array([[2, 2, 11, 11]], np.float32)
    data = SplitData(["k"], [np.zeros((20, 20, 3), np.uint8)], [wt], [boxes], ["c_z000"],
                     {"WT": ([wt], [boxes]), "TC": ([tc], [np.array([[4, 4, 7, 7]], np.float32)]),
                      "ET": ([et], [np.zeros((0, 4), np.float32)])})
    samples = make_samples(data, ("WT", "TC", "ET"))
    assert [(s.region, sorted(s.targets)) for s in samples] == [("WT", ["ET", "TC", "WT"]), ("TC", ["TC"])]
    assert np.array_equal(samples[0].targets["TC"], tc) and not samples[0].targets["ET"].any()


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


def test_the_automatic_chains_inner_clean_up_drops_small_pieces_and_keeps_et_inside_tc():
    from bratsmedsam.subregions import clean_inner

    tc = np.zeros((30, 30, 10), bool)
    tc[5:15, 5:15, 2:7] = True  # 500 voxels
    tc[25, 25, 8] = True  # a speck
    et = np.zeros_like(tc)
    et[7:12, 7:12, 3:6] = True  # 75 voxels, inside TC
    et[20:24, 20:24, 1:5] = True  # 64 voxels outside TC: not ET (ET lies in TC)
    et[8, 13, 6] = True  # an ET speck inside TC
    out = clean_inner({"TC": tc, "ET": et}, 50.0)
    assert out["TC"].sum() == 500 and out["ET"].sum() == 75 and not (out["ET"] & ~out["TC"]).any()
    same = clean_inner({"TC": tc, "ET": et}, 0.0)
    assert same["TC"] is tc and same["ET"] is et  # off: unchanged
