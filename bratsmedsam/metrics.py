"""Segmentation metrics: Dice, HD95, the BraTS 2023 lesion-wise Dice/HD95, patient bootstrap CIs.

Masks are boolean arrays of the same shape: 2D slices ``(H, W)`` or volumes ``(X, Y, Z)``.
Distances are in millimetres when ``spacing`` (per-axis voxel size) is given, else in voxels.

Dice and HD95 call MONAI (``compute_dice``, ``compute_hausdorff_distance(percentile=95)``: the
larger of the two directed 95th-percentile surface distances). The empty cases are decided here,
the same way everywhere in the project:
- Dice: both empty -> 1.0; exactly one empty -> 0.0.
- HD95: both empty -> 0.0; exactly one empty -> ``max_distance`` (BraTS 2023 uses 374 mm, the
  diagonal of its 240x240x155 1 mm grid).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from .errors import UserError

BRATS_MAX_HD95 = 374.0
"""HD95 (mm) that BraTS 2023 assigns to each missed lesion and each false-positive component."""


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise UserError(f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}")
    return pred, gt


def _crop(pred: np.ndarray, gt: np.ndarray, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union grown by ``pad`` voxels (metrics that only
    look at the masks and their neighbourhood are unchanged; whole 240x240x155 volumes are slow)."""
    union = pred | gt
    if not union.any():
        return pred, gt
    sl = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        sl.append(slice(max(0, idx[0] - pad), idx[-1] + 1 + pad))
    return pred[tuple(sl)], gt[tuple(sl)]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks of one shape (2D or 3D); both empty -> 1.0 (MONAI ``compute_dice``)."""
    import torch
    from monai.metrics import compute_dice

    pred, gt = _crop(*_check_pair(pred, gt))
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    g = torch.from_numpy(gt[None, None].astype(np.float32))
    return float(compute_dice(p, g, include_background=True, ignore_empty=False)[0, 0])


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
         max_distance: float = BRATS_MAX_HD95) -> float:
    """95th-percentile Hausdorff distance (MONAI, symmetric: max of the two directed HD95s).

    Both empty -> 0.0; exactly one empty -> ``max_distance``. ``spacing`` is the voxel size per axis.
    """
    import torch
    from monai.metrics import compute_hausdorff_distance

    pred, gt = _check_pair(pred, gt)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return float(max_distance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]), torch.from_numpy(gt[None, None]),
            include_background=True, percentile=95,
            spacing=None if spacing is None else [float(s) for s in spacing],
        )
    return float(value.reshape(-1)[0])


# --- BraTS 2023 lesion-wise metrics -------------------------------------------------------------
# Written here because MONAI has no lesion-wise metric, and the PyPI `brats-evaluation` package
# computes panoptica-style instance metrics (a different number, and AGPL-3.0).


@dataclass
class LesionWiseResult:
    """BraTS 2023 lesion-wise scores of one region in one case, with the counts behind them."""

    dice: float
    hd95: float
    n_gt_lesions: int        # GT lesions (after dilation grouping) larger than the size threshold
    n_detected: int          # of those, lesions touched by at least one prediction component
    n_false_positives: int   # prediction components touching no (dilated) GT lesion
    lesion_dice: list[float] = field(default_factory=list)   # per counted GT lesion
    lesion_hd95: list[float] = field(default_factory=list)


def lesion_wise(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                dilation_iterations: int = 3, min_lesion_volume: float = 50.0,
                max_distance: float = BRATS_MAX_HD95) -> LesionWiseResult:
    """The official BraTS 2023 lesion-wise Dice and HD95 of one region (binary masks ``(X, Y, Z)``).

    The rules of the challenge's evaluation code:
    1. GT lesions = 26-connected components of the GT, grouped when their dilations touch
       (``binary_dilation`` with ``generate_binary_structure(3, 2)``, 18-connectivity, 3 iterations).
    2. Prediction components are 26-connected.
    3. For each GT lesion, the matched prediction = every prediction component that overlaps the
       lesion's own dilation (same structure and iterations); its Dice and HD95 are computed against
       the lesion; a lesion with no match scores Dice 0 and HD95 ``max_distance``.
    4. GT lesions of volume <= ``min_lesion_volume`` (mm^3, i.e. voxels at 1 mm) are dropped from the
       score; prediction components matched to them are still not false positives.
    5. False positives = prediction components matched to no GT lesion, each adding Dice 0 and HD95
       ``max_distance``: score = sum over counted lesions / (counted lesions + false positives).
    6. Nothing in GT and nothing predicted -> Dice 1, HD95 0.
    """
    pred, gt = _check_pair(pred, gt)
    if pred.ndim != 3:
        raise UserError(f"lesion-wise metrics need 3D masks (X, Y, Z), got shape {pred.shape}")
    # Crop with a margin wider than the dilation (so no dilation is cut off; outside is all background).
    pred, gt = _crop(pred, gt, pad=dilation_iterations + 1)
    spacing = tuple(float(s) for s in spacing)
    voxel_volume = float(np.prod(spacing))
    dil = ndimage.generate_binary_structure(3, 2)
    conn26 = ndimage.generate_binary_structure(3, 3)

    pred_cc, n_pred = ndimage.label(pred, structure=conn26)
    gt_cc, _ = ndimage.label(gt, structure=conn26)
    if gt.any():
        grouped, n_gt = ndimage.label(ndimage.binary_dilation(gt, structure=dil, iterations=dilation_iterations),
                                      structure=conn26)
        lesions = np.where(gt_cc > 0, grouped, 0)     # GT voxels, labelled by their dilation group
    else:
        lesions, n_gt = np.zeros(gt.shape, np.int32), 0

    matched_pred: set[int] = set()
    lesion_dice, lesion_hd, n_detected = [], [], 0
    for lesion_id in range(1, n_gt + 1):
        lesion = lesions == lesion_id
        if not lesion.any():
            continue
        region = ndimage.binary_dilation(lesion, structure=dil, iterations=dilation_iterations)
        hits = np.unique(pred_cc[region])
        hits = hits[hits != 0]
        matched_pred.update(int(h) for h in hits)
        if lesion.sum() * voxel_volume <= min_lesion_volume:
            continue
        if hits.size == 0:
            lesion_dice.append(0.0)
            lesion_hd.append(float(max_distance))
            continue
        n_detected += 1
        matched = np.isin(pred_cc, hits)
        lesion_dice.append(dice(matched, lesion))
        lesion_hd.append(hd95(matched, lesion, spacing=spacing, max_distance=max_distance))

    n_fp = n_pred - len(matched_pred)
    denominator = len(lesion_dice) + n_fp
    if denominator == 0:
        score_dice, score_hd = 1.0, 0.0
    else:
        score_dice = float(np.sum(lesion_dice) / denominator)
        score_hd = float((np.sum(lesion_hd) + n_fp * max_distance) / denominator)
    return LesionWiseResult(score_dice, score_hd, len(lesion_dice), n_detected, n_fp, lesion_dice, lesion_hd)


# --- confidence intervals -----------------------------------------------------------------------


@dataclass
class BootstrapCI:
    """Mean of a metric with a percentile bootstrap interval over patients."""

    mean: float
    low: float
    high: float
    n_patients: int
    n_values: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high,
                "n_patients": self.n_patients, "n_values": self.n_values}

    def format(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(values: Sequence[float], patients: Sequence[str] | None = None, n_boot: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Mean of ``values`` with a bootstrap CI that resamples *patients*, not values.

    ``values`` may hold several entries per patient (e.g. one Dice per slice); ``patients[i]`` names
    the patient of ``values[i]`` (default: one value per patient). Each bootstrap replicate draws
    patients with replacement and takes the mean over all values of the drawn patients, so slices
    of one patient stay together. NaN values are dropped first.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    p = np.arange(v.size).astype(str) if patients is None else np.asarray(patients).astype(str)
    if p.shape != v.shape:
        raise UserError(f"bootstrap_ci: {v.size} values but {p.size} patient ids")
    keep = np.isfinite(v)
    v, p = v[keep], p[keep]
    if v.size == 0:
        return BootstrapCI(float("nan"), float("nan"), float("nan"), 0, 0)
    ids, inverse = np.unique(p, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(np.float64)
    mean = float(v.mean())
    if ids.size == 1:
        return BootstrapCI(mean, mean, mean, 1, int(v.size))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ids.size, size=(n_boot, ids.size))
    replicate = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(replicate, [alpha, 1 - alpha])
    return BootstrapCI(mean, float(low), float(high), int(ids.size), int(v.size))
