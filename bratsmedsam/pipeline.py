"""Volume level: boxes -> 3D mask, Slicer ROI -> 3D mask (with propagation), detector -> segmenter.

Frames (see :mod:`bratsmedsam.boxes`): ``channels`` is a uint8 ``(X, Y, Z, 3)`` volume; axial slice
``k`` is the image ``boxes.axial_slice(channels, k)`` of shape ``(H=Y, W=X, 3)``; every 2D box is
inclusive pixel XYXY on that image (x = voxel i, y = voxel j); ``boxes`` dicts map ``k`` to ``(n, 4)``.
Labels come back as bool ``(X, Y, Z)`` in the volume's own voxel grid.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from .boxes import RoiIJK, axial_slice, clip_xyxy, mask_to_xyxy, put_axial_slice
from .errors import UserError

#: ROIs this deep (in k) or less are "flat": Slicer gives a box drawn in one view a slice or two of thickness.
FLAT_ROI_MAX_DEPTH = 3


@dataclass
class VolumeResult:
    """A 3D mask and the per-slice evidence behind it (keys: axial slice index ``k``)."""

    label: np.ndarray  # bool (X, Y, Z)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # k -> (n, 4) pixel XYXY prompts used
    conf: dict[int, np.ndarray] = field(default_factory=dict)  # k -> (n,) detector confidences
    iou: dict[int, np.ndarray] = field(default_factory=dict)  # k -> (n,) segmenter's predicted IoU

    @property
    def slices(self) -> list[int]:
        return sorted(k for k, v in self.iou.items() if len(v))


def _check_channels(channels: np.ndarray) -> None:
    if channels.ndim != 4 or channels.shape[-1] != 3 or channels.dtype != np.uint8:
        raise UserError(f"channels must be a uint8 (X, Y, Z, 3) volume, got {channels.dtype} {channels.shape}")


def segment_with_boxes(channels: np.ndarray, boxes: dict[int, np.ndarray], segmenter,
                       batch_slices: int = 8, progress: bool = False) -> VolumeResult:
    """Segment every slice ``k`` of ``boxes`` with its pixel-XYXY boxes; the slice's masks are united."""
    _check_channels(channels)
    X, Y, Z, _ = channels.shape
    label = np.zeros((X, Y, Z), dtype=bool)
    result = VolumeResult(label=label)
    ks = sorted(int(k) for k, b in boxes.items() if np.asarray(b).reshape(-1, 4).shape[0] > 0)
    for k in ks:
        if not 0 <= k < Z:
            raise UserError(f"slice index {k} is outside the volume (0..{Z - 1})")
    chunks = [ks[i:i + batch_slices] for i in range(0, len(ks), batch_slices)]
    for chunk in tqdm(chunks, desc="segment slices", unit="batch", disable=not progress or not chunks):
        images = [axial_slice(channels, k) for k in chunk]
        prompts = [clip_xyxy(np.asarray(boxes[k], np.float32).reshape(-1, 4), Y, X) for k in chunk]
        for k, prompt, seg in zip(chunk, prompts, segmenter.segment_many(images, prompts)):
            put_axial_slice(label, k, np.asarray(seg.masks, bool).any(axis=0))
            result.boxes[k] = prompt
            result.iou[k] = np.asarray(seg.iou, np.float32)
    return result


def _expand(box: np.ndarray, margin: float, limit: np.ndarray) -> np.ndarray:
    """Grow a pixel-XYXY box by ``margin`` px per side, then clip it to the ``limit`` box."""
    out = box.astype(np.float32) + np.array([-margin, -margin, margin, margin], np.float32)
    out[[0, 1]] = np.maximum(out[[0, 1]], limit[[0, 1]])
    out[[2, 3]] = np.minimum(out[[2, 3]], limit[[2, 3]])
    return out


