"""BraTS case discovery, validation and loading.

A studies folder holds one sub-folder per case: ``STUDIES/<case_id>/<case_id>-{t1c,t1n,t2w,t2f,seg}.nii.gz``
(BraTS 2023 naming). The older naming (``<id>_{t1ce,t1,t2,flair,seg}.nii.gz``, ET = 4) is mapped on load.
Other files in the studies folder (pictures, JSON) are ignored.

Volumes are returned as float32 ``(X, Y, Z)`` arrays in NIfTI voxel order ``[i, j, k]``; the
segmentation as uint8 labels ``{0, 1, 2, 3}`` (1 NCR, 2 ED, 3 ET). Every check runs before a
caller writes anything, and each failure is a :class:`CaseError` naming the case and the reason.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import CaseError, UserError

MODALITIES = ("t1c", "t1n", "t2w", "t2f")
LABELS = (0, 1, 2, 3)
LEGACY_ET = 4

# File-name suffix -> modality (or "seg"). BraTS 2023 names first, then the pre-2023 names.
SUFFIXES = {
    "t1c": "t1c", "t1n": "t1n", "t2w": "t2w", "t2f": "t2f", "seg": "seg",
    "t1ce": "t1c", "t1gd": "t1c", "t1": "t1n", "t2": "t2w", "flair": "t2f",
}
_NIFTI = re.compile(r"^(?P<stem>.+?)[-_](?P<suffix>[A-Za-z0-9]+)\.nii(\.gz)?$")
AFFINE_ATOL = 1e-3


@dataclass
class CaseFiles:
    """The NIfTI files of one case: ``images`` maps a modality in :data:`MODALITIES` to its path."""

    case_id: str
    images: dict[str, Path]
    seg: Path | None
    problems: list[str] = field(default_factory=list)  # naming problems found at discovery (e.g. duplicates)


@dataclass
class Case:
    """One loaded case: images float32 ``(X, Y, Z)``; seg uint8 ``(X, Y, Z)`` in {0,1,2,3} (ET = 3)."""

    case_id: str
    images: dict[str, np.ndarray]
    seg: np.ndarray | None
    affine: np.ndarray  # (4, 4) voxel -> world, shared by all volumes of the case

    @property
    def shape(self) -> tuple[int, int, int]:
        vol = next(iter(self.images.values()), self.seg)
        return tuple(vol.shape)


def case_files_in(folder: str | Path, case_id: str | None = None) -> CaseFiles:
    """The recognised NIfTI files of one case folder (no reading)."""
    folder = Path(folder)
    case_id = case_id or folder.name
    images: dict[str, Path] = {}
    seg: Path | None = None
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        m = _NIFTI.match(path.name)
        if not m or not path.is_file() or path.name.startswith("."):
            continue
        kind = SUFFIXES.get(m.group("suffix").lower())
        if kind is None:
            continue
        if kind == "seg":
            if seg is not None:
                problems.append(f"two segmentation files ({seg.name}, {path.name})")
            seg = seg or path
        elif kind in images:
            problems.append(f"two {kind} files ({images[kind].name}, {path.name})")
        else:
            images[kind] = path
    return CaseFiles(case_id=case_id, images=images, seg=seg, problems=problems)


def discover_cases(studies_dir: str | Path) -> list[CaseFiles]:
    """Every sub-folder of ``studies_dir`` holding at least one BraTS NIfTI file, sorted by case id.

    Raises :class:`UserError` if the folder is missing or holds no case.
    """
    studies = Path(studies_dir)
    if not studies.is_dir():
        raise UserError(f"studies folder {studies} does not exist (expected one sub-folder per BraTS case)")
    found = []
    for sub in sorted(p for p in studies.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = case_files_in(sub)
        if files.images or files.seg:
            found.append(files)
    if not found:
        raise UserError(
            f"no BraTS cases in {studies}: expected sub-folders <case_id>/ with files "
            f"<case_id>-{{t1c,t1n,t2w,t2f,seg}}.nii.gz"
        )
    return found


def check_headers(
    files: CaseFiles, modalities: Sequence[str] = MODALITIES, with_seg: bool = True
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Cheap checks that read only the NIfTI headers: files present, 3-D, one shape and one affine.

    Returns ``(shape (X, Y, Z), affine (4, 4))``; raises :class:`CaseError` on the first problem.
    """
    cid = files.case_id
    ref_name, ref_shape, ref_affine = None, None, None
    for name, path in _wanted(files, modalities, with_seg):
        img = _open(cid, name, path)
        shape = _shape3(cid, name, path, tuple(img.shape))
        affine = np.asarray(img.affine, np.float64)
        if ref_shape is None:
            ref_name, ref_shape, ref_affine = name, shape, affine
        elif shape != ref_shape:
            raise CaseError(cid, f"{name} has shape {shape}, expected {ref_shape} like {ref_name}")
        elif not np.allclose(affine, ref_affine, atol=AFFINE_ATOL):
            raise CaseError(cid, f"{name} has a different affine (voxel-to-world) from {ref_name}")
    return ref_shape, ref_affine


