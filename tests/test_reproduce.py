"""Profiles as data, and the quick reproduction end to end (slow: trains a detector and a decoder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bratsmedsam.errors import UserError
from bratsmedsam.reproduce import PAPER, QUICK, Profile, load_profile, reproduce


def test_builtin_profiles_load_by_name_as_independent_copies():
    p = load_profile("quick")
    p.finetune["epochs"] = 999
    assert load_profile("quick").finetune["epochs"] == QUICK.finetune["epochs"]


def test_paper_profile_has_the_papers_hyperparameters():
    assert [(d.model, d.epochs, d.imgsz, d.optimizer, d.lr0) for d in PAPER.detectors] == [
        ("yolov5s", 100, 256, "SGD", 0.01), ("yolov5l", 100, 256, "SGD", 0.01)]
    assert PAPER.finetune["epochs"] == 100 and PAPER.prepare["z_step"] == 1


def test_profile_round_trips_through_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(QUICK.to_dict()))
    assert load_profile(path) == QUICK


def test_profile_yaml_with_an_unknown_key_is_a_user_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**QUICK.to_dict(), "epochz": 3}))
    with pytest.raises(UserError, match="epochz"):
        load_profile(path)


def test_unknown_profile_name_is_a_user_error():
    with pytest.raises(UserError, match="neither a built-in"):
        load_profile("fast")


def test_paper_profile_without_medsam_weights_stops_before_any_work(tmp_path):
    with pytest.raises(UserError, match="--medsam-checkpoint"):
        reproduce(tmp_path / "studies", tmp_path / "run", load_profile("paper"))
    assert not (tmp_path / "run" / "dataset").exists()


def test_misspelt_step_setting_is_a_user_error(tmp_path):
    prof = Profile(name="x", description="", prepare={"zstep": 2})
    with pytest.raises(UserError, match="zstep"):
        reproduce(tmp_path / "studies", tmp_path / "run", prof)


# --- the quick profile, end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(sample_studies, quick_detector, tmp_path_factory) -> Path:
    """The quick profile end to end, resumed past its detector step: the session's shared quick detector (the same
    --quick recipe on the same studies; there every 2nd slice by the recipe, here by prepare's z_step 2) stands in the
    run folder as that step's finished output, with its training time, as an interrupted run would hold it."""
    import shutil

    from bratsmedsam.atomic import write_json

    out = tmp_path_factory.mktemp("reproduce") / "run"
    model = QUICK.detectors[0].model
    shutil.copytree(quick_detector, out / f"detector-{model}")
    write_json(out / "timings.json", {f"train detector {model}": float((quick_detector / "seconds.txt").read_text())})
    reproduce(sample_studies, out, load_profile("quick"), device="cpu")
    return out


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's quick run (about 7 CPU minutes) is set up inside the first of these
def test_quick_reproduction_fine_tuned_beats_zero_shot_with_gt_boxes(quick_run):
    metrics = json.loads((quick_run / "evaluation" / "metrics.json").read_text())
    t2 = {e["segmenter"]: e for e in metrics["table2"]}
    zero = t2["LiteMedSAM zero-shot"]["cells"]["gt"]["tumour"]["mean"]
    tuned = next(e for name, e in t2.items() if name.startswith("LiteMedSAM fine-tuned"))
    assert tuned["cells"]["gt"]["tumour"]["mean"] > zero


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's quick run (about 7 CPU minutes) is set up inside the first of these
def test_quick_reproduction_saves_its_profile_and_timings(quick_run):
    assert load_profile(quick_run / "profile.yaml") == QUICK
    timings = json.loads((quick_run / "timings.json").read_text())
    assert {"prepare", "train detector yolov5n", "fine-tune mask decoder", "evaluate", "total"} <= set(timings)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's quick run (about 7 CPU minutes) is set up inside the first of these
def test_quick_reproduction_report_has_every_table_and_figure(quick_run):
    report = quick_run / "evaluation"
    md = (report / "report.md").read_text()
    for text in ("Table 1", "yolov5n", "Table 2", "end to end (detector-yolov5n)", "3D per case",
                 "lesion-wise Dice (BraTS 2023)", "volume HD95"):
        assert text in md, text
    for name in ("examples_best_median_worst.png", "dice_distributions.png", "per_case_dice.png"):
        assert (report / "figures" / name).stat().st_size > 1000 and f"figures/{name}" in md
    assert (report / "per_case.csv").read_text().count("\n") >= 2
    checks = json.loads((report / "metrics.json").read_text())["checks"]
    kinds = {c["check"] for c in checks}
    assert kinds == {"lesion-wise", "end to end", "fine-tuned >= zero-shot"}, kinds
    assert "## Checks" in md and "Lesion-wise Dice with GT boxes" in md


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the module's quick run (about 7 CPU minutes) is set up inside the first of these
def test_quick_reproduction_marks_missing_vit_checkpoints_not_supplied(quick_run):
    md = (quick_run / "evaluation" / "report.md").read_text()
    sam = next(line for line in md.splitlines() if line.startswith("| SAM ViT-B zero-shot"))
    medsam = next(line for line in md.splitlines() if line.startswith("| MedSAM ViT-B zero-shot"))
    assert "not supplied" in sam and "not supplied" in medsam
