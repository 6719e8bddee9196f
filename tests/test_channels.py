"""The channel stack: the paper's by default, FLAIR x3 on request, and models never served on a stack they were not
trained on (their checkpoints record it; ``serve``, ``segment`` and ``PUT /model`` check it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bratsmedsam.errors import UserError
from bratsmedsam.channel_check import model_channels, resolve_channels
from bratsmedsam.intensity import DEFAULT_CHANNELS, PAPER_CHANNELS
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


def test_the_default_is_the_papers_stack_and_prepare_and_the_paper_profile_use_it():
    from bratsmedsam.prepare import PrepareConfig
    from bratsmedsam.reproduce import PROFILES

    assert DEFAULT_CHANNELS == PAPER_CHANNELS == ("t1c", "t2w", "t2f") and PrepareConfig().channels == DEFAULT_CHANNELS
    assert tuple(PROFILES["paper"].prepare["channels"]) == PAPER_CHANNELS  # the paper's recipe keeps its stack


def test_channels_come_from_the_flag_else_the_models_else_the_default():
    assert resolve_channels(None, {}) == ",".join(DEFAULT_CHANNELS)
    assert resolve_channels(None, {"decoder d.pt": FLAIR}) == "t2f,t2f,t2f"
    assert resolve_channels(PAPER, {"decoder d.pt": PAPER_CHANNELS, "detector w.pt": PAPER_CHANNELS}) == PAPER
    assert resolve_channels("t1c,t1c,t2f", {}) == "t1c,t1c,t2f"


def test_a_model_trained_on_other_channels_is_refused_by_name():
    with pytest.raises(UserError, match=r"decoder d\.pt was trained on channels t1c,t2w,t2f, not t2f,t2f,t2f"):
        resolve_channels("t2f,t2f,t2f", {"decoder d.pt": PAPER_CHANNELS})
    with pytest.raises(UserError, match="trained on different channels: decoder d.pt: t1c,t2w,t2f; detector w.pt"):
        resolve_channels(None, {"decoder d.pt": PAPER_CHANNELS, "detector w.pt": FLAIR})


def test_checkpoints_record_their_channels_and_unrecorded_or_unreadable_ones_say_nothing(tmp_path):
    from bratsmedsam.detection.training import dataset_channels

    dec, det = _decoder(tmp_path / "dec.pt", PAPER_CHANNELS), _detector(tmp_path / "det.pt", FLAIR)
    got = model_channels(det, dec)
    assert got == {f"decoder {dec}": PAPER_CHANNELS, f"detector {det}": FLAIR}
    assert torch.load(det, weights_only=False)["epoch"] == 3  # the rest of the checkpoint is kept
    bare = _detector(tmp_path / "bare.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\0" * 64)
    assert model_channels(bare, None) == {} and model_channels(junk, None) == {}
    assert model_channels(tmp_path / "absent.pt", tmp_path / "absent2.pt") == {}
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.csv").write_text("")  # a prepared dataset (what load_info asks of one)
    (tmp_path / "ds" / "prepare.json").write_text(json.dumps({"channels": ["t2f", "t2f", "t2f"]}))
    assert dataset_channels(tmp_path / "ds" / "dataset.yaml") == ["t2f", "t2f", "t2f"]
    assert dataset_channels(tmp_path / "nowhere" / "dataset.yaml") is None


def _serve(studies: Path, *args):
    return subprocess.run([sys.executable, "main.py", "serve", "--studies", str(studies), "--dry-run", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_serve_takes_the_decoders_channels_and_refuses_a_mismatch_before_publishing_it(sample_studies, tmp_path):
    import shutil

    case = sorted(p for p in sample_studies.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    studies = tmp_path / "studies"
    shutil.copytree(case, studies / case.name)
    dec = _decoder(tmp_path / "flair.pt", FLAIR)  # not the default stack
    res = _serve(studies, "--decoder", str(dec), "--channels", PAPER)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "trained on channels t2f,t2f,t2f, not t1c,t2w,t2f" in res.stderr
    assert not (studies / ".brats_medsam" / "model" / "medsam_decoder.pt").exists()  # refused, not published
    res = _serve(studies, "--decoder", str(dec))
    assert res.returncode == 0, res.stderr
    assert "--conf channels t2f,t2f,t2f" in res.stdout  # the decoder's own stack, not the default
    res = _serve(studies)  # the published decoder is checked on the next start too
    assert res.returncode == 0 and "--conf channels t2f,t2f,t2f" in res.stdout
    res = _serve(studies, "--channels", PAPER)
    assert res.returncode == 2 and "medsam_decoder.pt was trained on channels t2f,t2f,t2f" in res.stderr
