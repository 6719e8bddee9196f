"""Mask-decoder fine-tuning: box jitter, and one real fine-tuning run on the sample dataset (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bratsmedsam.segmenter.samples import Sample, SplitData, jitter_box, make_samples

EPOCHS = 1


def test_jitter_shifts_shrinks_and_grows_boxes_within_the_image():
    rng = np.random.default_rng(0)
    box = np.array([50, 60, 149, 99], np.float32)  # 100 x 40 px
    out = np.stack([jitter_box(box, 200, 240, rng, 0.1, 3.0) for _ in range(500)])
    width, height = out[:, 2] - out[:, 0] + 1, out[:, 3] - out[:, 1] + 1
    assert (width < 100).any() and (width > 100).any() and (height < 40).any() and (height > 40).any()
    centre_shift = (out[:, 0] + out[:, 2]) / 2 - 99.5
    assert (centre_shift < -3).any() and (centre_shift > 3).any()
    assert np.all(np.abs(out - box) <= [13, 7, 13, 7])  # 10 % of the side + 3 px
    edge = np.stack([jitter_box(np.array([0, 0, 9, 9], np.float32), 20, 20, rng, 0.1, 3.0) for _ in range(200)])
    assert np.all(edge >= 0) and np.all(edge <= 19) and np.all(edge[:, 2] >= edge[:, 0])


def test_training_samples_are_one_per_component_box_with_the_tumour_inside_it():
    mask = np.zeros((30, 30), bool)
    mask[2:6, 2:6] = True
    mask[20:25, 18:28] = True
    data = SplitData(keys=["k"], images=[np.zeros((30, 30, 3), np.uint8)], masks=[mask],
                     boxes=[np.array([[18, 20, 27, 24], [2, 2, 5, 5]], np.float32)], names=["x"])
    samples = make_samples(data)
    assert len(samples) == 2 and all(isinstance(s, Sample) for s in samples)
    assert samples[0].target.sum() == 50 and samples[0].target[20:25, 18:28].all()
    assert samples[1].target.sum() == 16 and not samples[1].target[20:, :].any()


def test_train_segmenter_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    from bratsmedsam.cli import main

    out = tmp_path / "run"
    assert main(["train-segmenter", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def finetune_run(sample_dataset, cache_root, tmp_path_factory):
    """`train-segmenter` on the sample dataset (40 train / 20 val tumour slices), then resumed for one more epoch."""
    from bratsmedsam.cli import main

    out = tmp_path_factory.mktemp("segmenter_run")
    common = ["train-segmenter", "--data", str(sample_dataset), "--max-val-slices", "20",
              "--cache-dir", str(cache_root / "embeddings"), "--out", str(out), "--device", "cpu"]
    assert main(common + ["--epochs", str(EPOCHS), "--max-train-slices", "40"]) == 0
    first_history = json.loads((out / "history.json").read_text())
    # The resumed epoch runs on 8 of those 40 slices (same seed: a subset, embeddings cached) to save CPU time.
    assert main(common + ["--epochs", str(EPOCHS + 1), "--max-train-slices", "8", "--resume"]) == 0
    return out, first_history


@pytest.mark.slow
def test_finetuned_decoder_beats_zero_shot_on_held_out_slices(finetune_run, sample_dataset, cache_root):
    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.finetune import slice_dices
    from bratsmedsam.segmenter.samples import load_split

    out, _ = finetune_run
    history = json.loads((out / "history.json").read_text())
    zero_shot = history[0]["val_dice"]
    # Re-measure independently of the training loop: the saved best decoder vs the base model, same val slices.
    val = load_split(sample_dataset, "val", 20, 0)
    base = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings")
    tuned = load_segmenter(decoder=out / "best.pt", device="cpu", cache_dir=cache_root / "embeddings")
    base_dice = float(np.mean(slice_dices(base, val)[0]))
    tuned_dice = float(np.mean(slice_dices(tuned, val)[0]))
    assert base_dice == pytest.approx(zero_shot, abs=1e-6)
    assert tuned_dice == pytest.approx(max(h["val_dice"] for h in history), abs=1e-6)
    assert tuned_dice > base_dice + 0.005, (base_dice, tuned_dice)


@pytest.mark.slow
def test_run_folder_holds_args_history_curve_overlays_and_checkpoint_metadata(finetune_run, sample_dataset):
    import torch

    out, _ = finetune_run
    for name in ("args.yaml", "history.json", "curves.png", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 4
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    meta = ck["meta"]
    info = json.loads((sample_dataset / "prepare.json").read_text())
    assert meta["base"] == "litemedsam" and len(meta["base_checkpoint_sha256"]) == 64
    assert meta["channels"] == list(info["channels"]) and meta["region"] == info["region"]
    assert meta["metrics"]["zero_shot_val_dice"] is not None and ck["optimizer"]["state"]


@pytest.mark.slow
def test_resume_continues_after_the_last_finished_epoch(finetune_run):
    out, first_history = finetune_run
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in first_history] == list(range(EPOCHS + 1))
    assert [h["epoch"] for h in history] == list(range(EPOCHS + 2))
    assert history[:EPOCHS + 1] == first_history
