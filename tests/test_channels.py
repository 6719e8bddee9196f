"""The channel stacks: each model (detector, segmenter) reads its own stack of the same study, and models are never
served or scored on a stack they were not trained on (their checkpoints record it; ``serve``, ``segment``,
``evaluate`` and ``PUT /model`` check it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.channel_check import model_channels, resolve_channels, resolve_stacks
from bratsmedsam.dataset import dataset_stacks
from bratsmedsam.intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS, PAPER_CHANNELS, Stacks
from bratsmedsam.segmenter.checkpoint import save_decoder

ROOT = Path(__file__).resolve().parents[1]
PAPER = ",".join(PAPER_CHANNELS)
FLAIR = ("t2f", "t2f", "t2f")


def _decoder(path: Path, channels) -> Path:
    return save_decoder(path, {}, {"base": "litemedsam", "channels": list(channels)})


def _detector(path: Path, channels=None) -> Path:
    from bratsmedsam.detection.weights import store_channels

    torch.save({"model": None, "epoch": 3}, path)
    if channels:
        store_channels(path, channels)
    return path


def test_each_model_has_a_default_stack_and_prepare_and_the_paper_profile_use_theirs():
    from bratsmedsam.prepare import PrepareConfig
    from bratsmedsam.reproduce import PROFILES

    assert DEFAULT_DETECTOR_CHANNELS == PAPER_CHANNELS == ("t1c", "t2w", "t2f")
    assert (PrepareConfig().detector_channels, PrepareConfig().segmenter_channels) == (
        DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS)
    paper = PROFILES["paper"].prepare  # the paper's recipe keeps its one stack
    assert tuple(paper["detector_channels"]) == tuple(paper["segmenter_channels"]) == PAPER_CHANNELS


def test_each_models_stack_comes_from_the_flag_else_the_model_else_its_default():
    assert resolve_channels("detector", None, {}) == DEFAULT_DETECTOR_CHANNELS
    assert resolve_channels("segmenter", None, {}) == DEFAULT_SEGMENTER_CHANNELS
    recorded = {"segmenter": ("decoder d.pt", FLAIR), "detector": ("detector w.pt", PAPER_CHANNELS)}
    assert resolve_channels("segmenter", None, recorded) == FLAIR  # each model its own: no conflict
    assert resolve_channels("detector", None, recorded) == PAPER_CHANNELS
    assert resolve_channels("detector", PAPER, recorded) == PAPER_CHANNELS
    assert resolve_channels("segmenter", "t1c,t1c,t2f", {}) == ("t1c", "t1c", "t2f")


def test_a_model_trained_on_other_channels_is_refused_by_name_with_the_flag_to_use():
    with pytest.raises(UserError, match=r"decoder d\.pt was trained on channels t1c,t2w,t2f, not t2f,t2f,t2f: run "
                                        r"with --segmenter-channels t1c,t2w,t2f"):
        resolve_channels("segmenter", "t2f,t2f,t2f", {"segmenter": ("decoder d.pt", PAPER_CHANNELS)})
    with pytest.raises(UserError, match=r"detector w\.pt was trained on channels t2f,t2f,t2f.*--detector-channels"):
        resolve_channels("detector", PAPER, {"detector": ("detector w.pt", FLAIR)})


def test_checkpoints_record_their_channels_and_unrecorded_or_unreadable_ones_say_nothing(tmp_path):
    from bratsmedsam.detection.training import dataset_channels

    dec, det = _decoder(tmp_path / "dec.pt", PAPER_CHANNELS), _detector(tmp_path / "det.pt", FLAIR)
    got = model_channels(det, dec)
    assert got == {"segmenter": (f"decoder {dec}", PAPER_CHANNELS), "detector": (f"detector {det}", FLAIR)}
    assert resolve_stacks(None, None, det, dec) == Stacks(FLAIR, PAPER_CHANNELS)
    assert torch.load(det, weights_only=False)["epoch"] == 3  # the rest of the checkpoint is kept
    bare = _detector(tmp_path / "bare.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\0" * 64)
    assert model_channels(bare, None) == {} and model_channels(junk, None) == {}
    assert model_channels(tmp_path / "absent.pt", tmp_path / "absent2.pt") == {}
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.csv").write_text("")  # a prepared dataset (what load_info asks of one)
    info = {"detector_channels": list(PAPER_CHANNELS), "segmenter_channels": list(FLAIR)}
    (tmp_path / "ds" / "prepare.json").write_text(json.dumps(info))
    assert dataset_channels(tmp_path / "ds" / "dataset.yaml") == list(PAPER_CHANNELS)  # the detector's: images/
    assert dataset_stacks(info) == Stacks(PAPER_CHANNELS, FLAIR)
    (tmp_path / "ds" / "prepare.json").write_text(json.dumps({"channels": list(FLAIR)}))  # one stack, older
    assert dataset_channels(tmp_path / "ds" / "dataset.yaml") == list(FLAIR)
    assert dataset_stacks({"channels": list(FLAIR)}) == Stacks(FLAIR, FLAIR)
    assert dataset_stacks({}) == Stacks(PAPER_CHANNELS, PAPER_CHANNELS)
    assert dataset_channels(tmp_path / "nowhere" / "dataset.yaml") is None


def test_a_study_gives_each_model_its_stack_and_the_chain_feeds_the_detector_its_own(sample_studies):
    from bratsmedsam.boxes import axial_slice
    from bratsmedsam.intensity import normalize_volume
    from bratsmedsam.pipeline import segment_automatic
    from bratsmedsam.studies import load_study
    from test_pipeline import BoxDetector, ThresholdSegmenter

    case = sorted(p for p in sample_studies.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    study = load_study(case, Stacks(PAPER_CHANNELS, FLAIR))
    flair = normalize_volume(__import__("nibabel").load(str(next(case.glob("*-t2f.nii.gz")))).get_fdata())
    assert all(np.array_equal(study.channels[..., c], flair) for c in range(3)) and not study.single_modality
    assert np.array_equal(study.detector_channels[..., 2], flair)
    assert not np.array_equal(study.detector_channels[..., 0], flair)
    one = load_study(case, FLAIR)
    assert one.detector_channels is one.channels  # one stack: one array
    k = study.channels.shape[2] // 2
    seen = []

    class Recording(BoxDetector):
        def predict(self, images):
            seen.extend(images)
            return super().predict(images)

    segment_automatic(study.channels, Recording({}), ThresholdSegmenter(), "slices",
                      detector_channels=study.detector_channels)
    assert np.array_equal(seen[k], axial_slice(study.detector_channels, k))
    with pytest.raises(UserError, match="both must stack the same study"):
        segment_automatic(study.channels, Recording({}), ThresholdSegmenter(),
                          detector_channels=study.detector_channels[:, :, :-1])


def test_evaluate_refuses_a_model_trained_on_another_stack_than_the_datasets(tmp_path):
    from bratsmedsam.evaluate import check_models_fit

    info = {"detector_channels": list(PAPER_CHANNELS), "segmenter_channels": list(FLAIR)}
    dec, det = _decoder(tmp_path / "dec.pt", FLAIR), _detector(tmp_path / "det.pt", PAPER_CHANNELS)
    check_models_fit(info, [det], [dec], "ds")  # each on its own stack
    with pytest.raises(UserError, match=r"dec\.pt was trained on channels t2f,t2f,t2f, but ds stacks t1c,t2w,t2f for "
                                        r"the segmenter: prepare a dataset with --segmenter-channels t2f,t2f,t2f"):
        check_models_fit({"channels": list(PAPER_CHANNELS)}, [det], [dec], "ds")


def _serve(studies: Path, *args):
    return subprocess.run([sys.executable, "main.py", "serve", "--studies", str(studies), "--dry-run", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_serve_takes_the_decoders_channels_and_refuses_a_mismatch_before_publishing_it(sample_studies, tmp_path):
    import shutil

    case = sorted(p for p in sample_studies.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    studies = tmp_path / "studies"
    shutil.copytree(case, studies / case.name)
    other = "t1c,t1c,t2f"  # not the default stack
    dec = _decoder(tmp_path / "other.pt", other.split(","))
    res = _serve(studies, "--decoder", str(dec), "--segmenter-channels", PAPER)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "trained on channels t1c,t1c,t2f, not t1c,t2w,t2f" in res.stderr
    assert not (studies / ".brats_medsam" / "model" / "medsam_decoder.pt").exists()  # refused, not published
    res = _serve(studies, "--decoder", str(dec))
    assert res.returncode == 0, res.stderr
    assert f"--conf segmenter_channels {other}" in res.stdout  # the decoder's own stack
    assert f"--conf detector_channels {','.join(DEFAULT_DETECTOR_CHANNELS)}" in res.stdout
    res = _serve(studies)  # the published decoder is checked on the next start too
    assert res.returncode == 0 and f"--conf segmenter_channels {other}" in res.stdout
    res = _serve(studies, "--channels", PAPER)  # both models on the paper's stack
    assert res.returncode == 2 and "medsam_decoder.pt was trained on channels t1c,t1c,t2f" in res.stderr
