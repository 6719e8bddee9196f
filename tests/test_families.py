"""The families' geometry comes from segment_anything and gives exactly the numbers the checkpoints expect.

``ResizeLongestSide.get_preprocess_shape`` and ``Sam.postprocess_masks`` replaced code of our own; these
tests hold them to that code's exact output (``torch.equal``, not a tolerance), for the forward pass and
for the gradient the decoder fine-tuning takes through it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bratsmedsam.segmenter import get_family

SIZES = [(240, 240), (155, 240), (240, 155), (128, 64), (200, 240), (97, 301), (1, 5), (1024, 768)]


def _crop_then_resize(logits, fr):
    """LiteMedSAM's own post-processing: crop the unpadded part of the 256 grid, resize to the slice."""
    crop = logits[..., : fr.resized_h, : fr.resized_w]
    return F.interpolate(crop, size=(fr.height, fr.width), mode="bilinear", align_corners=False)


def _upsample_crop_resize(logits, fr, size=1024):
    """SAM's: upsample to the 1024 input grid, crop the padding, resize to the slice."""
    up = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return _crop_then_resize(up, fr)


@pytest.mark.parametrize("family,target", [("litemedsam", 256), ("sam", 1024)])
def test_the_longest_side_frame_rounds_as_before(family, target):
    fam = get_family(family)
    for h in range(1, 300, 7):
        for w in range(1, 300, 11):
            scale = target / max(h, w)
            fr = fam.frame(h, w)
            assert (fr.resized_h, fr.resized_w) == (int(h * scale + 0.5), int(w * scale + 0.5)), (h, w)


@pytest.mark.parametrize("height,width", SIZES)
def test_litemedsam_logits_to_slice_equal_crop_then_resize_exactly(height, width):
    fam = get_family("litemedsam")
    fr = fam.frame(height, width)
    logits = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(height * 1000 + width))
    assert torch.equal(fam.logits_to_original(logits, fr), _crop_then_resize(logits, fr))


@pytest.mark.parametrize("height,width", SIZES[:4])
def test_sam_logits_to_slice_equal_upsample_crop_resize_exactly(height, width):
    fam = get_family("sam")
    fr = fam.frame(height, width)
    logits = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(7))
    assert torch.equal(fam.logits_to_original(logits, fr), _upsample_crop_resize(logits, fr))


def test_litemedsam_gradient_through_the_post_processing_is_unchanged():
    fam = get_family("litemedsam")
    fr = fam.frame(155, 240)
    target = torch.rand(2, 1, 155, 240, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (lambda x: fam.logits_to_original(x, fr), lambda x: _crop_then_resize(x, fr)):
        x = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(2), requires_grad=True)
        F.binary_cross_entropy_with_logits(fn(x), target).backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_preprocessing_ids_are_unchanged_so_cached_embeddings_stay_valid():
    assert get_family("litemedsam").preprocess_id == "lite256:cv2-area-longest:minmax:pad-br:v1"
    assert get_family("medsam").preprocess_id == "medsam1024:skimage-cubic-aa-square:uint8:minmax:v1"
    assert get_family("sam").preprocess_id == "sam1024:resize-longest-pil:pixel-mean-std:pad-br:v1"


def test_litemedsam_resize_stays_cv2_area():
    import cv2

    img = np.random.default_rng(0).integers(0, 256, (155, 240, 3), dtype=np.uint8)
    x, fr = get_family("litemedsam").preprocess(img)
    ref = cv2.resize(img, (fr.resized_w, fr.resized_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    ref = (ref - ref.min()) / max(ref.max() - ref.min(), 1e-8)
    assert np.array_equal(x[:, : fr.resized_h, : fr.resized_w], ref.transpose(2, 0, 1))