def load_case(files: CaseFiles, modalities: Sequence[str] = MODALITIES, with_seg: bool = True) -> Case:
    """Read and check the requested modalities (and the segmentation when ``with_seg``).

    Checks: every requested file present and readable, 3-D (a trailing singleton axis is dropped),
    one shape and one affine for all volumes, finite values, images not constant (e.g. all zero),
    label values in {0,1,2,3} (legacy ET = 4 mapped to 3). Raises :class:`CaseError` on the first problem.
    """
    cid = files.case_id
    shape, affine = check_headers(files, modalities, with_seg)
    images: dict[str, np.ndarray] = {}
    seg: np.ndarray | None = None
    for name, path in _wanted(files, modalities, with_seg):
        data = _read(cid, name, path).reshape(shape)
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise CaseError(cid, f"{name} has {bad} non-finite values (NaN or inf)")
        if name == "seg":
            seg = _labels(cid, data)
        else:
            if data.size == 0 or data.min() == data.max():
                raise CaseError(cid, f"{name} is constant ({float(data.flat[0]) if data.size else 'empty'}): no image")
            images[name] = data.astype(np.float32, copy=False)
    return Case(case_id=cid, images=images, seg=seg, affine=affine)


def _wanted(files: CaseFiles, modalities: Sequence[str], with_seg: bool) -> list[tuple[str, Path]]:
    """``(name, path)`` of the requested volumes; :class:`CaseError` if one is missing."""
    cid = files.case_id
    mods = list(dict.fromkeys(modalities))  # unique, in order
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
        raise UserError(f"unknown modality {unknown[0]!r}: expected one of {', '.join(MODALITIES)}")
    if not mods and not with_seg:
        raise UserError(f"{cid}: nothing to load (no modality requested and with_seg=False)")
    if files.problems:
        raise CaseError(cid, "; ".join(files.problems))
    missing = [m for m in mods if m not in files.images]
    if missing:
        raise CaseError(cid, f"missing modality {', '.join(missing)} (expected {cid}-{missing[0]}.nii.gz)")
    if with_seg and files.seg is None:
        raise CaseError(cid, "no segmentation")
    return [(m, files.images[m]) for m in mods] + ([("seg", files.seg)] if with_seg else [])


_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)


def _open(cid: str, name: str, path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except (*_READ_ERRORS, nib.filebasedimages.ImageFileError) as exc:
        raise CaseError(cid, f"cannot read {name} file {path.name} ({type(exc).__name__}: {exc})") from None


def _shape3(cid: str, name: str, path: Path, shape: tuple) -> tuple[int, int, int]:
    """The 3-D shape of a volume (a trailing singleton axis dropped); :class:`CaseError` otherwise."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseError(cid, f"{name} file {path.name} is {len(shape)}-D with shape {shape}, expected a 3-D volume")
    return shape


def _read(cid: str, name: str, path: Path) -> np.ndarray:
    """Whole NIfTI volume (scaled by the header's slope/intercept); read errors become :class:`CaseError`."""
    try:
        return np.asanyarray(_open(cid, name, path).dataobj)
    except _READ_ERRORS as exc:
        raise CaseError(cid, f"cannot read {name} file {path.name} ({type(exc).__name__}: {exc})") from None


def _labels(cid: str, data: np.ndarray) -> np.ndarray:
    """Label volume -> uint8 {0,1,2,3}; legacy ET = 4 becomes 3."""
    ints = data.astype(np.int32) if data.dtype.kind == "f" else data
    if ints is not data and not np.array_equal(ints, data):
        raise CaseError(cid, "segmentation has non-integer values, expected labels {0,1,2,3}")
    lo, hi = int(ints.min()), int(ints.max())
    if lo < 0 or hi > LEGACY_ET:
        present = sorted(int(v) for v in np.unique(ints))
    else:
        present = np.flatnonzero(np.bincount(ints.astype(np.uint8).ravel(), minlength=LEGACY_ET + 1)).tolist()
    unknown = sorted(set(present) - set(LABELS) - {LEGACY_ET})
    if unknown:
        raise CaseError(cid, f"segmentation has unknown label values {unknown}, expected {{0,1,2,3}} (or legacy ET = 4)")
    seg = ints.astype(np.uint8)
    if LEGACY_ET in present:
        if 3 in present:
            raise CaseError(cid, "segmentation has both 3 and 4: cannot tell BraTS 2023 ET (3) from legacy ET (4)")
        seg[seg == LEGACY_ET] = 3
    return seg
