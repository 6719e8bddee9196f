"""Checks on image and label files that come from outside (uploads, submitted labels) before anything stores them.

Each check reads the file with SimpleITK (NIfTI and NRRD, what Slicer sends) and raises ``UserError`` with a
sentence that names what is wrong; the server turns it into a 4xx. Geometry is compared in physical space
(size, spacing, origin, direction), which is what an affine carries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import LimitError, UserError

VOLUME_SUFFIXES = (".nrrd", ".nii.gz", ".nii")  # what the server accepts and writes (Slicer sends NRRD)


def volume_suffix(name: str) -> str | None:
    """The volume suffix ``name`` ends with, or None."""
    return next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), None)


@dataclass(frozen=True)
class Geometry:
    size: tuple[int, ...]  # voxels along i, j, k (SimpleITK order)
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, img) -> "Geometry":
        return cls(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))

    def mismatch(self, other: "Geometry", tol_mm: float = 1e-3, tol_dir: float = 1e-4) -> str | None:
        """None when the two agree within tolerances, else what differs (this = label, other = image)."""
        if self.size[:3] != other.size[:3]:
            return f"shape {self.size[:3]} (i, j, k), the image has {other.size[:3]}"
        if not np.allclose(self.spacing[:3], other.spacing[:3], atol=tol_mm, rtol=0):
            return f"spacing {_r(self.spacing[:3])} mm, the image has {_r(other.spacing[:3])} mm"
        if not np.allclose(self.origin[:3], other.origin[:3], atol=max(tol_mm, 1e-2), rtol=0):
            return f"origin {_r(self.origin[:3])} mm, the image has {_r(other.origin[:3])} mm"
        a, b = np.asarray(self.direction, float), np.asarray(other.direction, float)
        if a.size != b.size or not np.allclose(a, b, atol=tol_dir, rtol=0):
            return "an orientation (direction cosines) that differs from the image's"
        return None


def _r(v: Iterable[float]) -> tuple[float, ...]:
    return tuple(round(float(x), 3) for x in v)


def _read(path: str | os.PathLike, what: str):
    import SimpleITK as sitk

    p = str(path)
    if not os.path.isfile(p) or os.path.getsize(p) == 0:
        raise UserError(f"{what} is empty or missing")
    try:
        return sitk.ReadImage(p)
    except RuntimeError:
        raise UserError(f"{what} is not a readable NIfTI or NRRD volume") from None


def _geometry(image: str | os.PathLike) -> Geometry:
    """The image's grid from its header alone (the voxels are not read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise UserError("the image of this label is not readable") from None
    return Geometry.of(reader)


def check_image_file(path: str | os.PathLike, max_voxels: int, what: str = "the uploaded image") -> Geometry:
    """A 3D scalar volume (a 4th axis of length 1 is allowed) with finite values and at most ``max_voxels``."""
    import SimpleITK as sitk

    img = _read(path, what)
    size = tuple(img.GetSize())
    if img.GetDimension() not in (3, 4) or (img.GetDimension() == 4 and size[3] != 1):
        raise UserError(f"{what} has shape {size}: expected one 3D volume")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{what} has {img.GetNumberOfComponentsPerPixel()} values per voxel: expected a scalar volume")
    n = int(np.prod(size[:3]))
    if n > max_voxels:
        raise LimitError(f"{what} has {n:,} voxels, more than this server's limit of {max_voxels:,}")
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise UserError(f"{what} contains NaN or infinite values")
    return Geometry.of(img)


def check_label_file(path: str | os.PathLike, image: str | os.PathLike, allowed: Iterable[int],
                     what: str = "the label") -> np.ndarray:
    """The label as uint8 ``(X, Y, Z)`` (voxel order ``[i, j, k]``), after checking that it is readable, lies on
    the image's grid (shape, spacing, origin, direction) and holds only integer values from ``allowed``."""
    import SimpleITK as sitk

    lab = _read(path, what)
    if lab.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{what} has {lab.GetNumberOfComponentsPerPixel()} values per voxel: expected one label map")
    ref = _geometry(image)
    if lab.GetDimension() == 4 and lab.GetSize()[3] == 1:
        lab = lab[:, :, :, 0]
    if lab.GetDimension() != 3:
        raise UserError(f"{what} has shape {tuple(lab.GetSize())}: expected a 3D label map like the image")
    bad = Geometry.of(lab).mismatch(ref)
    if bad:
        raise UserError(f"{what} does not lie on the image's grid: it has {bad}")
    arr = sitk.GetArrayFromImage(lab)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise UserError(f"{what} contains NaN or infinite values")
        if not np.equal(np.mod(arr, 1), 0).all():
            raise UserError(f"{what} has non-integer values: expected label values {sorted(set(allowed))}")
    allowed = sorted({int(v) for v in allowed} | {0})
    values = np.unique(arr)
    extra = [v for v in values.tolist() if int(v) not in allowed]
    if extra:
        shown = ", ".join(str(int(v)) for v in extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise UserError(f"{what} has values {shown} outside the allowed labels {allowed}")
    return np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.uint8)
