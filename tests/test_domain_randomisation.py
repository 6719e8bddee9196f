"""The ``randomised`` sample-data profile: deterministic per (seed, index), parameters that vary and are
recorded, and the default profile untouched by it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bratsmedsam import paths
from bratsmedsam.cases import MODALITIES
from bratsmedsam.errors import UserError
from bratsmedsam.sample_data import generate_case, synthetic_case_id, write_sample_studies
from bratsmedsam.synthetic.anatomy import load_anatomy
from bratsmedsam.synthetic.randomise import degrade, draw_domain

from conftest import HAVE_SRI24

SEED = 0  # case 0 of seed 0 has a satellite (n_lesions 2)


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy(paths.sri24_dir() if HAVE_SRI24 else None)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, anatomy):
    out = tmp_path_factory.mktemp("dr") / "studies"
    write_sample_studies(out, n_cases=1, seed=SEED, real_dir=None, atlas_dir=paths.sri24_dir() if HAVE_SRI24 else None,
                         montage=False, verbose=False, profile="randomised")
    return out


def test_domain_parameters_depend_only_on_seed_and_index():
    assert draw_domain(3, 4) == draw_domain(3, 4)
    assert draw_domain(3, 4) != draw_domain(3, 5) and draw_domain(3, 4) != draw_domain(4, 4)
    json.dumps(draw_domain(3, 4))  # plain JSON


def test_domain_parameters_vary_over_cases_across_their_ranges():
    drawn = [draw_domain(0, i) for i in range(40)]
    gammas = [d["contrast"]["t2f"]["gamma"] for d in drawn]
    noise = [d["contrast"]["t1c"]["noise_fraction"] for d in drawn]
    bias = [d["contrast"]["t2w"]["bias_amplitude"] for d in drawn]
    assert min(gammas) < 0.8 and max(gammas) > 1.3  # wider than the standard 0.85-1.15
    assert min(noise) < 0.02 and max(noise) > 0.06
    assert max(bias) > 0.3  # stronger than the standard's <= 0.15
    assert {d["shape"]["n_lesions"] for d in drawn} == {1, 2, 3, 4}
    thick = [d["resolution"][m]["thick_factor"] for d in drawn for m in MODALITIES]
    assert set(thick) == {1, 2, 3, 4, 5}  # every factor drawn, none outside the range
    # drawn per modality: within one case the four contrasts do not share one resolution
    assert any(len({d["resolution"][m]["thick_factor"] for m in MODALITIES}) > 1 for d in drawn)
    assert any(d["resolution"]["t1n"]["blur_sigma_mm"] > 0.5 for d in drawn)


def test_degrade_blurs_inside_the_brain_and_keeps_the_background_zero():
    rng = np.random.default_rng(0)
    brain = np.zeros((40, 40, 30), bool)
    brain[5:35, 5:35, 5:25] = True
    vol = np.where(brain, 100 + 20 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    same = degrade(vol, brain, {"thick_factor": 1, "thick_axis": "k", "inplane_factor": 1.0, "blur_sigma_mm": 0.0})
    assert same is vol
    out = degrade(vol, brain, {"thick_factor": 4, "thick_axis": "k", "inplane_factor": 1.5, "blur_sigma_mm": 0.8})
    assert out.shape == vol.shape and (out[~brain] == 0).all()
    inner = (slice(10, 30),) * 2 + (slice(10, 20),)
    assert out[inner].std() < 0.5 * vol[inner].std()  # noise averaged away
    assert abs(out[inner].mean() - vol[inner].mean()) < 2.0  # the signal level kept


def test_randomised_case_is_deterministic_and_records_its_parameters(studies, anatomy):
    info = json.loads((studies / "sample_info.json").read_text())
    assert info["profile"] == "randomised"
    case = info["cases"][0]
    assert case["domain"] == json.loads(json.dumps(draw_domain(SEED, 0)))
    shape = case["domain"]["shape"]
    assert shape["n_lesions"] > 1 and len(case["lesions"]) == shape["n_lesions"]  # every planned satellite placed
    lo, hi = shape["satellite_radius_mm"]
    assert all(lo * 0.85 ** 3 <= les["core_radius"] <= hi for les in case["lesions"][1:])  # satellites stay small
    images, seg, meta = generate_case(anatomy, SEED, 0, "randomised")
    cid = synthetic_case_id(0)
    assert np.array_equal(seg, np.asarray(nib.load(str(studies / cid / f"{cid}-seg.nii.gz")).dataobj))
    for m in MODALITIES:
        written = np.asarray(nib.load(str(studies / cid / f"{cid}-{m}.nii.gz")).dataobj)
        assert np.array_equal(images[m], written)
    brains = [images[m] > 0 for m in MODALITIES]
    assert all((b == brains[0]).all() for b in brains)  # one skull-stripped brain in every modality
    assert {2, 3} <= set(np.unique(seg))


def test_randomised_and_standard_profiles_differ_for_the_same_seed(studies, anatomy):
    cid = synthetic_case_id(0)
    randomised = np.asarray(nib.load(str(studies / cid / f"{cid}-t2f.nii.gz")).dataobj)
    standard, _, meta = generate_case(anatomy, SEED, 0)
    assert "domain" not in meta
    assert not np.array_equal(standard["t2f"], randomised)


def test_unknown_profile_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="profile"):
        write_sample_studies(tmp_path / "x", n_cases=1, real_dir=None, profile="wild")


def test_every_tumour_component_holds_tumour_core(studies):
    """No oedema island cut off by CSF or the brain's edge (before: 2 at seed 0 case 0, up to 15 per case): each
    whole-tumour component holds necrosis or enhancing tumour, as a BraTS label's lesions do."""
    from scipy import ndimage

    cid = synthetic_case_id(0)
    seg = np.asarray(nib.load(str(studies / cid / f"{cid}-seg.nii.gz")).dataobj)
    cc, n = ndimage.label(seg > 0, structure=np.ones((3, 3, 3), bool))
    core = np.isin(seg, (1, 3))
    assert n >= 1 and set(np.unique(cc[core])) - {0} == set(range(1, n + 1))


def test_one_body_keeps_the_largest_component():
    from bratsmedsam.synthetic.lesions import _one_body

    lesion = np.zeros((20, 20, 20), bool)
    lesion[2:10, 2:10, 2:10] = True
    lesion[14:16, 14:16, 14:16] = True
    lesion[11, 11, 11] = True  # two voxels from the block's corner (9, 9, 9): an island of its own
    body = _one_body(lesion)
    assert body.sum() == 8 ** 3 and body[2:10, 2:10, 2:10].all()
    assert not _one_body(np.zeros((4, 4, 4), bool)).any()
