"""Case discovery, checks and loading; intensity normalisation; regions. Small synthetic volumes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratsmedsam.cases import MODALITIES, Case, discover_cases, load_case
from bratsmedsam.errors import CaseError, UserError
from bratsmedsam.intensity import brain_mask_of, compose_channels, normalize_volume
from bratsmedsam.regions import REGIONS, region_mask

SHAPE = (64, 64, 20)
LEGACY = {"t1c": "t1ce", "t1n": "t1", "t2w": "t2", "t2f": "flair", "seg": "seg"}


def synthetic_volumes(shape=SHAPE, seed=0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four int16 modalities (background 0, brain = an ellipsoid over z 3..16) and a uint8 seg.

    Tumour: a ball with NCR (1) core, ET (3) rim and ED (2) around it, plus a 2x2-voxel speck of ED
    (4 pixels per slice) far from the ball, so a min-size filter has something to drop.
    """
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cx, cy = shape[0] / 2, shape[1] / 2
    brain = ((i - cx) / (shape[0] * 0.4)) ** 2 + ((j - cy) / (shape[1] * 0.45)) ** 2 < 1
    brain &= (k >= 3) & (k <= shape[2] - 4)
    patterns = {"t1c": 100 + 3 * i, "t1n": 100 + 3 * j, "t2w": 400 - 3 * i, "t2f": 50 + 2 * (i + j)}
    images = {}
    for m, pat in patterns.items():
        vol = (pat + rng.normal(0, 2, shape)).astype(np.int16)
        vol[~brain] = 0
        images[m] = vol
    seg = np.zeros(shape, np.uint8)
    r = np.sqrt((i - 40) ** 2 + (j - 28) ** 2 + (2 * (k - 10)) ** 2)  # flat in z: z 7..13
    seg[r <= 6] = 2
    seg[r <= 4] = 3
    seg[r <= 2] = 1
    seg[20:22, 40:42, 8:12] = 2
    seg &= brain.astype(np.uint8) * 255
    return images, seg


def write_case(studies: Path, case_id: str, legacy: bool = False, modalities=MODALITIES, seg: bool = True,
               seed: int = 0, shape=SHAPE, edit=None) -> Path:
    """Write a synthetic case folder; ``edit(images, seg)`` may change the arrays before saving."""
    images, labels = synthetic_volumes(shape, seed)
    if edit:
        edit(images, labels)
    folder = studies / case_id
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in [(m, images[m]) for m in modalities] + ([("seg", labels)] if seg else []):
        suffix = f"_{LEGACY[name]}" if legacy else f"-{name}"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(folder / f"{case_id}{suffix}.nii.gz"))
    return folder


@pytest.fixture
def studies(tmp_path) -> Path:
    return tmp_path / "studies"


def load_one(studies: Path, case_id: str, **kw) -> Case:
    files = {f.case_id: f for f in discover_cases(studies)}[case_id]
    return load_case(files, kw.pop("modalities", MODALITIES), **kw)


def reason_of(studies: Path, case_id: str, **kw) -> str:
    with pytest.raises(CaseError) as info:
        load_one(studies, case_id, **kw)
    assert info.value.case_id == case_id
    return info.value.reason


# ---- discovery -------------------------------------------------------------------------------


def test_discover_finds_case_folders_and_ignores_other_files(studies):
    write_case(studies, "BraTS-GLI-00001-000")
    (studies / "sample_montage.png").write_bytes(b"\x89PNG")
    (studies / "notes.json").write_text("{}")
    (studies / "empty_folder").mkdir()
    found = discover_cases(studies)
    assert [f.case_id for f in found] == ["BraTS-GLI-00001-000"]
    assert sorted(found[0].images) == sorted(MODALITIES) and found[0].seg is not None


def test_discover_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover_cases(tmp_path / "nope")


def test_discover_folder_without_cases_is_a_user_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UserError, match="no BraTS cases"):
        discover_cases(tmp_path)


