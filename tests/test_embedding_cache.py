"""The embedding cache: float16 storage handed out as float32, least-recently-used eviction under a disk cap."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from bratsmedsam.segmenter.cache import EmbeddingCache

from conftest import REAL_CASE_ID, needs_real

KEYS = [f"{i:064x}" for i in range(8)]


def _emb(seed: int) -> torch.Tensor:
    return torch.randn(256, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_embeddings_are_stored_as_float16_and_handed_out_as_float32(tmp_path):
    cache = EmbeddingCache("enc", max_items=4, cache_dir=tmp_path)
    e = _emb(0)
    raw = e.clone()
    cache.put(KEYS[0], e)
    # put rounds the caller's tensor to what is stored, so a miss and a later hit give the same numbers
    assert torch.equal(e, raw.half().float()) and not torch.equal(e, raw)
    assert cache._mem[KEYS[0]].dtype == torch.float16  # 2 MiB in memory, not 4
    on_disk = torch.load(cache._path(KEYS[0]), weights_only=True)
    assert on_disk.dtype == torch.float16
    assert cache._path(KEYS[0]).stat().st_size < 256 * 64 * 64 * 2 + 8192  # half the float32 file
    got = cache.get(KEYS[0])
    assert got.dtype == torch.float32 and torch.equal(got, e)
    fresh = EmbeddingCache("enc", max_items=4, cache_dir=tmp_path).get(KEYS[0])  # from disk
    assert fresh.dtype == torch.float32 and torch.equal(fresh, e)


def test_a_float32_file_of_an_older_run_is_read_as_its_float16_rounding(tmp_path):
    cache = EmbeddingCache("enc", max_items=0, cache_dir=tmp_path)
    raw = _emb(1)
    p = cache._path(KEYS[1])
    p.parent.mkdir(parents=True)
    torch.save(raw, p)  # what the float32 cache wrote at the same path
    got = cache.get(KEYS[1])
    assert got.dtype == torch.float32 and torch.equal(got, raw.half().float())


def test_a_cache_that_keeps_nothing_leaves_the_callers_float32_alone():
    cache = EmbeddingCache("enc", max_items=0, cache_dir=None)
    e = _emb(2)
    raw = e.clone()
    cache.put(KEYS[2], e)
    assert torch.equal(e, raw) and cache.get(KEYS[2]) is None


def test_values_outside_float16_range_are_kept_in_float32_not_made_infinite(tmp_path):
    cache = EmbeddingCache("enc", max_items=2, cache_dir=tmp_path)
    e = _emb(3)
    e[0, 0, 0] = 1e6
    cache.put(KEYS[3], e)
    got = EmbeddingCache("enc", max_items=0, cache_dir=tmp_path).get(KEYS[3])
    assert torch.isfinite(got).all() and float(got[0, 0, 0]) == 1e6


def test_the_disk_cap_evicts_the_least_recently_used_not_the_oldest_written(tmp_path):
    # A float16 file is ~2.0 MiB: a 7 MiB cap holds 3; the 4th write evicts one, down to 90 % of the cap.
    cache = EmbeddingCache("enc", max_items=0, cache_dir=tmp_path, max_disk_mb=7)
    now = time.time()
    for i in range(3):
        cache.put(KEYS[i], _emb(i))
        os.utime(cache._path(KEYS[i]), (now - 100 + i, now - 100 + i))  # written in order 0, 1, 2
    assert cache.get(KEYS[0]) is not None  # 0, the oldest written, is used again (a disk hit touches it)
    cache.put(KEYS[3], _emb(3))
    present = [cache._path(k).is_file() for k in KEYS[:4]]
    assert present == [True, False, True, True]  # 1 was the least recently used
    assert sum(f.stat().st_size for f in tmp_path.rglob("*.pt")) <= 7 * 2**20


def test_memory_hits_keep_the_disk_file_fresh_but_touch_it_at_most_once_a_minute(tmp_path):
    cache = EmbeddingCache("enc", max_items=4, cache_dir=tmp_path, max_disk_mb=100)
    cache.put(KEYS[0], _emb(0))
    p = cache._path(KEYS[0])
    os.utime(p, (1000.0, 1000.0))
    cache.get(KEYS[0])  # written just now: no new touch yet
    assert p.stat().st_mtime == 1000.0
    cache._touched[KEYS[0]] -= 61  # a minute later
    cache.get(KEYS[0])
    assert p.stat().st_mtime > time.time() - 5


@pytest.mark.slow
@needs_real
def test_float16_embeddings_change_slice_dice_on_the_real_case_by_less_than_0_002():
    """Ground-truth WT boxes (one per component) on every 3rd tumour slice of the real case: mean slice Dice
    from the encoder's float32 embeddings vs the same embeddings stored in float16 by the cache."""
    import nibabel as nib

    from bratsmedsam import paths
    from bratsmedsam.boxes import axial_slice, component_boxes_xyxy
    from bratsmedsam.metrics import dice
    from bratsmedsam.regions import region_mask
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.studies import load_study

    case = paths.real_cases_dir() / REAL_CASE_ID
    study = load_study(case)
    wt = region_mask(np.asarray(nib.load(case / f"{REAL_CASE_ID}-seg.nii.gz").dataobj), "WT")
    ks = [k for k in range(wt.shape[2]) if wt[:, :, k].sum() >= 50][::3]
    images = [np.ascontiguousarray(axial_slice(study.channels, k)) for k in ks]
    masks = [axial_slice(wt, k).astype(bool) for k in ks]
    boxes = [component_boxes_xyxy(m, min_pixels=10)[0] for m in masks]

    seg = load_segmenter("litemedsam", device="cpu", cache_dir=None, cache_size=0)  # keeps nothing: float32
    f32 = seg.embed(images)
    d32 = [dice(r.masks.any(0), m) for r, m in zip(seg.segment_many(images, boxes), masks)]
    seg.cache = EmbeddingCache(seg.encoder_id, max_items=len(images))
    for im, e in zip(images, f32):
        from bratsmedsam.segmenter.cache import image_key

        seg.cache.put(image_key(im), e.clone())
    d16 = [dice(r.masks.any(0), m) for r, m in zip(seg.segment_many(images, boxes), masks)]
    assert seg.cache.misses == 0 and seg.cache.hits >= len(images)
    change = abs(float(np.mean(d16)) - float(np.mean(d32)))
    print(f"\n{len(ks)} slices: mean Dice float32 {np.mean(d32):.5f}, float16 {np.mean(d16):.5f}, change {change:.5f}; "
          f"largest per-slice change {max(abs(a - b) for a, b in zip(d16, d32)):.5f}")
    assert len(ks) >= 10 and np.mean(d32) > 0.5
    assert change < 0.002


@pytest.mark.slow
def test_training_on_the_fly_encodes_every_step_and_writes_no_cache(sample_dataset, tmp_path):
    from bratsmedsam.segmenter import FinetuneConfig, train_decoder

    cache = tmp_path / "embeddings"
    # no neighbour samples: their tumour-free slices (every one prepare kept of the drawn cases) would each be encoded
    # again every step, minutes on a 2-core CPU for what this checks
    cfg = FinetuneConfig(epochs=1, batch_size=4, max_train_slices=3, max_val_slices=2, device="cpu",
                         cache_dir=str(cache), embeddings="on-the-fly", n_overlays=1, progress=False,
                         neighbour_samples=False, mix=())
    result = train_decoder(sample_dataset, tmp_path / "run", cfg)
    assert [h["epoch"] for h in result["history"]] == [0, 1] and result["history"][1]["train_loss"] > 0
    assert not cache.exists() or not any(cache.rglob("*.pt"))
