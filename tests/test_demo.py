"""The demo's studies: the real unlabelled studies from the shared data join the sample, copied byte for byte."""

from __future__ import annotations

from bratsmedsam.commands.demo import _add_unlabelled_real


def test_real_unlabelled_studies_are_copied_into_the_demo_once(tmp_path, monkeypatch):
    case = tmp_path / "shared" / "brats2023-unlabelled" / "BraTS-GLI-00001-000"
    case.mkdir(parents=True)
    for mod in ("t1c", "t1n", "t2w", "t2f"):
        (case / f"BraTS-GLI-00001-000-{mod}.nii.gz").write_bytes(f"not really {mod}".encode())
    monkeypatch.setenv("BRATSMEDSAM_SHARED_DATA", str(tmp_path / "shared"))
    studies = tmp_path / "studies"
    _add_unlabelled_real(studies)
    copied = sorted(p.name for p in (studies / "BraTS-GLI-00001-000").iterdir())
    assert copied == sorted(p.name for p in case.iterdir())
    assert (studies / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").read_bytes() == b"not really t2f"
    assert not list(studies.rglob("*seg*"))
    _add_unlabelled_real(studies)  # a re-run changes nothing
    assert sorted(p.name for p in (studies / "BraTS-GLI-00001-000").iterdir()) == copied


def test_without_the_shared_data_the_demo_has_no_unlabelled_real_study(tmp_path, monkeypatch):
    monkeypatch.setenv("BRATSMEDSAM_SHARED_DATA", str(tmp_path / "absent"))
    _add_unlabelled_real(tmp_path / "studies")
    assert not (tmp_path / "studies").exists()


def _demo_steps(folder, monkeypatch, *extra) -> dict:
    """The commands ``demo --no-serve`` runs (``_step`` recorded, not run), by command name."""
    import argparse

    from bratsmedsam.commands import demo

    steps = []
    monkeypatch.setattr(demo, "_step", lambda name, argv: steps.append(argv))
    monkeypatch.setattr(demo, "_add_unlabelled_real", lambda studies: None)
    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--dir", str(folder), "--no-serve", *extra])
    assert args.func(args) == 0
    assert [a[0] for a in steps] == ["sample-data", "prepare", "train-detector"]
    return {a[0]: a for a in steps}


def test_the_demo_detector_trains_on_domain_randomised_synthetic_cases(tmp_path, monkeypatch):
    sample = _demo_steps(tmp_path, monkeypatch)["sample-data"]
    assert sample[sample.index("--profile") + 1] == "randomised"


def test_the_demo_trains_its_detector_on_16_cases_for_the_quick_profiles_steps(tmp_path, monkeypatch):
    default = _demo_steps(tmp_path / "default", monkeypatch)
    assert default["sample-data"][default["sample-data"].index("--cases") + 1] == "16"
    train = default["train-detector"]
    assert "--quick" in train and train[train.index("--epochs") + 1] == "15"
    eight = _demo_steps(tmp_path / "eight", monkeypatch, "--cases", "8")["train-detector"]
    assert eight[eight.index("--epochs") + 1] == "30"  # the quick profile's own epochs for its 8 cases