# ---- loading -----------------------------------------------------------------------------------


def test_load_case_gives_float32_xyz_images_and_uint8_labels(studies):
    write_case(studies, "c1")
    case = load_one(studies, "c1")
    images, seg = synthetic_volumes()
    assert set(case.images) == set(MODALITIES)
    assert case.images["t1c"].dtype == np.float32 and case.images["t1c"].shape == SHAPE
    np.testing.assert_array_equal(case.images["t2w"], images["t2w"].astype(np.float32))
    assert case.seg.dtype == np.uint8
    np.testing.assert_array_equal(case.seg, seg)
    assert case.affine.shape == (4, 4)


def test_legacy_naming_is_mapped_and_label_4_becomes_3(studies):
    write_case(studies, "BraTS2021_00001", legacy=True, edit=lambda im, s: s.__setitem__(s == 3, 4))
    case = load_one(studies, "BraTS2021_00001")
    _, seg = synthetic_volumes()
    assert set(case.images) == set(MODALITIES)
    np.testing.assert_array_equal(case.seg, seg)  # 4 mapped back to 3
    assert 4 not in np.unique(case.seg)


def test_load_only_requested_modalities_of_a_partial_unlabelled_case(studies):
    write_case(studies, "upload", modalities=("t2f",), seg=False)
    case = load_one(studies, "upload", modalities=["t2f"], with_seg=False)
    assert list(case.images) == ["t2f"] and case.seg is None


def test_singleton_fourth_axis_is_dropped(studies):
    write_case(studies, "c1")
    path = studies / "c1" / "c1-t1c.nii.gz"
    arr = np.asanyarray(nib.load(str(path)).dataobj)[..., None]
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    assert load_one(studies, "c1").images["t1c"].shape == SHAPE


# ---- bad inputs: each reported by case id and reason --------------------------------------------


def test_truncated_gzip_is_reported(studies):
    write_case(studies, "c1")
    path = studies / "c1" / "c1-t2w.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "cannot read t2w" in reason_of(studies, "c1")


def test_missing_modality_is_reported(studies):
    write_case(studies, "c1", modalities=("t1c", "t2w"))
    assert "missing modality t2f" in reason_of(studies, "c1", modalities=["t1c", "t2w", "t2f"])


def test_missing_segmentation_is_reported(studies):
    write_case(studies, "c1", seg=False)
    assert reason_of(studies, "c1") == "no segmentation"


def test_shape_mismatch_is_reported(studies):
    write_case(studies, "c1")
    nib.save(nib.Nifti1Image(np.ones((64, 64, 19), np.int16), np.eye(4)), str(studies / "c1" / "c1-t2f.nii.gz"))
    reason = reason_of(studies, "c1")
    assert "t2f has shape (64, 64, 19), expected (64, 64, 20)" in reason


def test_affine_mismatch_is_reported(studies):
    write_case(studies, "c1")
    path = studies / "c1" / "c1-t2w.nii.gz"
    arr = np.asanyarray(nib.load(str(path)).dataobj)
    nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    assert "different affine" in reason_of(studies, "c1")


def test_nan_values_are_reported(studies):
    def add_nan(images, seg):
        images["t1c"] = images["t1c"].astype(np.float32)
        images["t1c"][5, 5, 5] = np.nan

    write_case(studies, "c1", edit=add_nan)
    assert "t1c has 1 non-finite values" in reason_of(studies, "c1")


def test_four_d_image_is_reported(studies):
    write_case(studies, "c1")
    nib.save(nib.Nifti1Image(np.ones(SHAPE + (2,), np.int16), np.eye(4)), str(studies / "c1" / "c1-t2w.nii.gz"))
    assert "is 4-D" in reason_of(studies, "c1")


def test_all_zero_volume_is_reported(studies):
    write_case(studies, "c1", edit=lambda im, s: im["t2f"].fill(0))
    assert "t2f is constant" in reason_of(studies, "c1")