def _inside_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Keep only the pixels of a 2D ``(H, W)`` mask inside a pixel-XYXY box."""
    out = np.zeros_like(mask, dtype=bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    return out


def segment_roi(channels: np.ndarray, roi: RoiIJK, segmenter, slice_index: int | None = None,
                flat_max_depth: int = FLAT_ROI_MAX_DEPTH, margin: float = 3.0, min_pixels: int = 10,
                stop_iou: float = 0.5) -> VolumeResult:
    """Segment a Slicer ROI (sorted :class:`RoiIJK`).

    Flat ROI (``depth <= flat_max_depth``): only slice ``slice_index`` (if given and inside the ROI)
    or the ROI's middle slice, prompted with the ROI's in-plane box.
    3D ROI: every slice in ``k0..k1`` is prompted with the ROI box (one batched call, embeddings cached);
    the slice with the largest mask seeds a propagation outwards where each next slice's box is the
    previous mask's box grown by ``margin`` px (kept inside the ROI). Propagation stops at the ROI's
    end, or where the mask has fewer than ``min_pixels`` pixels or a predicted IoU below ``stop_iou``.
    Masks are restricted to the ROI's in-plane box.
    """
    _check_channels(channels)
    X, Y, Z, _ = channels.shape
    roi_box = roi.box_xyxy
    label = np.zeros((X, Y, Z), dtype=bool)
    result = VolumeResult(label=label)
    if roi.depth <= flat_max_depth:
        k = slice_index if slice_index is not None and roi.k0 <= slice_index <= roi.k1 else roi.k0 + (roi.depth - 1) // 2
        seg = segmenter.segment(axial_slice(channels, k), roi_box[None])
        put_axial_slice(label, k, _inside_box(np.asarray(seg.masks[0], bool), roi_box))
        result.boxes[k], result.iou[k] = roi_box[None], np.asarray(seg.iou, np.float32)
        return result

    ks = list(range(roi.k0, roi.k1 + 1))
    first = segmenter.segment_many([axial_slice(channels, k) for k in ks], [roi_box[None]] * len(ks))
    masks = {k: _inside_box(np.asarray(s.masks[0], bool), roi_box) for k, s in zip(ks, first)}
    seed = max(ks, key=lambda k: int(masks[k].sum()))
    if masks[seed].sum() < min_pixels:
        return result
    put_axial_slice(label, seed, masks[seed])
    result.boxes[seed] = roi_box[None]
    result.iou[seed] = np.asarray(first[ks.index(seed)].iou, np.float32)
    for step in (1, -1):
        prev = masks[seed]
        k = seed + step
        while roi.k0 <= k <= roi.k1:
            box = _expand(mask_to_xyxy(prev), margin, roi_box)
            seg = segmenter.segment(axial_slice(channels, k), box[None])
            mask = _inside_box(np.asarray(seg.masks[0], bool), roi_box)
            iou = float(np.asarray(seg.iou).reshape(-1)[0])
            if mask.sum() < min_pixels or iou < stop_iou:
                break
            put_axial_slice(label, k, mask)
            result.boxes[k], result.iou[k] = box[None], np.asarray(seg.iou, np.float32)
            prev, k = mask, k + step
    return result


def points_to_boxes(points_ijk, shape: tuple[int, int, int], radius: float = 12.0) -> dict[int, np.ndarray]:
    """Foreground clicks (voxel ``[i, j, k]``) -> one pixel-XYXY box per clicked slice.

    The box spans the slice's clicks grown by ``radius`` px (a single click becomes a square of
    side ``2 * radius + 1``), since the segmenters take box prompts.
    """
    pts = np.asarray(points_ijk, dtype=np.float64)
    if pts.size == 0:
        return {}
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise UserError(f"foreground points must be a list of [i, j, k] voxel indices, got {points_ijk!r}")
    pts = np.rint(pts).astype(int)
    inside = np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)
    if not inside.any():
        raise UserError(f"all foreground points {pts.tolist()} lie outside the image of shape {tuple(shape)}")
    out = {}
    for k in np.unique(pts[inside, 2]):
        p = pts[inside & (pts[:, 2] == k)]
        box = np.array([p[:, 0].min() - radius, p[:, 1].min() - radius, p[:, 0].max() + radius,
                        p[:, 1].max() + radius], np.float32)
        out[int(k)] = clip_xyxy(box[None], shape[1], shape[0])
    return out


def detector_api():
    """The detector module (``Detector``, ``train_detector``, ``postprocess_volume``), imported on first use."""
    import importlib

    return importlib.import_module("bratsmedsam.detector")


def detect_volume(channels: np.ndarray, detector, postprocess: bool = False) -> tuple[dict, dict]:
    """Run the detector over every axial slice -> ``(boxes {k: (n,4) xyxy}, conf {k: (n,)})``, empty slices left out."""
    _check_channels(channels)
    images = [axial_slice(channels, k) for k in range(channels.shape[2])]
    found = detector.predict(images)
    if postprocess:
        found = detector_api().postprocess_volume(found)
    boxes, conf = {}, {}
    for k, sb in enumerate(found):
        if len(sb.xyxy):
            boxes[k] = np.asarray(sb.xyxy, np.float32).reshape(-1, 4)
            conf[k] = np.asarray(sb.conf, np.float32).reshape(-1)
    return boxes, conf


def detect_and_segment(channels: np.ndarray, detector, segmenter, postprocess: bool = False,
                       progress: bool = False) -> VolumeResult:
    """Detector on all slices, then the segmenter on each slice's detected boxes -> 3D mask."""
    boxes, conf = detect_volume(channels, detector, postprocess=postprocess)
    result = segment_with_boxes(channels, boxes, segmenter, progress=progress)
    result.conf = conf
    return result


