"""Studies on disk: a BraTS case (or a lone volume) loaded for the models, labels written back with the
reference volume's geometry, and the two conversions between a studies folder and a flat datastore.

- :func:`load_study`: a case folder, one of its modality files, or a lone NIfTI -> :class:`Study`
  (``channels`` the segmenter's and ``detector_channels`` the detector's uint8 ``(X, Y, Z, 3)`` stack, in the
  reference volume's voxel grid; one array when both models read the same stack).
- :func:`write_label`: bool ``(X, Y, Z)`` -> NIfTI or NRRD with the reference's geometry.
- :func:`build_store`: studies folder -> flat datastore (one symlinked image per case, BraTS seg as a label).
- :func:`labelled_studies`: datastore items with labels -> a BraTS-layout studies folder for ``prepare``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError
from .intensity import Stacks

logger = logging.getLogger(__name__)

_BRATS_NAME = re.compile(r"^(?P<case>.+?)[-_](?P<mod>t1c|t1n|t2w|t2f|t1ce|t1|t2|flair)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass
class Study:
    """A volume ready for the models: ``channels`` (the segmenter's stack) and ``detector_channels`` (the detector's),
    uint8 ``(X, Y, Z, 3)`` in the reference's voxel grid, the same array when the stacks are the same."""

    case_id: str
    channels: np.ndarray
    affine: np.ndarray  # (4, 4) of the reference volume
    reference: Path  # the volume whose geometry results must have
    sources: dict[str, str]  # configured modality -> modality that filled it
    single_modality: bool
    detector_channels: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (the affine's column norms)."""
        return tuple(float(v) for v in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0))


def find_case_files(path: str | os.PathLike):
    """The BraTS case (``cases.CaseFiles``) a case folder or one of its modality files belongs to, or None."""
    from .cases import case_files_in

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and not (_BRATS_NAME.match(path.name) and path.name.startswith(folder.name)):
        return None
    files = case_files_in(folder)
    if not files.images:
        return None
    if path.is_file() and not any(Path(p).resolve() == path.resolve() for p in files.images.values()):
        return None
    return files


def load_study(path: str | os.PathLike, stacks: Stacks | Sequence[str] = Stacks(),
               display: Sequence[str] = ("t2f", "t1c")) -> Study:
    """Load a case folder, a modality file of a BraTS case (its siblings join in), or a lone volume, stacked for
    each model as ``stacks`` says (three modality names: one stack for both).

    Missing configured modalities are filled with the displayed one (the request's file, or the first
    of ``display`` present in a case folder); a lone volume fills all three channels of both stacks.
    """
    import nibabel as nib

    from .cases import Case, load_case
    from .intensity import compose_stacks, normalize_volume

    if not isinstance(stacks, Stacks):
        stacks = Stacks.one(stacks)
    modalities = stacks.modalities

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such image file or case folder")
    files = find_case_files(path)
    if files is None:
        if path.is_dir():
            raise UserError(f"{path}: not a BraTS case folder (expected <case>/<case>-t1c.nii.gz and siblings)")
        try:
            img = nib.load(str(path))
            vol = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:
            raise UserError(f"{path}: cannot read it as a NIfTI volume ({exc})") from None
        vol = vol.reshape(vol.shape[:3]) if vol.ndim == 4 and vol.shape[3] == 1 else vol
        if vol.ndim != 3:
            raise UserError(f"{path}: expected a 3D volume, got shape {vol.shape}")
        norm = normalize_volume(vol)
        stack = np.ascontiguousarray(np.stack([norm] * 3, axis=-1))
        return Study(path.name.split(".")[0], stack, img.affine, path, {c: "input" for c in modalities}, True, stack)
    present = set(files.images)
    if path.is_file():
        shown = next(m for m, p in files.images.items() if Path(p).resolve() == path.resolve())
        reference = path
    else:
        shown = next((m for m in display if m in present), sorted(present)[0])
        reference = Path(files.images[shown])
    need = sorted({c for c in modalities if c in present} | {shown})
    case = load_case(files, need, with_seg=False)
    sources = {c: (c if c in present else shown) for c in modalities}
    filled = Case(case_id=case.case_id, images={c: case.images[sources[c]] for c in modalities}, seg=None,
                  affine=case.affine)
    det, seg = compose_stacks(filled, stacks)
    # single modality: one volume stands in for stacks that name several (FLAIR x3 asked for is not that)
    return Study(files.case_id, seg, case.affine, reference, sources,
                 len(set(sources.values())) == 1 < len(modalities), det)


