"""Encoder backends: OpenVINO runs the same LiteMedSAM encoder as PyTorch, and the masks agree (parity gate)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.segmenter import load_segmenter
from bratsmedsam.segmenter.backends import OpenVinoEncoder, bf16_capable, make_encoder, openvino_available

needs_ov = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
PARITY_DICE = 0.005  # |mean slice Dice(OpenVINO) - mean slice Dice(PyTorch f32)| on real MRI, GT boxes


def test_bf16_is_used_only_where_the_cpu_has_it():
    assert bf16_capable({"avx2", "avx512f"}) is False
    assert bf16_capable({"avx512f", "avx512_bf16"}) is True
    assert bf16_capable({"amx_bf16", "amx_tile"}) is True


def test_gpus_and_explicit_torch_get_the_torch_encoder_and_unknown_backends_are_refused():
    module = torch.nn.Conv2d(3, 4, 3)
    assert make_encoder(module, torch.device("cpu"), 16, "k", backend="torch").name == "torch-cpu-f32"
    assert make_encoder(module, torch.device("cuda"), 16, "k", backend="auto").name == "torch-cuda-f32"
    with pytest.raises(UserError, match="expected one of auto, openvino, torch"):
        make_encoder(module, torch.device("cpu"), 16, "k", backend="onnx")


@pytest.fixture(scope="module")
def pair():
    """LiteMedSAM with the PyTorch float32 encoder and with the default (OpenVINO where it loads)."""
    return load_segmenter("litemedsam", device="cpu", backend="torch", cache_size=0), \
        load_segmenter("litemedsam", device="cpu", cache_size=0)


@needs_ov
def test_the_default_cpu_encoder_is_openvino_and_its_cache_key_names_the_precision(pair):
    ref, ov = pair
    assert isinstance(ov.encoder, OpenVinoEncoder)
    assert ov.encoder.precision == ("bf16" if bf16_capable() else "f32")
    assert (ov.encoder_id == ref.encoder_id) == (ov.encoder.precision == "f32")


@needs_ov
def test_openvino_f32_reproduces_the_pytorch_embedding(pair, tmp_path):
    ref, _ = pair
    f32 = make_encoder(ref.net.image_encoder, torch.device("cpu"), 256, f"litemedsam-{ref.base_sha256[:16]}-256",
                       backend="openvino", precision="f32")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    a, b = ref.encoder(x), f32(x)
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4


@needs_ov
@pytest.mark.slow
def test_parity_gate_openvino_masks_match_pytorch_on_real_mri(pair, sample_studies):
    """GT boxes on every 3rd tumour slice of the reference case (the real one when present). OpenVINO float32
    gives the PyTorch float32 mean Dice within PARITY_DICE; the default precision (bf16 where the CPU has it) is
    not worse by more than PARITY_DICE (measured: bf16 scored 0.005-0.014 higher, on the real and a synthetic
    case); both are faster on this CPU."""
    from bratsmedsam.boxes import axial_slice, component_boxes_xyxy
    from bratsmedsam.cases import discover_cases, load_case
    from bratsmedsam.intensity import compose_channels
    from bratsmedsam.regions import region_mask

    files = sorted(discover_cases(sample_studies), key=lambda c: c.case_id)[0]
    case = load_case(files, ["t1c", "t2w", "t2f"], with_seg=True)
    vol, wt = compose_channels(case, ("t1c", "t2w", "t2f")), region_mask(case.seg, "WT")
    ks = [k for k in range(wt.shape[2]) if wt[:, :, k].sum() >= 50][::3]
    ref, default = pair
    f32 = load_segmenter("litemedsam", device="cpu", backend="openvino", precision="f32", cache_size=0)
    dice, secs = {}, {}
    for name, seg in (("torch f32", ref), ("openvino f32", f32), (f"openvino {default.encoder.precision}", default)):
        d, t0 = [], time.perf_counter()
        for k in ks:
            mask = axial_slice(wt, k).astype(bool)
            boxes, _ = component_boxes_xyxy(mask, min_pixels=10)
            pred = seg.segment(axial_slice(vol, k), boxes).masks.any(axis=0)
            d.append(2 * (pred & mask).sum() / max(1, pred.sum() + mask.sum()))
        dice[name], secs[name] = round(float(np.mean(d)), 4), round((time.perf_counter() - t0) / len(ks), 3)
    print(f"\n{files.case_id}, {len(ks)} slices: mean Dice {dice}; s per slice {secs}")
    base, auto = dice["torch f32"], dice[f"openvino {default.encoder.precision}"]
    assert len(ks) >= 5 and base > 0.6
    assert abs(dice["openvino f32"] - base) <= PARITY_DICE, dice
    assert auto - base >= -PARITY_DICE, dice
    assert max(secs["openvino f32"], secs[f"openvino {default.encoder.precision}"]) < secs["torch f32"], secs


_ENCODE_ONCE = """
import sys, torch
sys.path.insert(0, {root!r})
from bratsmedsam.segmenter.backends import make_encoder
from bratsmedsam.segmenter.checkpoint import load_base
net, _, sha = load_base("litemedsam", None)
enc = make_encoder(net.image_encoder, torch.device("cpu"), 256, "litemedsam-" + sha[:16] + "-256",
                   backend="openvino", cache_dir={cache!r})