@dataclass
class Box3D:
    """A tumour's 3D extent: inclusive voxel ranges, plus the detector evidence merged into it."""

    roi_ijk: tuple[int, int, int, int, int, int]  # (i0, i1, j0, j1, k0, k1), sorted
    conf: float  # highest slice confidence
    mean_conf: float
    n_slices: int


def merge_boxes_3d(boxes: dict[int, np.ndarray], conf: dict[int, np.ndarray],
                   shape: tuple[int, int, int]) -> list[Box3D]:
    """Merge per-slice pixel-XYXY boxes into 3D boxes: footprints overlapping in neighbouring slices
    (6-connected after rasterising each box into the ``(X, Y, Z)`` grid) form one tumour.
    Returned largest confidence first."""
    occ = np.zeros(shape, dtype=bool)
    for k, bs in boxes.items():
        for x0, y0, x1, y1 in np.rint(np.asarray(bs).reshape(-1, 4)).astype(int):
            occ[max(x0, 0):x1 + 1, max(y0, 0):y1 + 1, k] = True
    lab, n = ndimage.label(occ)
    if n == 0:
        return []
    per: dict[int, list[float]] = {c: [] for c in range(1, n + 1)}
    slices_of: dict[int, set[int]] = {c: set() for c in range(1, n + 1)}
    for k, bs in boxes.items():
        cs = np.asarray(conf.get(k, np.ones(len(bs))), np.float32).reshape(-1)
        for (x0, y0, _, _), c in zip(np.rint(np.asarray(bs).reshape(-1, 4)).astype(int), cs):
            comp = int(lab[min(max(x0, 0), shape[0] - 1), min(max(y0, 0), shape[1] - 1), k])
            if comp:
                per[comp].append(float(c))
                slices_of[comp].add(int(k))
    out = []
    for comp, sl in enumerate(ndimage.find_objects(lab), start=1):
        si, sj, sk = sl
        cs = per[comp] or [0.0]
        out.append(Box3D((si.start, si.stop - 1, sj.start, sj.stop - 1, sk.start, sk.stop - 1),
                         float(max(cs)), float(np.mean(cs)), len(slices_of[comp])))
    return sorted(out, key=lambda b: -b.conf)


# --- Studies on disk: one displayed volume, all configured modalities beside it -------------------

