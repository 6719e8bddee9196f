"""The sample studies: BraTS 2023 layout, calibrated synthetic gliomas on real anatomy, the real case untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratsmedsam import paths
from bratsmedsam.cases import MODALITIES
from bratsmedsam.errors import UserError
from bratsmedsam.sample_data import generate_case, synthetic_case_id, write_sample_studies
from bratsmedsam.synthetic.anatomy import BRATS_AFFINE, BRATS_SHAPE, load_anatomy
from bratsmedsam.synthetic.contrast import COMPARTMENTS, REAL_RATIOS, compartment_ratios

from conftest import HAVE_REAL, HAVE_SRI24, REAL_CASE_ID, needs_real

N = 2
SEED = 3
RATIO_TOLERANCE = 0.25  # synthetic compartment-to-brain ratio within 25 % of the real case's
KINDS = MODALITIES + ("seg",)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "studies"
    write_sample_studies(out, n_cases=N, seed=SEED, verbose=False)
    return out


@pytest.fixture(scope="module")
def info(studies) -> dict:
    return json.loads((studies / "sample_info.json").read_text())


def _synthetic_ids():
    return [synthetic_case_id(i) for i in range(N)]


def _load(studies: Path, cid: str, kind: str):
    return nib.load(str(studies / cid / f"{cid}-{kind}.nii.gz"))


def _real_ratios():
    if not HAVE_REAL:
        return REAL_RATIOS
    case = paths.real_cases_dir() / REAL_CASE_ID
    images = {m: np.asarray(nib.load(str(case / f"{REAL_CASE_ID}-{m}.nii.gz")).dataobj, np.float32) for m in MODALITIES}
    seg = np.asarray(nib.load(str(case / f"{REAL_CASE_ID}-seg.nii.gz")).dataobj).round().astype(np.uint8)
    return compartment_ratios(images, seg)


def test_synthetic_ids_use_the_reserved_9xxxx_range(info):
    ids = [c["case_id"] for c in info["cases"]]
    assert ids == ["BraTS-GLI-90000-000", "BraTS-GLI-90001-000"]


def test_every_case_has_the_five_brats_files_at_240x240x155_1mm(studies):
    for cid in _synthetic_ids():
        for kind in KINDS:
            img = _load(studies, cid, kind)
            assert img.shape == BRATS_SHAPE
            assert np.allclose(img.header.get_zooms(), (1.0, 1.0, 1.0))


def test_images_are_int16_with_background_zero_and_brain_positive(studies):
    for cid in _synthetic_ids():
        vols = [np.asarray(_load(studies, cid, m).dataobj) for m in MODALITIES]
        assert all(v.dtype == np.int16 for v in vols)
        brains = [v > 0 for v in vols]
        assert all((b == brains[0]).all() for b in brains)  # one skull-stripped brain, same in all modalities
        assert brains[0].sum() > 1.0e6 and brains[0].sum() < 2.0e6  # an adult brain in mm^3
        assert vols[0][:5, :5, :5].max() == 0 and vols[0].min() == 0


def test_seg_is_uint8_brats_labels_inside_the_brain(studies):
    for cid in _synthetic_ids():
        seg = np.asarray(_load(studies, cid, "seg").dataobj)
        brain = np.asarray(_load(studies, cid, "t1n").dataobj) > 0
        assert seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
        assert not seg[~brain].any()


def test_every_compartment_is_present_in_each_synthetic_case(studies, info):
    for case in info["cases"]:
        assert case["plan"]["necrosis"]  # indices 0 and 1 are planned with necrosis
        seg = np.asarray(_load(studies, case["case_id"], "seg").dataobj)
        for name, label in COMPARTMENTS.items():
            assert (seg == label).sum() >= 20, f"{case['case_id']} has no {name}"


def test_a_case_planned_without_necrosis_has_no_label_1():
    anatomy = load_anatomy(paths.sri24_dir() if HAVE_SRI24 else None)
    _, seg, meta = generate_case(anatomy, SEED, 3)  # index % 4 == 3: no necrosis
    assert not meta["plan"]["necrosis"]
    assert not (seg == 1).any()
    assert (seg == 2).any() and (seg == 3).any()


@needs_real
def test_synthetic_affine_equals_the_real_cases_affine(studies):
    real = nib.load(str(paths.real_cases_dir() / REAL_CASE_ID / f"{REAL_CASE_ID}-t1c.nii.gz"))
    for cid in _synthetic_ids():
        for kind in KINDS:
            assert np.allclose(_load(studies, cid, kind).affine, real.affine)
    assert np.allclose(real.affine, BRATS_AFFINE)  # the standard BraTS affine used without the real case


@needs_real
def test_real_case_is_copied_byte_for_byte(studies, info):
    src = paths.real_cases_dir() / REAL_CASE_ID
    copied = sorted(p.name for p in (studies / REAL_CASE_ID).iterdir())
    assert copied == sorted(p.name for p in src.iterdir() if p.name.endswith(".nii.gz"))
    for name in copied:
        digest = hashlib.sha256((src / name).read_bytes()).hexdigest()
        assert hashlib.sha256((studies / REAL_CASE_ID / name).read_bytes()).hexdigest() == digest
        assert info["real_cases"][0]["sha256"][name] == digest


def test_synthetic_compartment_ratios_are_within_tolerance_of_the_real_case(studies):
    real = _real_ratios()
    for cid in _synthetic_ids():
        images = {m: np.asarray(_load(studies, cid, m).dataobj, np.float32) for m in MODALITIES}
        seg = np.asarray(_load(studies, cid, "seg").dataobj)
        syn = compartment_ratios(images, seg)
        for m in MODALITIES:
            for c in COMPARTMENTS:
                assert abs(syn[m][c] / real[m][c] - 1) < RATIO_TOLERANCE, (cid, m, c, syn[m][c], real[m][c])


def test_compartments_have_the_expected_appearance(studies):
    """ET bright on t1c, NCR darker than ET on t1c and bright on T2, oedema bright on t2w and t2f."""
    for cid in _synthetic_ids():
        images = {m: np.asarray(_load(studies, cid, m).dataobj, np.float32) for m in MODALITIES}
        r = compartment_ratios(images, np.asarray(_load(studies, cid, "seg").dataobj))
        assert r["t1c"]["ET"] > 1.5 and r["t1c"]["NCR"] < r["t1c"]["ET"] * 0.6
        assert r["t2w"]["NCR"] > 1.3 and r["t2w"]["ED"] > 1.1 and r["t2f"]["ED"] > 1.2


def test_same_seed_gives_identical_arrays(studies):
    anatomy = load_anatomy(paths.sri24_dir() if HAVE_SRI24 else None)
    images, seg, _ = generate_case(anatomy, SEED, 1)
    cid = synthetic_case_id(1)
    assert np.array_equal(seg, np.asarray(_load(studies, cid, "seg").dataobj))
    for m in MODALITIES:
        assert np.array_equal(images[m], np.asarray(_load(studies, cid, m).dataobj))


def test_cases_differ_in_tumour_size_and_position(info):
    a, b = info["cases"]
    size = [sum(c["voxels"].values()) for c in (a, b)]
    assert max(size) > 1.5 * min(size)
    assert np.linalg.norm(np.subtract(a["lesions"][0]["centre"], b["lesions"][0]["centre"])) > 5


def test_ratio_table_montage_and_info_are_written(studies, info):
    ratios = json.loads((studies / "sample_ratios.json").read_text())
    assert set(ratios["synthetic_mean"]) == set(MODALITIES) and set(ratios["real"]) == set(MODALITIES)
    assert (studies / "sample_montage.png").stat().st_size > 10_000
    assert info["anatomy"]["name"] == ("SRI24" if HAVE_SRI24 else "MNI152")
    assert not list(studies.rglob("*.tmp*"))  # atomic writes leave no temporary files


def test_mni152_fallback_when_the_shared_data_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("BRATSMEDSAM_SHARED_DATA", str(tmp_path / "no-shared-data"))
    out = tmp_path / "studies"
    info = write_sample_studies(out, n_cases=1, seed=SEED, montage=False, verbose=False)
    assert info["anatomy"]["name"] == "MNI152" and info["real_cases"] == []
    cid = synthetic_case_id(0)
    img = nib.load(str(out / cid / f"{cid}-t2f.nii.gz"))
    assert img.shape == BRATS_SHAPE and np.allclose(img.affine, BRATS_AFFINE)
    seg = np.asarray(nib.load(str(out / cid / f"{cid}-seg.nii.gz")).dataobj)
    assert {1, 2, 3} <= set(np.unique(seg))
    assert json.loads((out / "sample_info.json").read_text())["anatomy"]["name"] == "MNI152"


@pytest.mark.skipif(not HAVE_SRI24, reason="needs the SRI24 atlas to compare with")
def test_mni152_brain_lands_on_the_sri24_brain():
    mni = load_anatomy(None).brain
    sri = load_anatomy(paths.sri24_dir()).brain
    dice = 2 * (mni & sri).sum() / (mni.sum() + sri.sum())
    assert dice > 0.85


def test_explicit_missing_atlas_or_real_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="atlas folder"):
        write_sample_studies(tmp_path / "a", n_cases=1, real_dir=None, atlas_dir=tmp_path / "nope")
    with pytest.raises(UserError, match="real cases folder"):
        write_sample_studies(tmp_path / "b", n_cases=1, real_dir=tmp_path / "nope")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_negative_case_count_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=">= 0"):
        write_sample_studies(tmp_path / "c", n_cases=-1)


def test_mass_effect_moves_anatomy_near_the_lesion_only():
    from bratsmedsam.synthetic.lesions import LesionSpec, mass_effect

    anatomy = load_anatomy(paths.sri24_dir() if HAVE_SRI24 else None)
    centre = (80.0, 120.0, 80.0)
    spec = LesionSpec(centre=centre, core_radius=15.0, oedema_factor=1.5, necrosis_fraction=0.5,
                      axes=(1.0, 1.0, 1.0), rotation=np.eye(3).tolist(), push=0.4)
    moved = mass_effect(anatomy, [spec])
    assert np.array_equal(moved.brain, anatomy.brain)  # the brain outline (skull) stays
    near = (slice(65, 96), slice(105, 136), slice(65, 96))
    assert (moved.tissues[near] != anatomy.tissues[near]).mean() > 0.05
    assert np.array_equal(moved.tissues[160:], anatomy.tissues[160:])  # the other hemisphere is untouched
    assert anatomy.t1.flags.writeable is False  # the cached anatomy itself is never modified


def test_a_rerun_removes_synthetic_cases_of_the_earlier_run_only(tmp_path):
    # An earlier run with more cases: its sample_info.json lists BraTS-GLI-90005-000.
    (tmp_path / "BraTS-GLI-90005-000").mkdir()
    (tmp_path / "sample_info.json").write_text(json.dumps({"cases": [{"case_id": "BraTS-GLI-90005-000"}]}))
    (tmp_path / "BraTS-GLI-90007-000").mkdir()  # not listed: not ours to delete
    anatomy_dir = paths.sri24_dir() if HAVE_SRI24 else None
    write_sample_studies(tmp_path, n_cases=1, seed=SEED, real_dir=None, atlas_dir=anatomy_dir, montage=False, verbose=False)
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["BraTS-GLI-90000-000", "BraTS-GLI-90007-000"]  # no staging folders left either
