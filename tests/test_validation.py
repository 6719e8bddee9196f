"""Checks on uploaded labels and images: each bad file is refused with a sentence naming what is wrong."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bratsmedsam.errors import UserError
from bratsmedsam.validation import check_image_file, check_label_file

AFFINE = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 1.0, -5], [0, 0, 0, 1]])


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 24, 8)).astype(np.float32), AFFINE), p)
    return p


def _shift(mm: float) -> np.ndarray:
    d = np.zeros((4, 4))
    d[0, 3] = mm
    return d


def _label(tmp_path, arr, affine=AFFINE, name="lab.nii.gz"):
    p = tmp_path / name
    nib.save(nib.Nifti1Image(arr, affine), p)
    return p


def test_a_label_on_the_images_grid_comes_back_in_ijk_order(tmp_path, image):
    arr = np.zeros((20, 24, 8), np.uint8)
    arr[3:5, 6:9, 2] = 1
    out = check_label_file(_label(tmp_path, arr), image, (1,))
    assert out.shape == (20, 24, 8) and out.dtype == np.uint8 and np.array_equal(out, arr)


def test_an_nrrd_label_written_from_the_image_geometry_is_accepted(tmp_path, image):
    ref = sitk.ReadImage(str(image))
    lab = sitk.Image(ref.GetSize(), sitk.sitkUInt8)
    lab.CopyInformation(ref)
    sitk.WriteImage(lab, str(tmp_path / "l.nrrd"))
    assert check_label_file(tmp_path / "l.nrrd", image, (1,)).sum() == 0


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"hello"), "not a readable"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((20, 24, 7), np.uint8), AFFINE), p), "shape (20, 24, 7)"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((20, 24, 8), np.uint8), AFFINE @ np.diag([2, 1, 1, 1])), p), "spacing"),
    (lambda p: nib.save(nib.Nifti1Image(np.zeros((20, 24, 8), np.uint8), AFFINE + _shift(3.0)), p), "origin"),
    (lambda p: nib.save(nib.Nifti1Image(np.full((20, 24, 8), 4, np.uint8), AFFINE), p), "values 4"),
    (lambda p: nib.save(nib.Nifti1Image(np.full((20, 24, 8), 0.5, np.float32), AFFINE), p), "non-integer"),
])
def test_bad_labels_are_refused_with_what_is_wrong(tmp_path, image, make, words):
    p = tmp_path / "bad.nii.gz"
    make(p)
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_label_file(p, image, (1,))


def test_a_label_with_nan_is_refused(tmp_path, image):
    ref = sitk.ReadImage(str(image))
    lab = sitk.Image(ref.GetSize(), sitk.sitkFloat32)
    lab.CopyInformation(ref)
    lab.SetPixel(1, 1, 1, float("nan"))
    sitk.WriteImage(lab, str(tmp_path / "nan.nrrd"))
    with pytest.raises(UserError, match="NaN"):
        check_label_file(tmp_path / "nan.nrrd", image, (1,))


def test_images_over_the_voxel_limit_or_not_3d_are_refused(tmp_path, image):
    assert check_image_file(image, max_voxels=10_000).size == (20, 24, 8)
    with pytest.raises(UserError, match="3,840 voxels, more than this server's limit of 1,000"):
        check_image_file(image, max_voxels=1_000)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), AFFINE), tmp_path / "4d.nii.gz")
    with pytest.raises(UserError, match="expected one 3D volume"):
        check_image_file(tmp_path / "4d.nii.gz", max_voxels=10_000)