_BRATS_NAME = re.compile(r"^(?P<case>.+?)[-_](?P<mod>t1c|t1n|t2w|t2f|t1ce|t1|t2|flair)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass
class Study:
    """A volume ready for the models. ``channels`` uint8 ``(X, Y, Z, 3)`` in the reference's voxel grid."""

    case_id: str
    channels: np.ndarray
    affine: np.ndarray  # (4, 4) of the reference volume
    reference: Path  # the volume whose geometry results must have
    sources: dict[str, str]  # configured channel -> modality that filled it
    single_modality: bool


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


def load_study(path: str | os.PathLike, channels: Sequence[str] = ("t1c", "t2w", "t2f"),
               display: Sequence[str] = ("t2f", "t1c")) -> Study:
    """Load a case folder, a modality file of a BraTS case (its siblings join in), or a lone volume.

    Missing configured modalities are filled with the displayed one (the request's file, or the first
    of ``display`` present in a case folder); a lone volume fills all three channels.
    """
    import nibabel as nib

    from .cases import Case, load_case
    from .intensity import compose_channels, normalize_volume

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
        return Study(path.name.split(".")[0], stack, img.affine, path, {c: "input" for c in channels}, True)
    present = set(files.images)
    if path.is_file():
        shown = next(m for m, p in files.images.items() if Path(p).resolve() == path.resolve())
        reference = path
    else:
        shown = next((m for m in display if m in present), sorted(present)[0])
        reference = Path(files.images[shown])
    need = sorted({c for c in channels if c in present} | {shown})
    case = load_case(files, need, with_seg=False)
    sources = {c: (c if c in present else shown) for c in channels}
    filled = Case(case_id=case.case_id, images={c: case.images[sources[c]] for c in channels}, seg=None,
                  affine=case.affine)
    stack = compose_channels(filled, tuple(channels))
    return Study(files.case_id, stack, case.affine, reference, sources, len(set(sources.values())) == 1)


def write_label(label: np.ndarray, reference: str | os.PathLike, out: str | os.PathLike, value: int = 1) -> Path:
    """Write a bool/uint8 ``(X, Y, Z)`` label (foreground -> ``value``) with the reference volume's exact geometry.

    ``.nii``/``.nii.gz`` keep the reference's affine and header (nibabel); anything else (``.nrrd``)
    is written by SimpleITK with the reference's origin, spacing and direction as ITK reads them.
    """
    from .atomic import atomic_path, save_nifti

    out = Path(out)
    arr = (np.asarray(label) > 0).astype(np.uint8) * np.uint8(value)
    if out.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        ref = nib.load(str(reference))
        if ref.shape[:3] != arr.shape:
            raise UserError(f"label shape {arr.shape} does not match {reference} ({ref.shape[:3]})")
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        img = nib.Nifti1Image(arr, ref.affine, header)
        img.set_qform(ref.affine, int(ref.header["qform_code"]) or 1)
        img.set_sform(ref.affine, int(ref.header["sform_code"]) or 1)
        return save_nifti(img, out)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    if tuple(reader.GetSize()[:3]) != arr.shape:
        raise UserError(f"label shape {arr.shape} does not match {reference} ({reader.GetSize()})")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetOrigin(reader.GetOrigin()[:3])
    img.SetSpacing(reader.GetSpacing()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    img.SetDirection(tuple(direction.ravel()))
    with atomic_path(out) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return out


def roi_markups(boxes: list[Box3D], reference: str | os.PathLike, name: str = "tumour") -> dict:
    """3D boxes (voxel ranges) -> a Slicer Markups ROI JSON document in the reference's physical (LPS) space."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    spacing = np.asarray(reader.GetSpacing()[:3])
    origin = np.asarray(reader.GetOrigin()[:3])
    markups = []
    for n, b in enumerate(boxes, start=1):
        i0, i1, j0, j1, k0, k1 = b.roi_ijk
        centre_ijk = np.array([(i0 + i1) / 2, (j0 + j1) / 2, (k0 + k1) / 2])
        centre = origin + direction @ (centre_ijk * spacing)
        size = (np.array([i1 - i0, j1 - j0, k1 - k0]) + 1) * spacing
        markups.append({
            "type": "ROI", "coordinateSystem": "LPS", "coordinateUnits": "mm", "name": f"{name}-{n}",
            "roiType": "Box", "center": centre.tolist(), "orientation": direction.ravel().tolist(),
            "size": size.tolist(), "insideOut": False,
            "controlPoints": [{"id": "1", "label": f"{name}-{n}", "position": centre.tolist(),
                               "orientation": direction.ravel().tolist(), "selected": True, "locked": False,
                               "visibility": True, "positionStatus": "defined"}],
            "description": f"conf {b.conf:.3f} (mean {b.mean_conf:.3f}) over {b.n_slices} slices",
        })
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                       "Resources/Schema/markups-schema-v1.0.3.json#", "markups": markups}