def test_unknown_label_values_are_reported(studies):
    write_case(studies, "c1", edit=lambda im, s: s.__setitem__((0, 0, 0), 7))
    assert "unknown label values [7]" in reason_of(studies, "c1")


def test_labels_3_and_4_together_are_ambiguous(studies):
    write_case(studies, "c1", edit=lambda im, s: s.__setitem__((0, 0, 0), 4))
    assert "both 3 and 4" in reason_of(studies, "c1")


def test_unknown_modality_name_is_a_user_error(studies):
    write_case(studies, "c1")
    with pytest.raises(UserError, match="unknown modality 'flair2'"):
        load_one(studies, "c1", modalities=["flair2"])


# ---- intensity -------------------------------------------------------------------------------


def test_normalize_maps_brain_to_0_255_and_keeps_background_0():
    images, _ = synthetic_volumes()
    vol = images["t1c"].astype(np.float32)
    out = normalize_volume(vol)
    assert out.dtype == np.uint8 and out.shape == vol.shape
    assert np.all(out[vol == 0] == 0)
    brain = out[vol != 0]
    assert brain.max() == 255 and brain.min() == 0
    lo, hi = np.percentile(vol[vol != 0], [0.5, 99.5])
    assert np.all(out[vol >= hi] == 255) and np.all(out[(vol != 0) & (vol <= lo)] == 0)


def test_normalize_is_monotonic_in_the_brain():
    images, _ = synthetic_volumes()
    vol = images["t2w"].astype(np.float32)
    out = normalize_volume(vol)
    order = np.argsort(vol[vol != 0], kind="stable")
    assert np.all(np.diff(out[vol != 0][order].astype(int)) >= 0)


def test_non_zero_background_is_detected_and_set_to_0():
    images, _ = synthetic_volumes()
    vol = images["t1c"].astype(np.float32)
    shifted = np.where(vol == 0, 1000.0, vol)  # background 1000, above most brain values
    np.testing.assert_array_equal(brain_mask_of(shifted), vol != 0)
    np.testing.assert_array_equal(normalize_volume(shifted), normalize_volume(vol))


def test_explicit_brain_mask_overrides_detection():
    vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    mask = np.zeros(vol.shape, bool)
    mask[2:5, 2:5, 2:5] = True
    out = normalize_volume(vol, brain_mask=mask)
    assert np.all(out[~mask] == 0) and out[mask].max() == 255


def test_compose_channels_stacks_requested_modalities_in_order(studies):
    write_case(studies, "c1")
    case = load_one(studies, "c1")
    rgb = compose_channels(case, ("t2f", "t1c", "t2f"))
    assert rgb.dtype == np.uint8 and rgb.shape == SHAPE + (3,)
    np.testing.assert_array_equal(rgb[..., 0], normalize_volume(case.images["t2f"]))
    np.testing.assert_array_equal(rgb[..., 1], normalize_volume(case.images["t1c"]))
    np.testing.assert_array_equal(rgb[..., 2], rgb[..., 0])


def test_compose_channels_rejects_a_modality_that_is_not_loaded(studies):
    write_case(studies, "c1", modalities=("t2f",), seg=False)
    case = load_one(studies, "c1", modalities=["t2f"], with_seg=False)
    with pytest.raises(CaseError, match="t1c is not loaded"):
        compose_channels(case, ("t1c", "t2w", "t2f"))
    assert compose_channels(case, ("t2f",) * 3).shape[-1] == 3  # FLAIR x3 needs only the FLAIR


# ---- regions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["WT", "TC", "ET"])
def test_region_mask_is_the_union_of_its_labels(region):
    seg = np.array([0, 1, 2, 3, 0, 3], np.uint8)
    expected = np.array([v in REGIONS[region] for v in seg])
    np.testing.assert_array_equal(region_mask(seg, region.lower()), expected)


def test_unknown_region_is_a_user_error():
    with pytest.raises(UserError, match="unknown region"):
        region_mask(np.zeros(3, np.uint8), "XX")
