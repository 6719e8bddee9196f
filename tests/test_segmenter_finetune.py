"""Mask-decoder fine-tuning: box jitter, and one real fine-tuning run on the sample dataset (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bratsmedsam.segmenter.samples import (Sample, SplitData, jitter_box, loosen_box, make_samples, neighbour_samples,
                                          pad_boxes)

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


def test_loose_boxes_only_grow_up_to_their_fraction_within_the_image():
    rng = np.random.default_rng(0)
    box = np.array([50, 60, 149, 99], np.float32)  # 100 x 40 px
    out = np.stack([loosen_box(box, 200, 240, rng, 0.3) for _ in range(500)])
    assert np.all(out[:, :2] <= box[:2]) and np.all(out[:, 2:] >= box[2:])  # never tighter
    assert np.all(box - out <= [30, 12, 0, 0]) and np.all(out - box <= [0, 0, 30, 12])  # up to 30 % of the side
    assert (out[:, 2] - out[:, 0] + 1 > 150).any()  # some reach far: a weak detector's wide box
    edge = np.stack([loosen_box(np.array([0, 0, 9, 9], np.float32), 20, 20, rng, 0.3) for _ in range(50)])
    assert np.all(edge >= 0) and np.all(edge <= 19)
    padded = pad_boxes(np.array([[50, 60, 149, 99], [0, 0, 9, 19]], np.float32), 200, 240, 0.15)
    assert padded.tolist() == [[35, 45, 164, 114], [0, 0, 12, 22]]  # 15 % of the longer side, clipped


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
    from bratsmedsam.segmenter.finetune import loose_val_scores
    from bratsmedsam.segmenter.samples import load_split

    out, _ = finetune_run
    history = json.loads((out / "history.json").read_text())
    zero_shot = history[0]["val_dice"]
    assert all(set(h["val_dice_prompts"]) == {"gt", "loose"} for h in history)  # GT boxes and padded ones
    # Re-measure independently of the training loop: the saved best decoder vs the base model, same val slices,
    # scored as the model is selected (the mean of GT-box and padded-box slice Dice).
    val = load_split(sample_dataset, "val", 20, 0)
    base = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings")
    tuned = load_segmenter(decoder=out / "best.pt", device="cpu", cache_dir=cache_root / "embeddings")
    base_dice = float(np.mean(list(loose_val_scores(base, val).values())))
    tuned_dice = float(np.mean(list(loose_val_scores(tuned, val).values())))
    mixes = json.loads((out / "mixes.json").read_text())
    assert base_dice == pytest.approx(zero_shot, abs=1e-6)
    assert tuned_dice == pytest.approx(max(h["val_dice"] for h in history + mixes), abs=1e-6)
    assert tuned_dice > base_dice + 0.005, (base_dice, tuned_dice)


@pytest.mark.slow
def test_run_folder_holds_args_history_curve_overlays_and_checkpoint_metadata(finetune_run, sample_dataset):
    import torch

    out, _ = finetune_run
    for name in ("args.yaml", "history.json", "mixes.json", "curves.png", "best.pt", "last.pt", "tuned.pt"):
        assert (out / name).is_file(), name
    assert len(list((out / "overlays").glob("*.png"))) == 4
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    meta = ck["meta"]
    info = json.loads((sample_dataset / "prepare.json").read_text())
    assert meta["base"] == "litemedsam" and len(meta["base_checkpoint_sha256"]) == 64
    assert meta["channels"] == info["segmenter_channels"] == ["t2f"] * 3 and meta["region"] == info["region"]
    assert meta["metrics"]["zero_shot_val_dice"] is not None and ck["optimizer"]["state"]
    assert meta["neighbour_samples"] is True  # the default, one region: the volume-aware chain's margin reads it


@pytest.mark.slow
def test_weight_mixes_of_the_best_epoch_and_zero_shot_are_validated_and_the_best_is_kept(finetune_run):
    import torch

    from bratsmedsam.segmenter import load_segmenter
    from bratsmedsam.segmenter.finetune import MIX, mix_states

    out, _ = finetune_run
    mixes = json.loads((out / "mixes.json").read_text())
    tuned = torch.load(out / "tuned.pt", map_location="cpu", weights_only=True)
    history = json.loads((out / "history.json").read_text())
    trained = max(history[1:], key=lambda h: h["val_dice"])
    assert tuned["meta"]["epoch"] == trained["epoch"] and "mix" not in tuned["meta"]
    assert [m["mix"] for m in mixes] == list(MIX) and all(m["epoch"] == trained["epoch"] for m in mixes)
    assert all(set(m["val_dice_prompts"]) == {"gt", "loose"} for m in mixes)
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    if "mix" in best["meta"]:  # the kept mix holds exactly its share of the two decoders' weights
        zero = load_segmenter("litemedsam", device="cpu").net.mask_decoder.state_dict()
        want = mix_states(zero, tuned["decoder"], best["meta"]["mix"])
        assert all(torch.allclose(best["decoder"][k].float(), want[k].float(), atol=1e-6) for k in want)
        assert best["meta"]["metrics"]["val_dice"] == max(m["val_dice"] for m in mixes)


def test_a_weight_mix_interpolates_floating_tensors_and_refuses_bad_shares():
    import torch

    from bratsmedsam.errors import UserError
    from bratsmedsam.segmenter.finetune import mix_states

    zero = {"w": torch.tensor([0.0, 2.0]), "steps": torch.tensor(3)}
    tuned = {"w": torch.tensor([4.0, -2.0]), "steps": torch.tensor(7)}
    assert mix_states(zero, tuned, 0.25)["w"].tolist() == [1.0, 1.0]
    assert mix_states(zero, tuned, 0.0)["w"].tolist() == [0.0, 2.0] and mix_states(zero, tuned, 1.0)["w"].tolist() == [4.0, -2.0]
    assert int(mix_states(zero, tuned, 0.5)["steps"]) == 7
    with pytest.raises(UserError, match="in \\[0, 1\\]"):
        mix_states(zero, tuned, 1.5)
    with pytest.raises(UserError, match="different parameters"):
        mix_states(zero, {"w": tuned["w"]}, 0.5)


def test_train_segmenter_reads_its_weight_mixes(tmp_path, capsys):
    from bratsmedsam.commands.train_segmenter import _shares

    assert _shares("0.3,0.6") == (0.3, 0.6) and _shares("none") == () and _shares("") == ()
    import argparse

    for bad in ("0.5,1", "0", "half"):
        with pytest.raises(argparse.ArgumentTypeError):
            _shares(bad)


@pytest.mark.slow
def test_resume_continues_after_the_last_finished_epoch(finetune_run):
    out, first_history = finetune_run
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in first_history] == list(range(EPOCHS + 1))
    assert [h["epoch"] for h in history] == list(range(EPOCHS + 2))
    assert history[:EPOCHS + 1] == first_history


def test_intensity_variants_change_contrast_keep_the_background_and_are_reproducible():
    from bratsmedsam.segmenter.samples import augment_intensity

    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.uint8)
    img[8:56, 8:56] = rng.integers(20, 230, (48, 48, 3))
    a = augment_intensity(img, np.random.default_rng([0, 1, 1]))
    b = augment_intensity(img, np.random.default_rng([0, 1, 1]))
    c = augment_intensity(img, np.random.default_rng([0, 1, 2]))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not a[:8].any() and not a[:, 56:].any()  # outside the head stays 0
    diff = np.abs(a[8:56, 8:56].astype(int) - img[8:56, 8:56])
    assert diff.mean() > 3  # the intensities moved ...
    assert np.corrcoef(a[8:56, 8:56].ravel(), img[8:56, 8:56].ravel())[0, 1] > 0.8  # ... the image did not


def test_synthetic_ids_are_told_from_real_ones():
    from bratsmedsam.sample_data import is_synthetic_case, synthetic_case_id

    assert is_synthetic_case(synthetic_case_id(0)) and is_synthetic_case(synthetic_case_id(9999))
    for real in ("BraTS-GLI-00000-000", "BraTS-GLI-01234-001", "site-case-9", "BraTS-MEN-90000-000"):
        assert not is_synthetic_case(real), real


def test_the_model_is_selected_on_the_real_validation_cases_when_there_are_some():
    from bratsmedsam.errors import UserError
    from bratsmedsam.segmenter.finetune import _selection_set

    names = ["BraTS-GLI-90001-000_z050", "BraTS-GLI-00007-000_z060", "BraTS-GLI-90002-000_z070"]
    val = SplitData(keys=list("abc"), images=[None] * 3, masks=[None] * 3, boxes=[None] * 3, names=names)
    assert _selection_set(val, "auto", "d").names == ["BraTS-GLI-00007-000_z060"]
    assert _selection_set(val, "all", "d").names == names
    synthetic = SplitData(keys=["a"], images=[None], masks=[None], boxes=[None], names=names[:1])
    assert _selection_set(synthetic, "auto", "d") is synthetic
    with pytest.raises(UserError, match="no real case"):
        _selection_set(synthetic, "real", "d")


def test_epochs_since_the_best_val_dice():
    from bratsmedsam.segmenter.finetune import _epochs_since_best

    h = [{"val_dice": v} for v in (0.7, 0.8, 0.75, 0.8)]
    assert _epochs_since_best(h) == 2 and _epochs_since_best(h[:2]) == 0 and _epochs_since_best([]) == 0


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_intensity_variants_are_encoded_once(sample_dataset, cache_root, tmp_path):
    """A learning rate far too high makes every epoch worse than the zero-shot model: patience 1 stops after
    one epoch, and best.pt stays the zero-shot decoder. One intensity variant per slice goes into the cache."""
    import torch

    from bratsmedsam.segmenter import FinetuneConfig, train_decoder
    from bratsmedsam.segmenter.cache import image_key
    from bratsmedsam.segmenter.samples import augment_intensity, load_split

    cfg = FinetuneConfig(epochs=4, lr=0.05, patience=1, intensity_variants=1, max_train_slices=6, max_val_slices=6,
                         device="cpu", cache_dir=str(cache_root / "embeddings"), n_overlays=0, progress=False, mix=(),
                         neighbour_samples=False)  # their tumour-free slices: encoding minutes this test does not need
    result = train_decoder(sample_dataset, tmp_path / "run", cfg)
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert result["best_val_dice"] == pytest.approx(result["zero_shot_val_dice"])
    assert torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)["meta"]["epoch"] == 0
    train = load_split(sample_dataset, "train", 6, 0)
    variant = augment_intensity(train.images[0], np.random.default_rng([0, 0, 1]))
    assert (cache_root / "embeddings").is_dir()
    from bratsmedsam.segmenter import load_segmenter

    seg = load_segmenter("litemedsam", device="cpu", cache_dir=cache_root / "embeddings")
    assert image_key(variant) in seg.cache


def test_neighbour_samples_prompt_a_slice_with_the_box_of_the_slice_beside_it_plus_3_px():
    def mask(x0, y0, x1, y1):
        m = np.zeros((40, 40), bool)
        m[y0:y1 + 1, x0:x1 + 1] = True
        return m

    masks = [mask(10, 10, 20, 20), mask(12, 11, 24, 22), mask(30, 30, 35, 35), mask(5, 5, 8, 8)]
    boxes = [np.array([[10, 10, 20, 20]], np.float32), np.array([[12, 11, 24, 22]], np.float32),
             np.array([[30, 30, 35, 35]], np.float32), np.array([[5, 5, 8, 8]], np.float32)]
    names = ["a_z010", "a_z011", "a_z012", "b_z011"]  # b's slice is a's z neighbour in number only
    data = SplitData([None] * 4, [None] * 4, masks, boxes, names)
    got = {(s.slice_idx, tuple(s.box.tolist())): s.target for s in neighbour_samples(data)}
    assert set(got) == {(0, (9, 8, 27, 25)), (1, (7, 7, 23, 23)), (1, (27, 27, 38, 38)), (2, (9, 8, 27, 25))}
    np.testing.assert_array_equal(got[(0, (9, 8, 27, 25))], masks[0])  # all of slice 0's mask lies in the box
    np.testing.assert_array_equal(got[(1, (7, 7, 23, 23))], masks[1] & mask(7, 7, 23, 23))  # cut by the box
    assert not got[(1, (27, 27, 38, 38))].any() and not got[(2, (9, 8, 27, 25))].any()  # nothing there: empty
    # a tumour-free slice: the boxes of its case's nearest tumour slice (z 12, not z 10), target empty
    data = SplitData([None] * 5, [None] * 5, masks + [np.zeros((40, 40), bool)], boxes + [np.zeros((0, 4), np.float32)],
                     names + ["a_z020"])
    bg = [s for s in neighbour_samples(data) if s.slice_idx == 4]
    assert [tuple(s.box.tolist()) for s in bg] == [(27, 27, 38, 38)] and not bg[0].target.any()



def test_the_background_split_adds_the_kept_tumour_free_slices_of_the_same_cases(sample_dataset):
    from bratsmedsam.dataset import load_manifest
    from bratsmedsam.segmenter.samples import load_split

    tumour = load_split(sample_dataset, "train", 6, 0)
    both = load_split(sample_dataset, "train", 6, 0, background=True)
    cases = {n.rpartition("_z")[0] for n in tumour.names}
    free = [r for r in load_manifest(sample_dataset) if r.split == "train" and r.area == 0 and r.case in cases]
    assert free and both.names[:len(tumour.names)] == tumour.names
    assert both.names[len(tumour.names):] == [f"{r.case}_z{r.z:03d}" for r in free]
    assert all(len(b) == 0 and not m.any() for b, m in zip(both.boxes[len(tumour.names):], both.masks[len(tumour.names):]))
    bg = [s for s in neighbour_samples(both) if s.slice_idx >= len(tumour.names)]
    assert bg and not any(s.target.any() for s in bg)  # every tumour-free slice's prompt asks for nothing