print(tuple(enc(torch.rand(1, 3, 256, 256)).shape))
"""


@needs_ov
@pytest.mark.slow
def test_processes_sharing_the_encoder_cache_never_crash_each_other(tmp_path):
    """A server and its training run start at once on an empty cache (OpenVINO's compiled-blob cache, written in
    place, once crashed every later process here with a segmentation fault); then a third reads what they left."""
    import subprocess
    import sys
    from pathlib import Path

    code = _ENCODE_ONCE.format(root=str(Path(__file__).resolve().parents[1]), cache=str(tmp_path / "ov"))
    both = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [p.communicate(timeout=600) + (p.returncode,) for p in both]
    later = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    for out, err, rc in outs + [(later.stdout, later.stderr, later.returncode)]:
        assert rc == 0, err[-2000:]
        assert "(1, 256, 64, 64)" in out
    assert sorted(p.suffix for p in (tmp_path / "ov").iterdir()) == [".bin", ".xml"]


@needs_ov
def test_the_openvino_mask_decoder_equals_pytorch_and_steps_aside_when_the_weights_change(tmp_path):
    """segment_many decodes through OpenVINO on a CPU; a decoder whose weights changed (training, an in-place
    reload) decodes in PyTorch again, never with stale converted weights."""
    img = np.zeros((200, 240, 3), np.uint8)
    img[60:120, 100:180] = 200
    img[img == 0] = 60
    boxes = np.array([[95, 55, 185, 125], [20, 20, 70, 80]], np.float32)
    ref = load_segmenter("litemedsam", device="cpu", backend="torch", cache_size=0)
    ov = load_segmenter("litemedsam", device="cpu", cache_size=0)
    ov.encoder = ref.encoder  # same embeddings: only the decoders differ
    a, b = ref.segment(img, boxes), ov.segment(img, boxes)
    assert ov._openvino_decoder() is not None and ref._openvino_decoder() is None
    assert (a.masks != b.masks).mean() < 1e-4 and np.allclose(a.iou, b.iou, atol=1e-4)
    with torch.no_grad():
        for p in ov.net.mask_decoder.parameters():
            p.mul_(1.01)
    assert ov._openvino_decoder() is None  # stale: PyTorch decodes with the new weights
    changed = ov.segment(img, boxes)
    with torch.no_grad():
        for p in ref.net.mask_decoder.parameters():
            p.mul_(1.01)
    assert np.array_equal(changed.masks, ref.segment(img, boxes).masks)