def write_label(label: np.ndarray, reference: str | os.PathLike, out: str | os.PathLike, value: int = 1) -> Path:
    """Write a bool/uint8 ``(X, Y, Z)`` label (foreground -> ``value``) with the reference volume's exact geometry.

    ``.nii``/``.nii.gz`` keep the reference's affine and header (nibabel); anything else (``.nrrd``)
    is written by SimpleITK with the reference's origin, spacing and direction as ITK reads them.
    """
    return _write(np.asarray(label) > 0, reference, out, np.uint8(value))


def write_label_map(labels: np.ndarray, reference: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a uint8 ``(X, Y, Z)`` multi-label map (values kept: the BraTS 1 NCR / 2 ED / 3 ET, or one region's 1)
    with the reference volume's exact geometry, atomically (formats as :func:`write_label`)."""
    mask = np.asarray(labels)
    if mask.dtype != np.uint8:
        if mask.dtype == bool or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
            raise UserError(f"a label map must hold values 0-255, got {mask.dtype} "
                            f"{mask.min(initial=0)}..{mask.max(initial=0)}")
        mask = mask.astype(np.uint8)
    return _write(mask, reference, out, np.uint8(1))


def _write(mask: np.ndarray, reference, out, value) -> Path:
    """``mask`` (bool or uint8 ``(X, Y, Z)``) times ``value`` as uint8, with the reference's geometry."""
    from .atomic import atomic_path, save_nifti

    out = Path(out)
    if out.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        ref = nib.load(str(reference))
        if ref.shape[:3] != mask.shape:
            raise UserError(f"label shape {mask.shape} does not match {reference} ({ref.shape[:3]})")
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(mask.astype(np.uint8) * value, ref.affine, header)
        img.set_qform(ref.affine, int(ref.header["qform_code"]) or 1)
        img.set_sform(ref.affine, int(ref.header["sform_code"]) or 1)
        return save_nifti(img, out)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    if tuple(reader.GetSize()[:3]) != mask.shape:
        raise UserError(f"label shape {mask.shape} does not match {reference} ({reader.GetSize()})")
    # ITK wants (Z, Y, X) in C order; copying only the slices that hold a label keeps a one-slice prompt's result
    # cheap (the whole-volume transpose cost 86 ms of a 0.1 s warm prompt on a 2-core CPU)
    zyx = np.zeros(mask.shape[::-1], np.uint8)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        zyx[k] = mask[:, :, k].T * value
    img = sitk.GetImageFromArray(zyx)
    img.SetOrigin(reader.GetOrigin()[:3])
    img.SetSpacing(reader.GetSpacing()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    img.SetDirection(tuple(direction.ravel()))
    with atomic_path(out) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return out


def build_store(studies: Path, store: Path, display=("t2f", "t1c"), region: str = "WT",
                seg_tag: str = "final") -> dict:
    """Flat datastore for ``studies``: ``store/<case_id>.nii.gz``, a symlink to the case's displayed modality
    (the first of ``display`` present); the case's BraTS segmentation as ``labels/<seg_tag>/<case_id>.nii.gz``
    (``region`` as value 1, or with ``region`` = ``BraTS`` the label map 1 NCR / 2 ED / 3 ET as it is), rewritten
    when the segmentation is newer or the mode changed. Images and labels deleted over REST (``tombstones``) stay
    out. Returns ``{case_id: displayed file}``."""
    from . import tombstones
    from .atomic import write_text
    from .cases import discover_cases, load_case
    from .regions import BRATS, parse_mode, region_mask

    region = parse_mode(region)
    shown = {}
    (store / "labels" / "final").mkdir(parents=True, exist_ok=True)
    removed = tombstones.read(store)
    mode_file = store / "labels" / f".{seg_tag}-mode"  # what the labels built from the studies hold
    mode_changed = seg_tag != "none" and (not mode_file.is_file() or mode_file.read_text().strip() != region)
    for files in discover_cases(studies):
        if files.case_id in removed["images"]:  # deleted over REST: stays out until its id is uploaded again
            continue
        mod = next((m for m in display if m in files.images), None) or next(iter(sorted(files.images)), None)
        if mod is None:
            continue
        src = Path(files.images[mod]).resolve()
        ext = ".nii.gz" if src.name.endswith(".nii.gz") else ".nii"
        link = store / f"{files.case_id}{ext}"
        if link.is_symlink() and link.resolve() != src:
            link.unlink()
        if not link.exists():
            link.symlink_to(src)
        shown[files.case_id] = src
        if files.seg is not None and seg_tag != "none" and files.case_id not in removed["labels"].get(seg_tag, ()):
            target = store / "labels" / seg_tag / f"{files.case_id}.nii.gz"
            if mode_changed or not target.exists() or target.stat().st_mtime < Path(files.seg).stat().st_mtime:
                seg = load_case(files, [], with_seg=True).seg
                if region == BRATS:
                    write_label_map(seg.astype(np.uint8), src, target)
                else:
                    write_label(region_mask(seg, region).astype(np.uint8), src, target)
    if mode_changed:
        write_text(mode_file, region + "\n")
    return shown


def labelled_studies(datalist: list[dict], out: Path, channels, region: str,
                     label_values=(1,)) -> tuple[Path, list[dict]]:
    """Write a BraTS-layout studies folder for ``prepare_dataset``: per datastore item, the configured
    modalities (symlinks to the case's files; the image itself where a modality is missing) and a
    ``seg`` whose foreground carries a label value inside ``region`` (so the region mask is the label);
    with ``region`` = ``BraTS`` the submitted label map itself (1 NCR, 2 ED, 3 ET: every region's training data).
    A label that is unusable (unreadable, off the image's grid, unknown values) is skipped, not fatal:
    returns ``(folder, [{"image": id, "reason": ...}, ...])``."""
    import nibabel as nib

    from .atomic import save_nifti
    from .regions import BRATS, REGIONS, parse_mode
    from .validation import check_label_file

    region = parse_mode(region)
    fg_value = None if region == BRATS else REGIONS[region][-1]
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = 0, []
    for item in datalist:
        image, label = Path(item["image"]), Path(item["label"])
        files = find_case_files(image)
        cid = re.sub(r"[^A-Za-z0-9_.-]", "_", files.case_id if files else image.name.split(".")[0])
        try:
            ref = nib.load(str(image))
            seg = check_label_file(label, image, label_values, what=f"label {label.name}")
        except (UserError, OSError, ValueError) as exc:
            logger.warning(f"{cid}: label skipped: {exc}")
            skipped.append({"image": cid, "reason": str(exc)})
            continue
        case_dir = out / cid
        case_dir.mkdir(exist_ok=True)
        for mod in channels:
            src = Path(files.images[mod]) if files and mod in files.images else image
            link = case_dir / f"{cid}-{mod}{''.join(src.suffixes[-2:]) if src.name.endswith('.nii.gz') else '.nii'}"
            if not link.exists():
                link.symlink_to(src.resolve())
        values = seg.astype(np.uint8) if fg_value is None else (seg > 0).astype(np.uint8) * np.uint8(fg_value)
        seg_img = nib.Nifti1Image(values, ref.affine)
        save_nifti(seg_img, case_dir / f"{cid}-seg.nii.gz")
        written += 1
    if not written:
        why = "; ".join(f"{s['image']}: {s['reason']}" for s in skipped[:5])
        raise UserError("no usable final label in the datastore: submit a label (tag 'final') first"
                        + (f" (skipped: {why})" if why else ""))
    if written == 1:  # fine-tuning keeps the best epoch by validation Dice: one labelled study serves as both
        only = next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
        alias = out / f"{only.name}__val"
        if not alias.exists():
            alias.symlink_to(only.resolve(), target_is_directory=True)
    return out, skipped
