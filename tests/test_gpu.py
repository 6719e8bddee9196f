"""The CUDA path (run by benchmarks/gpu.sh on a GPU machine; skipped where there is none, as in CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bratsmedsam.segmenter import load_segmenter

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _ellipse(height=200, width=240):
    yy, xx = np.mgrid[:height, :width]
    mask = ((yy - 90) / 30) ** 2 + ((xx - 140) / 45) ** 2 <= 1
    img = np.where(mask, 200, 70).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2), mask


@needs_cuda
def test_the_gpu_segmenter_uses_pytorch_on_cuda_and_agrees_with_the_cpu():
    img, mask = _ellipse()
    box = np.array([[90, 55, 190, 125]], np.float32)
    gpu = load_segmenter("litemedsam", device="cuda", cache_size=0)
    cpu = load_segmenter("litemedsam", device="cpu", backend="torch", cache_size=0)
    assert gpu.encoder.name == "torch-cuda-f32"
    a, b = gpu.segment(img, box), cpu.segment(img, box)
    assert (a.masks != b.masks).mean() < 1e-3
    assert 2 * (a.masks[0] & mask).sum() / (a.masks[0].sum() + mask.sum()) > 0.85


@needs_cuda
def test_batched_decoding_on_cuda_equals_slice_by_slice():
    img, _ = _ellipse()
    boxes = [np.array([[90, 55, 190, 125], [20, 30, 60, 80]], np.float32), np.array([[90, 74, 190, 144]], np.float32)]
    images = [img, np.ascontiguousarray(img[::-1])]
    one = load_segmenter("litemedsam", device="cuda", cache_size=0, decode_batch=1).segment_many(images, boxes)
    many = load_segmenter("litemedsam", device="cuda", cache_size=0).segment_many(images, boxes)
    for a, b in zip(one, many):
        assert (a.masks != b.masks).mean() < 1e-4 and np.allclose(a.iou, b.iou, atol=1e-3)
