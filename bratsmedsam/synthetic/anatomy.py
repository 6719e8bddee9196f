"""A healthy brain on the BraTS voxel grid: tissue map plus T1- and T2-weighted images.

Grid: 240x240x155, 1 mm, the BraTS/SRI24 affine (``BRATS_AFFINE``: x = -i, y = 239 - j, z = k).
Tissue labels: 0 background, 1 CSF, 2 GM, 3 WM. Images are float32, median 1 over the brain, 0 outside.

Two sources:
- the SRI24 atlas (``sri24/{tissues,spgr,late}.nii.gz``; ``arr[..., 0][:, ::-1, :]`` puts it on the grid);
- nilearn's MNI152 2009a 1 mm templates (ship inside the nilearn wheel, no download), moved onto the grid
  by matching the brain's centroid and spread to SRI24's (constants below, measured once on SRI24).
  MNI152 has no T2 image: T2 is built from the tissue probabilities with SRI24's tissue contrasts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import UserError

BRATS_SHAPE = (240, 240, 155)
BRATS_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
CSF, GM, WM = 1, 2, 3
SRI24_FILES = ("tissues", "spgr", "late")

# Brain (tissues > 0) of SRI24 on the BraTS grid, measured once: voxel centroid and standard deviation per axis.
SRI24_BRAIN_CENTROID = np.array([118.83, 134.67, 77.04])
SRI24_BRAIN_STD = np.array([30.63, 38.17, 28.29])
# SRI24 median intensities of CSF, GM, WM in `late` (T2-weighted), measured once; used for the MNI152 T2.
SRI24_T2_BY_TISSUE = {CSF: 745.0, GM: 489.0, WM: 358.0}


@dataclass
class Anatomy:
    """A healthy brain on the BraTS grid. Arrays are (240, 240, 155)."""

    name: str  # "SRI24" or "MNI152"
    source: str  # where it was read from
    tissues: np.ndarray  # uint8, 0 background, 1 CSF, 2 GM, 3 WM
    t1: np.ndarray  # float32 T1-weighted, brain median 1, 0 outside
    t2: np.ndarray  # float32 T2-weighted, brain median 1, 0 outside
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for arr in (self.tissues, self.t1, self.t2):
            arr.flags.writeable = False  # shared between cases (cached): never modified in place

    @property
    def brain(self) -> np.ndarray:
        if "brain" not in self._cache:
            self._cache["brain"] = self.tissues > 0
        return self._cache["brain"]

    @property
    def depth(self) -> np.ndarray:
        """float32 distance (mm) from each brain voxel to the brain's outside."""
        if "depth" not in self._cache:
            idx = np.argwhere(self.brain)
            box = tuple(slice(max(0, a - 1), b + 2) for a, b in zip(idx.min(0), idx.max(0)))  # + background margin
            depth = np.zeros(self.brain.shape, np.float32)
            depth[box] = ndimage.distance_transform_edt(self.brain[box])
            self._cache["depth"] = depth
        return self._cache["depth"]

    @property
    def csf_fraction(self) -> np.ndarray:
        """float32 partial-volume CSF fraction in [0, 1] (the CSF label slightly smoothed)."""
        if "csf" not in self._cache:
            self._cache["csf"] = ndimage.gaussian_filter((self.tissues == CSF).astype(np.float32), 0.7)
        return self._cache["csf"]

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "brain_voxels": int(self.brain.sum())}


def _median_one(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    img = np.where(brain, img, 0).astype(np.float32)
    return img / np.float32(np.median(img[brain]))


def load_sri24(atlas_dir: str | Path) -> Anatomy:
    """The SRI24 atlas from ``atlas_dir`` on the BraTS grid; UserError if a file is missing or malformed."""
    import nibabel as nib

    atlas_dir = Path(atlas_dir)
    arrays = {}
    for name in SRI24_FILES:
        path = atlas_dir / f"{name}.nii.gz"
        if not path.is_file():
            raise UserError(f"{path} is missing: expected the SRI24 atlas files {', '.join(SRI24_FILES)} (.nii.gz) in {atlas_dir}")
        arr = np.asarray(nib.load(str(path)).dataobj)
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.shape != BRATS_SHAPE:
            raise UserError(f"{path} has shape {arr.shape}, expected {BRATS_SHAPE} (+ a singleton 4th axis) like SRI24")
        arrays[name] = np.ascontiguousarray(arr[:, ::-1, :])
    tissues = arrays["tissues"].astype(np.uint8)
    if tissues.max() > 3:
        raise UserError(f"{atlas_dir / 'tissues.nii.gz'} has labels above 3, expected 0 background, 1 CSF, 2 GM, 3 WM")
    brain = tissues > 0
    return Anatomy(
        name="SRI24",
        source=str(atlas_dir),
        tissues=tissues,
        t1=_median_one(arrays["spgr"].astype(np.float32), brain),
        t2=_median_one(arrays["late"].astype(np.float32), brain),
    )


@functools.lru_cache(maxsize=2)
def _load_sri24_cached(atlas_dir: str) -> Anatomy:
    return load_sri24(atlas_dir)


def _mni_to_brats_map(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(diagonal, offset): BraTS voxel b -> MNI152 voxel ``diagonal * b + offset``, matching the MNI brain's
    centroid and spread to SRI24's. Axes i and j point the other way (BraTS x = -i, y = 239 - j)."""
    idx = np.argwhere(mask)
    c_mni, s_mni = idx.mean(0), idx.std(0)
    scale = s_mni / SRI24_BRAIN_STD
    diagonal = np.array([-scale[0], -scale[1], scale[2]])
    return diagonal, c_mni - diagonal * SRI24_BRAIN_CENTROID


def _to_brats_grid(vol: np.ndarray, diagonal: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Trilinear resampling of an MNI152 volume onto the BraTS grid, 0 outside."""
    return ndimage.affine_transform(vol, diagonal, offset=offset, output_shape=BRATS_SHAPE, order=1, mode="constant", cval=0.0)


def load_mni152() -> Anatomy:
    """nilearn's MNI152 templates (T1, GM, WM, brain mask; offline) on the BraTS grid."""
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    diagonal, offset = _mni_to_brats_map(mask)
    t1, gm, wm = (_to_brats_grid(np.where(mask, a, 0).astype(np.float32), diagonal, offset) for a in (t1, gm, wm))
    brain = _to_brats_grid(mask.astype(np.float32), diagonal, offset) > 0.5
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    probs = np.stack([csf, gm, wm])
    tissues = np.where(brain, probs.argmax(0) + 1, 0).astype(np.uint8)
    t2 = csf * SRI24_T2_BY_TISSUE[CSF] + gm * SRI24_T2_BY_TISSUE[GM] + wm * SRI24_T2_BY_TISSUE[WM]
    return Anatomy(
        name="MNI152",
        source="nilearn.datasets.load_mni152_template/gm/wm/brain_mask(resolution=1)",
        tissues=tissues,
        t1=_median_one(np.maximum(t1, 1e-3), brain),
        t2=_median_one(t2, brain),
    )


@functools.lru_cache(maxsize=1)
def _load_mni152_cached() -> Anatomy:
    return load_mni152()


def load_anatomy(atlas_dir: str | Path | None) -> Anatomy:
    """SRI24 from ``atlas_dir``, or MNI152 when ``atlas_dir`` is None. Cached per process (read-only use)."""
    if atlas_dir is None:
        return _load_mni152_cached()
    return _load_sri24_cached(str(Path(atlas_dir).resolve()))
